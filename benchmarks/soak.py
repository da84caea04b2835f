"""The soak (issue 17, part 7): a long run of mixed load with faults injected.

    .venv/bin/python benchmarks/soak.py                      # 30 minutes, both paths
    .venv/bin/python benchmarks/soak.py --minutes 10 --json
    .venv/bin/python benchmarks/soak.py --minutes 1 --paths pure

Each data path gets its own `loadstone run` (the paths run side by side, so the
wall time is --minutes) with two listeners:
- `web`, mode http, in front of two aiohttp backends (tests/peers/backend.py);
- `tcp`, mode tcp, in front of two echo backends.
Load, from client threads at a modest rate: HTTP on keep-alive connections
(a few requests each), HTTP with `Connection: close`, and TCP sessions (send,
half-close, read the echo back).

Faults: a reload (SIGHUP, with a server weight changed so it applies something)
every --reload-every seconds, and one backend of each listener killed (kill -9)
every --flap-every seconds and started again on its port --flap-down seconds
later. Every failed request is matched against the faults by time: a failure
within a fault's window (from just before it to the end of its detection:
`fall` checks for a kill) is explained by it; any other failure is a defect.

Sampled every --sample seconds: loadstone's RSS and descriptors. Verdict:
- after the warm-up (a fifth of the run), RSS grows at most --rss-growth percent
  per 10 minutes (a least-squares slope over the samples);
- once the load stops, the descriptors come back to their count before the load
  (idle pooled server connections, which the status reports, aside);
- no unexplained failure.
A keep-alive request that finds its connection closed before any byte of the
answer is sent again on a new connection, as HTTP clients do (RFC 9112 9.3.1
allows it for idempotent requests): that is not a failure.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import signal
import socket
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

if __package__ in (None, ""):  # run as a script: make `benchmarks` and `tests` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.integration.harness import Backend, Loadstone, free_port, wait_for

from benchmarks.harness.procs import rss_bytes
from benchmarks.slow_clients import read_to_eof

CHECK_INTERVAL = 0.5
FALL = 2
CLIENTS = 6  # client threads per path
PAUSE = 0.01  # between two requests of a client thread: a modest, steady rate


@dataclass
class Fault:
    kind: str  # "reload" | "kill"
    what: str
    start: float
    end: float  # the window in which failures are its doing


@dataclass
class Failure:
    at: float
    kind: str  # http-keepalive | http-close | tcp
    error: str
    explained_by: str | None = None


@dataclass
class SoakReport:
    path: str
    minutes: float
    requests: dict[str, int] = field(default_factory=dict)
    failures: list[Failure] = field(default_factory=list)
    faults: list[Fault] = field(default_factory=list)
    samples: list[tuple[float, int, int]] = field(default_factory=list)  # (s, RSS KiB, fds)
    fds_baseline: int = 0
    fds_end: int = 0
    idle_server_conns_end: int = 0
    rss_growth_pct_per_10min: float = 0.0
    verdict: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.verdict

    def summary(self) -> dict[str, Any]:
        unexplained = [f for f in self.failures if f.explained_by is None]
        return {
            "path": self.path,
            "minutes": self.minutes,
            "requests": self.requests,
            "failures": len(self.failures),
            "failures_by_fault": _count(f.explained_by or "unexplained" for f in self.failures),
            "unexplained": [asdict(f) for f in unexplained[:20]],
            "failure_samples": [asdict(f) for f in self.failures[:10]],
            "reloads": sum(1 for f in self.faults if f.kind == "reload"),
            "kills": sum(1 for f in self.faults if f.kind == "kill"),
            "rss_kib_first_last": [self.samples[0][1], self.samples[-1][1]] if self.samples else [],
            "rss_growth_pct_per_10min": self.rss_growth_pct_per_10min,
            "fds": [self.fds_baseline, self.fds_end, self.idle_server_conns_end],
            "verdict": self.verdict or ["ok"],
        }


def _count(items: Any) -> dict[str, int]:
    counts: dict[str, int] = {}
    for item in items:
        counts[item] = counts.get(item, 0) + 1
    return counts


# -- the clients -------------------------------------------------------------------------


class Closed(Exception):
    """The connection ended before any byte of the answer."""


def read_response(sock: socket.socket) -> bytes:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            if not data:
                raise Closed()
            raise ConnectionError(f"closed inside the head: {data[:60]!r}")
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.1 200"):
        status_line = head.split(b"\r\n")[0]
        raise ConnectionError(f"answered {status_line!r}")
    found = re.search(rb"(?i)\r\ncontent-length: *(\d+)", head)
    length = int(found[1]) if found else 0
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed inside the body")
        body += chunk
    return head


class Client:
    """One client thread: each turn an HTTP keep-alive burst, an HTTP close request
    or a TCP session, until told to stop."""

    def __init__(self, report: SoakReport, ports: dict[str, int], seed: int) -> None:
        self.report = report
        self.ports = ports
        self.rnd = random.Random(seed)
        self.lock = threading.Lock()

    def count(self, kind: str) -> None:
        with self.lock:
            self.report.requests[kind] = self.report.requests.get(kind, 0) + 1

    def fail(self, kind: str, exc: BaseException) -> None:
        self.report.failures.append(Failure(time.time(), kind, f"{type(exc).__name__}: {exc}"))

    def run(self, stop: threading.Event) -> None:
        while not stop.is_set():
            turn = self.rnd.randrange(3)
            if turn == 0:
                self.keepalive(self.rnd.randint(2, 10))
            elif turn == 1:
                self.one("http-close", self.http_close)
            else:
                self.one("tcp", self.tcp)
            stop.wait(PAUSE)

    def one(self, kind: str, action: Any) -> None:
        try:
            action()
            self.count(kind)
        except (OSError, Closed, ConnectionError) as exc:
            self.fail(kind, exc)

    def http_close(self) -> None:
        with socket.create_connection(("127.0.0.1", self.ports["web"]), timeout=10) as s:
            s.sendall(b"GET / HTTP/1.1\r\nHost: soak\r\nConnection: close\r\n\r\n")
            read_response(s)

    def keepalive(self, n: int) -> None:
        request = b"GET / HTTP/1.1\r\nHost: soak\r\n\r\n"
        sock: socket.socket | None = None
        try:
            for i in range(n):
                reused = sock is not None
                try:
                    if sock is None:
                        sock = socket.create_connection(("127.0.0.1", self.ports["web"]), 10)
                    sock.sendall(request)
                    read_response(sock)
                except (Closed, BrokenPipeError, ConnectionResetError) as exc:
                    if not reused or (isinstance(exc, ConnectionResetError)):
                        raise
                    # closed while idle: sent again on a new connection
                    assert sock is not None
                    sock.close()
                    sock = socket.create_connection(("127.0.0.1", self.ports["web"]), 10)
                    sock.sendall(request)
                    read_response(sock)
                self.count("http-keepalive")
                del i
        except (OSError, Closed, ConnectionError) as exc:
            self.fail("http-keepalive", exc)
        finally:
            if sock is not None:
                sock.close()

    def tcp(self) -> None:
        payload = b"soak-%d" % self.rnd.randrange(1 << 30)
        with socket.create_connection(("127.0.0.1", self.ports["tcp"]), timeout=10) as s:
            s.sendall(payload)
            s.shutdown(socket.SHUT_WR)
            got = read_to_eof(s)
        if not got.startswith(payload + b"\nEOF"):
            raise ConnectionError(f"echo answered {got[:60]!r}")


# -- one path ----------------------------------------------------------------------------


def config(backends: dict[str, Backend], ports: dict[str, int], weight: int) -> dict[str, Any]:
    def servers(*names: str) -> list[dict[str, Any]]:
        return [{"name": n, "address": backends[n].address} for n in names]

    check = {"interval": f"{CHECK_INTERVAL}s", "fall": FALL, "rise": 1}
    web = servers("h1", "h2")
    web[0]["weight"] = weight
    return {
        "global": {"grace": "2s"},
        "defaults": {
            "timeouts": {"connect": "500ms", "check": "400ms"},
            "retries": 2,
            "redispatch": True,
        },
        "listeners": {
            "web": {
                "bind": [f"127.0.0.1:{ports['web']}"],
                "mode": "http",
                "check": {**check, "type": "http", "path": "/health"},
                "servers": web,
            },
            "tcp": {
                "bind": [f"127.0.0.1:{ports['tcp']}"],
                "mode": "tcp",
                "check": {**check, "type": "tcp"},
                "servers": servers("e1", "e2"),
            },
        },
    }


def rss_kib(pid: int) -> int:
    return rss_bytes(pid) // 1024  # loadstone is one process: its own VmRSS


def slope_pct_per_10min(samples: list[tuple[float, int, int]]) -> float:
    """Least-squares slope of RSS over time, as percent of the first RSS per 10 min."""
    if len(samples) < 3:
        return 0.0
    ts = [s[0] for s in samples]
    rs = [float(s[1]) for s in samples]
    mt, mr = sum(ts) / len(ts), sum(rs) / len(rs)
    var = sum((t - mt) ** 2 for t in ts)
    if var == 0:
        return 0.0
    slope = sum((t - mt) * (r - mr) for t, r in zip(ts, rs, strict=True)) / var  # KiB/s
    return round(slope * 600 / rs[0] * 100, 3)


class Soak:
    def __init__(self, path: str, args: argparse.Namespace, workdir: Path) -> None:
        self.path = path
        self.args = args
        self.report = SoakReport(path, args.minutes)
        self.workdir = workdir / path
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.backends: dict[str, Backend] = {}
        self.ports = {"web": free_port(), "tcp": free_port()}
        self.ls: Loadstone | None = None
        self.weight = 1

    def start(self) -> None:
        for name, mode in (("h1", "http"), ("h2", "http"), ("e1", "echo"), ("e2", "echo")):
            self.backends[name] = Backend(name, free_port(), mode).start()
        env = {"LOADSTONE_NO_EXTENSIONS": "1" if self.path == "pure" else "0"}
        self.ls = Loadstone(self.workdir, config(self.backends, self.ports, 1), env=env)
        self.ls.start()
        self.ls.wait_all_up("web")
        self.ls.wait_all_up("tcp")

    def stop(self) -> None:
        if self.ls is not None:
            self.ls.stop()
        for backend in self.backends.values():
            backend.stop()

    def reload(self) -> None:
        assert self.ls is not None and self.ls.proc is not None
        self.weight = 3 - self.weight
        self.ls.path.write_text(yaml.safe_dump(config(self.backends, self.ports, self.weight)))
        t = time.time()
        self.ls.proc.send_signal(signal.SIGHUP)
        self.report.faults.append(Fault("reload", f"weight {self.weight}", t - 0.2, t + 2.0))

    def kill(self, name: str) -> None:
        t = time.time()
        self.backends[name].kill()
        detection = FALL * CHECK_INTERVAL + 0.4 + 2.0  # checks, their timeout, slack
        self.report.faults.append(Fault("kill", name, t - 0.2, t + detection))

    def revive(self, name: str) -> None:
        old = self.backends[name]
        old.stop()
        self.backends[name] = Backend(name, old.port, old.mode).start()

    def run(self) -> SoakReport:
        assert self.ls is not None and self.ls.proc is not None
        pid = self.ls.proc.pid
        report = self.report
        report.fds_baseline = self.ls.fd_count()
        stop = threading.Event()
        clients = [
            threading.Thread(target=Client(report, self.ports, i).run, args=(stop,), daemon=True)
            for i in range(CLIENTS)
        ]
        for thread in clients:
            thread.start()
        t0 = time.monotonic()
        duration = self.args.minutes * 60
        next_reload = self.args.reload_every
        next_flap = self.args.flap_every / 2
        down: list[tuple[float, str]] = []
        next_sample = 0.0
        all_samples: list[tuple[float, int, int]] = []
        while (elapsed := time.monotonic() - t0) < duration:
            if elapsed >= next_sample:
                all_samples.append((elapsed, rss_kib(pid), self.ls.fd_count()))
                next_sample += self.args.sample
            if elapsed >= next_reload:
                self.reload()
                next_reload += self.args.reload_every
            if elapsed >= next_flap:
                for name in ("h2", "e2"):
                    self.kill(name)
                    down.append((elapsed + self.args.flap_down, name))
                next_flap += self.args.flap_every
            for when, name in list(down):
                if elapsed >= when:
                    self.revive(name)
                    down.remove((when, name))
            time.sleep(0.1)
        stop.set()
        for thread in clients:
            thread.join(30)
        for _, name in down:
            self.revive(name)
        warm = duration / 5
        report.samples = [s for s in all_samples if s[0] >= warm]
        report.rss_growth_pct_per_10min = slope_pct_per_10min(report.samples)
        for failure in report.failures:
            kinds = {f.kind for f in report.faults if f.start <= failure.at <= f.end}
            # a kill explains more than a reload whose window overlaps it
            failure.explained_by = "kill" if "kill" in kinds else next(iter(kinds), None)
        # the descriptors, once the load stopped and the sessions ended
        self.ls.wait_all_up("web", timeout=20)
        self.ls.wait_all_up("tcp", timeout=20)

        def settled() -> bool:
            assert self.ls is not None
            idle = int(self.ls.status()["listeners"]["web"]["http"]["idle_server_connections"])
            report.idle_server_conns_end = idle
            report.fds_end = self.ls.fd_count()
            return report.fds_end - idle <= report.fds_baseline

        try:
            wait_for(settled, timeout=30, what="descriptors back to baseline")
        except AssertionError:
            report.verdict.append(
                f"descriptors {report.fds_end} ({report.idle_server_conns_end} idle server"
                f" connections) > {report.fds_baseline} before the load"
            )
        if report.rss_growth_pct_per_10min > self.args.rss_growth:
            report.verdict.append(
                f"RSS grows {report.rss_growth_pct_per_10min}% per 10 min > {self.args.rss_growth}%"
            )
        unexplained = sum(1 for f in report.failures if f.explained_by is None)
        if unexplained:
            report.verdict.append(f"{unexplained} failure(s) explained by no fault")
        if not report.requests or min(report.requests.values()) == 0:
            report.verdict.append(f"a kind of load never succeeded: {report.requests}")
        return report


def soak(paths: list[str], args: argparse.Namespace, workdir: Path) -> list[SoakReport]:
    soaks = [Soak(path, args, workdir) for path in paths]
    try:
        for s in soaks:
            s.start()
        reports: list[SoakReport] = []
        threads = [
            threading.Thread(target=lambda s=s: reports.append(s.run()), daemon=True) for s in soaks
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        return sorted(reports, key=lambda r: paths.index(r.path))
    finally:
        for s in soaks:
            s.stop()


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--minutes", type=float, default=30.0)
    p.add_argument("--paths", default="native,pure")
    p.add_argument("--reload-every", type=float, default=30.0)
    p.add_argument("--flap-every", type=float, default=60.0)
    p.add_argument("--flap-down", type=float, default=10.0)
    p.add_argument("--sample", type=float, default=5.0)
    p.add_argument("--rss-growth", type=float, default=1.0, help="percent per 10 min, at most")
    p.add_argument("--json", action="store_true")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="soak-") as tmp:
        reports = soak(args.paths.split(","), args, Path(tmp))
    docs = [r.summary() for r in reports]
    if args.json:
        print(json.dumps(docs, indent=2))
    else:
        for doc in docs:
            print(json.dumps(doc))
    return 0 if all(r.ok for r in reports) else 1


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
