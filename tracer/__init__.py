"""kpath tracer stage."""
