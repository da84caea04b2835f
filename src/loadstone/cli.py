"""Command line: `loadstone run | check | schema | ctl | import | version | demo`.

Exit status: 0 on success (and after a graceful stop), 2 for an invalid
configuration (one line per problem on stderr, each starting with its YAML
path), 1 when a valid configuration cannot start (address in use, a server
name that does not resolve).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
from collections.abc import Coroutine, Sequence
from typing import Any, cast

import loadstone
from loadstone import ctl as ctl_module
from loadstone.config import ConfigError, lint, load_config
from loadstone.config.jsonschema import config_schema
from loadstone.config.model import DEFAULT_ADMIN_PORT, Config, LogFormat
from loadstone.importers.haproxy import command as import_command
from loadstone.logtargets.outputs import LogOutputs, LogSetupError, event_formatter
from loadstone.logtargets.sinks import connected_to_journal
from loadstone.tls import material as tls_material
from loadstone.tls.certificates import TlsError

EXIT_CONFIG = 2
EXIT_START = 1


def setup_logging(fmt: LogFormat, level: str) -> None:
    """Events to stderr, written in the caller's thread (check, demo)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(event_formatter(fmt))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())


def run_loop(main: Coroutine[Any, Any, int], loop_name: str) -> int:
    """Run on uvloop unless asked for asyncio (the pure path is tested on both)."""
    if loop_name == "uvloop":
        try:
            import uvloop
        except ImportError:
            logging.getLogger("loadstone").warning("uvloop not installed; using asyncio")
        else:
            return uvloop.run(main)
    return asyncio.run(main)


def report_config_error(err: ConfigError) -> int:
    for problem in err.problems:
        print(problem, file=sys.stderr)
    for hint in lint.haproxy_hints(err.problems):  # `inter:`, `option:` and the like
        print(f"hint: {hint}", file=sys.stderr)
    return EXIT_CONFIG


def report_start_error(message: str) -> None:
    """One `loadstone: ...` line per problem on stderr; under systemd with the
    error priority (`<3>`), so `journalctl -p err` shows why the start failed."""
    prefix = "<3>" if connected_to_journal(sys.stderr.fileno()) else ""
    for line in message.splitlines():
        print(f"{prefix}loadstone: {line}", file=sys.stderr, flush=True)


def _load(path: str) -> Config | int:
    try:
        config = load_config(path)
    except ConfigError as err:
        return report_config_error(err)
    try:
        warnings = tls_material.check(config)  # every certificate, key and CA file
    except TlsError as err:
        print(err, file=sys.stderr)
        return EXIT_CONFIG
    for line in warnings:  # an expired certificate: a warning, not a refusal
        print(f"warning: {line}", file=sys.stderr)
    # likely mistakes (a timeout of 5000 seconds): said, never refused
    for line in lint.warnings(config, lint.read_document(path)):
        print(f"warning: {line}", file=sys.stderr)
    return config


async def _run(config: Config, outputs: LogOutputs, path: str) -> int:
    from loadstone.runtime import Runtime, StartError

    runtime = Runtime(config, config_path=path, log_outputs=outputs)
    try:
        await runtime.start()
    except StartError as exc:
        report_start_error(str(exc))
        return EXIT_START
    await runtime.serve()
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    config = _load(args.config)
    if isinstance(config, int):
        return config
    try:
        outputs = LogOutputs.open(
            config.global_.log, config.global_.log_format, cast(LogFormat | None, args.log_format)
        )
    except LogSetupError as exc:
        report_start_error(str(exc))
        return EXIT_START
    outputs.install(args.log_level)
    try:
        return run_loop(_run(config, outputs, args.config), args.loop)
    finally:
        outputs.close()


def cmd_check(args: argparse.Namespace) -> int:
    config = _load(args.config)
    if isinstance(config, int):
        return config
    servers = sum(len(listener.servers) for listener in config.listeners)
    print(f"{args.config}: valid ({len(config.listeners)} listeners, {servers} servers)")
    return 0


def schema_text() -> str:
    """The JSON Schema of the configuration file, as `loadstone schema` prints it."""
    return json.dumps(config_schema(), indent=2) + "\n"


def cmd_schema(args: argparse.Namespace) -> int:
    sys.stdout.write(schema_text())
    return 0


def cmd_version(args: argparse.Namespace) -> int:
    if not args.verbose:
        doc = {"version": loadstone.__version__}
    else:
        from loadstone.buildinfo import describe

        doc = describe()
    if args.json:
        print(json.dumps(doc, indent=2))
    elif not args.verbose:
        print(_version())
    else:
        width = max(len(key) for key in doc) + 2
        for key, value in doc.items():
            print(f"{key + ':':<{width}}{value}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from loadstone.demo import run_demo

    setup_logging("text", args.log_level)
    return run_loop(run_demo(args.port, args.admin_port), args.loop)


def port_number(text: str) -> int:
    port = int(text)
    if not 1 <= port <= 65535 - 3:
        raise argparse.ArgumentTypeError(f"must be 1-65532, got {port}")
    return port


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="loadstone", description="L4/L7 load-balancing proxy for OpenStack controllers"
    )
    parser.add_argument("--version", action="version", version=_version())
    sub = parser.add_subparsers(dest="command", required=True)

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--log-level",
            default=os.environ.get("LOADSTONE_LOG_LEVEL", "info"),
            choices=["debug", "info", "warning", "error"],
            help="the least severe event logged (default info, or $LOADSTONE_LOG_LEVEL)",
        )
        p.add_argument(
            "--loop",
            default=os.environ.get("LOADSTONE_LOOP", "uvloop"),
            choices=["uvloop", "asyncio"],
            help="event loop of the control plane and pure path",
        )

    run = sub.add_parser("run", help="run the proxy in the foreground")
    run.add_argument("config")
    run.add_argument(
        "--log-format",
        choices=["text", "json"],
        default=None,
        help="format of every log output (default: each global.log target's, else "
        "global.log_format)",
    )
    common(run)
    run.set_defaults(func=cmd_run)

    check = sub.add_parser("check", help="validate a configuration file (exit 0 or 2)")
    check.add_argument("config")
    check.set_defaults(func=cmd_check)

    schema = sub.add_parser(
        "schema", help="print the JSON Schema of the configuration file (for editors)"
    )
    schema.set_defaults(func=cmd_schema)

    ctl = sub.add_parser("ctl", help="talk to a running loadstone's admin API")
    ctl_module.add_arguments(ctl)
    ctl.set_defaults(func=ctl_module.run)

    importer = sub.add_parser("import", help="translate another proxy's configuration")
    import_command.add_arguments(importer)

    version = sub.add_parser(
        "version", help="print the version; -v: the build, data path and kernel features"
    )
    version.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        help="also the data path, build variant, llhttp, OpenSSL, io_uring and kernel features",
    )
    version.add_argument("--json", action="store_true", help="as one JSON object")
    version.set_defaults(func=cmd_version)

    demo = sub.add_parser("demo", help="run the embedded demo: three backends and a proxy")
    demo.add_argument(
        "--port",
        type=port_number,
        help="the proxy's port (default 8080); the backends take the next three",
    )
    demo.add_argument(
        "--admin-port",
        type=port_number,
        help=f"the admin server's port (default {DEFAULT_ADMIN_PORT})",
    )
    common(demo)
    demo.set_defaults(func=cmd_demo)
    return parser


def _version() -> str:
    return f"loadstone {loadstone.__version__}"


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        return 0
