"""The benchmark's first name, kept for the commands written down with its figures:
`python benchmarks/compare_haproxy.py ...` runs benchmarks/compare.py, same options.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):
    # Run as a script: make the repository root importable, as compare.py does.
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.compare import equal_logging, logging_line, main, parse_args

__all__ = ["equal_logging", "logging_line", "main", "parse_args"]

if __name__ == "__main__":
    sys.exit(main(prog="compare_haproxy"))
