"""kpath probes stage."""
