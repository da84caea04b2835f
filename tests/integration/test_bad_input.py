"""What bad peers get (tcp mode, both data paths): each session ends by its
timeout or by the peer's own event, is counted and logged, and the proxy's open
descriptors return to their baseline; other clients are served meanwhile."""

from __future__ import annotations

import asyncio
import contextlib
import resource
import socket
import threading
import time
from collections.abc import Callable, Iterator

import pytest

from tests.integration.conftest import listener_config
from tests.integration.harness import Backend, Loadstone, free_port, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("datapath")]

Backends = Callable[..., list[Backend]]
Start = Callable[..., Loadstone]

MEGABYTE = 1024 * 1024
RST = b"\x01\x00\x00\x00\x00\x00\x00\x00"  # SO_LINGER on, 0 s: close() sends a RST


def proxy_port(ls: Loadstone) -> int:
    return int(ls.config["listeners"]["web"]["bind"][0].rsplit(":", 1)[1])


def settle_fds(ls: Loadstone) -> int:
    """The proxy's descriptor count once its start-up has settled."""
    ls.status()  # the admin server has taken its first connection and closed it
    time.sleep(0.2)
    return ls.fd_count()


def back_to(ls: Loadstone, baseline: int) -> None:
    wait_for(lambda: ls.fd_count() <= baseline, timeout=10, what=f"fd count {baseline}")


def ends(ls: Loadstone, n: int = 1) -> list[str]:
    def logged() -> list[str]:
        entries = [e["end"] for e in ls.session_logs() if e.get("event") == "session"]
        return entries if len(entries) >= n else []

    return wait_for(logged, timeout=10, what=f"{n} session log line(s)")


def echo_ok(port: int) -> bool:
    """A well-behaved client is still served (no stalled worker)."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(b"ping")
        s.shutdown(socket.SHUT_WR)
        data = b""
        while chunk := s.recv(4096):
            data += chunk
    return data.startswith(b"ping\nEOF ")


@pytest.fixture
def silent_backend() -> Iterator[int]:
    """A server that accepts and never answers (nor reads)."""
    listener = socket.create_server(("127.0.0.1", 0), backlog=64)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.1)
        while not stop.is_set():
            with contextlib.suppress(TimeoutError, OSError):
                held.append(listener.accept()[0])

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield int(listener.getsockname()[1])
    stop.set()
    thread.join(5)
    for s in held:
        s.close()
    listener.close()


def test_client_reset_mid_session(backends: Backends, loadstone: Start) -> None:
    servers = backends(1, mode="echo")
    ls = loadstone(listener_config(servers))
    baseline = settle_fds(ls)
    s = socket.create_connection(("127.0.0.1", proxy_port(ls)), timeout=5)
    s.sendall(b"hello")
    assert s.recv(5) == b"hello"
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, RST)
    s.close()
    assert ends(ls) == ["client-reset"]
    st = ls.status()["listeners"]["web"]
    assert st["sessions"] == 0 and st["sessions_total"] == 1
    back_to(ls, baseline)


def test_server_reset_mid_session(backends: Backends, loadstone: Start) -> None:
    servers = backends(1, mode="echo")
    ls = loadstone(listener_config(servers))
    baseline = settle_fds(ls)
    with socket.create_connection(("127.0.0.1", proxy_port(ls)), timeout=5) as s:
        s.sendall(b"hello")
        assert s.recv(5) == b"hello"
        servers[0].kill()  # the kernel resets the connection of a killed process
        with contextlib.suppress(ConnectionResetError):
            assert s.recv(10) == b""
    assert ends(ls)[0] in ("server-reset", "server-close")
    back_to(ls, baseline)


def test_half_closed_client_that_never_reads(backends: Backends, loadstone: Start) -> None:
    servers = backends(1, mode="echo")
    config = listener_config(servers)
    config["listeners"]["web"]["timeouts"] = {"client": "1s", "server": "5s"}
    ls = loadstone(config)
    baseline = settle_fds(ls)
    port = proxy_port(ls)
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    # Send until nothing more fits (the echo comes back and is never read, so
    # everything backs up), then half-close: the FIN waits behind the bytes.
    s.setblocking(False)
    block = b"x" * 65536
    sent = 0
    stuck_since = time.monotonic()
    while time.monotonic() - stuck_since < 0.2:
        try:
            sent += s.send(block)
            stuck_since = time.monotonic()
        except BlockingIOError:
            time.sleep(0.02)
    s.shutdown(socket.SHUT_WR)
    t0 = time.monotonic()
    try:
        assert echo_ok(port)
        assert sorted(ends(ls, 2)) == ["client-close", "client-timeout"]
        assert time.monotonic() - t0 < 5
        assert sent > 0
    finally:
        s.close()
    back_to(ls, baseline)


@pytest.mark.parametrize("io_uring", ["auto", "off"])
def test_small_messages_to_clients_that_never_read(
    backends: Backends, loadstone: Start, io_uring: str
) -> None:
    """Small reads wait in the native worker's outbox and leave together at the end
    of a pass, by one io_uring_enter() where the kernel has io_uring (global.io_uring)
    or one send() each. A client whose receive buffer is full must get its bytes
    held back, never a worker waiting for room: the other clients go on."""
    servers = backends(1, mode="echo")
    config = listener_config(servers)
    config.setdefault("global", {})["io_uring"] = io_uring
    # The client timeout ends the stuck sessions; long enough not to fire while
    # the buffers are still filling.
    config["listeners"]["web"]["timeouts"] = {"client": "3s", "server": "5s"}
    ls = loadstone(config)
    baseline = settle_fds(ls)
    port = proxy_port(ls)
    stuck = []
    for _ in range(2):  # two, so that a pass has several small messages to send
        s = socket.create_connection(("127.0.0.1", port), timeout=5)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        s.setblocking(False)
        stuck.append(s)
    sent = [0, 0]
    stuck_since = time.monotonic()
    try:
        # 1 MB each in 100-byte messages (or until nothing more fits): the echoes
        # fill the clients' 4 KB receive buffers within the first few dozen, and
        # back up into the proxy from there.
        while time.monotonic() - stuck_since < 0.3 and min(sent) < MEGABYTE:
            moved = False
            for i, s in enumerate(stuck):
                if sent[i] >= MEGABYTE:
                    continue
                with contextlib.suppress(BlockingIOError):
                    sent[i] += s.send(b"m" * 100)
                    moved = True
            if moved:
                stuck_since = time.monotonic()
            else:
                time.sleep(0.01)
        t0 = time.monotonic()
        for _ in range(5):
            assert echo_ok(port)
        assert time.monotonic() - t0 < 5
        assert min(sent) > 100_000  # far more than the 4 KB receive buffers took
        assert sorted(ends(ls, 7)) == ["client-close"] * 5 + ["client-timeout"] * 2
    finally:
        for s in stuck:
            s.close()
    back_to(ls, baseline)


def test_client_that_sends_nothing(backends: Backends, loadstone: Start) -> None:
    servers = backends(1, mode="echo")
    config = listener_config(servers)
    config["listeners"]["web"]["timeouts"] = {"client": "500ms", "server": "5s"}
    ls = loadstone(config)
    baseline = settle_fds(ls)
    with socket.create_connection(("127.0.0.1", proxy_port(ls)), timeout=5) as s:
        t0 = time.monotonic()
        assert s.recv(10) == b""
        assert 0.4 < time.monotonic() - t0 < 2.5
    assert ends(ls) == ["client-timeout"]
    entry = ls.session_logs()[0]
    assert entry["server"] == "s1" and entry["bytes_in"] == 0
    back_to(ls, baseline)


def test_backend_that_accepts_and_never_answers(
    backends: Backends, loadstone: Start, silent_backend: int
) -> None:
    silent = Backend("silent", silent_backend)
    config = listener_config([silent])
    config["listeners"]["web"]["timeouts"] = {"client": "5s", "server": "700ms"}
    ls = loadstone(config)
    baseline = settle_fds(ls)
    with socket.create_connection(("127.0.0.1", proxy_port(ls)), timeout=5) as s:
        s.sendall(b"GET / HTTP/1.0\r\n\r\n")
        t0 = time.monotonic()
        assert s.recv(10) == b""
        assert 0.5 < time.monotonic() - t0 < 3
    assert ends(ls) == ["server-timeout"]
    assert ls.server("web", "silent")["sessions"] == 0
    back_to(ls, baseline)


def test_connect_timeout_to_a_blackhole(loadstone: Start) -> None:
    """A backend whose accept queue is full: connects time out and are retried."""
    # A listening socket with a backlog of 0 that nobody accepts from: once one
    # connection waits in it, further SYNs are dropped (the connect hangs).
    hole = socket.socket()
    hole.bind(("127.0.0.1", 0))
    hole.listen(0)
    filler = [socket.socket() for _ in range(3)]
    for f in filler:
        f.setblocking(False)
        with contextlib.suppress(BlockingIOError):
            f.connect(hole.getsockname())
    time.sleep(0.2)
    try:
        dead = Backend("hole", int(hole.getsockname()[1]))
        config = listener_config([dead], retries=1)
        config["defaults"]["timeouts"]["connect"] = "300ms"
        ls = loadstone(config)
        baseline = settle_fds(ls)
        with socket.create_connection(("127.0.0.1", proxy_port(ls)), timeout=5) as s:
            assert s.recv(10) == b""
        assert ends(ls) == ["connect-failed (timeout)"]
        assert ls.server("web", "hole")["connect_errors"] == 2
        back_to(ls, baseline)
    finally:
        for f in filler:
            f.close()
        hole.close()


@pytest.mark.slow
def test_8000_idle_connections(backends: Backends, loadstone: Start) -> None:
    """8,000 clients that connect (each reaching the backend) and stay silent:
    all held at once, a ninth client still served, every one ended by the
    client timeout, each logged, descriptors back to the baseline."""
    n = 8000
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard < 2 * n + 200:
        pytest.skip(f"needs {2 * n + 200} descriptors per process, the limit is {hard}")
    servers = backends(1, mode="echo")
    config = listener_config(servers, maxconn=n + 100, backlog=4096)
    config["listeners"]["web"]["timeouts"] = {"client": "8s", "server": "60s"}
    config["global"]["workers"] = 2
    ls = loadstone(config)
    baseline = settle_fds(ls)
    port = proxy_port(ls)

    async def hold() -> None:
        conns = []
        sem = asyncio.Semaphore(200)

        async def one() -> None:
            async with sem:
                conns.append(await asyncio.open_connection("127.0.0.1", port))

        await asyncio.gather(*(one() for _ in range(n)))
        # every session is established to the backend before the timeout fires
        await asyncio.to_thread(
            wait_for,
            lambda: ls.server("web", "s1")["sessions"] == n,
            15,
            0.2,
            f"{n} sessions on s1",
        )
        assert await asyncio.to_thread(echo_ok, port)
        # the proxy closes them all on the client timeout
        for reader, writer in conns:
            assert await asyncio.wait_for(reader.read(10), 30) == b""
            writer.close()

    asyncio.run(hold())
    wait_for(lambda: ls.status()["listeners"]["web"]["sessions"] == 0, timeout=20)
    logged = ends(ls, n + 1)
    assert logged.count("client-timeout") == n
    assert ls.status()["listeners"]["web"]["sessions_total"] == n + 1
    back_to(ls, baseline)


def test_no_leak_after_a_mix_of_failures(backends: Backends, loadstone: Start) -> None:
    """Refused connects, resets and normal sessions, many times over."""
    servers = backends(1, mode="echo")
    dead = Backend("dead", free_port())
    ls = loadstone(listener_config([dead, *servers], retries=2))
    baseline = settle_fds(ls)
    port = proxy_port(ls)
    for i in range(60):
        s = socket.create_connection(("127.0.0.1", port), timeout=5)
        if i % 3 == 0:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, RST)
            s.close()
            continue
        s.sendall(b"x" * 1000)
        s.shutdown(socket.SHUT_WR)
        data = b""
        while chunk := s.recv(65536):
            data += chunk
        assert data.startswith(b"x" * 1000)
        s.close()
    wait_for(lambda: ls.status()["listeners"]["web"]["sessions"] == 0)
    assert len(ends(ls, 60)) == 60
    back_to(ls, baseline)
