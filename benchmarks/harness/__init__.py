"""Building blocks of the benchmarks: backends, proxies, load generator, /proc sampling.

Kept apart from the command-line scripts so that later comparisons (HTTP mode, more
scenarios) reuse the same process handling and measurement code.
"""
