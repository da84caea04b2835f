"""One target under atheris: python -m fuzz.atheris_main TARGET [libFuzzer args...]."""

from __future__ import annotations

import sys

import atheris

with atheris.instrument_imports(include=["loadstone", "httptools", "aiomysql", "pymysql"]):
    from fuzz.registry import TARGETS


def main() -> None:
    name = sys.argv.pop(1)
    atheris.Setup(sys.argv, TARGETS[name])
    atheris.Fuzz()


if __name__ == "__main__":
    main()
