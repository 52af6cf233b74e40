"""kpath viz stage."""
