"""The lingering close of a client connection, on both data paths.

Closing a socket whose receive queue holds bytes the proxy never read makes the
kernel send a RST instead of a FIN (and drop what it had not sent yet): a
client still sending when the proxy answers and closes (a redirect or error
before its body was read, pipelined requests after `Connection: close`) would
lose the response. The proxy shuts its write side instead, reads and drops
what still comes, and closes when the client does or after a bound
(`timeouts.linger`, 2 s by default, in all; 0.5 s without a byte). The
raw-socket clients here misbehave on purpose; each asserts the exact
response and a clean end of stream (never ECONNRESET), and that the
proxy's descriptors go back to what they were.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import json
import os
import re
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import pytest

from loadstone.datapath.http_pure.frontend import FLUSH_AT
from loadstone.datapath.transport import WRITE_HIGH_WATER
from loadstone.http import message
from tests.integration.harness import Backend, Loadstone, free_port, wait_for
from tests.integration.test_http_mode import (
    RecordingBackend,
    _closing,
    _Responses,
    http_config,
    port_of,
)
from tests.peers.backend import pattern_bytes
from tests.tlscerts import Ca

# The pure path on both event loops (asyncio's transports differ from uvloop's
# in how they read, pause and close); the native one on uvloop only (its
# connections are the engine's worker threads', not the loop's).
pytestmark = [
    pytest.mark.integration,
    pytest.mark.parametrize(
        ("datapath", "event_loop_name"),
        [("native", "uvloop"), ("pure", "uvloop"), ("pure", "asyncio")],
        indirect=True,
    ),
]

Start = Callable[..., Loadstone]
Backends = Callable[..., list[Backend]]


@pytest.fixture
def loadstone(loadstone: Start, datapath: str, event_loop_name: str) -> Start:
    """The conftest's, on the case's event loop."""
    return partial(loadstone, loop=event_loop_name)


CLOSE_REQUEST = b"GET /first HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
# More than both paths read ahead of the request in flight (64 KiB unparsed,
# a few parsed requests): most of it is still in the kernel when they close.
PIPELINED = b"GET /next HTTP/1.1\r\nHost: t\r\n\r\n" * 8000
REDIRECT = message.redirect(301, b"https://t/first")


def redirecting(loadstone: Start, backends: Backends) -> Loadstone:
    """A listener that answers every request itself, at once (its server unused)."""
    return loadstone(http_config(backends(1), redirect="https"))


class Sender(threading.Thread):
    """Writes `data`, then shuts its side down, while the test reads: a client
    that sends all it has before it looks at the answer."""

    def __init__(self, sock: socket.socket, data: bytes) -> None:
        super().__init__(daemon=True)
        self.sock = sock
        self.data = data
        self.error: OSError | None = None

    def run(self) -> None:
        try:
            self.sock.sendall(self.data)
            self.sock.shutdown(socket.SHUT_WR)
        except OSError as exc:
            self.error = exc


def read_to_end(sock: socket.socket) -> bytes:
    """Everything until the end of stream; an error (ECONNRESET) raises."""
    received = b""
    while chunk := sock.recv(65536):
        received += chunk
    return received


def baseline_fds(ls: Loadstone) -> int:
    """The proxy's descriptors once it has served a connection (its lazily
    opened ones exist from then on) and closed it."""
    before = ls.fd_count()
    with socket.create_connection(("127.0.0.1", port_of(ls)), timeout=10) as s:
        s.sendall(CLOSE_REQUEST)
        assert read_to_end(s) == REDIRECT
    return wait_for(lambda: (n := ls.fd_count()) <= before and n, what="the first one closed")


def fds_back_to(ls: Loadstone, count: int, timeout: float = 10) -> None:
    """No descriptor left behind (<=: the admin connection of the start may
    have been open when `count` was taken)."""
    wait_for(lambda: ls.fd_count() <= count, timeout=timeout, what=f"{count} descriptors")


def proxy_holds(ls: Loadstone, client: socket.socket) -> bool:
    """Has the proxy still a descriptor for its end of `client`'s connection?
    (Its socket in /proc/net/tcp, by the two ports, among its descriptors: once
    closed, an orphan socket has no inode.)"""
    assert ls.proc is not None
    fd_dir = f"/proc/{ls.proc.pid}/fd"
    held = set()
    for fd in os.listdir(fd_dir):
        with contextlib.suppress(OSError):
            held.add(os.readlink(f"{fd_dir}/{fd}"))
    ports = (port_of(ls), client.getsockname()[1])
    with open("/proc/net/tcp") as table:
        for line in table.readlines()[1:]:
            fields = line.split()
            local, remote = (int(f.rsplit(":", 1)[1], 16) for f in fields[1:3])
            if (local, remote) == ports and f"socket:[{fields[9]}]" in held:
                return True
    return False


def test_pipelined_bytes_after_a_close_request_do_not_reset_the_answer(
    loadstone: Start, backends: Backends
) -> None:
    """`Connection: close` and, in the same write, 300 KB of more requests: the
    answer to the first, then the end of stream, not a reset."""
    ls = redirecting(loadstone, backends)
    fds = baseline_fds(ls)
    with socket.create_connection(("127.0.0.1", port_of(ls)), timeout=10) as s:
        sender = Sender(s, CLOSE_REQUEST + PIPELINED)
        sender.start()
        assert read_to_end(s) == REDIRECT
        sender.join(10)
        assert sender.error is None  # all of it was taken (and dropped), not refused
    fds_back_to(ls, fds)


def test_bytes_sent_while_the_response_is_awaited(loadstone: Start, tmp_path: Path) -> None:
    """A second write after the `Connection: close` request, while the server is
    still answering it (a pipelining client): the whole response, then EOF."""
    record = tmp_path / "s1.jsonl"
    server = RecordingBackend("s1", free_port(), record).start()
    try:
        ls = loadstone(http_config([server]))
        with socket.create_connection(("127.0.0.1", port_of(ls)), timeout=10) as s:
            s.sendall(CLOSE_REQUEST.replace(b"/first", b"/slow?delay=0.3"))
            wait_for(lambda: record.exists() and record.read_text(), what="the request at s1")
            sender = Sender(s, PIPELINED)
            sender.start()
            received = read_to_end(s)
            sender.join(10)
        parsed = _Responses()
        parsed.parser.feed_data(received)
        assert len(parsed.done) == 1
        assert parsed.done[0].status == 200 and parsed.done[0].body == b"s1\n"
        assert received.endswith(b"\r\n\r\ns1\n")  # nothing after the one response
        assert [json.loads(line)["target"] for line in record.read_text().splitlines()] == [
            "/slow?delay=0.3"
        ]
    finally:
        server.stop()


def test_an_early_answer_to_a_large_upload_arrives_whole(
    loadstone: Start, backends: Backends
) -> None:
    """A 1 MiB POST answered (a redirect) as soon as its head is read, while the
    client is still writing the body: the client writes it all and reads the
    whole answer, then EOF."""
    ls = redirecting(loadstone, backends)
    fds = baseline_fds(ls)
    body = b"x" * (1 << 20)
    head = b"POST /first HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n" % len(body)
    with socket.create_connection(("127.0.0.1", port_of(ls)), timeout=10) as s:
        sender = Sender(s, head + body)
        sender.start()
        assert read_to_end(s) == REDIRECT
        sender.join(10)
        assert sender.error is None
    fds_back_to(ls, fds)


def test_a_client_that_never_closes_is_closed_after_the_bound(
    loadstone: Start, backends: Backends
) -> None:
    """A body promised and never sent, a socket never closed: the answer and our
    FIN at once, then the descriptor goes after the idle bound."""
    ls = redirecting(loadstone, backends)
    fds = baseline_fds(ls)
    head = b"POST /first HTTP/1.1\r\nHost: t\r\nContent-Length: 100000\r\n\r\n"
    with socket.create_connection(("127.0.0.1", port_of(ls)), timeout=10) as s:
        s.sendall(head + b"y" * 1000)
        assert read_to_end(s) == REDIRECT  # the FIN of our shutdown: EOF
        answered = time.monotonic()
        assert proxy_holds(ls, s)  # lingering
        wait_for(lambda: not proxy_holds(ls, s), timeout=5, what="the linger's end")
        assert time.monotonic() - answered > 0.3  # lingered, not closed at once
        fds_back_to(ls, fds)  # while the client holds its end open


def test_a_dripping_client_is_closed_after_the_total_bound(
    loadstone: Start, backends: Backends
) -> None:
    """A byte every 100 ms keeps the idle bound from firing: the total one
    (2 s) closes it all the same."""
    ls = redirecting(loadstone, backends)
    fds = baseline_fds(ls)
    head = b"POST /first HTTP/1.1\r\nHost: t\r\nContent-Length: 100000\r\n\r\n"
    stop = threading.Event()
    with socket.create_connection(("127.0.0.1", port_of(ls)), timeout=10) as s:
        s.sendall(head)
        assert read_to_end(s) == REDIRECT
        started = time.monotonic()
        refused: list[OSError] = []

        def drip() -> None:
            try:
                while not stop.wait(0.1):
                    s.sendall(b"z")
            except OSError as exc:
                refused.append(exc)

        dripper = threading.Thread(target=drip, daemon=True)
        dripper.start()
        wait_for(lambda: not proxy_holds(ls, s), timeout=6, what="the linger's end")
        took = time.monotonic() - started
        fds_back_to(ls, fds)
        wait_for(lambda: refused, timeout=5, what="the drip refused")
        stop.set()
        dripper.join(5)
    assert took > 1.0  # the idle bound (0.5 s) alone would have closed it sooner


def test_a_stop_ends_a_lingering_connection_at_once(loadstone: Start, backends: Backends) -> None:
    """SIGTERM while a client lingers: the soft stop closes it with the idle
    ones instead of waiting for it (its 2 s) or for the grace (5 s)."""
    ls = redirecting(loadstone, backends)
    head = b"POST /first HTTP/1.1\r\nHost: t\r\nContent-Length: 100000\r\n\r\n"
    stop = threading.Event()
    with socket.create_connection(("127.0.0.1", port_of(ls)), timeout=10) as s:
        s.sendall(head)
        assert read_to_end(s) == REDIRECT
        assert proxy_holds(ls, s)

        def drip() -> None:  # keeps the idle bound from ending it
            with contextlib.suppress(OSError):
                while not stop.wait(0.1):
                    s.sendall(b"z")

        dripper = threading.Thread(target=drip, daemon=True)
        dripper.start()
        started = time.monotonic()
        assert ls.stop() == 0
        took = time.monotonic() - started
        stop.set()
        dripper.join(5)
    assert took < 1.5


def test_linger_zero_closes_at_once(loadstone: Start, backends: Backends) -> None:
    """`timeouts.linger: 0`: the close that would have lingered is immediate (the
    end of stream the client reads is the close's own FIN)."""
    config = http_config(backends(1), redirect="https")
    config["defaults"]["timeouts"]["linger"] = 0
    ls = loadstone(config)
    head = b"POST /first HTTP/1.1\r\nHost: t\r\nContent-Length: 100000\r\n\r\n"
    with socket.create_connection(("127.0.0.1", port_of(ls)), timeout=10) as s:
        s.sendall(head)
        assert read_to_end(s) == REDIRECT
        assert not proxy_holds(ls, s)


def tls_denying(loadstone: Start, backends: Backends, tmp_path: Path) -> tuple[Loadstone, Path]:
    """A TLS listener that answers every request 413 itself, at once (a deny
    rule: before any of the body is read); and the CA that signed it."""
    ca = Ca(tmp_path / "pki")
    issued = ca.issue("web", ["web.test"])
    config = http_config(backends(1), request_rules=[{"deny": 413}])
    config["listeners"]["web"]["tls"] = {"certificates": [str(issued.bundle)]}
    return loadstone(config), ca.path


def tls_exchange(port: int, ca_file: Path, data: bytes) -> tuple[bytes, OSError | None]:
    """Over TLS, as most clients do: send all of `data`, then read the answer
    (an SSLSocket is not to be read and written from two threads at once).
    Every byte read until the end of stream (a reset raises), and the error
    that stopped the sending, if one did."""
    ctx = ssl.create_default_context(cafile=str(ca_file))
    raw = socket.create_connection(("127.0.0.1", port), timeout=10)
    with ctx.wrap_socket(raw, server_hostname="web.test") as s:
        refused: OSError | None = None
        try:
            s.sendall(data)
        except OSError as exc:  # the proxy gone: what it sent may still be read
            refused = exc
        return read_to_end(s), refused


def test_tls_an_early_answer_to_a_large_upload_arrives_whole(
    loadstone: Start, backends: Backends, tmp_path: Path
) -> None:
    """Over TLS, a 1 MiB POST denied (413) as soon as its head is read: the
    whole answer, the close_notify, the end of stream; never a reset. Without
    the linger the proxy closed a socket holding unread records, a RST."""
    ls, ca_file = tls_denying(loadstone, backends, tmp_path)
    body = b"x" * (1 << 20)
    head = b"POST /up HTTP/1.1\r\nHost: web.test\r\nContent-Length: %d\r\n\r\n" % len(body)
    fds = ls.fd_count()
    for _ in range(3):
        received, refused = tls_exchange(port_of(ls), ca_file, head + body)
        assert refused is None  # all of it taken (and dropped), not refused
        assert received == message.answer(413)
    fds_back_to(ls, fds)


def test_tls_pipelined_requests_after_a_close_request(
    loadstone: Start, backends: Backends, tmp_path: Path
) -> None:
    """Over TLS, `Connection: close` and 300 KB of requests after it in the
    same write (3 MiB: more than the socket buffers hold): the one answer,
    then the end of stream."""
    ls, ca_file = tls_denying(loadstone, backends, tmp_path)
    fds = ls.fd_count()
    request = CLOSE_REQUEST.replace(b"Host: t", b"Host: web.test")
    received, refused = tls_exchange(port_of(ls), ca_file, request + PIPELINED * 12)
    assert refused is None
    assert received == message.answer(413)
    fds_back_to(ls, fds)


def test_the_queue_timeout_answer_to_an_upload_arrives_whole(
    loadstone: Start, backends: Backends
) -> None:
    """A 1 MiB POST that waited in the maxconn queue until `timeouts.queue`:
    its 503, then the end of stream, while its body was still being sent
    (none of it read while queued). The native path closed at once: a RST."""
    config = http_config(backends(1), maxconn=1)
    config["defaults"]["timeouts"]["queue"] = "300ms"
    ls = loadstone(config)
    body = b"x" * (1 << 20)
    head = b"POST /up HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n" % len(body)
    with socket.create_connection(("127.0.0.1", port_of(ls)), timeout=10) as holder:
        holder.sendall(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")  # keep-alive: holds the slot
        assert holder.recv(65536).startswith(b"HTTP/1.1 200")
        fds = ls.fd_count()
        with socket.create_connection(("127.0.0.1", port_of(ls)), timeout=10) as s:
            sender = Sender(s, head + body)
            sender.start()
            assert read_to_end(s) == message.ANSWERS[503]
            sender.join(10)
            assert sender.error is None  # all of it taken (and dropped), not refused
        fds_back_to(ls, fds)
        assert ls.status()["listeners"]["web"]["sessions"] == 1  # the holder's, still


def test_a_queue_timeout_answer_lingering_as_a_slot_frees_leaves_the_count(
    loadstone: Start, backends: Backends
) -> None:
    """The slot frees while a queue timeout's 503 lingers: the lingering one is
    not admitted, and the process's count of connections (global.maxconn's)
    goes back to zero once both are gone. (The pure path took it off its queue
    then and never counted it out.)"""
    config = http_config(backends(1), maxconn=1)
    config["defaults"]["timeouts"]["queue"] = "300ms"
    ls = loadstone(config)
    head = b"POST /up HTTP/1.1\r\nHost: t\r\nContent-Length: 100000\r\n\r\n"
    holder = socket.create_connection(("127.0.0.1", port_of(ls)), timeout=10)
    with holder, socket.create_connection(("127.0.0.1", port_of(ls)), timeout=10) as s:
        holder.sendall(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")  # keep-alive: holds the slot
        assert holder.recv(65536).startswith(b"HTTP/1.1 200")
        s.sendall(head + b"y" * 1000)  # a body promised, not all sent: it lingers
        assert read_to_end(s) == message.ANSWERS[503]
        holder.close()  # the slot frees during the linger
        wait_for(lambda: ls.status()["limits"]["connections"] == 1, what="the holder gone")
        s.close()  # the linger's end
    wait_for(lambda: ls.status()["limits"]["connections"] == 0, timeout=5, what="nothing counted")


def skip_if_refused(error: int | None) -> None:
    """A skip where the kernel refuses the proxy's sockets to us (EPERM: a
    seccomp profile, Docker's default among them, allows pidfd_getfd only
    with CAP_SYS_PTRACE; ENOSYS: a kernel before 5.6). Not a missing feature
    of loadstone: this environment cannot run the check. (No fallback: a full
    send buffer is cheap to reach only with a small one, which loadstone does
    not set; an autotuned one of up to wmem_max moves with every connection.)
    Other errors fail the test."""
    if error in (errno.EPERM, errno.ENOSYS):
        pytest.skip(
            f"pidfd_getfd(2) refused here ({errno.errorcode[error]}: a seccomp profile "
            "such as Docker's default, or a kernel before 5.6): the proxy's send "
            "buffer cannot be made small to reach the case"
        )


def proxy_socket_buffers(ls: Loadstone, size: int, server_port: int | None = None) -> None:
    """Give the proxy's listening sockets a send buffer of `size` (SO_SNDBUF,
    which the sockets they accept inherit, locked: no autotuning), through a
    duplicate of each taken with pidfd_getfd(2) (Linux >= 5.6; the proxy is our
    child, so ptrace's rule allows it). loadstone has no setting for it, and a
    send buffer of a few KiB makes a full one cheap to reach. With
    `server_port`: its connections to the server listening there instead
    (pooled ones; on loopback an autotuned send buffer starts at about 1 MB)."""
    assert ls.proc is not None
    libc = ctypes.CDLL(None, use_errno=True)
    pidfd_getfd = 438  # the same number on every architecture
    wanted = set()
    with open("/proc/net/tcp") as table:
        for line in table.readlines()[1:]:
            fields = line.split()
            local, remote = (int(f.rsplit(":", 1)[1], 16) for f in fields[1:3])
            if (
                remote == server_port and fields[3] == "01"  # ESTABLISHED
                if server_port is not None
                else local == port_of(ls) and fields[3] == "0A"  # LISTEN
            ):
                wanted.add(f"socket:[{fields[9]}]")
    try:
        pidfd = os.pidfd_open(ls.proc.pid)
    except OSError as exc:
        skip_if_refused(exc.errno)
        raise
    done = 0
    try:
        for fd in os.listdir(f"/proc/{ls.proc.pid}/fd"):
            with contextlib.suppress(OSError):
                if os.readlink(f"/proc/{ls.proc.pid}/fd/{fd}") not in wanted:
                    continue
            copy = libc.syscall(pidfd_getfd, pidfd, int(fd), 0)
            if copy < 0:
                skip_if_refused(ctypes.get_errno())
            assert copy >= 0, os.strerror(ctypes.get_errno())
            with socket.socket(fileno=copy) as dup:
                dup.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, size)
            done += 1
    finally:
        os.close(pidfd)
    assert done


def ss(local_port: int, remote_port: int, options: str = "-tnH") -> str:
    """ss(8)'s line for a loopback connection's end, by its two ports ("" once
    it is gone)."""
    return subprocess.run(
        ["ss", options, "state", "all", f"sport = :{local_port} and dport = :{remote_port}"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout


def queues(local_port: int, remote_port: int) -> tuple[str, int, int]:
    """A loopback connection's end: its state, what its receive queue holds
    (not read by its owner yet) and its send queue (not acknowledged yet)."""
    fields = ss(local_port, remote_port).split() or ["gone", "0", "0"]
    return fields[0], int(fields[1]), int(fields[2])


def proxy_end(ls: Loadstone, client_port: int) -> tuple[str, int, bool] | None:
    """The proxy's end of a client's connection, from ss(8): its state, the
    bytes written into it (acknowledged, then still in its send queue; a FIN
    counts one), and whether its writes are stopped until the client reads:
    its send buffer is full (what it holds, wmem_queued, has reached
    SO_SNDBUF: a write is refused), or not writable as poll(2) and epoll(7)
    tell it (sk_stream_is_writeable: the room left is less than half of what
    it holds). A proxy that met a full buffer waits for writability, which
    the acknowledgements of what the client took while not reading (its
    window, then a zero-window probe's few hundred bytes at a time) can
    bring below full without making writable: stopped all the same, for as
    long as the client reads nothing. None once it is gone."""
    shown = ss(port_of(ls), client_port, "-tnmiH")
    if not shown.strip():
        return None

    def number(name: str) -> int:
        found = re.search(rf"\b{name}(\d+)", shown)
        return int(found.group(1)) if found else 0

    fields = shown.split()
    written = number("bytes_acked:") + int(fields[2])
    held, size = number("w"), number("tb")
    return fields[0], written, held >= size or size - held < held // 2


# The proxy's end before its FIN (CLOSE-WAIT: the client's came first).
OPEN = ("ESTAB", "CLOSE-WAIT")


def writes_over(ls: Loadstone, client_port: int) -> tuple[str, int, bool] | None:
    """proxy_end once the proxy can write no more: gone, its FIN sent (past
    OPEN), or its writes stopped (proxy_end)."""
    end = proxy_end(ls, client_port) or ("gone", 0, False)
    return end if end[0] not in OPEN or end[2] else None


class CountingTlsClient:
    """A TLS client over its own socket reads (ssl.MemoryBIO), to count the
    raw bytes it receives; a small SO_RCVBUF, so that a response soon fills
    its window and then the proxy's send buffer."""

    def __init__(self, port: int, ca_file: Path) -> None:
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        self.sock.settimeout(10)
        self.sock.connect(("127.0.0.1", port))
        self.incoming, self.outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        ctx = ssl.create_default_context(cafile=str(ca_file))
        self.tls = ctx.wrap_bio(self.incoming, self.outgoing, server_hostname="web.test")
        self.received = 0  # raw bytes
        while True:
            try:
                self.tls.do_handshake()
                break
            except ssl.SSLWantReadError:
                self._flush()
                assert self._fill(), "the end of stream in the handshake"
        self._flush()

    def _flush(self) -> None:
        if data := self.outgoing.read():
            self.sock.sendall(data)

    def _fill(self) -> bool:
        data = self.sock.recv(65536)  # a reset raises
        self.received += len(data)
        if data:
            self.incoming.write(data)
        else:
            self.incoming.write_eof()
        return bool(data)

    def send(self, data: bytes) -> None:
        self.tls.write(data)
        self._flush()

    def read_to_end(self, then_fin: bool = True, into: bytearray | None = None) -> bytes:
        """Everything up to the close_notify, then (then_fin) the end of
        stream; an end without close_notify (SSLEOFError) or a reset raises
        (what came before it is in `into`, if given)."""
        received = bytearray() if into is None else into
        while True:
            try:
                chunk = self.tls.read(65536)
            except ssl.SSLWantReadError:
                self._fill()
                continue
            except ssl.SSLZeroReturnError:
                break
            if not chunk:  # (SSLObject: the close_notify; an end without one raises)
                break
            received += chunk
        if then_fin:
            assert not self._fill()  # the FIN after it, nothing more
        return bytes(received)

    def close(self) -> None:
        self.sock.close()


def tls_listener(loadstone: Start, backends: Backends, tmp_path: Path) -> tuple[Loadstone, Path]:
    """A TLS listener in front of one backend; and the CA that signed it."""
    ca = Ca(tmp_path / "pki")
    issued = ca.issue("web", ["web.test"])
    config = http_config(backends(1))
    config["listeners"]["web"]["tls"] = {"certificates": [str(issued.bundle)]}
    return loadstone(config), ca.path


def close_notify_over_full_buffers(
    ls: Loadstone, ca_file: Path, after: bytes, half_close: bool = False
) -> int:
    """`Connection: close` responses of a range of sizes (then `after`, in
    the same write), each to a client that reads nothing until the proxy's
    writes are done or stopped (`half_close`: a client that shuts its side
    of the TCP connection after its request, as some HTTP/1.0 ones do, and
    reads on), through a proxy's send buffer of 8 KiB: each
    read whole, then the close_notify, then the end of stream (read_to_end
    raises on an end without close_notify, or a reset). How often the case
    was met: the close_notify found the buffer full (the proxy's end
    open, its writes stopped, all the response in the socket but for the
    close_notify's bytes, counted by the client).

    Where the response ends in the send buffer moves with every connection
    (the records' sizes follow the server's reads), so no one size hits the
    case for sure: hence the range, and the count."""
    proxy_socket_buffers(ls, 4096)  # the kernel doubles it
    warm = CountingTlsClient(port_of(ls), ca_file)  # the server connection pooled from now on
    warm.send(b"GET /download?size=10 HTTP/1.1\r\nHost: web.test\r\nConnection: close\r\n\r\n")
    assert warm.read_to_end(then_fin=False).endswith(pattern_bytes(10))
    warm.close()
    fds = ls.fd_count()
    met = 0
    for size in range(5800, 6400, 7):
        client = CountingTlsClient(port_of(ls), ca_file)
        try:
            request = b"GET /download?size=%d HTTP/1.1\r\nHost: web.test\r\n" % size
            client.send(request + b"Connection: close\r\n\r\n" + after)
            if half_close:
                client.sock.shutdown(socket.SHUT_WR)
            end = wait_for(
                partial(writes_over, ls, client.sock.getsockname()[1]),
                interval=0.002,
                what="the proxy's writes done or stopped",
            )
            body = client.read_to_end()
        finally:
            client.close()
        assert body.endswith(b"\r\n\r\n" + pattern_bytes(size)), (size, len(body))
        close_notify_left = client.received - end[1]  # (the FIN: 1 more)
        met += end[0] in OPEN and 0 < close_notify_left <= 24
    fds_back_to(ls, fds)
    return met


def test_tls_close_notify_that_meets_a_full_send_buffer_waits_for_room(
    loadstone: Start, backends: Backends, tmp_path: Path
) -> None:
    """Over TLS, a `Connection: close` response whose last record fills the
    proxy's send buffer (a client not reading yet) while the client is still
    sending: the close_notify finds no room. The proxy used to close at once
    then, on unread bytes: a reset, the response's tail lost (the client read
    its head and an end). It waits for room instead, then shuts its side and
    lingers: the whole response, the close_notify, the end of stream."""
    ls, ca_file = tls_listener(loadstone, backends, tmp_path)
    # more than either path reads ahead of the request in flight: unread at the close
    more = b"GET / HTTP/1.1\r\nHost: web.test\r\n\r\n" * 3000
    met = close_notify_over_full_buffers(ls, ca_file, more)
    assert met > 0  # the case this is about was met (native: a few dozen times)


# Not tested here: that a close_notify's wait keeps the deadline of the
# response's last bytes (http_linger.c: notify_wait) instead of starting a
# second timeouts.client. To see it, those bytes must first wait a while (the
# client reads nothing), then the client must read just enough for the
# response's tail to go but not the close_notify, and the test must time the
# end against one timeout from the first wait rather than from the second.
# Where the tail lands moves with every connection (above: a range of sizes
# meets the case on about one in three), so each try costs a timeout and
# meeting the case is likely but not certain: a sweep long enough to be sure
# is tens of seconds, and a time bound of a few hundred ms is not one a loaded
# 2-core machine keeps.


def test_tls_a_clean_close_whose_close_notify_meets_a_full_send_buffer_sends_it(
    loadstone: Start, backends: Backends, tmp_path: Path
) -> None:
    """The same over a clean exchange (the client sends nothing after its
    request): the native path used to close at once when the close_notify
    found no room, and the client got the end of stream without it, which
    one reading a close-delimited body cannot tell from a truncation
    (read_to_end: SSLEOFError). It waits for room instead (bounded by
    timeouts.client), then closes. (The pure path: asyncio's TLS transport
    hands the close_notify to the TCP one, which writes all it holds before
    it closes.)"""
    ls, ca_file = tls_listener(loadstone, backends, tmp_path)
    met = close_notify_over_full_buffers(ls, ca_file, b"")
    assert met > 0  # the case this is about was met


def test_tls_a_half_closed_clients_close_notify_waits_for_room_all_the_same(
    loadstone: Start, backends: Backends, tmp_path: Path
) -> None:
    """The clean exchange of a client that shut its side after its request:
    its end of stream, read while the close_notify waits for room, does not
    end the wait (it still reads); the close_notify arrives."""
    ls, ca_file = tls_listener(loadstone, backends, tmp_path)
    met = close_notify_over_full_buffers(ls, ca_file, b"", half_close=True)
    assert met > 0  # the case this is about was met


def test_tls_a_client_that_shuts_its_side_while_the_close_notify_waits_gets_it(
    loadstone: Start, backends: Backends, tmp_path: Path
) -> None:
    """A close while the client is still sending (pipelined bytes unread), the
    close_notify waiting for room, and the client's end of stream behind its
    bytes: read while the close_notify waits (native: drop_client_bytes), it
    does not end the wait; the close_notify arrives, then the close."""
    ls, ca_file = tls_listener(loadstone, backends, tmp_path)
    more = b"GET / HTTP/1.1\r\nHost: web.test\r\n\r\n" * 3000
    met = close_notify_over_full_buffers(ls, ca_file, more, half_close=True)
    assert met > 0  # the case this is about was met


def test_tls_a_clean_close_sends_the_fin_without_awaiting_the_clients_close_notify(
    loadstone: Start, backends: Backends, tmp_path: Path
) -> None:
    """A clean exchange over TLS that ends with `Connection: close`: our
    close_notify, then at once the end of stream, from a client that never
    sends its own close_notify (the socket's 10-s timeout would fail the read).
    asyncio's close waited for it, up to 30 s, with the socket open: the pure
    path held a descriptor that long per such client. The proxy's descriptors
    go back to what they were."""
    ls, ca_file = tls_listener(loadstone, backends, tmp_path)
    fds = 0  # once the first exchange has pooled its server connection
    for size in (10, 100_000, 10):
        client = CountingTlsClient(port_of(ls), ca_file)
        try:
            client.send(
                b"GET /download?size=%d HTTP/1.1\r\nHost: web.test\r\nConnection: close\r\n\r\n"
                % size
            )
            started = time.monotonic()
            assert client.read_to_end(then_fin=True).endswith(pattern_bytes(size))
            # at once: well under asyncio's 30 s (and the socket's 10-s timeout)
            assert time.monotonic() - started < 5
        finally:
            client.close()
        fds = fds or ls.fd_count()
    fds_back_to(ls, fds)


@pytest.mark.parametrize("end", ["fin", "close_notify", "close_notify_fin"])
def test_tls_a_client_that_shuts_its_side_behind_pipelined_requests(
    loadstone: Start, tmp_path: Path, end: str
) -> None:
    """Over TLS, requests pipelined behind a slow one, one cut short, then the
    client's end while the server is slow, its TCP FIN alone, a close_notify,
    or a close_notify and then the FIN (both paths read either as the end of
    the client's data; asyncio's TLS transport closed at once at the
    close_notify, and at a FIN after one): the complete ones are all
    answered, only the last response says `Connection: close`, then our
    close_notify and the FIN."""
    ca = Ca(tmp_path / "pki")
    issued = ca.issue("web", ["web.test"])
    record = tmp_path / "s1.jsonl"
    server = RecordingBackend("s1", free_port(), record).start()
    try:
        config = http_config([server])
        config["listeners"]["web"]["tls"] = {"certificates": [str(issued.bundle)]}
        ls = loadstone(config)
        paths = ["/a", "/slow?delay=0.5", "/b", "/c"]
        client = CountingTlsClient(port_of(ls), ca.path)
        try:
            client.send(
                b"".join(b"GET %s HTTP/1.1\r\nHost: web.test\r\n\r\n" % p.encode() for p in paths)
            )
            wait_for(
                lambda: any(r["target"].startswith("/slow") for r in server.requests()),
                what="the slow request at s1",
            )
            client.send(b"GET /cut HTTP/1.1\r\nHost: web.test\r\n")
            if end == "fin":
                client.sock.shutdown(socket.SHUT_WR)
            else:
                with contextlib.suppress(ssl.SSLWantReadError):
                    client.tls.unwrap()
                client._flush()
                if end == "close_notify_fin":
                    client.sock.shutdown(socket.SHUT_WR)
            received = client.read_to_end()
        finally:
            client.close()
        targets = [r["target"] for r in server.requests()]
    finally:
        server.stop()
    parsed = _Responses()
    parsed.parser.feed_data(received)  # raises on data after `Connection: close`
    assert targets == paths
    assert [r.status for r in parsed.done] == [200] * 4
    assert _closing(parsed.done) == [False] * 3 + [True]


def test_tls_the_close_after_answering_a_close_notify_keeps_its_bound(
    loadstone: Start, backends: Backends, tmp_path: Path
) -> None:
    """A slow request and one for 100 KB, then the client's close_notify
    (read while the first is in flight), then nothing read: both are answered
    (they came before the close_notify), and the close behind the answers,
    which the client does not take, still ends within the timeouts (on the
    pure path, timeouts.client: the TLS close's bound), not whenever the
    client reads. asyncio drops that bound once the client's close_notify is
    in: the descriptor was held for as long as the client left the answers
    unread."""
    ca = Ca(tmp_path / "pki")
    issued = ca.issue("web", ["web.test"])
    config = http_config(backends(1))
    config["defaults"]["timeouts"]["client"] = "1s"
    config["listeners"]["web"]["tls"] = {"certificates": [str(issued.bundle)]}
    ls = loadstone(config)
    proxy_socket_buffers(ls, 4096)  # the answer is more than the sockets hold
    client = CountingTlsClient(port_of(ls), ca.path)
    handshake = client.received
    with contextlib.closing(client):
        client.send(
            b"GET /slow?delay=0.3 HTTP/1.1\r\nHost: web.test\r\n\r\n"
            b"GET /download?size=100000 HTTP/1.1\r\nHost: web.test\r\n\r\n"
        )
        with contextlib.suppress(ssl.SSLWantReadError):
            client.tls.unwrap()
        client._flush()
        wait_for(lambda: not proxy_holds(ls, client.sock), timeout=10, what="the proxy's close")
        received = bytearray()
        with contextlib.suppress(ssl.SSLEOFError):  # (the close cut the answer short)
            client.read_to_end(then_fin=False, into=received)
    assert received.startswith(b"HTTP/1.1 200 OK\r\n"), bytes(received[:100])
    # and the download's answer was under way (the slow one's is a few
    # hundred bytes; the client's window holds a few KiB more)
    assert client.received - handshake > 8192, client.received - handshake


def read_request(sock: socket.socket) -> tuple[bytes, bytes]:
    """One request from a server's socket: its head and its body (by its
    Content-Length)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, data
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = re.search(rb"\r\ncontent-length: *(\d+)", head, re.IGNORECASE)
    while len(body) < (int(length.group(1)) if length else 0):
        chunk = sock.recv(65536)
        assert chunk, len(body)
        body += chunk
    return head, body


def test_tls_a_half_close_that_comes_while_reading_is_paused_waits_for_the_body(
    loadstone: Start, datapath: str, tmp_path: Path
) -> None:
    """A TLS client sends an upload, then shuts its side of the TCP
    connection (its FIN, no close_notify), to a server that reads nothing
    yet: the proxy's writes to the server stall, it pauses reading the
    client, and (pure path) its TLS layer still takes the client's records,
    then the FIN, while the application is paused. The end of the client's
    data comes after those records, once the server reads and reading
    resumes: the server gets the whole body, the client the answer, then
    the close_notify and the end of stream. (Passed on at once, the end cut
    the request in flight short: the proxy closed unanswered. asyncio's own
    handling shut the connection down once the records were read, before
    the answer.) The native engine stops reading the client: its FIN waits
    in the kernel behind the body, as over plain TCP; the same exchange
    (the server answers once the proxy has read the FIN, on both paths).

    The server is a socket the test reads when it chooses: the proxy's
    writes stall for as long as the case needs, and no longer."""
    ca = Ca(tmp_path / "pki")
    issued = ca.issue("web", ["web.test"])
    with socket.socket() as listening:
        # The server's end holds a few KiB; the proxy's send buffer towards it
        # is made as small below: what the proxy holds is then its own.
        listening.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        listening.bind(("127.0.0.1", 0))
        listening.listen()
        listening.settimeout(10)
        server_port = listening.getsockname()[1]
        config = http_config([])
        address = f"127.0.0.1:{server_port}"
        config["listeners"]["web"]["servers"] = [{"name": "s1", "address": address}]
        config["listeners"]["web"]["tls"] = {"certificates": [str(issued.bundle)]}
        ls = loadstone(config)
        warm = CountingTlsClient(port_of(ls), ca.path)  # pools the server connection
        warm.send(b"GET /warm HTTP/1.1\r\nHost: web.test\r\nConnection: close\r\n\r\n")
        server, _ = listening.accept()
    with server, contextlib.closing(warm):
        server.settimeout(10)
        assert read_request(server)[0].startswith(b"GET /warm ")
        server.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nok\n")
        assert warm.read_to_end(then_fin=False).endswith(b"\r\n\r\nok\n")
        proxy_socket_buffers(ls, 4096, server_port=server_port)

        # More than the application takes before it pauses (WRITE_HIGH_WATER,
        # a deferred flush of FLUSH_AT and a read of 32 KiB, past the few KiB
        # of the sockets), less than that and what the TLS layer reads on
        # while it is paused (asyncio's read high-water mark, 256 KiB): its FIN
        # is read while the application is paused.
        body = pattern_bytes(448 * 1024)
        head = b"POST /up HTTP/1.1\r\nHost: web.test\r\nContent-Length: %d\r\n\r\n" % len(body)
        client = CountingTlsClient(port_of(ls), ca.path)
        refused: list[OSError] = []

        def send() -> None:
            try:
                client.send(head + body)
                client.sock.shutdown(socket.SHUT_WR)
            except OSError as exc:
                refused.append(exc)

        sender = threading.Thread(target=send, daemon=True)
        ends = (port_of(ls), client.sock.getsockname()[1])

        def fin_read() -> tuple[str, int, int]:
            """The proxy's end once it has read all the client sent, its FIN
            included (not ESTAB, nothing unread): CLOSE-WAIT, not closed with
            the request cut short."""
            end = wait_for(
                lambda: (q := queues(*ends))[0] != "ESTAB" and q[1] == 0 and q,
                timeout=5,
                interval=0.005,
                what="the proxy to read all the client sent, its FIN included",
            )
            assert end[0] == "CLOSE-WAIT", end
            sender.join(5)
            assert not refused and not sender.is_alive()
            return end

        with contextlib.closing(client):
            sender.start()
            if datapath == "pure":
                fin_read()
                # The case: what the proxy holds is more than the application
                # takes before it pauses (the high-water mark, a deferred
                # flush, a read): records were read, and the FIN, while paused.
                proxy_side = server.getpeername()[1]
                at_server = queues(server_port, proxy_side)[1]
                towards_server = queues(proxy_side, server_port)[2]
                held = len(head) + len(body) - at_server - towards_server
                assert held > WRITE_HIGH_WATER + FLUSH_AT + 32 * 1024, held
            assert read_request(server)[1] == body  # all of it, then
            if datapath == "native":
                # The FIN read, then the answer: the case. (The client's thread
                # shuts its side only once its last bytes are in its socket; the
                # server can read those and answer before the proxy reads the
                # FIN, and a response relayed before it is not the last one.)
                fin_read()
            server.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nok\n")
            answer = client.read_to_end()  # the close_notify, the end of stream
    assert answer.startswith(b"HTTP/1.1 200 OK\r\n") and answer.endswith(b"\r\n\r\nok\n")
    assert b"\r\nconnection: close\r\n" in answer.lower()
