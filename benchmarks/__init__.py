"""Benchmarks for loadstone: side-by-side comparisons with HAProxy (see README.md)."""
