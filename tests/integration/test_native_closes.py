"""The native engine's closes through io_uring (src/_fastpath/engine/closing.c):
with `global.io_uring: auto` a worker closes the sockets of its ended sessions
with one io_uring_enter() per pass instead of a close() each, and with `off`
one close() each as before. Both ways the bytes before a FIN arrive whole, from
either side, and no descriptor is left behind. Real peers: the aiohttp backend
(HTTP responses, the tcp listener relaying them) and its echo mode."""

from __future__ import annotations

import hashlib
import os
import signal
import socket
import subprocess
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.integration.conftest import listener_config
from tests.integration.harness import Backend, Loadstone, wait_for
from tests.peers.backend import pattern_bytes

pytestmark = pytest.mark.integration

Backends = Callable[..., list[Backend]]


@pytest.fixture(params=["auto", "off"])
def io_uring(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def native(tmp_path: Path) -> Iterator[Callable[..., Loadstone]]:
    """loadstone on the native data path (this is the engine's behaviour)."""
    started: list[Loadstone] = []

    def start(config: dict) -> Loadstone:
        ls = Loadstone(tmp_path, config, env={"LOADSTONE_NO_EXTENSIONS": "0"})
        started.append(ls)
        ls.start()
        assert ls.status()["datapath"] == "native"
        return ls

    yield start
    for ls in started:
        ls.stop()


def proxy_port(ls: Loadstone) -> int:
    return int(ls.config["listeners"]["web"]["bind"][0].rsplit(":", 1)[1])


def uring_granted(ls: Loadstone) -> bool:
    """What the start-up line says the workers got (io_uring on / off)."""
    line = wait_for(
        lambda: next((x for x in ls.stderr().splitlines() if "native data path:" in x), None),
        what="the native data path's start-up line",
    )
    return "io_uring on" in line


def fetch(port: int, path: str) -> bytes:
    """One HTTP/1.0 request: the server ends the response with its FIN."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(f"GET {path} HTTP/1.0\r\nHost: test\r\n\r\n".encode())
        chunks = []
        while chunk := s.recv(65536):
            chunks.append(chunk)
    head, _, body = b"".join(chunks).partition(b"\r\n\r\n")
    assert head.split(b" ", 2)[1] == b"200", head[:100]
    return body


def session_sockets(ls: Loadstone, servers: list[Backend]) -> int:
    """loadstone's open descriptors of sessions: sockets accepted on the listener
    or connected to a server (its admin API's connections and the listening
    socket left out, whose count varies with the test's own status requests)."""
    assert ls.proc is not None
    fd_dir = f"/proc/{ls.proc.pid}/fd"
    inodes = set()
    for fd in os.listdir(fd_dir):
        try:
            target = os.readlink(f"{fd_dir}/{fd}")
        except FileNotFoundError:
            continue  # closed meanwhile
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    listen_port = proxy_port(ls)
    server_ports = {int(b.address.rsplit(":", 1)[1]) for b in servers}
    count = 0
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local, remote, state, inode = fields[1], fields[2], fields[3], fields[9]
        if inode not in inodes or state == "0A":  # 0A: LISTEN
            continue
        if (
            int(local.split(":")[1], 16) == listen_port
            or int(remote.split(":")[1], 16) in server_ports
        ):
            count += 1
    return count


def start_proxy(
    native: Callable[..., Loadstone], servers: list[Backend], io_uring: str
) -> Loadstone:
    config = listener_config(servers, log="none")
    config["global"]["io_uring"] = io_uring
    return native(config)


def traced_calls(pid: int, work: Callable[[], None], tmp_path: Path) -> dict[str, int]:
    """close/shutdown/io_uring_enter calls of every thread of `pid` during work()."""
    out = tmp_path / "strace.txt"
    trace = "trace=close,shutdown,io_uring_enter"
    tracer = subprocess.Popen(
        ["strace", "-c", "-f", "-qq", "-e", trace, "-o", str(out), "-p", str(pid)],
        stderr=subprocess.DEVNULL,
    )
    try:

        def all_traced() -> bool:
            tasks = os.listdir(f"/proc/{pid}/task")
            for tid in tasks:
                status = Path(f"/proc/{pid}/task/{tid}/status").read_text()
                if "TracerPid:\t0\n" in status:
                    return False
            return bool(tasks)

        wait_for(all_traced, what="strace attached to every thread")
        work()
    finally:
        tracer.send_signal(signal.SIGINT)
        tracer.wait(timeout=30)
    calls: dict[str, int] = {}
    for line in out.read_text().splitlines():
        parts = line.split()
        if len(parts) in (5, 6) and parts[3].isdigit() and parts[-1] != "total":
            calls[parts[-1]] = int(parts[3])
    return calls


def test_closes_of_sessions_go_through_the_ring(
    backends: Backends, native: Callable[..., Loadstone], io_uring: str, tmp_path: Path
) -> None:
    servers = backends(1)
    ls = start_proxy(native, servers, io_uring)
    port = proxy_port(ls)
    assert ls.proc is not None
    fetch(port, "/")  # warm: the worker's first session
    wait_for(lambda: session_sockets(ls, servers) == 0, what="no session socket open")
    sessions = 100

    def work() -> None:
        for _ in range(sessions):
            fetch(port, "/")
        # the last session's closes come after its client saw the FIN
        wait_for(lambda: session_sockets(ls, servers) == 0, what="no session socket open")

    calls = traced_calls(ls.proc.pid, work, tmp_path)
    if io_uring == "auto" and uring_granted(ls):
        # both sockets of every session closed by the ring, a few enters per batch
        assert calls.get("close", 0) < sessions // 4, calls
        assert calls.get("io_uring_enter", 0) >= 1, calls
    else:
        assert io_uring == "off" or not uring_granted(ls)
        assert calls.get("close", 0) >= 2 * sessions, calls
        assert calls.get("io_uring_enter", 0) == 0, calls
    assert ls.status()["listeners"]["web"]["sessions_total"] == sessions + 1


def test_bytes_before_a_fin_arrive_whole_and_no_descriptor_stays(
    backends: Backends, native: Callable[..., Loadstone], io_uring: str
) -> None:
    web = backends(1)
    echo = backends(1, mode="echo", prefix="e")
    ls = start_proxy(native, web, io_uring)
    config = listener_config(echo, log="none")
    config["global"]["io_uring"] = io_uring
    echo_ls = native(config)
    port, echo_port = proxy_port(ls), proxy_port(echo_ls)

    # the server's FIN after a large response: every byte before it arrives
    size = 6 * 1024 * 1024 + 7
    assert fetch(port, f"/download?size={size}") == pattern_bytes(size)

    # the client's FIN after a large request: the echo server gets all of it
    # (its digest) and answers after it; its FIN comes after that answer
    payload = os.urandom(3 * 1024 * 1024 + 5)
    with socket.create_connection(("127.0.0.1", echo_port), timeout=10) as s:

        def send_and_shut() -> None:
            s.sendall(payload)
            s.shutdown(socket.SHUT_WR)

        sender = threading.Thread(target=send_and_shut)
        sender.start()
        chunks = []
        while chunk := s.recv(65536):
            chunks.append(chunk)
        sender.join()
    echoed = b"".join(chunks)
    digest = hashlib.sha256(payload).hexdigest()
    assert echoed == payload + f"\nEOF {digest} e2\n".encode()

    # two hundred sessions, small and ended by either side: nothing left open
    for i in range(200):
        if i % 2:
            assert fetch(port, "/").strip() == b"s1"
        else:
            with socket.create_connection(("127.0.0.1", echo_port), timeout=10) as s:
                s.sendall(b"ping")
                assert s.recv(4) == b"ping"  # then the client ends it first, unasked
    wait_for(lambda: session_sockets(ls, web) == 0, what="no session socket open")
    wait_for(lambda: session_sockets(echo_ls, echo) == 0, what="no echo session socket open")
