"""`loadstone import haproxy FILE|DIR... [-o OUT] [--strict] [--galera-check native|http]`.

Exit status: 0 written (the report may list untranslated directives), 2 for a
file HAProxy would refuse (one `file:line: message`), for an output that
loadstone's own loader refuses, or with --strict when something was not
translated.
"""

from __future__ import annotations

import argparse
import sys

from loadstone.config import ConfigError, parse_config
from loadstone.importers.haproxy.files import import_haproxy
from loadstone.importers.haproxy.parser import ParseError
from loadstone.importers.haproxy.report import TranslationError

EXIT_INVALID = 2


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="source", required=True)
    haproxy = sub.add_parser("haproxy", help="translate haproxy.cfg into loadstone YAML")
    haproxy.add_argument(
        "paths",
        nargs="+",
        metavar="FILE|DIR",
        help="files in HAProxy's order; a directory's *.cfg in lexical order",
    )
    haproxy.add_argument(
        "-o", "--output", default="-", help="where to write the YAML (default: stdout)"
    )
    haproxy.add_argument(
        "--strict",
        action="store_true",
        help="fail (exit 2) when a directive changes behaviour untranslated",
    )
    haproxy.add_argument(
        "--galera-check",
        choices=["native", "http"],
        default="http",
        help="Galera single-writer listeners: read wsrep status (native) or keep "
        "HAProxy's check (http, the default)",
    )
    haproxy.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    try:
        result = import_haproxy(args.paths, args.galera_check)
    except (ParseError, TranslationError) as err:
        print(err, file=sys.stderr)
        return EXIT_INVALID
    except OSError as err:
        print(f"loadstone import: {err}", file=sys.stderr)
        return EXIT_INVALID
    for line in result.report:
        print(line, file=sys.stderr)
    try:
        parse_config(result.yaml)
    except ConfigError as err:
        # A bug of the importer, never the operator's: say so plainly.
        print("loadstone import: the translation does not pass loadstone check:", file=sys.stderr)
        for problem in err.problems:
            print(f"  {problem}", file=sys.stderr)
        return EXIT_INVALID
    blocking = [line for line in result.report if line.kind.blocks_strict]
    if args.strict and blocking:
        print(
            f"loadstone import: --strict: {len(blocking)} directive"
            f"{'' if len(blocking) == 1 else 's'} not translated (listed above)",
            file=sys.stderr,
        )
        return EXIT_INVALID
    if args.output == "-":
        sys.stdout.write(result.yaml)
    else:
        with open(args.output, "w", encoding="utf-8") as out:
            out.write(result.yaml)
    return 0
