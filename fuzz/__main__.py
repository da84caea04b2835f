"""Command line of the fuzz harnesses; see fuzz/__init__.py."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from fuzz.engines import have_atheris, replay, run_atheris, run_hypothesis
from fuzz.registry import TARGETS


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fuzz")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("list", help="the targets")
    run = commands.add_parser("run", help="fuzz targets for a bounded time each")
    run.add_argument("targets", nargs="*", help="default: every target")
    run.add_argument("--seconds", type=float, default=60.0, help="per target")
    run.add_argument("--engine", choices=("auto", "atheris", "hypothesis"), default="auto")
    run.add_argument("--max-len", type=int, default=4096)
    again = commands.add_parser("replay", help="run a target over input files once")
    again.add_argument("target", choices=sorted(TARGETS))
    again.add_argument("files", nargs="+", type=Path)
    args = parser.parse_args(argv)

    if args.command == "list":
        print("\n".join(TARGETS))
        return 0
    if args.command == "replay":
        replay(args.target, [f.read_bytes() for f in args.files])
        return 0
    unknown = set(args.targets) - set(TARGETS)
    if unknown:
        parser.error(f"unknown targets: {', '.join(sorted(unknown))}")
    engine = args.engine
    if engine == "auto":
        engine = "atheris" if have_atheris() else "hypothesis"
    runner = run_atheris if engine == "atheris" else run_hypothesis
    failed = 0
    total = 0
    for name in args.targets or TARGETS:
        result = runner(name, args.seconds, args.max_len)
        print(result.line(), flush=True)
        total += result.executions
        failed += result.crash is not None
    print(f"{total} executions, {failed} target(s) failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
