"""Counts that stay valid on a loaded machine: syscalls and context switches per
request, each process's CPU share, and how a proxy spreads its server connections
and requests over the workers of one multi-worker backend.

    python benchmarks/costs.py [-d 5] [--strace-seconds 3] [--backends one-multi|two-single]
        [--proxies loadstone,loadstone-pure,haproxy,nginx,caddy]
        [--scenarios http-keepalive,http-close]
        [--loadstone before=/path/to/.venv/bin/loadstone --loadstone after=.venv/bin/loadstone]
        [--log none|all] [--pin] [--markdown] [--json out.json]

Throughput moves with whatever else the machine runs; these figures do not (or
far less): a syscall count per request is the same on a quiet and a busy box, and
the share of a multi-worker backend's requests each worker serves depends on how
the proxy opens and reuses server connections, not on the load. The backend is
one nginx with two workers on one port (`--backends one-multi` of compare.py,
the default), logging `$pid $connection` per request so that requests and
connections can be counted per worker, or two single-worker nginx
(`--backends two-single`, no spread to count). Every proxy runs one worker,
logging nothing (`--log none`, the default) or every session or request
(`--log all`: the peers as compare.py's `--peer-log` makes them, loadstone with
`log: all`, equal work); Caddy (a peer in http mode only) is counted in the http
scenarios. With `--pin` each proxy has the last CPU to itself and wrk and the
backends share the others (harness/pinning.py): the idle share of each CPU then
says which side sets the rate.

For each scenario and proxy:
- a wrk run of `-d` seconds: requests, the proxy's context switches (voluntary
  and involuntary, all threads) per request, the CPU share (in cores) of the
  proxy, the backend, wrk and the rest of the machine, the cores left idle, and
  how long the proxy's and the backend's threads waited on a run queue per
  request (runnable but not running: /proc/PID/task/TID/schedstat), which is
  where a machine that is short of CPU, or slow to wake an idle one, shows;
  the same shares as CPU microseconds per request, idle included: they add up
  to the whole machine's cores per request, so a proxy that needs less CPU per
  request but leaves more of the machine idle per request is held back by
  latency (waking the processes a connection crosses), not by CPU; the CPU
  microseconds per request of the proxy, the backend and wrk split into user
  space and system (kernel) time, which says how much of a new connection's
  cost is the program's own instructions and how much the kernel's (accept,
  connect, close, the loopback network stack's softirqs, which the kernel's
  tick accounting charges to whichever process they interrupt: a sampled split,
  harness/procs.py's user_system_seconds); and the idle share of each CPU;
- a run of `--strace-seconds` with `strace -c -f` attached to the proxy's
  processes: system calls per request (strace slows the proxy down; the count
  per request does not change with it), the most frequent calls listed;
- in keep-alive scenarios behind one-multi: the server connections per backend
  worker (`ss`, mid-run) and the requests each worker served (the access log).

The table is Markdown; `--markdown` puts the invocation's provenance above it
(date, machine, git revision, command, backend shape, logging, duration, the
proxies' versions) so that it can go into benchmarks/README.md as it is.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import json
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.compare import command_line, logging_line
from benchmarks.harness import report, wrk
from benchmarks.harness.backends import SHAPES, NginxBackends
from benchmarks.harness.caddy import Caddy
from benchmarks.harness.lineup import Build, parse_builds
from benchmarks.harness.measure import Run, measure, wrk_argv
from benchmarks.harness.nginx_proxy import NginxProxy
from benchmarks.harness.pinning import Pinning, cpu_times, idle_cores
from benchmarks.harness.procs import process_tree
from benchmarks.harness.proxies import HAProxy, Loadstone, Proxy
from benchmarks.harness.scenarios import SCENARIOS, Scenario

PROXY_NAMES = ("loadstone", "loadstone-pure", "haproxy", "nginx", "caddy")
DEFAULT_SCENARIOS = ("http-keepalive", "http-close")
LOG_MODES = ("none", "all")
# The shares of the machine a run is split into, in the order of the columns.
SHARES = ("proxy", "backend", "wrk", "other", "idle")
# The shares whose CPU is split into user and system time.
SPLIT_SHARES = ("proxy", "backend", "wrk")
REPO = Path(__file__).resolve().parent.parent


@dataclass(slots=True)
class Spread:
    """How one keep-alive run used the backend's workers (pid -> count)."""

    connections: dict[int, int] = field(default_factory=dict)  # established, mid-run (ss)
    requests: dict[int, int] = field(default_factory=dict)  # served (access log)
    connections_used: dict[int, int] = field(default_factory=dict)  # that served >= 1


@dataclass(slots=True)
class Costs:
    proxy: str
    scenario: str
    requests: int
    requests_per_second: float  # under load: for scale only
    ctx_switches_per_request: float
    cpu_cores: dict[str, float]  # proxy, backend, wrk, other, idle: average cores
    runqueue_us_per_request: dict[str, float]  # proxy, backend: waiting to run
    syscalls_per_request: float
    top_syscalls: dict[str, float]  # name -> calls per request
    spread: Spread | None
    # The shares of cpu_cores as CPU microseconds per request, and "machine", their
    # sum: all cores for the run's duration, divided among its requests.
    cpu_us_per_request: dict[str, float] = field(default_factory=dict)
    backends: str = ""  # the backend shape (--backends)
    log: str = "none"  # who logs: every proxy every session/request (all) or nobody
    idle_per_cpu: dict[int, float] = field(default_factory=dict)  # cpu -> idle share
    pinning: str = ""  # with --pin: which CPUs the proxy and the rest had
    # cpu_us_per_request's proxy, backend and wrk split into user-space and system
    # (kernel, softirqs included) microseconds per request: SPLIT_SHARES -> us.
    user_us_per_request: dict[str, float] = field(default_factory=dict)
    system_us_per_request: dict[str, float] = field(default_factory=dict)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="costs", description=__doc__.split("\n\n")[0])
    parser.add_argument("-d", "--duration", type=int, default=5, help="seconds per wrk run")
    parser.add_argument(
        "--strace-seconds", type=int, default=3, help="seconds of the run under strace -c"
    )
    parser.add_argument("--proxies", default=",".join(PROXY_NAMES))
    parser.add_argument("--scenarios", default=",".join(DEFAULT_SCENARIOS))
    parser.add_argument(
        "--backends",
        choices=sorted(SHAPES),
        default="one-multi",
        help="the backend shape (compare.py's): the spread is counted behind one-multi only",
    )
    parser.add_argument(
        "--loadstone",
        action="append",
        metavar="[LABEL=]PATH",
        help="a loadstone build to count (repeatable, as in compare.py); each runs on "
        "both data paths when --proxies names loadstone and loadstone-pure",
    )
    parser.add_argument(
        "--log",
        choices=LOG_MODES,
        default="none",
        help="none (default): nobody logs; all: every peer logs every session or request "
        "(compare.py's --peer-log) and loadstone runs with `log: all`",
    )
    parser.add_argument(
        "--pin",
        action="store_true",
        help="give the proxy the last CPU to itself, wrk and the backends the others",
    )
    parser.add_argument(
        "--markdown",
        action="store_true",
        help="print the invocation's provenance (date, versions, settings) above the table",
    )
    parser.add_argument("--json", type=Path, help="write the figures here too")
    parser.add_argument("--keep-tmp", action="store_true")
    args = parser.parse_args(argv)
    args.proxy_list = [p for p in args.proxies.split(",") if p]
    unknown = set(args.proxy_list) - set(PROXY_NAMES)
    if unknown:
        parser.error(f"unknown proxies {sorted(unknown)}; known: {', '.join(PROXY_NAMES)}")
    try:
        args.builds = parse_builds(args.loadstone)
    except ValueError as exc:
        parser.error(str(exc))
    by_name = SCENARIOS
    try:
        args.scenario_list = [by_name[s] for s in args.scenarios.split(",") if s]
    except KeyError as exc:
        parser.error(f"unknown scenario {exc}")
    if any(s.rate for s in args.scenario_list):
        parser.error("fixed-rate scenarios (h2load) are not counted here")
    if args.pin:
        try:
            Pinning.of_machine()
        except ValueError as exc:
            parser.error(f"--pin: {exc}")
    # compare.py's names for the same switches, which its logging_line() reads.
    args.peer_log = args.log == "all"
    args.loadstone_log = args.log
    return args


def build(
    name: str,
    builds: Sequence[Build],
    workdir: Path,
    backends: NginxBackends,
    mode: str,
    log: str = "none",
) -> list[Proxy]:
    """The proxies `name` stands for (one per loadstone build), one worker, each
    logging every session or request (`log` all) or nothing (none)."""
    log_sessions = log == "all"
    if name in ("loadstone", "loadstone-pure"):
        pure = name == "loadstone-pure"
        return [
            Loadstone(
                workdir,
                backends.backends,
                workers=1,
                mode=mode,
                binary=b.binary,
                pure_python=pure,
                log=log,
                name=f"{b.name}-pure" if pure else b.name,
            )
            for b in builds
        ]
    if name == "haproxy":
        return [
            HAProxy(workdir, backends.backends, workers=1, mode=mode, log_sessions=log_sessions)
        ]
    if name == "caddy":  # a peer in http mode only
        if mode not in Caddy.modes:
            return []
        return [Caddy(workdir, backends.backends, workers=1, mode=mode, log_sessions=log_sessions)]
    return [NginxProxy(workdir, backends.backends, workers=1, mode=mode, log_sessions=log_sessions)]


def context_switches(pid: int) -> int:
    """Voluntary + involuntary context switches of every thread of the tree at `pid`."""
    total = 0
    for member in process_tree(pid):
        with contextlib.suppress(OSError):
            for task in Path(f"/proc/{member}/task").iterdir():
                with contextlib.suppress(OSError):
                    for line in (task / "status").read_text().splitlines():
                        if "ctxt_switches:" in line:
                            total += int(line.split()[1])
    return total


def runqueue_seconds(pids: Sequence[int]) -> float:
    """Time every thread of the trees at `pids` spent runnable but waiting for a
    CPU (the second field of /proc/PID/task/TID/schedstat, in nanoseconds)."""
    total = 0
    for pid in pids:
        for member in process_tree(pid):
            with contextlib.suppress(OSError):
                for task in Path(f"/proc/{member}/task").iterdir():
                    with contextlib.suppress(OSError, IndexError, ValueError):
                        total += int((task / "schedstat").read_text().split()[1])
    return total / 1e9


def backend_workers(backends: NginxBackends) -> list[int]:
    """The worker pids of the backend nginx (its master's descendants)."""
    return sorted(p for root in backends.pids for p in process_tree(root) if p != root)


def _ss(filter_expr: str) -> list[list[str]]:
    out = subprocess.run(
        ["ss", "-tnpH", "state", "established", filter_expr],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return [line.split() for line in out.splitlines()]


def _port(endpoint: str) -> int:
    return int(endpoint.rsplit(":", 1)[1])


def established_per_pid(port: int, proxy_pid: int, pids: Sequence[int]) -> dict[int, int]:
    """The proxy's established connections to `port`, per accepting backend process.

    ss shows the owner of each end: the proxy's ends give its local ports, and the
    backend's ends with those peer ports are counted per backend pid (connections
    other proxies left idle on the same backend are not).
    """
    proxy = {f"pid={p}," for p in process_tree(proxy_pid)}
    ours = {
        _port(fields[2])
        for fields in _ss(f"( dport = :{port} )")
        if len(fields) >= 5 and any(tag in fields[4] for tag in proxy)
    }
    counts = dict.fromkeys(pids, 0)
    for fields in _ss(f"( sport = :{port} )"):
        if len(fields) >= 5 and _port(fields[3]) in ours:
            for pid in pids:
                if f"pid={pid}," in fields[4]:
                    counts[pid] += 1
    return counts


def log_offset(path: Path) -> int:
    return path.stat().st_size if path.exists() else 0


def requests_per_pid(path: Path, offset: int) -> tuple[dict[int, int], dict[int, int]]:
    """From the `$pid $connection` log after `offset`: requests and connections per pid."""
    requests: collections.Counter[int] = collections.Counter()
    connections: dict[int, set[str]] = collections.defaultdict(set)
    with path.open("rb") as log:
        log.seek(offset)
        for line in log:
            pid, _, conn = line.decode().strip().partition(" ")
            if pid.isdigit():
                requests[int(pid)] += 1
                connections[int(pid)].add(conn)
    return dict(requests), {pid: len(c) for pid, c in connections.items()}


def parse_strace_summary(text: str) -> dict[str, int]:
    """`strace -c` table -> calls per syscall."""
    calls: dict[str, int] = {}
    for line in text.splitlines():
        parts = line.split()
        # % time, seconds, usecs/call, calls, [errors,] syscall
        if len(parts) in (5, 6) and parts[3].isdigit() and parts[-1] != "total":
            calls[parts[-1]] = calls.get(parts[-1], 0) + int(parts[3])
    return calls


def strace_run(
    proxy: Proxy, scenario: Scenario, seconds: int, workdir: Path, prefix: Sequence[str] = ()
) -> dict[str, float]:
    """Syscalls per request of `proxy` over a wrk run with strace -c attached."""
    out = workdir / f"strace-{proxy.name}-{scenario.name}.txt"
    argv = ["strace", "-c", "-f", "-qq", "-o", str(out)]
    for pid in process_tree(proxy.pid):
        argv += ["-p", str(pid)]
    tracer = subprocess.Popen(argv, stderr=subprocess.DEVNULL)
    try:
        time.sleep(1.0)  # strace says nothing when it has attached (-qq); a benchmark may wait
        argv = [*prefix, *wrk_argv(proxy, scenario, duration=seconds, threads=1)]
        result, _ = wrk.run(argv, duration=seconds)
    finally:
        tracer.send_signal(signal.SIGINT)
        tracer.wait(timeout=30)
    calls = parse_strace_summary(out.read_text())
    requests = max(result.requests, 1)
    per_request = {name: n / requests for name, n in calls.items()}
    per_request["total"] = sum(calls.values()) / requests
    return per_request


def cpu_us_per_request(cores: dict[str, float], seconds: float, requests: int) -> dict[str, float]:
    """Each share of the machine (average cores over `seconds`) as microseconds per
    request, and "machine": their sum, the whole machine's cores per request (on 2
    cores at 25,000 req/s, 80 us), which no proxy's figures can exceed."""
    per_request = {k: v * seconds * 1e6 / max(requests, 1) for k, v in cores.items()}
    per_request["machine"] = sum(per_request.values())
    return per_request


def user_system_us_per_request(run: Run) -> tuple[dict[str, float], dict[str, float]]:
    """The proxy's, the backend's and wrk's CPU of `run` as (user, system)
    microseconds per request, each keyed by SPLIT_SHARES."""
    per_request = 1e6 / max(run.wrk.requests, 1)
    user = {
        "proxy": run.proxy_user_seconds,
        "backend": run.backend_user_seconds,
        "wrk": run.wrk.wrk_user_seconds,
    }
    total = {
        "proxy": run.proxy_cpu_seconds,
        "backend": run.backend_cpu_seconds,
        "wrk": run.wrk.wrk_cpu_seconds,
    }
    return (
        {k: user[k] * per_request for k in SPLIT_SHARES},
        {k: (total[k] - user[k]) * per_request for k in SPLIT_SHARES},
    )


def wrk_prefix(pinning: Pinning | None) -> list[str]:
    """What goes before wrk's command line: with --pin, the CPUs the proxy does not have."""
    return pinning.rest_prefix() if pinning else []


# run_one's signature: main() takes another for its tests (the seam that shows
# which processes it pinned where without a benchmark run).
RunOne = Callable[[Proxy, Scenario, NginxBackends, argparse.Namespace, Pinning | None], Costs]


def run_one(
    proxy: Proxy,
    scenario: Scenario,
    backends: NginxBackends,
    args: argparse.Namespace,
    pinning: Pinning | None = None,
) -> Costs:
    prefix = wrk_prefix(pinning)
    workers = backend_workers(backends)
    log = backends.access_log(backends.backends[0])
    offset = log_offset(log)
    sampled: dict[int, int] = {}
    sampler = None
    # Keep-alive behind one multi-worker server: its connections stay; count them mid-run.
    if not scenario.headers and backends.shape.workers > 1:
        port = backends.backends[0].port

        def sample() -> None:
            time.sleep(args.duration / 2)
            sampled.update(established_per_pid(port, proxy.pid, workers))

        sampler = threading.Thread(target=sample)
        sampler.start()
    ctx_before = context_switches(proxy.pid)
    waited_before = runqueue_seconds([proxy.pid]), runqueue_seconds(backends.pids)
    cpus_before = cpu_times()
    run = measure(
        proxy,
        scenario,
        duration=args.duration,
        threads=1,
        backend_pids=backends.pids,
        prefix=prefix,
    )
    idle_per_cpu = idle_cores(cpus_before, cpu_times())
    ctx_used = context_switches(proxy.pid) - ctx_before
    waited = (
        runqueue_seconds([proxy.pid]) - waited_before[0],
        runqueue_seconds(backends.pids) - waited_before[1],
    )
    spread = None
    if sampler is not None:
        sampler.join()
        time.sleep(0.2)  # nginx writes its log line after the response
        served, used = requests_per_pid(log, offset)
        spread = Spread(connections=sampled, requests=served, connections_used=used)
    seconds = run.wrk.duration or args.duration
    syscalls = strace_run(proxy, scenario, args.strace_seconds, args.workdir, prefix)
    total = syscalls.pop("total")
    top = dict(sorted(syscalls.items(), key=lambda kv: -kv[1])[:8])
    cores = {
        "proxy": run.proxy_cpu_seconds / seconds,
        "backend": run.backend_cpu_seconds / seconds,
        "wrk": run.wrk.wrk_cpu_seconds / seconds,
        "other": run.foreign_cpu_seconds / seconds,
    }
    cores["idle"] = max(0.0, run.host_cpu_seconds / seconds - sum(cores.values()))
    per_request = 1e6 / max(run.wrk.requests, 1)
    user_us, system_us = user_system_us_per_request(run)
    return Costs(
        proxy=proxy.name,
        scenario=scenario.name,
        requests=run.wrk.requests,
        requests_per_second=run.wrk.requests_per_second,
        ctx_switches_per_request=ctx_used / max(run.wrk.requests, 1),
        cpu_cores=cores,
        runqueue_us_per_request={
            "proxy": waited[0] * per_request,
            "backend": waited[1] * per_request,
        },
        syscalls_per_request=total,
        top_syscalls=top,
        spread=spread,
        cpu_us_per_request=cpu_us_per_request(cores, seconds, run.wrk.requests),
        backends=args.backends,
        log=args.log,
        idle_per_cpu=idle_per_cpu,
        pinning=pinning.describe() if pinning else "",
        user_us_per_request=user_us,
        system_us_per_request=system_us,
    )


def share(counts: dict[int, int]) -> str:
    """'49/11' style: the counts per worker, largest first."""
    values = sorted(counts.values(), reverse=True)
    return "/".join(str(v) for v in values) if values else "-"


def percent_split(counts: dict[int, int]) -> str:
    total = sum(counts.values())
    values = sorted(counts.values(), reverse=True)
    return "/".join(f"{100 * v / total:.0f}%" for v in values) if total else "-"


TABLE_HEADER = (
    "scenario",
    "proxy",
    "syscalls/req",
    "ctx switches/req",
    "cores: proxy / backend / wrk / other / idle",
    "CPU us/req: proxy / backend / wrk / other / idle = machine",
    "user / sys us/req: proxy, backend, wrk",
    "run-queue us/req: proxy / backend",
    "idle share per CPU",
    "conns per backend worker",
    "requests per worker",
    "req/s (loaded)",
)


def table_row(c: Costs) -> tuple[str, ...]:
    cores = " / ".join(f"{c.cpu_cores[k]:.2f}" for k in SHARES)
    us = c.cpu_us_per_request
    cpu = " / ".join(f"{us[k]:.1f}" for k in SHARES) + f" = {us['machine']:.1f}"
    user, system = c.user_us_per_request, c.system_us_per_request
    split = ", ".join(f"{user.get(k, 0.0):.1f} / {system.get(k, 0.0):.1f}" for k in SPLIT_SHARES)
    waits = " / ".join(f"{c.runqueue_us_per_request[k]:.1f}" for k in ("proxy", "backend"))
    return (
        c.scenario,
        c.proxy,
        f"{c.syscalls_per_request:.2f}",
        f"{c.ctx_switches_per_request:.3f}",
        cores,
        cpu,
        split,
        waits,
        " / ".join(f"cpu{cpu} {idle:.2f}" for cpu, idle in sorted(c.idle_per_cpu.items())),
        share(c.spread.connections) if c.spread else "-",
        percent_split(c.spread.requests) if c.spread else "-",
        f"{c.requests_per_second:,.0f}",
    )


def render(results: Sequence[Costs], meta: dict[str, Any] | None = None) -> str:
    """The Markdown table and each row's most frequent system calls; with `meta`
    (--markdown), the invocation's provenance and settings above them."""
    parts = []
    if meta is not None:
        parts.append(
            report.markdown_header(meta)
            + f"  \n{meta['settings']}"  # Markdown's line break: two spaces
        )
    parts.append(report.markdown_table(TABLE_HEADER, [table_row(c) for c in results]))
    parts.append(
        "\n".join(
            f"{c.scenario} {c.proxy}: "
            + ", ".join(f"{name} {n:.2f}" for name, n in c.top_syscalls.items())
            for c in results
        )
    )
    return "\n\n".join(parts)


def provenance(args: argparse.Namespace, raw_argv: Sequence[str]) -> dict[str, Any]:
    """compare.py's provenance of a run (report.markdown_header's keys), and the
    settings of this one; the proxies' versions are added as they start."""
    return {
        **report.machine_info(REPO),
        "command": command_line(raw_argv, "costs"),
        "backends": f"backends: {SHAPES[args.backends].describe()}",
        "session_logs": logging_line(args),
        "proxies": {},
        "settings": f"--backends {args.backends}, --log {args.log}: one worker per proxy, "
        f"wrk -t1 for {args.duration} s per scenario and proxy, then strace -c -f for "
        f"{args.strace_seconds} s"
        + (f"; pinned: {Pinning.of_machine().describe()}" if args.pin else ""),
    }


def main(argv: Sequence[str] | None = None, run: RunOne = run_one) -> int:
    raw_argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(raw_argv)
    meta = provenance(args, raw_argv)
    args.workdir = Path(tempfile.mkdtemp(prefix="loadstone-costs-"))
    results: list[Costs] = []
    pinning = Pinning.of_machine() if args.pin else None
    try:
        with contextlib.ExitStack() as stack:
            backends = NginxBackends(args.workdir, SHAPES[args.backends], log_workers=True)
            stack.callback(backends.stop)
            if pinning:
                pinning.pin_rest(backends.pids)
            by_mode: dict[str, list[Proxy]] = {}
            for scenario in args.scenario_list:
                if scenario.mode not in by_mode:
                    moddir = args.workdir / scenario.mode
                    moddir.mkdir()
                    by_mode[scenario.mode] = []
                    for name in args.proxy_list:
                        for proxy in build(
                            name, args.builds, moddir, backends, scenario.mode, args.log
                        ):
                            proxy.start()
                            stack.callback(proxy.stop)
                            if pinning:
                                pinning.pin_proxy(proxy.pid)
                            meta["proxies"].setdefault(proxy.name, proxy.version())
                            by_mode[scenario.mode].append(proxy)
                for proxy in by_mode[scenario.mode]:
                    print(f"  {scenario.name} {proxy.name} ...", file=sys.stderr, flush=True)
                    results.append(run(proxy, scenario, backends, args, pinning))
    finally:
        if args.keep_tmp:
            print(f"kept {args.workdir}", file=sys.stderr)
        else:
            shutil.rmtree(args.workdir, ignore_errors=True)
    print(render(results, meta if args.markdown else None))
    if args.json:
        args.json.write_text(json.dumps([asdict(r) for r in results], indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
