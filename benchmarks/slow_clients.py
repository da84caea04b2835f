"""Slow clients (issue 17, part 5): slowloris and slow read against loadstone.

    .venv/bin/python benchmarks/slow_clients.py                   # 2,000 per attack
    .venv/bin/python benchmarks/slow_clients.py -n 5000 --json
    .venv/bin/python benchmarks/slow_clients.py --paths native --kinds slowloris
    .venv/bin/python benchmarks/slow_clients.py --paths pure --loop asyncio

For each data path and each attack, against one loadstone http listener in front
of one aiohttp backend (tests/peers/backend.py):

- the p99 latency of a normal client (a new connection per request, one request
  at a time) is measured alone, then again while N attackers run;
- slowloris: each attacker sends the start of a request head and then one more
  header byte per second; `timeouts.http_request` must cut it;
- slow read: each attacker asks for a 1 GiB download with a 4 KiB receive
  buffer and reads one byte per second; the idle timeouts (`timeouts.client`,
  `timeouts.server`: no progress in either direction) must cut it. A graceful
  close is invisible to such a client (the kernel still holds bytes it has not
  read), so this cut is measured on loadstone's side: the time until its
  descriptors are back to where they were before the attack;
- loadstone's RSS is sampled throughout: memory stays bounded by the per
  connection buffers, whatever the attackers do.

The attackers run in a child process (one asyncio loop), so the normal client's
latency is not the attack's own scheduling delay. The normal client uses a
second listener of the same process with a backend of its own: the one aiohttp
backend that streams the attackers' downloads is busy, and its slowness is not
the proxy's. The verdict per run: every
attacker cut within its timeout plus a slack, p99 during the attack within 2x of
p99 alone (the issue's bound), RSS growth per attacker reported.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing
import os
import resource
import socket
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make `benchmarks` and `tests` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.integration.harness import Backend, Loadstone, free_port, wait_for

from benchmarks.harness.procs import rss_bytes

KINDS = ("slowloris", "slowread")
DOWNLOAD = 1 << 30  # more than any socket buffer: the proxy cannot be done with it
FILL = 2.0  # seconds: slow read, the downloads filling the buffers (see run_attack)
SETTLE = 2.0  # seconds: slow read, from connected to measuring (see run_attack)
CONNECTS_AT_ONCE = 200  # attackers connecting concurrently (a SYN flood is not the point)


# -- the attackers (child process) -----------------------------------------------------


async def _slowloris_one(port: int, started: float) -> float | None:
    """Seconds from connecting to being cut, None if never cut (the caller's deadline)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    t0 = time.monotonic()
    try:
        writer.write(b"GET / HTTP/1.1\r\nHost: slow\r\nX-Slow: ")
        while True:
            try:
                data = await asyncio.wait_for(reader.read(4096), 1.0)
            except TimeoutError:
                writer.write(b"a")  # one more header byte each second
                continue
            # EOF, or loadstone's 408 before its close: cut either way
            del data
            return time.monotonic() - t0
    except (ConnectionError, OSError):
        return time.monotonic() - t0
    finally:
        writer.close()


async def _slowread_one(port: int, started: float) -> float | None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
    reader, writer = await asyncio.open_connection(sock=sock, limit=256)
    t0 = time.monotonic()
    try:
        writer.write(f"GET /download?size={DOWNLOAD} HTTP/1.1\r\nHost: slow\r\n\r\n".encode())
        got = 0
        while True:
            data = await reader.read(1)
            if not data:
                break
            got += 1
            if got >= DOWNLOAD:
                return None  # read it all: not cut
            await asyncio.sleep(1.0)
        return time.monotonic() - t0
    except (ConnectionError, OSError):
        return time.monotonic() - t0
    finally:
        writer.close()


async def _attack(kind: str, port: int, n: int, duration: float) -> list[float | None]:
    one = _slowloris_one if kind == "slowloris" else _slowread_one
    gate = asyncio.Semaphore(CONNECTS_AT_ONCE)
    started = time.monotonic()

    async def attacker() -> float | None:
        async with gate:
            task = asyncio.ensure_future(one(port, started))
            await asyncio.sleep(0)  # the connect is under way; let the next one start
        try:
            return await asyncio.wait_for(task, duration)
        except (TimeoutError, ConnectionError, OSError):
            return None

    return list(await asyncio.gather(*(attacker() for _ in range(n))))


def _attack_process(kind: str, port: int, n: int, duration: float, out: Any) -> None:
    raise_fd_limit()
    out.send(asyncio.run(_attack(kind, port, n, duration)))
    out.close()


# -- measuring (parent process) --------------------------------------------------------


def raise_fd_limit() -> None:
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def rss_kib(pid: int) -> int:
    return rss_bytes(pid) // 1024  # loadstone is one process: its own VmRSS


def read_to_eof(sock: socket.socket) -> bytes:
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    return data


def normal_latencies(port: int, count: int, pause: float = 0.02) -> list[float]:
    """`count` requests, a new connection each, one at a time: seconds each."""
    request = b"GET / HTTP/1.1\r\nHost: normal\r\nConnection: close\r\n\r\n"
    times = []
    for _ in range(count):
        t0 = time.perf_counter()
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            s.sendall(request)
            answer = read_to_eof(s)
        assert answer.startswith(b"HTTP/1.1 200"), answer[:80]
        times.append(time.perf_counter() - t0)
        time.sleep(pause)
    return times


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process, all its threads."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def p99(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]


@dataclass
class AttackResult:
    path: str
    kind: str
    attackers: int
    timeout_s: float
    cut: int = 0
    not_cut: int = 0
    cut_median_s: float = 0.0
    cut_max_s: float = 0.0
    p99_alone_ms: float = 0.0
    p99_attack_ms: float = 0.0
    p99_ratio: float = 0.0
    rss_before_mib: float = 0.0
    rss_peak_mib: float = 0.0
    rss_after_mib: float = 0.0
    rss_per_attacker_kib: float = 0.0
    cpu_s: float = 0.0  # loadstone's CPU time during the attack
    backend_cpu_s: float = 0.0  # the attacked backend's
    verdict: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.verdict


def loadstone_config(
    attacked: Backend, normal: Backend, ports: tuple[int, int], http_request: float, idle: float
) -> dict[str, Any]:
    def listener(port: int, backend: Backend) -> dict[str, Any]:
        return {
            "bind": [f"127.0.0.1:{port}"],
            "mode": "http",
            "maxconn": 20000,
            "backlog": 4096,
            "servers": [{"name": backend.name, "address": backend.address}],
        }

    return {
        "global": {"grace": "1s"},
        "defaults": {
            "timeouts": {
                "http_request": f"{http_request}s",
                "client": f"{idle}s",
                "server": f"{idle}s",
                "http_keep_alive": f"{idle}s",
            }
        },
        "listeners": {"web": listener(ports[0], attacked), "normal": listener(ports[1], normal)},
    }


def run_attack(
    ls: Loadstone,
    backend_pid: int,
    port: int,
    normal_port: int,
    path: str,
    kind: str,
    n: int,
    timeout: float,
    slack: float,
    normal_requests: int,
) -> AttackResult:
    assert ls.proc is not None
    pid = ls.proc.pid
    result = AttackResult(path, kind, n, timeout)
    alone = normal_latencies(normal_port, normal_requests)
    result.rss_before_mib = rss_kib(pid) / 1024
    fds_before = ls.fd_count()
    cpu_before = cpu_seconds(pid)
    backend_cpu_before = cpu_seconds(backend_pid)
    receiving, sending = multiprocessing.Pipe(duplex=False)
    attack_deadline = timeout + slack + FILL + 5  # each attacker's, in the child
    child = multiprocessing.Process(
        target=_attack_process, args=(kind, port, n, attack_deadline, sending)
    )
    child.start()
    sending.close()
    peak = [rss_kib(pid)]
    stop = threading.Event()
    t_connected: list[float] = []  # when the attackers were all in
    t_released: list[float] = []  # when loadstone's descriptors were back

    def sample() -> None:
        while not stop.wait(0.1):
            peak.append(rss_kib(pid))
            fds = ls.fd_count()
            # all in: a descriptor each, and for a slow reader its server connection
            if not t_connected and fds >= fds_before + (2 * n if kind == "slowread" else n):
                t_connected.append(time.monotonic())
            elif t_connected and not t_released and fds <= fds_before + n // 100:
                t_released.append(time.monotonic())

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    # Measure the normal client once the attackers are in place.
    wait_for(lambda: bool(t_connected), timeout=60, what="the attackers connected")
    if kind == "slowread":
        # Each download first fills the socket buffers along the way (megabytes each
        # through the loopback: kernel work, not the proxy's); the attack proper is the
        # stall that follows.
        time.sleep(SETTLE)
    during = normal_latencies(normal_port, normal_requests)
    if kind == "slowread":
        # Loadstone's side is the measure (see the module's docstring): the
        # attackers, still reading their buffered bytes one a second, learn of
        # the cut only at their deadline, so the child is ended once loadstone
        # has released them (or at that same deadline, when it never does).
        with contextlib.suppress(AssertionError):
            wait_for(lambda: bool(t_released), timeout=attack_deadline, what="the release")
        child.terminate()
        cuts: list[float | None] = []
    else:
        cuts = receiving.recv()
    child.join(30)
    stop.set()
    sampler.join(5)
    result.rss_after_mib = rss_kib(pid) / 1024
    result.cpu_s = round(cpu_seconds(pid) - cpu_before, 2)
    result.backend_cpu_s = round(cpu_seconds(backend_pid) - backend_cpu_before, 2)
    result.rss_peak_mib = max(peak) / 1024
    if kind == "slowread":  # cut as loadstone sees it (see the module's docstring)
        released = t_released[0] - t_connected[0] if t_released else None
        cuts = [released] * n
    done = sorted(c for c in cuts if c is not None)
    result.cut = len(done)
    result.not_cut = len(cuts) - len(done)
    if done:
        result.cut_median_s = round(done[len(done) // 2], 2)
        result.cut_max_s = round(done[-1], 2)
    result.p99_alone_ms = round(p99(alone) * 1000, 2)
    result.p99_attack_ms = round(p99(during) * 1000, 2)
    result.p99_ratio = round(result.p99_attack_ms / max(result.p99_alone_ms, 1e-6), 2)
    result.rss_per_attacker_kib = round(
        (result.rss_peak_mib - result.rss_before_mib) * 1024 / max(n, 1), 2
    )
    if result.not_cut:
        result.verdict.append(f"{result.not_cut} attacker(s) not cut")
    # A slow reader's idle time starts once the socket buffers along the way are
    # full: FILL seconds after its request on this machine, before that bytes move.
    allowed = timeout + slack + (FILL if kind == "slowread" else 0.0)
    if result.cut_max_s > allowed:
        result.verdict.append(f"cut after {result.cut_max_s}s > {allowed}s allowed")
    return result


def pid_of(backend: Backend) -> int:
    assert backend.proc is not None
    return backend.proc.pid


def run_path(
    path: str,
    kinds: list[str],
    n: int,
    http_request: float,
    idle: float,
    slack: float,
    normal_requests: int,
    workdir: Path,
    loop: str = "uvloop",
) -> list[AttackResult]:
    attacked = Backend("attacked", free_port()).start()
    normal = Backend("normal", free_port()).start()
    ports = (free_port(), free_port())
    env = {"LOADSTONE_NO_EXTENSIONS": "1" if path == "pure" else "0"}
    config = loadstone_config(attacked, normal, ports, http_request, idle)
    ls = Loadstone(workdir, config, loop=loop, env=env)
    results = []
    try:
        ls.start()
        for kind in kinds:
            timeout = http_request if kind == "slowloris" else idle
            results.append(
                run_attack(
                    ls,
                    pid_of(attacked),
                    ports[0],
                    ports[1],
                    path,
                    kind,
                    n,
                    timeout,
                    slack,
                    normal_requests,
                )
            )
            wait_for(lambda: ls.fd_count() < 64, timeout=60, what="the attackers gone")
    finally:
        ls.stop()
        attacked.stop()
        normal.stop()
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("-n", "--attackers", type=int, default=2000)
    parser.add_argument("--paths", default="native,pure")
    parser.add_argument("--kinds", default=",".join(KINDS))
    parser.add_argument("--http-request", type=float, default=5.0, help="timeouts.http_request")
    parser.add_argument("--idle", type=float, default=10.0, help="timeouts.client and .server")
    parser.add_argument("--slack", type=float, default=3.0, help="allowed past a timeout")
    parser.add_argument("--normal-requests", type=int, default=300)
    parser.add_argument("--loop", default="uvloop", choices=["uvloop", "asyncio"])
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    raise_fd_limit()
    results: list[AttackResult] = []
    with tempfile.TemporaryDirectory(prefix="slow-clients-") as tmp:
        for path in args.paths.split(","):
            results += run_path(
                path,
                args.kinds.split(","),
                args.attackers,
                args.http_request,
                args.idle,
                args.slack,
                args.normal_requests,
                Path(tmp),
                args.loop,
            )
    for r in results:
        if r.p99_ratio > 2.0:
            r.verdict.append(f"p99 {r.p99_ratio}x of alone (> 2x)")
    if args.json:
        print(json.dumps([{**asdict(r), "ok": r.ok} for r in results], indent=2))
    else:
        print(
            "| path | attack | attackers | cut (median / max s) | timeout | p99 alone / attack"
            " (ms) | ratio | RSS before / peak / after (MiB) | KiB per attacker | CPU s (proxy /"
            " backend) | verdict |"
        )
        print("|---|---|---|---|---|---|---|---|---|---|---|")
        for r in results:
            print(
                f"| {r.path} | {r.kind} | {r.attackers} | {r.cut} ({r.cut_median_s} /"
                f" {r.cut_max_s}) | {r.timeout_s}s | {r.p99_alone_ms} / {r.p99_attack_ms} |"
                f" {r.p99_ratio}x | {r.rss_before_mib:.0f} / {r.rss_peak_mib:.0f} /"
                f" {r.rss_after_mib:.0f} | {r.rss_per_attacker_kib} |"
                f" {r.cpu_s} / {r.backend_cpu_s} |"
                f" {'ok' if r.ok else '; '.join(r.verdict)} |"
            )
    return 0 if all(r.ok for r in results) else 1


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
