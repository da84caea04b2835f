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
import json
import os
import socket
import ssl
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from loadstone.http import message
from tests.integration.harness import Backend, Loadstone, free_port, wait_for
from tests.integration.test_http_mode import RecordingBackend, _Responses, http_config, port_of
from tests.tlscerts import Ca

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("datapath")]

Start = Callable[..., Loadstone]
Backends = Callable[..., list[Backend]]

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
