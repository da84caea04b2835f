"""Network-namespace hosts for the HA tests and benchmarks (see bed.py)."""
