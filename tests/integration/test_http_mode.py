"""`loadstone run` in mode http, in front of aiohttp backends and Debian's nginx."""

from __future__ import annotations

import asyncio
import collections
import hashlib
import json
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import httptools
import pytest
import yaml

from tests.integration.conftest import listener_config
from tests.integration.harness import (
    BACKEND,
    Backend,
    Loadstone,
    free_port,
    start_nginx,
    wait_for,
)
from tests.peers.backend import pattern_bytes

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("datapath")]

Backends = Callable[..., list[Backend]]
Start = Callable[..., Loadstone]


class RecordingBackend(Backend):
    """A backend that appends every request it receives to a JSON-lines file."""

    def __init__(self, name: str, port: int, record: Path) -> None:
        super().__init__(name, port)
        self.record = record

    def start(self) -> RecordingBackend:
        cmd = [sys.executable, str(BACKEND), "--name", self.name, "--port", str(self.port)]
        cmd += ["--record", str(self.record)]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        assert self.proc.stdout.readline().strip() == "ready"
        return self

    def requests(self) -> list[dict[str, Any]]:
        if not self.record.exists():
            return []
        return [json.loads(line) for line in self.record.read_text().splitlines()]


@pytest.fixture
def recording(tmp_path: Path) -> Iterator[Callable[[int], list[RecordingBackend]]]:
    started: list[RecordingBackend] = []

    def start(n: int) -> list[RecordingBackend]:
        new = []
        for _ in range(n):
            i = len(started) + 1
            backend = RecordingBackend(f"s{i}", free_port(), tmp_path / f"s{i}.jsonl").start()
            started.append(backend)
            new.append(backend)
        return new

    yield start
    for backend in started:
        backend.stop()


def http_config(servers: list[Backend], **options: Any) -> dict[str, Any]:
    config = listener_config(servers, mode="http", **options)
    config["defaults"]["timeouts"].update({"server": "5s", "client": "5s"})
    return config


def port_of(ls: Loadstone, listener: str = "web") -> int:
    return int(ls.config["listeners"][listener]["bind"][0].rsplit(":", 1)[1])


class Response:
    def __init__(self) -> None:
        self.status = 0
        self.headers: list[tuple[str, str]] = []
        self.body = b""

    def header(self, name: str) -> str | None:
        for key, value in self.headers:
            if key.lower() == name.lower():
                return value
        return None

    def all(self, name: str) -> list[str]:
        return [v for k, v in self.headers if k.lower() == name.lower()]

    def json(self) -> Any:
        return json.loads(self.body)


class _Responses:
    """Parses a byte stream of responses with httptools (the test's own parser)."""

    def __init__(self, head_requests: int = 0) -> None:
        self.done: list[Response] = []
        self.current = Response()
        self.parser = httptools.HttpResponseParser(self)

    def on_header(self, name: bytes, value: bytes) -> None:
        self.current.headers.append((name.decode(), value.decode("latin-1")))

    def on_headers_complete(self) -> None:
        self.current.status = self.parser.get_status_code()

    def on_body(self, body: bytes) -> None:
        self.current.body += body

    def on_message_complete(self) -> None:
        self.done.append(self.current)
        self.current = Response()


def exchange(port: int, data: bytes, *, expect: int = 1, timeout: float = 10) -> list[Response]:
    """Send raw bytes on one connection; read until `expect` responses or the close."""
    parsed = _Responses()
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(data)
        while len(parsed.done) < expect:
            chunk = s.recv(65536)
            if not chunk:
                break
            parsed.parser.feed_data(chunk)
    return parsed.done


def get(port: int, path: str = "/", headers: str = "", method: str = "GET") -> Response:
    request = f"{method} {path} HTTP/1.1\r\nHost: test\r\n{headers}Connection: close\r\n\r\n"
    responses = exchange(port, request.encode())
    assert responses, f"no response to {method} {path}"
    return responses[0]


def log_lines(ls: Loadstone, n: int) -> list[dict[str, Any]]:
    return wait_for(
        lambda: (
            lines
            if len(lines := [e for e in ls.session_logs() if e.get("event") == "http"]) >= n
            else None
        ),
        what=f"{n} access-log lines",
    )


# -- balancing, keep-alive, logging ------------------------------------------------------


def test_roundrobin_spread_and_backend_connection_reuse(
    backends: Backends, loadstone: Start
) -> None:
    servers = backends(2)
    ls = loadstone(http_config(servers))
    port = port_of(ls)
    # One client connection, 20 requests: they alternate between the servers and
    # reuse two server connections (one per server) instead of opening 20.
    request = b"GET /echo HTTP/1.1\r\nHost: test\r\n\r\n"
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        parsed = _Responses()
        for _ in range(20):
            s.sendall(request)
            before = len(parsed.done)
            while len(parsed.done) == before:
                parsed.parser.feed_data(s.recv(65536))
    docs = [r.json() for r in parsed.done]
    assert collections.Counter(d["server"] for d in docs) == {"s1": 10, "s2": 10}
    assert {d["server"]: d["connections"] for d in docs} == {"s1": 1, "s2": 1}
    # New client connections too reuse the kept server connections.
    for _ in range(6):
        assert get(port, "/echo").json()["connections"] == 1
    # the native path's records reach the control plane at the end of an epoll round
    wait_for(
        lambda: ls.status()["listeners"]["web"]["http"]["requests_total"] == 26,
        what="26 requests counted",
    )
    status = ls.status()["listeners"]["web"]
    assert status["mode"] == "http"
    assert status["http"]["responses"]["2xx"] == 26
    assert set(status["servers"]) == {"s1", "s2"}
    # Both paths show the same fields: the pool's balancer, and why a listener
    # is on the path it is on.
    assert status["pools"] == {"default": {"balance": "roundrobin", "servers": ["s1", "s2"]}}
    assert "data_path_reason" in status
    lines = log_lines(ls, 26)
    first = lines[0]
    assert first["status"] == 200 and first["method"] == "GET" and first["target"] == "/echo"
    assert first["server"] in ("s1", "s2") and first["end"] == "ok"
    assert first["t_total"] >= first["t_response"] >= 0 and first["t_queue"] == 0
    assert first["bytes_out"] > 0 and first["bytes_in"] == len(request)


def test_log_errors_keeps_5xx_and_failed_requests_only(
    backends: Backends, loadstone: Start
) -> None:
    servers = backends(1)
    ls = loadstone(http_config(servers, log="errors"))
    port = port_of(ls)
    assert get(port, "/echo").status == 200
    assert get(port, "/status?code=404").status == 404  # the server's answer, not an error
    assert get(port, "/status?code=503").status == 503
    lines = log_lines(ls, 1)
    assert [(e["status"], e["target"], e["end"]) for e in lines] == [
        (503, "/status?code=503", "ok")
    ]
    status = ls.status()["listeners"]["web"]["http"]
    assert status["requests_total"] == 3  # counted all the same
    assert status["responses"]["2xx"] == 1 and status["responses"]["5xx"] == 1


def test_text_access_log(backends: Backends, loadstone: Start) -> None:
    servers = backends(1)
    ls = loadstone(http_config(servers), log_format="text")
    assert get(port_of(ls), "/status?code=404").status == 404
    line = wait_for(
        lambda: [x for x in ls.stdout_path.read_text().splitlines() if " http " in x],
        what="text access-log line",
    )[0]
    assert " web/s1 404 " in line and '"GET /status?code=404"' in line and "end=ok" in line


def test_leastconn_and_source(backends: Backends, loadstone: Start) -> None:
    servers = backends(3)
    ls = loadstone(http_config(servers, balance="source"))
    seen = {get(port_of(ls), "/echo").json()["server"] for _ in range(6)}
    assert len(seen) == 1  # one client address, one server


# -- headers -----------------------------------------------------------------------------


def test_forwarded_headers_and_rules(backends: Backends, loadstone: Start) -> None:
    servers = backends(1)
    ls = loadstone(
        http_config(
            servers,
            forwardfor=True,
            forwarded_proto="https",
            forwarded_port=True,
            request_headers=[
                {"delete": "X-Remove-Me"},
                {"set": "X-Service", "value": "keystone"},
                {"add": "X-Multi", "value": "two"},
            ],
            response_headers=[
                {"delete": "Server"},
                {"set": "Strict-Transport-Security", "value": "max-age=63072000"},
            ],
        )
    )
    port = port_of(ls)
    response = get(
        port,
        "/echo",
        "X-Forwarded-Proto: http\r\nX-Forwarded-For: 203.0.113.9\r\nX-Remove-Me: 1\r\n"
        "X-Service: other\r\nX-Multi: one\r\n",
    )
    headers = response.json()["headers"]
    pairs = [(k.lower(), v) for k, v in headers]
    assert ("x-forwarded-for", "203.0.113.9") in pairs and ("x-forwarded-for", "127.0.0.1") in pairs
    assert [v for k, v in pairs if k == "x-forwarded-proto"] == ["https"]
    assert [v for k, v in pairs if k == "x-forwarded-port"] == [str(port)]
    assert "x-remove-me" not in dict(pairs)
    assert [v for k, v in pairs if k == "x-service"] == ["keystone"]
    assert [v for k, v in pairs if k == "x-multi"] == ["one", "two"]
    assert response.header("Server") is None
    assert response.header("Strict-Transport-Security") == "max-age=63072000"


def test_rewrite_location(backends: Backends, loadstone: Start) -> None:
    """The server's http:// Location made https:// (pure path only: on the
    native one the listener is served by the pure path, the fixture checks)."""
    ls = loadstone(http_config(backends(1), rewrite_location="https"))
    port = port_of(ls)
    redirect = get(port, "/redirect")
    assert redirect.status == 302
    assert redirect.header("Location") == "https://test/landed"


def test_forwardfor_except(backends: Backends, loadstone: Start) -> None:
    servers = backends(1)
    ls = loadstone(http_config(servers, forwardfor={"except": ["127.0.0.0/8"]}))
    headers = get(port_of(ls), "/echo").json()["headers"]
    assert "x-forwarded-for" not in {k.lower() for k, _ in headers}


# -- persistence -------------------------------------------------------------------------


def test_cookie_insert_stick_and_fallback(backends: Backends, loadstone: Start) -> None:
    servers = backends(2)
    ls = loadstone(
        http_config(
            servers,
            cookie={"name": "SERVERID", "mode": "insert", "indirect": True, "nocache": True},
        )
    )
    port = port_of(ls)
    first = get(port, "/echo")
    server = first.json()["server"]
    assert first.header("Set-Cookie") == f"SERVERID={server}; path=/"
    assert first.header("Cache-Control") == "private"
    for _ in range(4):
        again = get(port, "/echo", f"Cookie: SERVERID={server}; sid=42\r\n")
        doc = again.json()
        assert doc["server"] == server
        assert again.header("Set-Cookie") is None
        # indirect: the server sees the other cookies, never ours.
        assert dict((k.lower(), v) for k, v in doc["headers"])["cookie"] == "sid=42"
    # The persisted server goes down (maintenance): balanced elsewhere, new cookie.
    request = urllib_post(ls, f"/api/v1/listeners/web/servers/{server}/state", {"state": "maint"})
    assert request["state"] == "maint"
    moved = get(port, "/echo", f"Cookie: SERVERID={server}\r\n")
    other = moved.json()["server"]
    assert other != server
    assert moved.header("Set-Cookie") == f"SERVERID={other}; path=/"
    # An unknown value is balanced too.
    assert get(port, "/echo", "Cookie: SERVERID=nosuch\r\n").header("Set-Cookie") is not None


def urllib_post(ls: Loadstone, path: str, doc: dict[str, Any]) -> dict[str, Any]:
    import urllib.request

    request = urllib.request.Request(
        f"http://127.0.0.1:{ls.admin_port}{path}",
        data=json.dumps(doc).encode(),
        method="POST",
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=5) as response:
        return json.loads(response.read())  # type: ignore[no-any-return]


# -- routing -----------------------------------------------------------------------------


def test_routing_by_host_and_path(backends: Backends, loadstone: Start) -> None:
    default, images, compute = backends(3)
    config = http_config([default])
    config["listeners"]["web"].update(
        {
            "pools": {
                "images": {"servers": [{"name": images.name, "address": images.address}]},
                "compute": {
                    "balance": "leastconn",
                    "servers": [{"name": compute.name, "address": compute.address}],
                },
            },
            "routes": [
                {"host": "glance.example.com", "pool": "images"},
                {"path_prefix": "/compute/", "pool": "compute"},
                {"path_exact": "/echo", "host": "exact.example", "pool": "images"},
                {"path_regex": "^/v[0-9]+/servers", "pool": "compute"},
            ],
        }
    )
    ls = loadstone(config)
    port = port_of(ls)

    def served(path: str, host: str) -> str:
        r = exchange(
            port, f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode()
        )
        return r[0].body.decode().strip()

    assert served("/", "Glance.Example.com:9292") == images.name
    assert served("/compute/", "x") == compute.name
    assert served("/v2/servers?x", "x") == compute.name
    assert served("/", "exact.example") == default.name
    assert (
        json.loads(exchange(port, b"GET /echo HTTP/1.1\r\nHost: exact.example\r\n\r\n")[0].body)[
            "server"
        ]
        == images.name
    )
    assert served("/", "other") == default.name
    status = ls.status()["listeners"]["web"]
    assert set(status["servers"]) == {default.name, images.name, compute.name}
    assert status["pools"]["compute"] == {"balance": "leastconn", "servers": [compute.name]}


# -- streaming, framing, keep-alive details ----------------------------------------------


def test_chunked_both_ways_head_and_expect_continue(backends: Backends, loadstone: Start) -> None:
    servers = backends(1)
    ls = loadstone(http_config(servers))
    port = port_of(ls)
    body = b"".join(f"{i:04d}".encode() * 100 for i in range(50))
    chunks = b"".join(
        b"%x\r\n%s\r\n" % (len(body[i : i + 700]), body[i : i + 700])
        for i in range(0, len(body), 700)
    )
    upload = exchange(
        port,
        b"POST /upload HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
        + chunks
        + b"0\r\n\r\n",
    )[0].json()
    assert upload == {
        "server": "s1",
        "length": len(body),
        "sha256": hashlib.sha256(body).hexdigest(),
    }
    chunked = get(port, "/chunked?n=5")
    assert chunked.header("Transfer-Encoding") == "chunked"
    assert chunked.body.decode().count("from s1") == 5
    # Expect: 100-continue: the server's 100 reaches the client before the body goes.
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(
            b"POST /upload HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n"
        )
        interim = s.recv(100)
        assert interim.startswith(b"HTTP/1.1 100 Continue\r\n")
        s.sendall(b"hello")
        final = s.recv(65536)
        assert final.startswith(b"HTTP/1.1 200 OK")
        assert b'"length": 5' in final


def test_pipelined_requests_with_long_heads(backends: Backends, loadstone: Start) -> None:
    """A read that ends one request head and holds many more after it is not one
    head too large (the pure path counted all of it against the first)."""
    servers = backends(1)
    ls = loadstone(http_config(servers))
    request = b"GET /?" + b"x" * 4000 + b" HTTP/1.1\r\nHost: t\r\n\r\n"
    responses = exchange(port_of(ls), request * 50, expect=50)
    assert [r.status for r in responses] == [200] * 50


def test_head_then_get_on_one_connection(backends: Backends, loadstone: Start) -> None:
    servers = backends(1)
    ls = loadstone(http_config(servers))
    with socket.create_connection(("127.0.0.1", port_of(ls)), timeout=5) as s:
        s.sendall(b"HEAD /download?size=5000 HTTP/1.1\r\nHost: t\r\n\r\n")
        head = s.recv(65536)
        assert head.startswith(b"HTTP/1.1 200") and head.endswith(b"\r\n\r\n")
        s.sendall(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
        assert s.recv(65536).endswith(b"\r\n\r\ns1\n")


def test_pipelined_requests_answered_in_order(backends: Backends, loadstone: Start) -> None:
    servers = backends(2)
    ls = loadstone(http_config(servers))
    requests = b"".join(
        f"GET /slow?delay=0.{9 - i} HTTP/1.1\r\nHost: t\r\nX-N: {i}\r\n\r\n".encode()
        if i % 2 == 0
        else f"GET /echo?n={i} HTTP/1.1\r\nHost: t\r\n\r\n".encode()
        for i in range(6)
    )
    responses = exchange(port_of(ls), requests, expect=6)
    assert len(responses) == 6
    for i, r in enumerate(responses):
        assert r.status == 200
        if i % 2:
            assert r.json()["target"] == f"/echo?n={i}"


def _shut_behind_pipelined(
    port: int, first: bytes, server: RecordingBackend, rest: bytes
) -> list[Response]:
    """Send `first` (pipelined requests, one of them /slow), wait until the
    server has the slow one, then send `rest` and the client's FIN (so that it
    arrives while the server is slow); read to the close. Raises on a byte after
    a response that says `Connection: close`."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(first)
        wait_for(
            lambda: any(r["target"].startswith("/slow") for r in server.requests()),
            what="the slow request at s1",
        )
        s.sendall(rest)
        s.shutdown(socket.SHUT_WR)
        received = b""
        while chunk := s.recv(65536):
            received += chunk
    parsed = _Responses()
    parsed.parser.feed_data(received)  # raises on data after `Connection: close`
    return parsed.done


def _closing(responses: list[Response]) -> list[bool]:
    return [r.header("Connection") == "close" for r in responses]


def test_a_client_that_shuts_its_side_behind_pipelined_requests(
    loadstone: Start, tmp_path: Path
) -> None:
    """A client that pipelines requests (one slow in flight, ten behind it,
    the last with `Connection: close`) and then shuts its side: every one of
    the eleven reaches the server and is answered, in order, and only the last
    response says `Connection: close`. (The pure path answered all eleven but
    marked the first one prepared after the FIN `Connection: close`, then sent
    more; the native path answered the one in flight and closed, dropping the
    ten it had read behind it.)"""
    record = tmp_path / "s1.jsonl"
    server = RecordingBackend("s1", free_port(), record).start()
    try:
        ls = loadstone(http_config([server]))
        host = b"Host: t\r\n"
        responses = _shut_behind_pipelined(
            port_of(ls),
            b"GET /slow?delay=0.5 HTTP/1.1\r\n"
            + host
            + b"\r\n"
            + b"".join(b"GET /p%d HTTP/1.1\r\n" % i + host + b"\r\n" for i in range(9)),
            server,
            b"GET /last HTTP/1.1\r\n" + host + b"Connection: close\r\n\r\n",
        )
        targets = [r["target"] for r in server.requests()]
    finally:
        server.stop()
    assert targets == ["/slow?delay=0.5", *(f"/p{i}" for i in range(9)), "/last"]
    assert [r.status for r in responses] == [200] * 11
    assert [r.body for r in responses] == [b"s1\n"] * 11
    assert _closing(responses) == [False] * 10 + [True]


@pytest.mark.parametrize(
    "cut",
    [
        b"GET /cut HTTP/1.1\r\nHost: t\r\n",  # its head cut short
        b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 10\r\n\r\nabc",  # its body
    ],
    ids=["head", "body"],
)
def test_a_request_cut_short_by_the_clients_fin_behind_pipelined_ones(
    loadstone: Start, tmp_path: Path, cut: bytes
) -> None:
    """Pipelined requests, the FIN arriving while the server is slow with one
    in the middle, a request cut short by that FIN at the end: the complete
    ones are all answered in order, the last of them with `Connection: close`
    (none of them asked for it), and the cut one never reaches the server."""
    record = tmp_path / "s1.jsonl"
    server = RecordingBackend("s1", free_port(), record).start()
    try:
        ls = loadstone(http_config([server]))
        paths = ["/a", "/slow?delay=0.5", "/b", "/c"]
        responses = _shut_behind_pipelined(
            port_of(ls),
            b"".join(f"GET {p} HTTP/1.1\r\nHost: t\r\n\r\n".encode() for p in paths),
            server,
            cut,
        )
        targets = [r["target"] for r in server.requests()]
    finally:
        server.stop()
    assert targets == paths
    assert [r.status for r in responses] == [200] * 4
    assert _closing(responses) == [False] * 3 + [True]


def test_http10_client(backends: Backends, loadstone: Start) -> None:
    servers = backends(1)
    ls = loadstone(http_config(servers))
    port = port_of(ls)
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(b"GET /echo HTTP/1.0\r\n\r\n")
        data = b""
        while chunk := s.recv(65536):  # the proxy closes: HTTP/1.0 without keep-alive
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.split(b" ")[1] == b"200" and b"keep-alive" not in head.lower()
    assert json.loads(body)["version"] == "1.0"  # passed on as 1.0: no chunks come back
    responses = exchange(
        port,
        b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\nGET / HTTP/1.0\r\n\r\n",
        expect=2,
    )
    assert [r.body for r in responses] == [b"s1\n", b"s1\n"]
    assert responses[0].header("Connection") == "keep-alive"


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


class RssWatch:
    """Samples a process's VmRSS in a thread; `peak` is the highest seen."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.start = rss_kib(pid)
        self.peak = self.start
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.05):
            self.peak = max(self.peak, rss_kib(self.pid))

    def stop(self) -> int:
        self._stop.set()
        self._thread.join()
        return self.peak - self.start


GIB = 1024**3


@pytest.mark.slow
def test_streaming_1gb_both_ways_without_rss_growth(backends: Backends, loadstone: Start) -> None:
    servers = backends(1)
    ls = loadstone(http_config(servers))
    assert ls.proc is not None
    port = port_of(ls)
    get(port, "/")  # warm: the server connection and the code paths exist
    watch = RssWatch(ls.proc.pid)
    # Upload 1 GiB with Content-Length, streamed from a generator.
    block = pattern_bytes(1 << 20)
    digest = hashlib.sha256()
    with socket.create_connection(("127.0.0.1", port), timeout=60) as s:
        s.sendall(b"PUT /upload HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n" % GIB)
        for _ in range(GIB // len(block)):
            s.sendall(block)
            digest.update(block)
        parsed = _Responses()
        while not parsed.done:
            parsed.parser.feed_data(s.recv(65536))
    assert parsed.done[0].json() == {"server": "s1", "length": GIB, "sha256": digest.hexdigest()}
    # Download 1 GiB, read slowly at first so that flow control must hold the server.
    received = 0
    with socket.create_connection(("127.0.0.1", port), timeout=60) as s:
        s.sendall(b"GET /download?size=%d HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n" % GIB)
        time.sleep(1.0)
        while chunk := s.recv(1 << 20):
            received += len(chunk)
    assert received > GIB
    growth = watch.stop()
    print(f"proxy RSS: {watch.start} KiB before, +{growth} KiB at most while streaming 2 GiB")
    assert growth < 48 * 1024, f"RSS grew by {growth} KiB while streaming 2 GiB"


# -- WebSocket ---------------------------------------------------------------------------


def test_websocket_echo_through_the_tunnel(backends: Backends, loadstone: Start) -> None:
    servers = backends(1)
    config = http_config(servers)
    config["defaults"]["timeouts"]["tunnel"] = "30s"
    ls = loadstone(config)

    async def talk() -> list[str]:
        url = f"http://127.0.0.1:{port_of(ls)}/ws"
        async with aiohttp.ClientSession() as session, session.ws_connect(url) as ws:
            got = []
            for text in ("hello", "world"):
                await ws.send_str(text)
                got.append((await ws.receive()).data)
            await ws.send_bytes(b"\x00" * 100000)
            got.append(str(len((await ws.receive()).data)))
            return got

    assert asyncio.run(talk()) == ["s1: hello", "s1: world", "100000"]
    line = log_lines(ls, 1)[0]
    assert line["status"] == 101


def test_tunnel_timeout(backends: Backends, loadstone: Start) -> None:
    servers = backends(1)
    config = http_config(servers)
    config["defaults"]["timeouts"]["tunnel"] = "500ms"
    ls = loadstone(config)

    async def idle() -> float:
        url = f"http://127.0.0.1:{port_of(ls)}/ws"
        async with aiohttp.ClientSession() as session, session.ws_connect(url) as ws:
            t0 = time.monotonic()
            msg = await ws.receive(timeout=10)
            assert msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
            return time.monotonic() - t0

    assert 0.3 < asyncio.run(idle()) < 5


# -- answers the proxy makes itself ---------------------------------------------------------


def test_400_for_malformed_request(backends: Backends, loadstone: Start) -> None:
    servers = backends(1)
    ls = loadstone(http_config(servers))
    response = exchange(port_of(ls), b"GET / HTTP/1.1\r\nHost: t\r\nBad Header: x\r\n\r\n")[0]
    assert response.status == 400 and response.header("Connection") == "close"
    line = log_lines(ls, 1)[0]
    assert (line["status"], line["server"], line["end"]) == (400, "-", "bad-request")


def test_408_when_the_head_is_too_slow(backends: Backends, loadstone: Start) -> None:
    servers = backends(1)
    config = http_config(servers)
    config["defaults"]["timeouts"]["http_request"] = "500ms"
    ls = loadstone(config)
    with socket.create_connection(("127.0.0.1", port_of(ls)), timeout=5) as s:
        t0 = time.monotonic()
        s.sendall(b"GET / HTTP/1.1\r\nHost: t\r\n")  # and never the blank line
        data = s.recv(65536)
        took = time.monotonic() - t0
    assert data.startswith(b"HTTP/1.1 408 ")
    assert 0.4 < took < 3
    # The listener itself is not held: others are served meanwhile.
    assert get(port_of(ls)).status == 200


def test_503_when_the_maxconn_queue_times_out(
    backends: Backends, loadstone: Start, datapath: str
) -> None:
    servers = backends(1)
    config = http_config(servers, maxconn=1)
    config["defaults"]["timeouts"]["queue"] = "300ms"
    ls = loadstone(config)
    port = port_of(ls)
    with socket.create_connection(("127.0.0.1", port), timeout=5) as holder:
        holder.sendall(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")  # keep-alive: holds the slot
        assert holder.recv(65536).startswith(b"HTTP/1.1 200")
        wait_for(lambda: ls.status()["listeners"]["web"]["sessions"] == 1, what="the slot")
        t0 = time.monotonic()
        queued = get(port)
        assert queued.status == 503 and b"No server is available" in queued.body
        assert 0.2 < time.monotonic() - t0 < 3
    # the slot is free again once the holder is gone
    wait_for(lambda: ls.status()["listeners"]["web"]["sessions"] == 0, what="the free slot")
    assert get(port).status == 200


def test_a_queued_request_is_served_when_a_slot_frees(backends: Backends, loadstone: Start) -> None:
    servers = backends(1)
    config = http_config(servers, maxconn=1)
    config["defaults"]["timeouts"]["queue"] = "10s"
    ls = loadstone(config)
    port = port_of(ls)
    holder = socket.create_connection(("127.0.0.1", port), timeout=5)
    holder.sendall(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")  # keep-alive: holds the slot
    assert holder.recv(65536).startswith(b"HTTP/1.1 200")
    with socket.create_connection(("127.0.0.1", port), timeout=5) as queued:
        queued.sendall(b"GET /echo HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        wait_for(lambda: ls.status()["listeners"]["web"]["queued"] == 1, what="the queued client")
        queued.settimeout(0.3)
        with pytest.raises(TimeoutError):
            queued.recv(1)  # not served while the slot is held
        holder.close()
        queued.settimeout(5)
        answer = b""
        while chunk := queued.recv(65536):
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 200")  # the request read while queued, not lost
    assert b'"/echo"' in answer


def test_maint_closes_a_request_in_flight(backends: Backends, loadstone: Start) -> None:
    servers = backends(1)
    ls = loadstone(http_config(servers))
    with socket.create_connection(("127.0.0.1", port_of(ls)), timeout=10) as s:
        s.sendall(b"GET /slow?delay=30 HTTP/1.1\r\nHost: t\r\n\r\n")
        wait_for(lambda: ls.server("web", "s1")["sessions"] == 1, what="the request in flight")
        request = urllib.request.Request(
            f"http://127.0.0.1:{ls.admin_port}/api/v1/listeners/web/servers/s1/state",
            data=json.dumps({"state": "maint"}).encode(),
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=10) as answer:
            assert answer.status == 200
        assert s.recv(65536) == b""  # closed, nothing answered
    line = log_lines(ls, 1)[0]
    assert (line["server"], line["status"]) == ("s1", 0)
    assert line["end"].startswith("shutdown (")
    # The backend's handler sleeps on for its 30 s, which a graceful stop of the
    # backend would wait for (10 s of teardown): nothing of it is needed now.
    servers[0].kill()


def test_502_when_the_server_breaks_before_answering(backends: Backends, loadstone: Start) -> None:
    broken = backends(1, mode="echo")  # echoes the request back: not a response
    ls = loadstone(http_config(broken))
    assert get(port_of(ls)).status == 502


def test_503_when_no_server_is_up(backends: Backends, loadstone: Start) -> None:
    servers = backends(1)
    config = http_config(servers, check={"type": "http", "path": "/health", "interval": "200ms"})
    ls = loadstone(config)
    ls.wait_all_up("web")
    servers[0].stop()
    ls.wait_state("web", "s1", "down")
    response = get(port_of(ls))
    assert response.status == 503
    assert b"No server is available" in response.body


def test_503_after_connect_retries(loadstone: Start) -> None:
    dead = Backend("s1", free_port())  # never started: connection refused
    ls = loadstone(http_config([dead], retries=2))
    assert get(port_of(ls)).status == 503
    assert log_lines(ls, 1)[0]["end"].startswith("connect-failed")


def test_504_on_server_timeout(backends: Backends, loadstone: Start) -> None:
    servers = backends(1)
    config = http_config(servers)
    config["defaults"]["timeouts"]["server"] = "500ms"
    ls = loadstone(config)
    t0 = time.monotonic()
    assert get(port_of(ls), "/slow?delay=3").status == 504
    assert time.monotonic() - t0 < 2.5
    servers[0].kill()  # its handler sleeps on: a graceful stop would wait for it


def test_redispatch_when_a_server_refuses(backends: Backends, loadstone: Start) -> None:
    live = backends(1)[0]
    dead = Backend("dead", free_port())
    ls = loadstone(http_config([dead, live]))
    for _ in range(6):
        assert get(port_of(ls), "/echo").json()["server"] == live.name
    assert ls.server("web", "dead")["connect_errors"] >= 1


def test_without_redispatch_retries_stay_on_the_failed_server(
    backends: Backends, loadstone: Start
) -> None:
    """HAProxy without `option redispatch` retries the server that refused: a
    request that round robin gives to the dead server gets a 503."""
    live = backends(1)[0]
    dead = Backend("dead", free_port())
    ls = loadstone(http_config([dead, live], retries=2, redispatch=False))
    statuses = [get(port_of(ls), "/echo").status for _ in range(4)]
    assert set(statuses) <= {200, 503}
    assert statuses.count(503) >= 1
    assert ls.server("web", "dead")["connect_errors"] == 3 * statuses.count(503)
    assert ls.server("web", live.name)["connect_errors"] == 0


def test_reused_connection_closed_by_server_is_retried(
    backends: Backends, loadstone: Start
) -> None:
    servers = backends(1)
    ls = loadstone(http_config(servers))
    port = port_of(ls)
    # /close answers with Connection: close: the proxy must not reuse that one.
    for _ in range(5):
        assert get(port, "/close").status == 200
        assert get(port, "/").status == 200


def test_a_request_body_cut_short_frees_both_connections_at_once(loadstone: Start) -> None:
    """A client that closes in the middle of its request body: HAProxy closes the
    server connection and the client's at once, not after the client timeout."""
    with socket.create_server(("127.0.0.1", 0)) as listening:
        server = Backend("raw", listening.getsockname()[1])
        config = http_config([server])
        config["defaults"]["timeouts"].update({"client": "30s", "server": "30s"})
        ls = loadstone(config)
        client = socket.create_connection(("127.0.0.1", port_of(ls)), timeout=10)
        client.sendall(b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\n\r\n0123456789")
        listening.settimeout(10)
        upstream, _ = listening.accept()
        with upstream:
            upstream.settimeout(10)
            received = b""
            while not received.endswith(b"0123456789"):
                data = upstream.recv(65536)
                assert data, received
                received += data
            client.close()
            t0 = time.monotonic()
            assert upstream.recv(65536) == b""  # closed by the proxy
            assert time.monotonic() - t0 < 5
    (line,) = log_lines(ls, 1)
    assert line["end"] == "client-close", line


def test_server_closing_leaves_the_client_connection_open(
    backends: Backends, loadstone: Start
) -> None:
    """A server's Connection: close (an HTTP/1.0 server, nginx after
    keepalive_requests) is its own connection's: as with HAProxy, the client's
    stays open for the next request, HTTP/1.1 or HTTP/1.0 with keep-alive."""
    servers = backends(1)
    ls = loadstone(http_config(servers))
    with socket.create_connection(("127.0.0.1", port_of(ls)), timeout=10) as s:
        for request in (
            b"GET /close HTTP/1.1\r\nHost: t\r\n\r\n",
            b"GET /close HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
            b"GET /echo HTTP/1.1\r\nHost: t\r\n\r\n",
        ):
            parsed = _Responses()
            s.sendall(request)
            while not parsed.done:
                data = s.recv(65536)
                assert data, f"the client connection was closed after {request!r}"
                parsed.parser.feed_data(data)
            (response,) = parsed.done
            assert response.status == 200
            connection = (response.header("Connection") or "").lower()
            assert "close" not in connection
            if b"HTTP/1.0" in request:
                assert connection == "keep-alive"


# -- request smuggling ------------------------------------------------------------------------

POST = b"POST /echo HTTP/1.1\r\nHost: t\r\n"
GET = b"GET /echo HTTP/1.1\r\nHost: t\r\n"
TE = POST + b"Transfer-Encoding: chunked\r\n\r\n"

SMUGGLING = {
    "CL.CL conflicting": POST + b"Content-Length: 3\r\nContent-Length: 40\r\n\r\nabc",
    "CL.CL identical": POST + b"Content-Length: 3\r\nContent-Length: 3\r\n\r\nabc",
    "CL list": POST + b"Content-Length: 3, 3\r\n\r\nabc",
    "CL.TE": POST + b"Content-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nG",
    "TE.CL": POST + b"Transfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n0\r\n\r\n",
    "TE obfuscated space": POST + b"Transfer-Encoding : chunked\r\n\r\n0\r\n\r\n",
    "TE xchunked": POST + b"Transfer-Encoding: xchunked\r\n\r\n0\r\n\r\n",
    "TE chunked, identity": POST + b"Transfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n",
    "TE gzip, chunked": POST + b"Transfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
    "TE twice": POST + b"Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    "TE in HTTP/1.0": b"POST /echo HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    "TE obs-fold": POST + b"Transfer-Encoding:\r\n chunked\r\n\r\n0\r\n\r\n",
    "obs-fold": GET + b"X-A: a\r\n b\r\n\r\n",
    "bare LF line ends": b"GET /echo HTTP/1.1\nHost: t\n\n",
    "bare LF in headers": b"GET /echo HTTP/1.1\r\nHost: t\nX-A: b\r\n\r\n",
    "bare CR": b"GET /echo HTTP/1.1\r\nHost: t\rX-A: b\r\n\r\n",
    "chunk size not hex": TE + b"zz\r\nabc\r\n0\r\n\r\n",
    "chunk size negative": TE + b"-3\r\nabc\r\n0\r\n\r\n",
    "chunk size overflow": TE + b"ffffffffffffffffff1\r\nabc\r\n0\r\n\r\n",
    "chunk size 0x": TE + b"0x3\r\nabc\r\n0\r\n\r\n",
    "chunk size trailing space": TE + b"3 \r\nabc\r\n0\r\n\r\n",
    "chunk bare LF": TE + b"3\nabc\n0\n\n",
    "chunk data longer than size": TE + b"3\r\nabcdef\r\n0\r\n\r\n",
    "CL with sign": POST + b"Content-Length: +3\r\n\r\nabc",
    "CL negative": POST + b"Content-Length: -1\r\n\r\n",
    "space before colon": GET + b"Content-Length : 0\r\n\r\n",
    "NUL in value": GET + b"X-A: a\x00b\r\n\r\n",
    "no Host": b"GET /echo HTTP/1.1\r\nX-A: b\r\n\r\n",
    "two Hosts": b"GET /echo HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
    "HTTP/0.9": b"GET /echo\r\n\r\n",
    "HTTP/2.0 text": b"GET /echo HTTP/2.0\r\nHost: t\r\n\r\n",
    "leading space header": b"GET /echo HTTP/1.1\r\n Host: t\r\n\r\n",
    "space in target": b"GET /ec ho HTTP/1.1\r\nHost: t\r\n\r\n",
}


def test_smuggling_corpus_refused_and_never_reaching_a_server(
    recording: Callable[[int], list[RecordingBackend]], loadstone: Start
) -> None:
    (server,) = recording(1)
    ls = loadstone(http_config([server]))
    port = port_of(ls)
    assert get(port, "/echo?canary").status == 200
    refused = {}
    for name, attempt in SMUGGLING.items():
        responses = exchange(
            port, attempt + b"GET /echo?smuggled HTTP/1.1\r\nHost: t\r\n\r\n", expect=2
        )
        refused[name] = [r.status for r in responses]
    assert refused == {name: [400] for name in SMUGGLING}
    assert get(port, "/echo?canary2").status == 200
    targets = [r["target"] for r in server.requests()]
    assert targets == ["/echo?canary", "/echo?canary2"]


def test_header_size_limits(
    recording: Callable[[int], list[RecordingBackend]], loadstone: Start
) -> None:
    (server,) = recording(1)
    ls = loadstone(http_config([server], max_head_size=2048, max_headers=10))
    port = port_of(ls)
    big = b"GET /echo HTTP/1.1\r\nHost: t\r\nX-Big: " + b"a" * 3000 + b"\r\n\r\n"
    assert exchange(port, big)[0].status == 431
    many = (
        b"GET /echo HTTP/1.1\r\nHost: t\r\n"
        + b"".join(b"X-%d: 1\r\n" % i for i in range(12))
        + b"\r\n"
    )
    assert exchange(port, many)[0].status == 431
    # A head dripping in, never ending: refused once it passes the limit.
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(b"GET /echo HTTP/1.1\r\nHost: t\r\nX-Drip: ")
        status = b""
        try:
            for _ in range(100):
                s.sendall(b"a" * 100)
                time.sleep(0.005)
        except OSError:
            pass
        status = s.recv(100)
    assert status.startswith(b"HTTP/1.1 431")
    assert server.requests() == []


def test_connect_method_refused(backends: Backends, loadstone: Start) -> None:
    servers = backends(1)
    ls = loadstone(http_config(servers))
    assert exchange(port_of(ls), b"CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n")[0].status == 501


# -- Debian's nginx as the backend ------------------------------------------------------------

NGINX_SERVER = """
    keepalive_requests 100000;
    server {{
        listen 127.0.0.1:{port};
        location / {{ return 200 "{name} $connection $http_x_forwarded_for\\n"; }}
    }}
"""


@pytest.fixture
def nginx(tmp_path: Path) -> Iterator[Callable[[str], int]]:
    if shutil.which("nginx") is None:
        pytest.skip("nginx is not installed (apt-get install nginx-light)")
    procs: list[subprocess.Popen[bytes]] = []

    def start(name: str) -> int:
        port = free_port()
        server = NGINX_SERVER.format(port=port, name=name)
        procs.append(start_nginx(tmp_path / f"nginx-{name}", server))
        wait_for(lambda: socket.create_connection(("127.0.0.1", port), timeout=1).close() or True)
        return port

    yield start
    for proc in procs:
        proc.terminate()
        proc.wait(10)


def test_nginx_backends_spread_and_reuse(nginx: Callable[[str], int], loadstone: Start) -> None:
    ports = {name: nginx(name) for name in ("n1", "n2")}
    config = http_config([], forwardfor=True)
    config["listeners"]["web"]["servers"] = [
        {"name": name, "address": f"127.0.0.1:{port}"} for name, port in ports.items()
    ]
    ls = loadstone(config)
    port = port_of(ls)
    seen: dict[str, set[str]] = collections.defaultdict(set)
    for _ in range(20):
        name, conn, xff = get(port).body.decode().split()
        seen[name].add(conn)
        assert xff == "127.0.0.1"
    # Both servers used, each over one kept-alive connection.
    assert {k: len(v) for k, v in seen.items()} == {"n1": 1, "n2": 1}


# -- lifecycle --------------------------------------------------------------------------------


def test_reload_changes_rules_and_refuses_a_mode_change(
    backends: Backends, loadstone: Start
) -> None:
    servers = backends(1)
    ls = loadstone(http_config(servers, request_headers=[{"set": "X-Gen", "value": "one"}]))
    port = port_of(ls)
    with socket.create_connection(("127.0.0.1", port), timeout=5) as kept:
        kept.sendall(b"GET /echo HTTP/1.1\r\nHost: t\r\n\r\n")
        assert b'"X-Gen", "one"' in kept.recv(65536)
        ls.config["listeners"]["web"]["request_headers"] = [{"set": "X-Gen", "value": "two"}]
        ls.path.write_text(yaml.safe_dump(ls.config))
        assert urllib_post(ls, "/api/v1/reload", {})["ok"] is True
        # New requests, on the kept connection too, follow the new rules.
        kept.sendall(b"GET /echo HTTP/1.1\r\nHost: t\r\n\r\n")
        assert b'"X-Gen", "two"' in kept.recv(65536)
    ls.config["listeners"]["web"]["mode"] = "tcp"
    del ls.config["listeners"]["web"]["request_headers"]
    ls.path.write_text(yaml.safe_dump(ls.config))
    import urllib.error

    with pytest.raises(urllib.error.HTTPError) as info:
        urllib_post(ls, "/api/v1/reload", {})
    assert "needs a restart" in info.value.read().decode()
    assert get(port, "/echo").status == 200


def test_stop_closes_idle_keep_alive_connections_at_once(
    backends: Backends, loadstone: Start
) -> None:
    servers = backends(1)
    config = http_config(servers)
    config["global"]["grace"] = "10s"
    ls = loadstone(config)
    with socket.create_connection(("127.0.0.1", port_of(ls)), timeout=5) as idle:
        idle.sendall(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
        assert idle.recv(65536).endswith(b"s1\n")
        t0 = time.monotonic()
        assert ls.stop() == 0
        assert time.monotonic() - t0 < 5  # not the 10 s grace: nothing was in flight
        assert idle.recv(100) == b""
