"""Header rules (`request_headers`, `response_headers`) and `redirect` in mode
http, on both data paths with the same assertions: the order rules apply in,
names compared ignoring case, every occurrence of a name, hop-by-hop fields,
response heads that come in pieces or after a 100 Continue, and the redirect
answer byte for byte."""

from __future__ import annotations

import contextlib
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator

import pytest
import yaml

from loadstone.http import message
from tests.integration.harness import Backend, Loadstone, free_port, wait_for
from tests.integration.test_http_mode import (
    _Responses,
    exchange,
    get,
    http_config,
    log_lines,
    port_of,
)

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("datapath")]

Backends = Callable[..., list[Backend]]
Start = Callable[..., Loadstone]

# Exercise every case of the rules: a set after an add of the same name (case
# differing) drops both the server's fields and the earlier add, a delete
# after an add removes what was added, repeated adds stay in order.
RULES = [
    {"delete": "Server"},
    {"add": "X-Added", "value": "a"},
    {"set": "x-dup", "value": "three"},
    {"add": "X-Gone", "value": "1"},
    {"add": "X-Added", "value": "b"},
    {"add": "X-Late", "value": "one"},
    {"set": "X-LATE", "value": "two"},
    {"delete": "x-gone"},
    {"set": "Strict-Transport-Security", "value": "max-age=63072000; includeSubDomains"},
]
# What the rules leave of the scripted server's fields (ScriptedServer.HEAD),
# in order: its fields not named by a set or delete (its X-Gone goes with the
# delete too), then the rules' lines.
EXPECTED = [
    ("X-Keep", "k1"),
    ("x-keep", "k2"),
    ("Content-Length", "2"),
    ("X-Added", "a"),
    ("x-dup", "three"),
    ("X-Added", "b"),
    ("X-LATE", "two"),
    ("Strict-Transport-Security", "max-age=63072000; includeSubDomains"),
]


class ScriptedServer:
    """A server whose response head is written in pieces with pauses between
    them, optionally after a 100 Continue: aiohttp writes a head in one send,
    and the proxy must see heads that come in several reads. The pauses only
    make separate reads likely; the assertions hold however the bytes arrive."""

    HEAD = (
        b"HTTP/1.1 200 OK\r\nServer: scripted\r\nX-Keep: k1\r\nX-Dup: 1\r\nX-Gone: server's\r\n"
        b"x-dup: 2\r\nx-keep: k2\r\nContent-Length: 2\r\n\r\nok"
    )

    def __init__(self, interim: bool, pieces: int) -> None:
        self.interim = interim
        self.pieces = pieces
        self.port = free_port()
        self.sock = socket.create_server(("127.0.0.1", self.port))
        self.conns: list[socket.socket] = []
        self.threads = [threading.Thread(target=self._accept, daemon=True)]
        self.threads[0].start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return  # shut down by stop()
            self.conns.append(conn)
            # one thread a connection: each engine worker pools its own
            thread = threading.Thread(target=self._serve, args=(conn,), daemon=True)
            self.threads.append(thread)
            thread.start()

    def _serve(self, conn: socket.socket) -> None:
        with conn:
            while True:
                head = b""
                while b"\r\n\r\n" not in head:
                    try:
                        data = conn.recv(65536)
                    except OSError:
                        data = b""  # shut down by stop()
                    if not data:
                        return
                    head += data
                try:
                    self._answer(conn)
                except OSError:
                    return  # the proxy closed the connection

    def _answer(self, conn: socket.socket) -> None:
        if self.interim:
            conn.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")
        step = -(-len(self.HEAD) // self.pieces)
        for i in range(0, len(self.HEAD), step):
            conn.sendall(self.HEAD[i : i + step])
            time.sleep(0.02)

    def stop(self) -> None:
        # shutdown wakes the threads from accept and recv (close alone does not)
        for sock in (self.sock, *self.conns):
            with contextlib.suppress(OSError):  # already closed
                sock.shutdown(socket.SHUT_RDWR)
        for thread in self.threads:
            thread.join(5)
        self.sock.close()


@pytest.fixture
def scripted() -> Iterator[Callable[[bool, int], ScriptedServer]]:
    started: list[ScriptedServer] = []

    def start(interim: bool, pieces: int) -> ScriptedServer:
        server = ScriptedServer(interim, pieces)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


def _fields(headers: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """The fields of a response but those the proxy manages (Connection)."""
    return [(k, v) for k, v in headers if k.lower() not in ("connection", "keep-alive")]


@pytest.mark.parametrize("pieces", [1, 7])
def test_response_rules_apply_in_order_to_every_head(
    scripted: Callable[[bool, int], ScriptedServer], loadstone: Start, pieces: int
) -> None:
    server = scripted(False, pieces)
    ls = loadstone(
        http_config([Backend("s1", server.port)], response_headers=RULES),
    )
    port = port_of(ls)
    # Two requests on one connection (the head edited for a kept connection),
    # then one the client closes (ours says Connection: close).
    request = b"GET / HTTP/1.1\r\nHost: t\r\n\r\n"
    last = b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
    responses = exchange(port, request * 2 + last, expect=3)
    assert [r.status for r in responses] == [200, 200, 200]
    for response in responses:
        assert _fields(response.headers) == EXPECTED
        assert response.body == b"ok"
    assert responses[2].header("Connection") == "close"


def test_response_rules_with_expect_continue(
    scripted: Callable[[bool, int], ScriptedServer], loadstone: Start
) -> None:
    """The server's 100 Continue reaches the client before the final head is
    read (a client may wait for it before sending its body)."""
    server = scripted(True, 3)
    ls = loadstone(http_config([Backend("s1", server.port)], response_headers=RULES))
    with socket.create_connection(("127.0.0.1", port_of(ls)), timeout=10) as s:
        s.sendall(
            b"POST / HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\nContent-Length: 0\r\n\r\n"
        )
        interim = s.recv(65536)
        assert interim.startswith(b"HTTP/1.1 100 Continue\r\n")
        parsed = _Responses()
        rest = interim[interim.index(b"\r\n\r\n") + 4 :]
        while True:
            if rest:
                parsed.parser.feed_data(rest)
            if parsed.done:
                break
            rest = s.recv(65536)
            assert rest, "closed before the response"
    assert _fields(parsed.done[0].headers) == EXPECTED


def test_request_rules_in_order_before_the_forwarded_fields(
    backends: Backends, loadstone: Start
) -> None:
    servers = backends(1)
    ls = loadstone(
        http_config(
            servers,
            forwardfor=True,
            request_headers=[
                {"add": "X-A", "value": "1"},
                {"set": "x-b", "value": "rule"},
                {"add": "X-A", "value": "2"},
                {"delete": "x-c"},
                {"add": "X-D", "value": "d"},
                {"delete": "X-D"},
            ],
        )
    )
    headers = get(
        port_of(ls),
        "/echo",
        "X-B: one\r\nX-C: gone\r\nx-a: client\r\nX-b: two\r\nConnection: x-hop\r\nX-Hop: h\r\n",
    ).json()["headers"]
    names = [k.lower() for k, _ in headers]
    assert "x-c" not in names and "x-d" not in names and "x-hop" not in names
    assert [v for k, v in headers if k.lower() == "x-b"] == ["rule"]
    assert [v for k, v in headers if k.lower() == "x-a"] == ["client", "1", "2"]
    # the rules' lines come after the client's fields, the forwarded ones last
    assert names.index("x-b") > names.index("host")
    assert names.index("x-forwarded-for") > names.index("x-b")


def test_redirect_answers_every_request_as_the_pure_path(loadstone: Start) -> None:
    """Byte for byte loadstone.http.message.redirect; the connection closes after
    it (a pipelined request is not answered); no Host: 400; logged `redirect`."""
    config = http_config([], redirect={"scheme": "https", "code": 308})
    del config["listeners"]["web"]["servers"]  # every request answered by the proxy
    ls = loadstone(config)
    port = port_of(ls)
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(
            b"GET /v3/auth?x=1 HTTP/1.1\r\nHost: api.test:5000\r\n\r\n"
            b"GET /second HTTP/1.1\r\nHost: api.test\r\n\r\n"
        )
        reply = s.makefile("rb").read()
    assert reply == message.redirect(308, b"https://api.test:5000/v3/auth?x=1")
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(b"GET /old HTTP/1.0\r\n\r\n")
        reply = s.makefile("rb").read()
    assert reply == message.ANSWERS[400]
    ends = wait_for(
        lambda: (
            ends
            if (400, "bad-request") in (ends := [(e["status"], e["end"]) for e in log_lines(ls, 2)])
            else None
        ),
        what="the 400 logged",
    )
    # (the pure path also logs the pipelined request it did not answer)
    assert ends[0] == (308, "redirect")


def test_a_status_outside_100_to_599_is_a_bad_response(
    scripted: Callable[[bool, int], ScriptedServer], loadstone: Start
) -> None:
    """RFC 9110 15: status codes are 100 to 599. A 020 used to pass for an
    interim response (below 200) on both paths, and the next response was
    relayed as part of its head (found by scripts/fuzz-c, kept in
    fuzz/c/reproducers/status-020-taken-for-interim)."""
    server = scripted(False, 1)
    server.HEAD = (
        b"HTTP/1.1 020 Odd\r\nContent-Length: 2\r\n\r\nhi"
        b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"
    )
    ls = loadstone(http_config([Backend("s1", server.port)]))
    responses = exchange(
        port_of(ls), b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n", expect=1
    )
    assert [r.status for r in responses] == [502]


def test_a_reload_replaces_the_header_rules_whole_under_traffic(
    backends: Backends, loadstone: Start
) -> None:
    """Requests run on while reloads swap a response rule between two values of
    different lengths: every answer carries one of them, whole (on the native
    path the workers read the rules without a lock, so a reload publishes a new
    block rather than writing over the one a worker may be copying from), and
    after each reload the next request has the new one."""
    values = ["A" * 200, "B" * 333]
    config = http_config(backends(1), response_headers=[{"set": "X-Rule", "value": values[0]}])
    ls = loadstone(config)
    port = port_of(ls)
    seen: list[str | None] = []
    stop = threading.Event()

    def keep_asking() -> None:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            reader = s.makefile("rb")
            while not stop.is_set():
                s.sendall(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
                head = b""
                while not head.endswith(b"\r\n\r\n"):
                    line = reader.readline()
                    assert line, "the proxy closed the connection"
                    head += line
                length = 0
                for line in head.split(b"\r\n"):
                    name, _, value = line.partition(b":")
                    if name.lower() == b"x-rule":
                        seen.append(value.strip().decode())
                    elif name.lower() == b"content-length":
                        length = int(value)
                reader.read(length)

    asker = threading.Thread(target=keep_asking)
    asker.start()
    try:
        for generation in range(1, 7):
            wanted = values[generation % 2]
            config["listeners"]["web"]["response_headers"] = [{"set": "X-Rule", "value": wanted}]
            ls.path.write_text(yaml.safe_dump(config))
            assert ls.proc is not None
            ls.proc.send_signal(signal.SIGHUP)
            wait_for(lambda g=generation: ls.status()["reload"]["generation"] == g, what="reload")
            assert ls.status()["reload"]["ok"]
            assert get(port).header("X-Rule") == wanted
    finally:
        stop.set()
        asker.join(30)
    assert not asker.is_alive()
    assert seen, "no answer during the reloads"
    assert set(seen) <= set(values)
