"""TLS side by side: loadstone, HAProxy and nginx terminating TLS (http mode) in
front of the same two nginx backends.

    python benchmarks/tls_compare.py [-d 10] [--workers 1] [--repeat 1] [--json OUT]
    python benchmarks/tls_compare.py --quick            # a few seconds per figure
    python -m benchmarks.tls_compare --proxies loadstone,haproxy --scenarios handshake-ecdsa

Every proxy gets the same certificate (ECDSA P-256, or RSA 2048 for
handshake-rsa; made at run time by a throw-away CA), the same TLS 1.2 cipher
list (Mozilla "intermediate", loadstone's default), TLS 1.2 and 1.3 with
OpenSSL's 1.3 suites, a session cache and tickets, `workers` = `nbthread` =
`worker_processes`, and logs every request. The scenarios are the issue's
targets (issue 13):

    handshake-ecdsa  a new connection per request, full handshake: `openssl
    handshake-rsa    s_time -new` (--clients of them at once), connections/s and
                     the proxy's CPU per connection
    resumed          the same with resumed sessions: `openssl s_time -reuse`
    keepalive        keep-alive requests over TLS, 50 connections (wrk): req/s
                     and the proxy's CPU per request
    10m              10 MiB responses over TLS, 4 connections (wrk): MiB/s
    idle             --idle-clients TLS connections, handshake done, no request:
                     the proxy's RSS growth per connection

The output is a table of each figure and loadstone's ratio to each peer, with
the target for the ratio to HAProxy beside it (for `idle`, lower is better:
the ratio is loadstone's bytes over the peer's); with --repeat, the medians
of the runs, whose order alternates. Below it: the path the status
API says loadstone's TLS listener is served by (`native`, or `pure` with its
`data_path_reason`: the two are different programs), and what each proxy
negotiates with `openssl s_client` (version, cipher, key exchange group), which
must be the same for a fair run. `--perf DIR` records each proxy under each
scenario with `perf record -g` and writes a summary by library and by function
beside each profile (DIR/SCENARIO-PROXY.txt).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import http.client
import json
import re
import resource
import shutil
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make `benchmarks` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.tlscerts import Ca, Issued

from benchmarks.compare import command_line, progress, stop_proxy
from benchmarks.harness import report, wrk
from benchmarks.harness.backends import (
    DEFAULT_SHAPE,
    LARGE_PATH,
    SHAPES,
    SMALL_PATH,
    Backend,
    NginxBackends,
)
from benchmarks.harness.net import LOOPBACK, free_ports
from benchmarks.harness.nginx_proxy import NginxProxy
from benchmarks.harness.perf import recorded
from benchmarks.harness.procs import cpu_seconds, rss_bytes
from benchmarks.harness.proxies import MAXCONN, HAProxy, Loadstone, Proxy

REPO = Path(__file__).resolve().parent.parent
PROXIES = ("loadstone", "haproxy", "nginx")
# Mozilla "intermediate" for TLS 1.2: loadstone's default `ciphers`, given to all.
CIPHERS = (
    "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:"
    "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:"
    "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305"
)
SERVER_NAME = "bench.test"
# How long each proxy waits for a request head on a new connection: the idle
# scenario's clients send none, and 8,000 handshakes on a loaded machine take
# longer than the 10 s the proxies default to (HAProxy's `timeout http-request`,
# loadstone's timeouts.http_request), which closed the first clients before the
# RSS was read. The same for all three.
REQUEST_TIMEOUT_S = 300
# Descriptors a proxy may need per connection it admits: two (the client's and
# a server's); HAProxy also counts half a pipe pair per connection unless told
# otherwise (`maxpipes`), and refuses to start past the hard limit.
FDS_PER_CONN = 2
HAPROXY_PIPES = 64  # the TLS scenarios never splice


def room_for(idle_clients: int) -> int:
    """The `maxconn` every proxy gets: the harness's usual figure, or more when
    the idle scenario holds more clients (HAProxy closes the clients past its
    maxconn, so they would hold nothing). Within the descriptor limit of this
    process, which the proxies inherit, raised to the hard limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        return max(MAXCONN, idle_clients + 1000)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    fits = (hard - 2 * HAPROXY_PIPES - 1000) // FDS_PER_CONN
    return max(MAXCONN, min(idle_clients + 1000, fits))


def _with_maxconn(path: Path, old: str, new: str, count: int) -> Path:
    text = path.read_text()
    if text.count(old) != count:
        raise RuntimeError(f"{path}: expected {count} {old!r} to change")
    path.write_text(text.replace(old, new))
    return path


@dataclass(frozen=True, slots=True)
class Scenario:
    name: str
    key: str  # the certificate the proxies present: ecdsa | rsa
    unit: str  # of the figure
    higher_is_better: bool
    target: str  # the issue's target for loadstone / HAProxy


SCENARIOS = {
    s.name: s
    for s in (
        Scenario("handshake-ecdsa", "ecdsa", "conn/s", True, ">= 1.0"),
        Scenario("handshake-rsa", "rsa", "conn/s", True, ">= 1.0"),
        Scenario("resumed", "ecdsa", "conn/s", True, ">= 1.1"),
        Scenario("keepalive", "ecdsa", "req/s", True, ">= 1.1 (CPU/req <= 0.9)"),
        Scenario("10m", "ecdsa", "MiB/s", True, ">= 1.2"),
        Scenario("idle", "ecdsa", "bytes/conn", False, "<= 1.0"),
    )
}


@dataclass(frozen=True, slots=True)
class Figure:
    scenario: str
    proxy: str
    value: float  # in the scenario's unit
    cpu_us: float  # the proxy's CPU per connection or request (0 for idle)
    count: int  # connections, requests or clients measured
    seconds: float  # wall time of the measurement
    errors: int
    # s_time: the share of connections that resumed a session (its "r" marks,
    # "*" for a full handshake); 0 for the other scenarios
    resumed_share: float = 0.0


# -- the proxies, terminating TLS -----------------------------------------------------


def https_get(port: int, path: str = SMALL_PATH, timeout: float = 10.0) -> tuple[int, int]:
    """One GET over TLS without verification (the probe only checks the relay)."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    conn = http.client.HTTPSConnection(LOOPBACK, port, timeout=timeout, context=ctx)
    try:
        conn.request("GET", path, headers={"Host": SERVER_NAME})
        response = conn.getresponse()
        return response.status, len(response.read())
    finally:
        conn.close()


def _replace_once(path: Path, old: str, new: str) -> Path:
    text = path.read_text()
    if text.count(old) != 1:
        raise RuntimeError(f"{path}: expected one {old!r} to add TLS to")
    path.write_text(text.replace(old, new))
    return path


@dataclass(frozen=True, slots=True)
class TlsSetup:
    """What the TLS proxies are given alike: the certificate and `maxconn` (room_for)."""

    cert: Issued
    maxconn: int = MAXCONN


class TlsHAProxy(HAProxy):
    """HAProxy 2.6 with `bind ... ssl crt`; its session cache and tickets are on by default."""

    def __init__(self, workdir: Path, backends: Sequence[Backend], *, workers: int, tls: TlsSetup):
        self.cert, self.maxconn = tls.cert, tls.maxconn
        super().__init__(
            workdir,
            backends,
            workers=workers,
            mode="http",
            log_sessions=True,
            extra_global=[
                f"ssl-default-bind-ciphers {CIPHERS}",
                "ssl-default-bind-options ssl-min-ver TLSv1.2",
            ],
            extra_defaults=[f"timeout http-request {REQUEST_TIMEOUT_S}s"],
        )

    def write_config(self) -> Path:
        bind = f"    bind {LOOPBACK}:{self.port}\n"
        tls = f"    bind {LOOPBACK}:{self.port} ssl crt {self.cert.bundle} alpn http/1.1\n"
        path = _replace_once(super().write_config(), bind, tls)
        # global and defaults; pipes are left out of HAProxy's descriptor count
        path = _with_maxconn(path, f"maxconn {MAXCONN}\n", f"maxconn {self.maxconn}\n", 2)
        return _replace_once(path, "\nglobal\n", f"\nglobal\n    maxpipes {HAPROXY_PIPES}\n")

    def probe(self) -> tuple[int, int]:
        return https_get(self.port)


class TlsNginx(NginxProxy):
    """nginx with `listen ... ssl`, a shared session cache and tickets."""

    def __init__(self, workdir: Path, backends: Sequence[Backend], *, workers: int, cert: Issued):
        self.cert = cert
        super().__init__(workdir, backends, workers=workers, mode="http", log_sessions=True)

    def write_config(self) -> Path:
        listen = f"        listen {LOOPBACK}:{self.port} backlog=4096;\n"
        tls = (
            f"        listen {LOOPBACK}:{self.port} backlog=4096 ssl;\n"
            f"        ssl_certificate {self.cert.cert};\n"
            f"        ssl_certificate_key {self.cert.key};\n"
            "        ssl_protocols TLSv1.2 TLSv1.3;\n"
            f"        ssl_ciphers {CIPHERS};\n"
            "        ssl_prefer_server_ciphers on;\n"
            "        ssl_session_cache shared:TLS:20m;\n"
            "        ssl_session_tickets on;\n"
            f"        client_header_timeout {REQUEST_TIMEOUT_S}s;\n"
        )
        return _replace_once(super().write_config(), listen, tls)

    def probe(self) -> tuple[int, int]:
        return https_get(self.port)


class TlsLoadstone(Loadstone):
    """loadstone with `tls` on its listener (session cache and tickets are its
    defaults), and its admin API on, to read which data path serves the listener."""

    def __init__(
        self,
        workdir: Path,
        backends: Sequence[Backend],
        *,
        workers: int,
        tls: TlsSetup,
        pure_python: bool,
    ):
        self.cert, self.maxconn = tls.cert, tls.maxconn
        self.admin_port = free_ports(1)[0]
        self.data_path = "unknown"
        super().__init__(workdir, backends, workers=workers, mode="http", pure_python=pure_python)

    def write_config(self) -> Path:
        admin = f'  admin: {{bind: "{LOOPBACK}:{self.admin_port}"}}\n'
        path = _replace_once(super().write_config(), "  admin: {bind: null}\n", admin)
        timeouts = "  timeouts: {"
        path = _replace_once(path, timeouts, f"{timeouts}http_request: {REQUEST_TIMEOUT_S}s, ")
        path = _with_maxconn(path, f"maxconn: {MAXCONN}\n", f"maxconn: {self.maxconn}\n", 1)
        mode = "    mode: http\n"
        tls = f'{mode}    tls: {{certificates: ["{self.cert.bundle}"], ciphers: "{CIPHERS}"}}\n'
        return _replace_once(path, mode, tls)

    def start(self) -> None:
        super().start()
        self.data_path = self.listener_data_path()

    def listener_data_path(self) -> str:
        """`native`, or `pure (<data_path_reason>)`: what the status API says
        serves the TLS listener (the build alone does not tell: a listener using
        something the engine lacks is served by the pure path)."""
        url = f"http://{LOOPBACK}:{self.admin_port}/api/v1/status"
        with urllib.request.urlopen(url, timeout=10) as response:
            listener = json.load(response)["listeners"]["bench"]
        path = str(listener.get("data_path", "unknown"))
        why = listener.get("data_path_reason")
        return f"{path} ({why})" if why else path

    def version(self) -> str:
        return f"{super().version()}, TLS listener served by the {self.data_path} path"

    def probe(self) -> tuple[int, int]:
        return https_get(self.port)


def build(name: str, workdir: Path, backends: NginxBackends, args: Any, cert: Issued) -> Proxy:
    servers, workers, tls = backends.backends, args.workers, TlsSetup(cert, args.maxconn)
    if name == "loadstone":
        pure = args.pure_python
        return TlsLoadstone(workdir, servers, workers=workers, tls=tls, pure_python=pure)
    if name == "haproxy":
        return TlsHAProxy(workdir, servers, workers=workers, tls=tls)
    # nginx: 2 x MAXCONN worker_connections already, each idle client takes one
    return TlsNginx(workdir, servers, workers=workers, cert=cert)


def negotiated(proxy: Proxy) -> str:
    """What `openssl s_client` (the s_time scenarios' client, default settings)
    negotiates with the proxy: version, cipher, and the key exchange group, which
    the proxies choose differently unless told (a HelloRetryRequest shows as a
    group the client did not offer a key share for)."""
    done = subprocess.run(
        ["openssl", "s_client", "-brief", "-connect", f"{LOOPBACK}:{proxy.port}",
         "-servername", SERVER_NAME],
        input="", capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    fields = dict(
        line.split(":", 1) for line in (done.stdout + done.stderr).splitlines() if ":" in line
    )
    wanted = ("Protocol version", "Ciphersuite", "Peer signature type", "Server Temp Key")
    shown = [fields[k].strip() for k in wanted if k in fields]
    if "Negotiated TLS1.3 group" in fields:  # OpenSSL 3.2 and later
        shown.append(fields["Negotiated TLS1.3 group"].strip())
    return ", ".join(shown) or "(no handshake)"


# -- measurements -------------------------------------------------------------------------

_S_TIME_COUNT = re.compile(r"^(\d+) connections in [0-9.]+s;", re.M)


def s_time(proxy: Proxy, scenario: Scenario, seconds: int, clients: int) -> Figure:
    """`clients` openssl s_time at once, each fetching / on a new connection per
    request (full handshakes with -new, resumed sessions with -reuse)."""
    reuse = scenario.name == "resumed"
    argv = ["openssl", "s_time", "-connect", f"{LOOPBACK}:{proxy.port}", "-www", SMALL_PATH,
            "-time", str(seconds), "-reuse" if reuse else "-new"]  # fmt: skip
    cpu_before = cpu_seconds(proxy.pid)
    started = time.monotonic()
    runs = [subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            for _ in range(clients)]  # fmt: skip
    outputs = [run.communicate(timeout=seconds + 60)[0] for run in runs]
    wall = time.monotonic() - started
    cpu = cpu_seconds(proxy.pid) - cpu_before
    counts = []
    resumed = full = 0
    for output in outputs:
        found = _S_TIME_COUNT.findall(output)
        if not found:
            raise RuntimeError(f"openssl s_time through {proxy.name}: no count in\n{output}")
        counts.append(int(found[-1]))  # with -reuse, the last section is the reused one
        marks = [line for line in output.splitlines() if re.fullmatch(r"[r*]+", line)]
        resumed += sum(line.count("r") for line in marks)
        full += sum(line.count("*") for line in marks)
    errors = sum(run.returncode != 0 for run in runs)
    total = sum(counts)
    share = resumed / (resumed + full) if resumed + full else 0.0
    return Figure(
        scenario.name, proxy.name, total / wall, _per(cpu, total), total, wall, errors, share
    )


def wrk_over_tls(proxy: Proxy, scenario: Scenario, seconds: int) -> Figure:
    path, connections = (LARGE_PATH, 4) if scenario.name == "10m" else (SMALL_PATH, 50)
    argv = wrk.build_argv(
        f"https://{LOOPBACK}:{proxy.port}{path}",
        connections=connections,
        duration=seconds,
        threads=1,
        headers=(f"Host: {SERVER_NAME}",),
    )
    cpu_before = cpu_seconds(proxy.pid)
    result, _ = wrk.run(argv, duration=seconds)
    cpu = cpu_seconds(proxy.pid) - cpu_before
    value = (
        result.bytes_per_second / 2**20 if scenario.name == "10m" else result.requests_per_second
    )
    return Figure(
        scenario.name,
        proxy.name,
        value,
        _per(cpu, result.requests),
        result.requests,
        result.duration,
        result.error_count,
    )


def idle_clients(proxy: Proxy, scenario: Scenario, clients: int, settle: float) -> Figure:
    """Open `clients` TLS connections (handshake done, nothing sent) and read the
    growth of the proxy's RSS (its whole process tree) with them held."""
    return asyncio.run(_idle(proxy, scenario, clients, settle))


async def _idle(proxy: Proxy, scenario: Scenario, clients: int, settle: float) -> Figure:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    held: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
    failures = 0
    gate = asyncio.Semaphore(64)  # handshakes in flight at once

    async def one() -> None:
        nonlocal failures
        async with gate:
            try:
                reader, writer = await asyncio.wait_for(
                    asyncio.open_connection(
                        LOOPBACK, proxy.port, ssl=ctx, server_hostname=SERVER_NAME
                    ),
                    30,
                )
            except (OSError, TimeoutError):
                failures += 1
                return
            held.append((reader, writer))

    await asyncio.sleep(settle)
    before = rss_bytes(proxy.pid)
    started = time.monotonic()
    try:
        await asyncio.gather(*(one() for _ in range(clients)))
        await asyncio.sleep(settle)  # lazily allocated state settles
        grown = rss_bytes(proxy.pid) - before
        wall = time.monotonic() - started
        # a connection the proxy closed meanwhile holds nothing: it is an error
        # here, not a client whose memory is counted
        await asyncio.sleep(0)
        closed = sum(reader.at_eof() or writer.is_closing() for reader, writer in held)
    finally:
        for _, writer in held:
            writer.transport.abort()
        await asyncio.sleep(0.5)
    per = grown / len(held) if held else 0.0
    return Figure(scenario.name, proxy.name, per, 0.0, len(held), wall, failures + closed)


def _per(cpu: float, count: int) -> float:
    return cpu / count * 1e6 if count else 0.0


# -- the run --------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="tls_compare",
        description="Compare loadstone's TLS termination with HAProxy's and nginx's.",
    )
    parser.add_argument("-d", "--duration", type=int, default=10, help="seconds per figure")
    parser.add_argument("--workers", type=int, default=1, help="workers = nbthread = processes")
    parser.add_argument(
        "--scenarios", default=",".join(SCENARIOS), help=f"from {','.join(SCENARIOS)}"
    )
    parser.add_argument(
        "--proxies", default=",".join(PROXIES), help="rows in this order (loadstone first)"
    )
    parser.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="runs per scenario and proxy, the order reversed every other run; medians shown",
    )
    parser.add_argument("--clients", type=int, default=2, help="openssl s_time processes at once")
    parser.add_argument("--idle-clients", type=int, default=8000, help="connections held (idle)")
    parser.add_argument(
        "--quick", action="store_true", help="short runs: -d 2, 300 idle clients (a smoke run)"
    )
    parser.add_argument("--pure-python", action="store_true", help="LOADSTONE_NO_EXTENSIONS=1")
    parser.add_argument("--json", type=Path, metavar="OUT", help="write the figures here")
    parser.add_argument("--markdown", action="store_true", help="also print Markdown tables")
    parser.add_argument(
        "--perf",
        type=Path,
        metavar="DIR",
        help="perf record -g each proxy under each scenario; profiles and summaries in DIR",
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.duration = min(args.duration, 2)
        args.idle_clients = min(args.idle_clients, 300)
    names = [n.strip() for n in args.scenarios.split(",") if n.strip()]
    unknown = [n for n in names if n not in SCENARIOS]
    proxies = [p.strip() for p in args.proxies.split(",") if p.strip()]
    if unknown:
        parser.error(f"unknown scenario(s) {', '.join(unknown)}")
    if any(p not in PROXIES for p in proxies) or "loadstone" not in proxies:
        parser.error(f"--proxies: names from {','.join(PROXIES)}, loadstone among them")
    args.scenario_list = [SCENARIOS[n] for n in names]
    args.proxy_list = ["loadstone", *(p for p in proxies if p != "loadstone")]
    return args


def run_scenario(scenario: Scenario, proxy: Proxy, args: argparse.Namespace) -> Figure:
    if scenario.name.startswith("handshake") or scenario.name == "resumed":
        return s_time(proxy, scenario, args.duration, args.clients)
    if scenario.name == "idle":
        return idle_clients(proxy, scenario, args.idle_clients, settle=1.0)
    return wrk_over_tls(proxy, scenario, args.duration)


@dataclass(slots=True)
class Collected:
    figures: list[Figure]
    versions: dict[str, str]  # by proxy
    handshakes: dict[str, str]  # "key proxy": what s_client negotiates (negotiated)


def collect(args: argparse.Namespace) -> Collected:
    workdir = Path(tempfile.mkdtemp(prefix="loadstone-tls-bench-"))
    collected = Collected([], {}, {})
    figures, versions = collected.figures, collected.versions
    # The idle scenario holds a descriptor per client in this process, and each
    # proxy one per client (room_for).
    idle = any(s.name == "idle" for s in args.scenario_list)
    args.maxconn = room_for(args.idle_clients) if idle else MAXCONN
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    try:
        ca = Ca(workdir / "pki")
        certs = {kind: ca.issue(kind, [SERVER_NAME], kind=kind) for kind in ("ecdsa", "rsa")}
        with contextlib.ExitStack() as stack:
            backends = NginxBackends(workdir, SHAPES[DEFAULT_SHAPE])
            stack.callback(backends.stop)
            by_key: dict[str, list[Proxy]] = {}
            for scenario in args.scenario_list:
                proxies = by_key.get(scenario.key)
                if proxies is None:
                    (workdir / scenario.key).mkdir()
                    proxies = [
                        build(name, workdir / scenario.key, backends, args, certs[scenario.key])
                        for name in args.proxy_list
                    ]
                    by_key[scenario.key] = proxies
                    for proxy in proxies:
                        proxy.start()
                        stack.callback(stop_proxy, proxy)
                        versions.setdefault(proxy.name, proxy.version())
                        collected.handshakes[f"{scenario.key} {proxy.name}"] = negotiated(proxy)
                # idle once: a second run would find the first one's freed memory
                for run in range(1 if scenario.name == "idle" else args.repeat):
                    # a loaded machine drifts: every other run goes the other way round
                    for proxy in proxies[::-1] if run % 2 else proxies:
                        name = f"{scenario.name}-{proxy.name}" + (f"-{run + 1}" if run else "")
                        with recorded(proxy.pid, args.perf, name):
                            figure = run_scenario(scenario, proxy, args)
                        figures.append(figure)
                        progress(
                            f"  {scenario.name:<16} {proxy.name:<10} {figure.value:>12,.1f} "
                            f"{scenario.unit:<10} {figure.cpu_us:>8,.1f} cpu us"
                            + (f"  ERRORS {figure.errors}" if figure.errors else "")
                        )
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return collected


def median_figure(runs: Sequence[Figure]) -> Figure:
    """One figure for the repeated runs of a scenario and proxy: the median of
    each measured field, the counts and errors summed."""
    return Figure(
        runs[0].scenario,
        runs[0].proxy,
        statistics.median(f.value for f in runs),
        statistics.median(f.cpu_us for f in runs),
        sum(f.count for f in runs),
        sum(f.seconds for f in runs),
        sum(f.errors for f in runs),
        statistics.median(f.resumed_share for f in runs),
    )


def _row(
    by_proxy: dict[str, Figure],
    proxies: Sequence[str],
    cells: tuple[str, str, str, str],
    ratios: bool,
) -> tuple[str, ...]:
    """`cells`: the first column, the unit, the Figure field shown, the target."""
    first, unit, field, target = cells
    values = {p: float(getattr(f, field)) for p, f in by_proxy.items()}
    percent = field == "resumed_share"
    shown = [
        "-" if p not in values else f"{values[p]:.0%}" if percent else f"{values[p]:,.1f}"
        for p in proxies
    ]
    compared = [
        _ratio(values["loadstone"], values[p]) if ratios and p in values else ""
        for p in proxies
        if p != "loadstone"
    ]
    return (first, unit, *shown, *compared, target)


def table(figures: Sequence[Figure], proxies: Sequence[str], markdown: bool) -> str:
    """A row per figure: each proxy's value, loadstone's ratio to each peer, the target."""
    peers = [p for p in proxies if p != "loadstone"]
    header = ("scenario", "unit", *proxies, *(f"loadstone/{p}" for p in peers), "target vs haproxy")
    rows: list[tuple[str, ...]] = []
    for scenario in dict.fromkeys(f.scenario for f in figures):
        meta = SCENARIOS[scenario]
        runs: dict[str, list[Figure]] = {}
        for f in figures:
            if f.scenario == scenario:
                runs.setdefault(f.proxy, []).append(f)
        by_proxy = {proxy: median_figure(each) for proxy, each in runs.items()}
        rows.append(_row(by_proxy, proxies, (scenario, meta.unit, "value", meta.target), True))
        if meta.name == "resumed":
            rows.append(_row(by_proxy, proxies, ("", "resumed share", "resumed_share", ""), False))
        if meta.name not in ("10m", "idle"):
            per = "req" if meta.name == "keepalive" else "conn"
            target = "<= 0.9" if meta.name == "keepalive" else ""
            rows.append(_row(by_proxy, proxies, ("", f"cpu us/{per}", "cpu_us", target), True))
    if markdown:
        return report.markdown_table(header, rows, names=1)
    return report.text_table(header, rows, names=1)


def _ratio(ours: float, theirs: float) -> str:
    return f"{ours / theirs:.2f}x" if theirs else "-"


def main(argv: Sequence[str] | None = None) -> int:
    raw = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(raw)
    for tool in ("openssl", "wrk", "haproxy", "nginx", *(("perf",) if args.perf else ())):
        if shutil.which(tool) is None:
            progress(f"tls_compare: {tool} is not installed")
            return 2
    if args.perf:
        args.perf.mkdir(parents=True, exist_ok=True)
    try:
        collected = collect(args)
    except (RuntimeError, OSError, subprocess.SubprocessError, wrk.WrkOutputError) as exc:
        progress(f"tls_compare: {exc}")
        return 2
    meta = {**report.machine_info(REPO), "command": command_line(raw, "tls_compare")}
    print(
        f"\n{meta['date']}  {meta['nproc']} x {meta['cpu_model']}  workers={args.workers}  "
        f"duration={args.duration}s x {args.repeat}  s_time clients={args.clients}  "
        f"idle clients={args.idle_clients}\n"
    )
    figures, versions = collected.figures, collected.versions
    print(table(figures, args.proxy_list, markdown=False))
    for name, version in versions.items():
        print(f"{name}: {version}")
    for who, handshake in collected.handshakes.items():
        print(f"s_client to {who}: {handshake}")
    if args.markdown:
        print("\n" + table(figures, args.proxy_list, markdown=True))
    if args.json:
        document = {
            "meta": {**meta, "proxies": versions, "negotiated": collected.handshakes},
            "options": {k: v for k, v in vars(args).items() if k not in ("scenario_list", "json")},
            "figures": [asdict(f) for f in figures],
        }
        args.json.write_text(json.dumps(document, indent=2, default=str) + "\n")
        progress(f"results written to {args.json}")
    return 1 if any(f.errors for f in figures) else 0


if __name__ == "__main__":
    sys.exit(main())
