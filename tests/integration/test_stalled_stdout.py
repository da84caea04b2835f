"""`loadstone run` whose standard output is a pipe nobody reads (issue 17, item 8):
the admin API keeps answering, health checks keep running and SIGTERM still stops
the process; the access lines that do not fit are dropped and counted in
/metrics, and a summary line says so once writing resumes."""

from __future__ import annotations

import fcntl
import itertools
import os
import re
import select
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.integration.conftest import listener_config
from tests.integration.harness import LOADSTONE, Backend, Loadstone, free_port, wait_for
from tests.integration.test_http_mode import RecordingBackend

pytestmark = [pytest.mark.integration]

Backends = Callable[..., list[Backend]]

F_SETPIPE_SZ = 1031  # fcntl.F_SETPIPE_SZ (Python 3.10+ on Linux), spelled out for mypy
# Long targets make long access lines (the native engine logs 1024 bytes of
# one): the sink's 4 MiB queue fills after a few thousand requests rather than
# twenty thousand.
TARGET = "/?" + "x" * 4000
REQUESTS = 6000
PIPELINED = 10


@pytest.fixture
def stalled(tmp_path: Path, datapath: str) -> Iterator[Callable[[dict], tuple[Loadstone, int]]]:
    """Start `loadstone run` with its stdout a pipe; returns it and the pipe's read
    end, read by nobody until the test says so."""
    started: list[tuple[Loadstone, int]] = []

    def start(config: dict) -> tuple[Loadstone, int]:
        env = {"LOADSTONE_NO_EXTENSIONS": "1" if datapath == "pure" else "0"}
        ls = Loadstone(tmp_path, config, env=env)
        read_end, write_end = os.pipe()
        fcntl.fcntl(write_end, F_SETPIPE_SZ, 4096)
        with open(ls.stderr_path, "wb") as err:
            ls.proc = subprocess.Popen(
                [str(LOADSTONE), "run", str(ls.path), "--log-format", "json"],
                stdout=write_end,
                stderr=err,
                env=ls.env,
            )
        os.close(write_end)
        started.append((ls, read_end))
        wait_for(ls._ready, timeout=15, what="loadstone admin API")
        return ls, read_end

    yield start
    for ls, read_end in started:
        if ls.proc is not None and ls.proc.poll() is None:
            ls.proc.kill()
            ls.proc.wait(10)
        os.close(read_end)


def dropped_lines(ls: Loadstone) -> float:
    metrics = ls.get("/metrics").decode()
    found = re.findall(
        r'^loadstone_log_dropped_total\{[^}]*output="sessions"[^}]*\} (\S+)$', metrics, re.M
    )
    return float(found[0]) if found else -1.0


def drain(fd: int, stop: threading.Event) -> None:
    """Read the pipe until `stop` is set."""
    while not stop.is_set():
        if select.select([fd], [], [], 0.1)[0] and not os.read(fd, 65536):
            return


def fill(port: int) -> None:
    """REQUESTS requests with long targets on one keep-alive connection, PIPELINED
    at a time."""
    request = f"GET {TARGET} HTTP/1.1\r\nHost: t\r\n\r\n".encode()
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        buffered = b""
        for i in range(REQUESTS):
            if i % PIPELINED == 0:
                s.sendall(request * PIPELINED)
            while b"\r\n\r\n" not in buffered:
                data = s.recv(65536)
                assert data, "the proxy closed the connection"
                buffered += data
            head, _, buffered = buffered.partition(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 200"), head
            length = int(re.search(rb"(?i)\r\ncontent-length: *(\d+)", head)[1])  # type: ignore[index]
            while len(buffered) < length:
                data = s.recv(65536)
                assert data, "the proxy closed the connection"
                buffered += data
            buffered = buffered[length:]


def test_a_stdout_nobody_reads_stalls_nothing(
    backends: Backends, stalled: Callable[[dict], tuple[Loadstone, int]]
) -> None:
    servers = backends(2)
    check = {"type": "http", "path": "/health", "interval": "200ms", "rise": 1, "fall": 2}
    config = listener_config(servers, mode="http", check=check)
    ls, stdout = stalled(config)
    ls.wait_all_up("web")
    port = int(config["listeners"]["web"]["bind"][0].rsplit(":", 1)[1])
    fill(port)
    # The pipe is full and the sink's queue too: lines are dropped and counted.
    wait_for(lambda: dropped_lines(ls) > 0, timeout=10, what="dropped access lines counted")
    # The admin API answers and health checks run: a killed server is marked down.
    servers[0].kill()
    ls.wait_state("web", servers[0].name, "down", timeout=10)
    # Writing resumes: a summary line says how many were lost.
    stop = threading.Event()
    reader = threading.Thread(target=drain, args=(stdout, stop), daemon=True)
    reader.start()
    try:
        wait_for(lambda: "line(s) dropped" in ls.stderr(), timeout=15, what="the summary line")
    finally:
        stop.set()
        reader.join(5)
    # Stalled again, SIGTERM still stops the process.
    fill(port)
    assert ls.proc is not None
    ls.proc.send_signal(signal.SIGTERM)
    assert ls.proc.wait(30) == 0


def test_checks_keep_their_interval_while_stdout_is_stalled(
    stalled: Callable[[dict], tuple[Loadstone, int]], tmp_path: Path
) -> None:
    """Issue 17, part 6: the check probes arriving at a real backend keep their
    interval while stdout is a pipe nobody reads and session lines are dropped."""
    interval = 0.2
    server = RecordingBackend("r1", free_port(), tmp_path / "requests.jsonl").start()
    try:
        check = {"type": "http", "path": "/health", "interval": "200ms", "rise": 1, "fall": 2}
        config = listener_config([server], mode="http", check=check)
        ls, _stdout = stalled(config)
        ls.wait_all_up("web")
        port = int(config["listeners"]["web"]["bind"][0].rsplit(":", 1)[1])
        t0 = time.time()
        fill(port)
        wait_for(lambda: dropped_lines(ls) > 0, timeout=10, what="dropped access lines counted")
        fill(port)  # stalled throughout: more lines dropped while the checks run
        t1 = time.time()
        assert dropped_lines(ls) > 0
    finally:
        server.stop()
    probes = sorted(
        r["time"] for r in server.requests() if r["target"] == "/health" and t0 <= r["time"] <= t1
    )
    gaps = [b - a for a, b in itertools.pairwise(probes)]
    assert len(probes) >= 0.7 * (t1 - t0) / interval, (len(probes), t1 - t0)
    gaps.sort()
    median, worst = gaps[len(gaps) // 2], gaps[-1]
    print(f"{len(probes)} probes in {t1 - t0:.1f} s: median gap {median:.3f} s, max {worst:.3f} s")
    assert 0.8 * interval <= median <= 1.3 * interval, gaps
    assert worst < 3 * interval, gaps
