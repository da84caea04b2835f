"""Compiled modules of the native data path, built from src/_fastpath/ by setup.py.

Empty when the build skipped them (no compiler, not Linux, LOADSTONE_NO_EXTENSIONS
set at build time); loadstone.datapath then uses the pure-Python twin.
"""
