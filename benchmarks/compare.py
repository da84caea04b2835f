"""Side-by-side benchmark of loadstone and its peers (HAProxy, nginx, Caddy), same backends.

    python benchmarks/compare.py [-d 10] [--workers 1] [--repeat 1] [--json out.json]
    python benchmarks/compare.py --proxies loadstone,nginx --backends one-multi
    python -m benchmarks.compare --only haproxy -d 3

(`benchmarks/compare_haproxy.py`, the former name, runs the same.) Starts the nginx
backends, the proxies and loadstone on free loopback ports in a temp dir, drives
each scenario through each proxy with wrk (reversing the order on every other
repeat, to spread drift evenly), and prints req/s, MB/s, the proxy's CPU
microseconds per request, p99 latency, RSS and wrk errors of each, then
loadstone's ratio to each peer. See benchmarks/README.md for what the scenarios
mean. --backend-cpus caps the backends' CPU (harness/cgroup.py) so that they, not
the proxies, set the pace; the tables then add what each proxy costs the backends
per request and how much of their cap they got to use. --backend-cpus-per-worker
caps each backend worker process on its own instead, and adds each worker's cores:
whether a proxy used every worker's capacity.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    # Run as a script: make the repository root importable so `benchmarks.harness`
    # resolves the same way as under `python -m benchmarks.compare`.
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.harness import report
from benchmarks.harness.backends import DEFAULT_SHAPE, SHAPES, NginxBackends
from benchmarks.harness.caddy import Caddy
from benchmarks.harness.cgroup import CpuCap, cap_each, describe_each
from benchmarks.harness.lineup import LOADSTONE, PROXIES, parse_builds, parse_proxies
from benchmarks.harness.measure import Run, Summary, measure, wait_for_quiet
from benchmarks.harness.nginx_proxy import NginxProxy
from benchmarks.harness.proxies import HAProxy, Loadstone, Proxy, default_loadstone_binary
from benchmarks.harness.scenarios import DEFAULT, HTTP, SCENARIOS, Scenario, select
from benchmarks.harness.wrk import WrkOutputError

REPO = Path(__file__).resolve().parent.parent
# How long to wait for other programs to quieten down before re-measuring a run
# they disturbed; the benchmark shares its machine with builds and test suites.
QUIET_TIMEOUT = 60.0


def parse_args(argv: Sequence[str] | None, prog: str = "compare") -> argparse.Namespace:
    scenario_help = "; ".join(f"{s.name}: {s.summary}" for s in SCENARIOS.values())
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Compare loadstone with HAProxy, nginx and Caddy under wrk on loopback.",
    )
    parser.add_argument(
        "-d",
        "--duration",
        type=int,
        default=10,
        help="whole seconds per wrk run (wrk takes no fractions; default 10)",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=1,
        help="loadstone global.workers, HAProxy nbthread, nginx worker_processes and "
        "Caddy GOMAXPROCS (default 1)",
    )
    parser.add_argument(
        "--scenarios",
        default=",".join(DEFAULT),
        help=f"comma-separated list; 'tcp' (the default: {','.join(DEFAULT)}), 'http' "
        f"({','.join(HTTP)}) and 'all' name groups ({scenario_help})",
    )
    parser.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="runs per scenario and proxy, alternating the order; medians are reported",
    )
    parser.add_argument("--json", type=Path, metavar="OUT", help="write all runs and medians here")
    parser.add_argument(
        "--proxies",
        metavar="A,B",
        help=f"which proxies run, rows in that order (from {','.join(PROXIES)}; default: "
        "all, leaving out peers that are not installed and Caddy in tcp scenarios)",
    )
    parser.add_argument("--only", choices=PROXIES, help="benchmark one proxy (--proxies NAME)")
    parser.add_argument(
        "--backends",
        choices=tuple(SHAPES),
        default=DEFAULT_SHAPE,
        help="two-single: two nginx with one worker each (default); one-multi: one nginx "
        "with 2 workers on one port, as uwsgi or mod_wsgi run an API",
    )
    # One cap for all backends, or one per worker: not both.
    caps = parser.add_mutually_exclusive_group()
    caps.add_argument(
        "--backend-cpus",
        type=float,
        metavar="FRACTION",
        help="cap the backends' CPU: their processes together may use FRACTION of one "
        "CPU (e.g. 0.5; a cgroup, as root), so the backend, as an OpenStack API usually "
        "is, sets the pace; adds each proxy's backend CPU per request to the table",
    )
    caps.add_argument(
        "--backend-cpus-per-worker",
        type=float,
        metavar="FRACTION",
        help="cap each backend worker process (not the masters) on its own at FRACTION "
        "of one CPU (e.g. 0.1; a cgroup each, as root), as each uwsgi or mod_wsgi worker "
        "is one process and one core at most; adds the backend columns and each "
        "worker's cores, so a proxy that leaves a worker's capacity unused shows",
    )
    parser.add_argument(
        "-t",
        "--wrk-threads",
        type=int,
        default=1,
        help="wrk -t (default 1: on a 2-core machine every core wrk takes is one the "
        "proxy and backends do not get)",
    )
    parser.add_argument(
        "--warmup",
        type=int,
        default=1,
        help="seconds of unmeasured wrk load per scenario and proxy before measuring (0: none)",
    )
    parser.add_argument(
        "--max-foreign",
        type=float,
        default=0.15,
        metavar="CORES",
        help="CPU (in cores) other programs may use during a run before it counts as "
        "disturbed (default 0.15)",
    )
    parser.add_argument(
        "--noisy-retries",
        type=int,
        default=2,
        help="times a disturbed run is measured again before being kept, flagged (default 2)",
    )
    # Every proxy logs every session by default, as HAProxy does in OpenStack
    # deployments (option tcplog/httplog): a comparison is of equal work.
    parser.add_argument(
        "--peer-log",
        "--haproxy-log",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="the peers log every session or request to a file (HAProxy option "
        "tcplog/httplog, nginx access_log, Caddy's log directive), as loadstone's default "
        "`log: all` does (default on; --no-peer-log or its old name --no-haproxy-log: off)",
    )
    parser.add_argument(
        "--loadstone-log",
        choices=("all", "errors", "none"),
        default="all",
        help="the benchmark listener's `log` (default all: a line per session or request; "
        "none does the work of --no-peer-log)",
    )
    parser.add_argument(
        "--haproxy-global",
        action="append",
        default=[],
        metavar="LINE",
        help="extra line for HAProxy's global section, e.g. 'tune.bufsize 262144' (repeatable)",
    )
    parser.add_argument(
        "--haproxy-defaults",
        action="append",
        default=[],
        metavar="LINE",
        help="extra line for HAProxy's defaults section, e.g. 'option splice-auto' (repeatable)",
    )
    parser.add_argument(
        "--loadstone",
        action="append",
        metavar="[LABEL=]PATH",
        help="loadstone console script (default: next to this Python, "
        f"{default_loadstone_binary()}); repeat as LABEL=PATH to measure several builds "
        "in one run (rows loadstone-LABEL, each with its ratio to the first)",
    )
    parser.add_argument(
        "--pure-python",
        action="store_true",
        help="run loadstone with LOADSTONE_NO_EXTENSIONS=1 (the pure-Python data path)",
    )
    parser.add_argument(
        "--markdown", action="store_true", help="also print the table as Markdown, for the README"
    )
    parser.add_argument(
        "--keep-tmp", action="store_true", help="keep the temp dir (configs and logs) for a look"
    )
    args = parser.parse_args(argv)
    try:
        args.scenario_list = select(args.scenarios)
        args.builds = parse_builds(args.loadstone)
        # None: the default selection, which leaves out what is not installed.
        args.proxy_list = parse_proxies(args.proxies) if args.proxies else None
    except ValueError as exc:
        parser.error(str(exc))
    if args.only:
        if args.proxy_list is not None:
            parser.error("--only and --proxies do not go together")
        args.proxy_list = (args.only,)
    args.backend_shape = SHAPES[args.backends]
    for name in ("duration", "workers", "repeat", "wrk_threads"):
        if getattr(args, name) <= 0:
            parser.error(f"--{name.replace('_', '-')} must be positive")
    for name in ("warmup", "max_foreign", "noisy_retries"):
        if getattr(args, name) < 0:
            parser.error(f"--{name.replace('_', '-')} must not be negative")
    cpus = len(os.sched_getaffinity(0))
    if args.backend_cpus is not None and not 0 < args.backend_cpus <= cpus:
        parser.error(f"--backend-cpus must be above 0 and at most {cpus} (the CPUs there are)")
    per_worker = args.backend_cpus_per_worker
    if per_worker is not None and not 0 < per_worker <= 1:
        # An nginx worker is one single-threaded process: one core at most.
        parser.error("--backend-cpus-per-worker must be above 0 and at most 1 (one core)")
    return args


def capped(args: argparse.Namespace) -> bool:
    """Whether the backends' CPU is capped (together or worker by worker)."""
    return args.backend_cpus is not None or args.backend_cpus_per_worker is not None


def command_line(argv: Sequence[str], prog: str = "compare") -> str:
    """How this run was invoked, for the figures' provenance."""
    # `python -m` gives __main__ a module spec; a script run by path has none.
    if getattr(sys.modules["__main__"], "__spec__", None) is not None:
        return shlex.join(["python", "-m", f"benchmarks.{prog}", *argv])
    return shlex.join(["python", f"benchmarks/{prog}.py", *argv])


def progress(message: str) -> None:
    # Progress goes to stderr so that stdout carries only the result table.
    print(message, file=sys.stderr, flush=True)


def build_peer(
    name: str, args: argparse.Namespace, workdir: Path, backends: NginxBackends, mode: str
) -> Proxy:
    """One peer, configured for `mode`; FileNotFoundError when it is not installed."""
    if name == "haproxy":
        return HAProxy(
            workdir,
            backends.backends,
            workers=args.workers,
            mode=mode,
            log_sessions=args.peer_log,
            extra_global=args.haproxy_global,
            extra_defaults=args.haproxy_defaults,
        )
    if name == "nginx":
        return NginxProxy(
            workdir, backends.backends, workers=args.workers, mode=mode, log_sessions=args.peer_log
        )
    if name == "caddy":
        return Caddy(
            workdir, backends.backends, workers=args.workers, mode=mode, log_sessions=args.peer_log
        )
    raise ValueError(f"unknown peer {name}")


PEER_CLASSES: dict[str, type[Proxy]] = {"haproxy": HAProxy, "nginx": NginxProxy, "caddy": Caddy}


def build_proxies(
    args: argparse.Namespace, workdir: Path, backends: NginxBackends, mode: str = "tcp"
) -> tuple[list[Proxy], list[str]]:
    """The proxies of the selection that can run `mode`, and notes on those left out.

    A peer named with --proxies or --only must be installed; the default selection
    leaves out, with a note, the peers that are not.
    """
    proxies: list[Proxy] = []
    notes: list[str] = []
    if mode != "tcp":
        workdir = workdir / mode  # each proxy keeps its files in workdir/<name>
        workdir.mkdir()
    for name in args.proxy_list or PROXIES:
        if name == LOADSTONE:
            proxies += [
                Loadstone(
                    workdir,
                    backends.backends,
                    workers=args.workers,
                    mode=mode,
                    binary=build.binary,
                    pure_python=args.pure_python,
                    log=args.loadstone_log,
                    name=build.name,
                )
                for build in args.builds
            ]
        elif mode not in PEER_CLASSES[name].modes:
            why = PEER_CLASSES[name].modes_note
            notes.append(f"{name}: no {mode} mode ({why}), left out of the {mode} scenarios")
        else:
            try:
                proxies.append(build_peer(name, args, workdir, backends, mode))
            except FileNotFoundError as exc:
                if args.proxy_list is not None:
                    raise
                notes.append(f"{name} left out of the {mode} scenarios: {exc}")
    return proxies, notes


def stop_proxy(proxy: Proxy) -> None:
    status = proxy.stop()
    # An unexpected exit status is worth seeing even though the figures are taken.
    if status is not None and status not in proxy.clean_exit_statuses:
        progress(f"warning: {proxy.name} exited with status {status}:\n{proxy.log_tail()}")


def run_scenario(
    scenario: Scenario,
    proxies: Sequence[Proxy],
    backends: NginxBackends,
    args: argparse.Namespace,
) -> list[Run]:
    # Per-worker figures only where each worker has its own cap.
    workers = backends.worker_pids() if args.backend_cpus_per_worker is not None else []

    def run_once(proxy: Proxy, duration: int, repeat: int) -> Run:
        idle = [p.pid for p in proxies if p is not proxy]
        return measure(
            proxy,
            scenario,
            duration=duration,
            threads=args.wrk_threads,
            backend_pids=backends.pids,
            backend_worker_pids=workers,
            idle_pids=idle,
            repeat=repeat,
        )

    if args.warmup:
        for proxy in proxies:
            warm = run_once(proxy, args.warmup, repeat=-1)
            progress(
                f"  {scenario.name:<14} {proxy.name:<16} warm-up  "
                f"{warm.wrk.requests_per_second:>10,.0f} req/s"
            )
    runs = []
    for repeat in range(args.repeat):
        # Alternate who goes first so slow drift (thermal, page cache, TIME_WAIT
        # build-up) does not always favour the same proxy.
        order = proxies if repeat % 2 == 0 else list(reversed(proxies))
        for proxy in order:
            attempts = []
            for attempt in range(args.noisy_retries + 1):
                if attempt:
                    load = wait_for_quiet(args.max_foreign, timeout=QUIET_TIMEOUT)
                    progress(f"    other load now {load:.2f} cores; measuring again")
                run = run_once(proxy, args.duration, repeat)
                attempts.append(run)
                noisy = run.foreign_cores > args.max_foreign
                flags = f"  ERRORS {run.wrk.errors}" if run.wrk.error_count else ""
                flags += f"  other load {run.foreign_cores:.2f} cores" if noisy else ""
                progress(
                    f"  {scenario.name:<14} {proxy.name:<16} run {repeat + 1:<4}"
                    f"{run.wrk.requests_per_second:>10,.0f} req/s "
                    f"{run.wrk.bytes_per_second / 2**20:>9,.1f} MB/s "
                    f"{run.cpu_us_per_request:>9,.1f} cpu us/req{backend_cost(run, args)}{flags}"
                )
                by_thread = run.thread_cpu_us_per_request
                if len(by_thread) > 1:
                    shares = ", ".join(f"{name} {us:.1f}" for name, us in by_thread.items())
                    progress(f"    cpu us/req by thread: {shares}")
                if not noisy:
                    break
            # Of the disturbed attempts, the least disturbed is the most faithful.
            runs.append(min(attempts, key=lambda r: r.foreign_cores))
    return runs


def backend_cost(run: Run, args: argparse.Namespace) -> str:
    """The backends' CPU per request and cores, for a progress line when they are capped."""
    if not capped(args) or not run.wrk.requests:
        return ""
    per_request = run.backend_cpu_seconds / run.wrk.requests * 1e6
    cores = run.backend_cpu_seconds / run.wrk.duration
    line = f" {per_request:>7,.1f} backend us/req {cores:.2f} cores"
    if run.backend_worker_cores:
        line += f" ({' / '.join(f'{c:.2f}' for c in run.backend_worker_cores)} per worker)"
    return line


def collect(
    args: argparse.Namespace, raw_argv: Sequence[str], prog: str = "compare"
) -> tuple[dict[str, Any], list[Run], list[str]]:
    """Start backends and proxies, run every scenario, stop everything; return the
    runs and notes on the proxies left out."""
    workdir = Path(tempfile.mkdtemp(prefix="loadstone-bench-"))
    runs: list[Run] = []
    notes: list[str] = []
    try:
        with contextlib.ExitStack() as stack:
            backends = NginxBackends(workdir, args.backend_shape)
            stack.callback(backends.stop)
            backends_line = f"backends: {args.backend_shape.describe()}"
            if args.backend_cpus is not None:
                # Unwound before backends.stop: the processes leave the cgroup, and it
                # is removed, whatever ends the run.
                cap = stack.enter_context(CpuCap(args.backend_cpus, "backends"))
                cap.add_tree(*backends.pids)
                backends_line += f", capped at {cap.describe()}"
            elif args.backend_cpus_per_worker is not None:
                # Likewise one cgroup per worker, each removed whatever ends the run.
                workers = backends.worker_pids()
                each = cap_each(stack, args.backend_cpus_per_worker, workers, "backend-worker")
                backends_line += f", {describe_each(each)}"
            progress(f"{backends_line}: {', '.join(b.address for b in backends.backends)}")
            versions: dict[str, str] = {}
            meta = {
                **report.machine_info(REPO),
                "command": command_line(raw_argv, prog),
                "backends": backends_line,
                "session_logs": logging_line(args),
                "proxies": versions,
            }
            # One set of proxies per mode (tcp, http), started when the first
            # scenario of that mode comes and kept for the rest of the run.
            by_mode: dict[str, list[Proxy]] = {}
            for scenario in args.scenario_list:
                proxies = by_mode.get(scenario.mode)
                if proxies is None:
                    proxies, left_out = build_proxies(args, workdir, backends, scenario.mode)
                    by_mode[scenario.mode] = proxies
                    notes += left_out
                    for note in left_out:
                        progress(f"note: {note}")
                    for proxy in proxies:
                        proxy.start()
                        stack.callback(stop_proxy, proxy)
                        versions.setdefault(proxy.name, proxy.version())
                        progress(
                            f"{proxy.name} ({scenario.mode}): {versions[proxy.name]}, "
                            f"pid {proxy.pid}, port {proxy.port}"
                        )
                if not proxies:
                    notes.append(f"{scenario.name}: none of the selected proxies runs it")
                    continue
                runs += run_scenario(scenario, proxies, backends, args)
    finally:
        if args.keep_tmp:
            progress(f"configs and logs kept in {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    return meta, runs, notes


def peer_logging(args: argparse.Namespace) -> str:
    """The peers' logging in the terms of loadstone's `log` option."""
    return "all" if args.peer_log else "none"


def logging_line(args: argparse.Namespace) -> str:
    return f"session logs: peers {peer_logging(args)}, loadstone {args.loadstone_log}"


def equal_logging(args: argparse.Namespace) -> bool:
    """Whether loadstone and the peers log the same sessions (errors-only has no
    twin among the peers in the harness, so it never counts as equal)."""
    return bool(args.loadstone_log == peer_logging(args))


def options_record(args: argparse.Namespace) -> dict[str, Any]:
    """The parsed options as JSON values, for the provenance of a --json file."""
    options = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}
    options["scenario_list"] = [s.name for s in args.scenario_list]
    options["builds"] = [{"name": b.name, "binary": str(b.binary)} for b in args.builds]
    options["backend_shape"] = dataclasses.asdict(args.backend_shape)
    return options


def rate_shortfalls(summaries: Sequence[Summary]) -> list[str]:
    """Notes on fixed-rate runs (http-p99) that fell short of their rate.

    A capped backend may serve fewer requests per second than the scenario's fixed
    rate (a run at 0.02 CPU served 2,528 of 5,000, p99 50 ms). Its p99 is then the
    throttled backend's queue, not the latency a proxy adds; and an HTTP/1.1
    h2load client holds its next request until the previous one is answered, so
    the time requests waited to be sent may not show at all. Such a run is kept,
    flagged; --backend-cpus 0.1 and above serve 5,000 req/s of ~100 B answers.
    """
    notes = []
    for s in summaries:
        rate = SCENARIOS[s.scenario].rate
        if rate and s.requests_per_second < 0.95 * rate:
            notes.append(
                f"{s.scenario}/{s.proxy}: {s.requests_per_second:,.0f} of the fixed "
                f"{rate:,} req/s: the capped backends cannot serve that rate, so this p99 "
                "is their queue, not the proxy's latency - raise the backends' cap for a "
                "meaningful figure"
            )
    return notes


def publish(
    args: argparse.Namespace, meta: dict[str, Any], runs: list[Run], left_out: Sequence[str] = ()
) -> int:
    """Print the tables (and Markdown, JSON if asked); return the exit status."""
    summaries = [
        Summary.of([r for r in runs if (r.scenario, r.proxy) == key])
        for key in dict.fromkeys((r.scenario, r.proxy) for r in runs)
    ]
    candidates = [b.name for b in args.builds]
    metrics: Sequence[report.Metric]
    if args.backend_cpus_per_worker is not None:
        metrics = report.PER_WORKER_METRICS
    elif args.backend_cpus is not None:
        metrics = report.CAPPED_BACKEND_METRICS
    else:
        metrics = report.METRICS
    print(
        f"\n{meta['date']}  {meta['nproc']} x {meta['cpu_model']}  "
        f"workers={args.workers}  duration={args.duration}s  repeat={args.repeat}  "
        f"wrk -t{args.wrk_threads}  {meta['backends']}  {logging_line(args)}\n"
    )
    print(report.tables(summaries, candidates, markdown=False, metrics=metrics))
    pairs = report.paired(runs, candidates)
    if pairs:
        print("\nratio per repeat (median, range):\n" + "\n".join(p.describe() for p in pairs))
    notes = [*left_out, *report.warnings(summaries, max_foreign=args.max_foreign)]
    if not equal_logging(args):
        notes.append(f"unequal work: {logging_line(args)}")
    if capped(args):
        notes += rate_shortfalls(summaries)
    if notes:
        print("\n" + "\n".join(f"note: {n}" for n in notes))
    if args.markdown:
        print(
            "\n"
            + report.markdown_header(meta)
            + "\n\n"
            + report.tables(summaries, candidates, markdown=True, metrics=metrics)
        )
        if pairs:
            print("\nRatio per repeat (median, range): " + "; ".join(p.describe() for p in pairs))
        if notes:
            print("\n" + "\n".join(f"Note: {n}" for n in notes))
    if args.json:
        document = {
            "meta": meta,
            "options": options_record(args),
            "summary": [dataclasses.asdict(s) for s in summaries],
            "paired": [dataclasses.asdict(p) for p in pairs],
            "runs": [r.as_dict() for r in runs],
        }
        args.json.write_text(json.dumps(document, indent=2) + "\n")
        progress(f"results written to {args.json}")
    # A run with errors is flagged above; the exit status says so to scripts too.
    return 1 if any(s.errors for s in summaries) else 0


def main(argv: Sequence[str] | None = None, prog: str = "compare") -> int:
    raw_argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(raw_argv, prog)
    # Turn SIGTERM into an exception so that cleanup stops every child and removes
    # the temp dir, as it does on Ctrl-C.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
    try:
        meta, runs, left_out = collect(args, raw_argv, prog)
    except KeyboardInterrupt:
        progress("interrupted")
        return 130
    except (RuntimeError, OSError, subprocess.SubprocessError, WrkOutputError) as exc:
        # Expected failures (a tool missing, a proxy refusing its configuration or
        # dying, wrk failing) carry their own explanation; no traceback needed.
        progress(f"{prog}: {exc}")
        return 2
    return publish(args, meta, runs, left_out)


if __name__ == "__main__":
    sys.exit(main())
