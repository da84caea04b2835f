"""Request smuggling and differential parsing, on both data paths.

Every request of the corpus (the published technique lists: CL.TE, TE.CL,
TE.TE obfuscations, chunk extensions and sizes, bare LF and CR, whitespace
in header names, duplicate and conflicting fields, absolute-form and Host,
HTTP/0.9 and 1.0 quirks, hop-by-hop abuse) is sent to loadstone followed by
a sentinel request. loadstone must either refuse it (an error status, and
not one byte reaches the server) or forward it. Whatever it forwards is
captured by a relay (tests/peers/tee.py) and replayed, followed by the
sentinel again, to nginx, HAProxy and the aiohttp backend itself: all three
must frame it the same way (the same requests, with the same bodies), and
that must be what loadstone's client was answered. A request that one
implementation reads differently from another is the start of a
desynchronisation: the bytes one side takes for a body, the other takes for
a request of an attacker's choosing.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httptools
import pytest

from tests.integration.harness import (
    Backend,
    Loadstone,
    free_port,
    port_open,
    start_nginx,
    wait_for,
)
from tests.integration.test_http_mode import GET, POST, SMUGGLING, TE, http_config, port_of
from tests.peers.tee import Tee

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("datapath")]

Start = Callable[..., Loadstone]

# The techniques test_http_mode.py expects refused, and more, some of which
# are legitimate and must be forwarded intact.
CL = POST + b"Content-Length: 3\r\n"
CORPUS: dict[str, bytes] = {
    **SMUGGLING,
    # TE.TE: obfuscations one parser may take for chunked and another not
    "TE tab before value": POST + b"Transfer-Encoding:\tchunked\r\n\r\n0\r\n\r\n",
    "TE trailing tab": POST + b"Transfer-Encoding: chunked\t\r\n\r\n0\r\n\r\n",
    "TE vertical tab": POST + b"Transfer-Encoding:\x0bchunked\r\n\r\n0\r\n\r\n",
    "TE form feed": POST + b"Transfer-Encoding: \x0cchunked\r\n\r\n0\r\n\r\n",
    "TE quoted": POST + b'Transfer-Encoding: "chunked"\r\n\r\n0\r\n\r\n',
    "TE upper case": POST + b"TRANSFER-ENCODING: CHUNKED\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
    "TE chunked, chunked": POST + b"Transfer-Encoding: chunked, chunked\r\n\r\n0\r\n\r\n",
    "TE cow, chunked": POST + b"Transfer-Encoding: cow, chunked\r\n\r\n0\r\n\r\n",
    "TE chunk": POST + b"Transfer-Encoding: chunk\r\n\r\n0\r\n\r\n",
    "TE identity": POST + b"Transfer-Encoding: identity\r\n\r\n",
    "TE NUL in name": POST + b"Transfer-Encoding\x00: chunked\r\n\r\n0\r\n\r\n",
    "TE tab in name": POST + b"Transfer-Encoding\t: chunked\r\n\r\n0\r\n\r\n",
    "TE after bare LF": POST + b"X: x\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    "TE name folded": POST + b"Transfer-Encoding\r\n : chunked\r\n\r\n0\r\n\r\n",
    "CL.TE xchunked": CL + b"Transfer-Encoding: xchunked\r\n\r\nabc",
    # Content-Length spellings
    "CL leading zeros": POST + b"Content-Length: 003\r\n\r\nabc",
    "CL trailing space": POST + b"Content-Length: 3 \r\n\r\nabc",
    "CL hex": POST + b"Content-Length: 0x3\r\n\r\nabc",
    "CL trailing comma": POST + b"Content-Length: 3,\r\n\r\nabc",
    "CL tab in name": POST + b"Content-Length\t: 3\r\n\r\nabc",
    "CL on a GET": GET + b"Content-Length: 3\r\n\r\nabc",
    # chunk framing
    "chunk extension": TE + b"3;name=value\r\nabc\r\n0\r\n\r\n",
    "chunk extension quoted": TE + b'3;a="b;c\\"d"\r\nabc\r\n0;x\r\n\r\n',
    "chunk extension bare LF": TE + b"3;a\nbc\r\nabc\r\n0\r\n\r\n",
    "chunk extension long": TE + b"3;" + b"a" * 5000 + b"\r\nabc\r\n0\r\n\r\n",
    "chunk size leading zeros": TE + b"0003\r\nabc\r\n0000\r\n\r\n",
    "chunk size upper case": TE + b"A\r\n0123456789\r\n0\r\n\r\n",
    "chunk size 2^64": TE + b"10000000000000000\r\nabc\r\n0\r\n\r\n",
    "chunk size 2^64-1": TE + b"ffffffffffffffff\r\nabc\r\n0\r\n\r\n",
    "chunk without CRLF after data": TE + b"3\r\nabcX\r\n0\r\n\r\n",
    "trailer fields": TE + b"3\r\nabc\r\n0\r\nX-Trailer: 1\r\n\r\n",
    "trailer Content-Length": TE + b"3\r\nabc\r\n0\r\nContent-Length: 50\r\n\r\n",
    "GET chunked": GET + b"Transfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
    # line ends and whitespace
    "bare CR line ends": b"GET /echo HTTP/1.1\rHost: t\r\r",
    "bare CR in value": GET + b"X-A: a\rb\r\n\r\n",
    "space inside a name": GET + b"X A: b\r\n\r\n",
    "leading empty line": b"\r\n" + GET + b"\r\n",
    "request line tabs": b"GET\t/echo\tHTTP/1.1\r\nHost: t\r\n\r\n",
    "request line double space": b"GET  /echo HTTP/1.1\r\nHost: t\r\n\r\n",
    # versions
    "HTTP/1.0 without Host": b"GET /echo HTTP/1.0\r\n\r\n",
    "HTTP/1.0 keep-alive body": b"POST /echo HTTP/1.0\r\nConnection: keep-alive\r\n"
    b"Content-Length: 3\r\n\r\nabc",
    "HTTP/1.0 POST without length": b"POST /echo HTTP/1.0\r\n\r\n",
    "HTTP/1.2": b"GET /echo HTTP/1.2\r\nHost: t\r\n\r\n",
    "http/1.1 lower case": b"GET /echo http/1.1\r\nHost: t\r\n\r\n",
    "HTTP/01.1": b"GET /echo HTTP/01.1\r\nHost: t\r\n\r\n",
    # absolute-form
    "absolute-form": b"GET http://t/echo HTTP/1.1\r\nHost: t\r\n\r\n",
    "absolute-form https": b"GET https://t/echo HTTP/1.1\r\nHost: t\r\n\r\n",
    "absolute-form without Host": b"GET http://t/echo HTTP/1.1\r\n\r\n",
    "absolute-form Host mismatch": b"GET http://evil.example/echo HTTP/1.1\r\nHost: t\r\n\r\n",
    "absolute-form two Hosts": b"GET http://t/echo HTTP/1.1\r\nHost: t\r\nHost: evil\r\n\r\n",
    # hop-by-hop abuse (Connection naming the framing fields or Host)
    "Connection: content-length": CL + b"Connection: content-length\r\n\r\nabc",
    "Connection: transfer-encoding": POST + b"Transfer-Encoding: chunked\r\n"
    b"Connection: transfer-encoding\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
    "Connection: host": GET + b"Connection: host\r\n\r\n",
    # h2c upgrade smuggling (the server answers 200, not 101: no tunnel)
    "h2c upgrade": GET + b"Upgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n"
    b"Connection: Upgrade, HTTP2-Settings\r\n\r\n",
    "Expect: 100-continue": CL + b"Expect: 100-continue\r\n\r\nabc",
}

SENTINEL = b"GET /echo?sentinel HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
READ_TIMEOUT = 3.0


# -- reading a stream of responses ----------------------------------------------------------


@dataclass(frozen=True)
class Framed:
    """What a response says the server took for one request."""

    status: int
    method: str = ""
    target: str = ""
    body_length: int = -1
    body_sha256: str = ""


class _Responses:
    def __init__(self) -> None:
        self.done: list[Framed] = []
        self.body = b""
        self.parser = httptools.HttpResponseParser(self)

    def on_message_begin(self) -> None:
        self.body = b""

    def on_body(self, body: bytes) -> None:
        self.body += body

    def on_message_complete(self) -> None:
        status = self.parser.get_status_code()
        if 100 <= status < 200:
            return  # 100 Continue: said by some and not others, frames nothing
        try:
            echo: Any = json.loads(self.body)
            fields = (echo["method"], echo["target"], echo["body_length"], echo["body_sha256"])
        except (ValueError, KeyError, TypeError):
            self.done.append(Framed(status))
            return
        self.done.append(Framed(status, *fields))


def talk(port: int, data: bytes) -> list[Framed]:
    """Send `data` on one connection; the responses until the close (or silence)."""
    parsed = _Responses()
    with socket.create_connection(("127.0.0.1", port), timeout=READ_TIMEOUT) as s:
        s.sendall(data)
        try:
            while chunk := s.recv(65536):
                parsed.parser.feed_data(chunk)
        except (
            TimeoutError,
            ConnectionResetError,
            httptools.HttpParserError,
            httptools.HttpParserUpgrade,
        ):
            pass
    return parsed.done


# -- the peers ------------------------------------------------------------------------------

NGINX_SERVER = """
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://127.0.0.1:{backend};
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }}
    }}
"""

HAPROXY = """
global
    maxconn 256
defaults
    mode http
    timeout connect 2s
    timeout client 5s
    timeout server 5s
frontend web
    bind 127.0.0.1:{port}
    default_backend app
backend app
    server app 127.0.0.1:{backend}
"""


@dataclass
class Peers:
    backend: int
    nginx: int
    haproxy: int

    def frame(self, stream: bytes) -> dict[str, list[Framed]]:
        """The requests each implementation's application gets from `stream`."""
        tail = SENTINEL if ends_open(stream) else b""
        return {
            name: reached_the_app(talk(port, stream + tail))
            for name, port in (
                ("aiohttp", self.backend),
                ("nginx", self.nginx),
                ("haproxy", self.haproxy),
            )
        }


def ends_open(stream: bytes) -> bool:
    """Whether the connection is still usable after `stream` (its last request
    keeps it alive, or is not complete): then the sentinel ends the replay.
    After a closing request nothing may follow (aiohttp refuses it all)."""
    state = {"keep": True, "complete": False}

    class Callbacks:
        def on_message_begin(self) -> None:
            state["complete"] = False

        def on_message_complete(self) -> None:
            state["complete"] = True
            state["keep"] = parser.should_keep_alive()

    parser = httptools.HttpRequestParser(Callbacks())
    try:
        parser.feed_data(stream)
    except (httptools.HttpParserError, httptools.HttpParserUpgrade):
        return True
    return state["keep"] or not state["complete"]


def reached_the_app(framed: list[Framed]) -> list[Framed]:
    """The responses the application made, without the sentinel's: what the
    proxies refuse themselves (400, 408, 502) frames no request."""
    return [f for f in framed if f.method and f.target != "/echo?sentinel"]


@pytest.fixture(scope="module")
def peers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Peers]:
    for tool in ("nginx", "haproxy"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed (scripts/test installs it)")
    tmp = tmp_path_factory.mktemp("peers")
    backend = Backend("app", free_port()).start()
    procs: list[subprocess.Popen[bytes]] = []
    try:
        nginx_port, haproxy_port = free_port(), free_port()
        server = NGINX_SERVER.format(port=nginx_port, backend=backend.port)
        procs.append(start_nginx(tmp / "nginx", server))
        (tmp / "haproxy.cfg").write_text(HAPROXY.format(port=haproxy_port, backend=backend.port))
        procs.append(subprocess.Popen(["haproxy", "-db", "-f", str(tmp / "haproxy.cfg")]))
        for port in (nginx_port, haproxy_port):
            wait_for(lambda port=port: port_open("127.0.0.1", port), what=f"port {port}")
        yield Peers(backend.port, nginx_port, haproxy_port)
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait(10)
        backend.stop()


@pytest.fixture
def tee(peers: Peers) -> Iterator[Tee]:
    relay = Tee(("127.0.0.1", peers.backend))
    yield relay
    relay.close()


def start_proxy(loadstone: Start, tee: Tee) -> int:
    config = http_config([])
    config["listeners"]["web"]["servers"] = [{"name": "app", "address": f"127.0.0.1:{tee.port}"}]
    config["defaults"]["timeouts"].update({"client": "2s", "http_request": "2s"})
    return port_of(loadstone(config))


# -- the test -------------------------------------------------------------------------------


def outcome(peers: Peers, tee: Tee, port: int, request: bytes) -> str:
    """'' when the request was refused or framed alike everywhere; else what differs."""
    mark = tee.mark()
    answered = talk(port, request + SENTINEL)
    forwarded = tee.since(mark)
    if not forwarded:
        if answered and 400 <= answered[0].status < 600 and len(answered) == 1:
            return ""
        return f"nothing forwarded, yet the client got {answered}"
    seen: dict[str, list[Framed]] = {"aiohttp": [], "nginx": [], "haproxy": []}
    for stream in forwarded:
        for peer, framed in peers.frame(stream).items():
            seen[peer] += framed
    if not seen["aiohttp"] == seen["nginx"] == seen["haproxy"]:
        return f"forwarded {forwarded!r}, framed differently: {seen}"
    if reached_the_app(answered) != seen["aiohttp"]:
        return f"forwarded {forwarded!r} frames as {seen['aiohttp']}, the client got {answered}"
    return ""


def test_each_request_is_refused_or_framed_alike(
    peers: Peers, tee: Tee, loadstone: Start, datapath: str
) -> None:
    port = start_proxy(loadstone, tee)
    failures = {}
    for name, request in CORPUS.items():
        problem = outcome(peers, tee, port, request)
        if problem:
            failures[name] = problem
    assert not failures, "\n".join(f"{name}: {problem}" for name, problem in failures.items())


def test_absolute_form_and_host_agree(peers: Peers, tee: Tee, loadstone: Start) -> None:
    """RFC 9112 section 3.2.2: a server takes the authority of an absolute-form
    target and ignores Host. loadstone routes by Host: a request whose two
    disagree must be refused, or forwarded with both rewritten to agree
    (HAProxy's way), else the route and the server follow different hosts."""
    port = start_proxy(loadstone, tee)
    mark = tee.mark()
    answered = talk(port, b"GET http://evil.example/echo HTTP/1.1\r\nHost: t\r\n\r\n" + SENTINEL)
    forwarded = b"".join(tee.since(mark))
    if not forwarded:
        assert answered and answered[0].status == 400
        return
    head = forwarded.split(b"\r\n\r\n", 1)[0].lower()
    target = head.split(b" ", 2)[1]
    if target.startswith(b"http"):
        authority = target.split(b"/", 3)[2]
        assert b"\r\nhost: " + authority + b"\r\n" in head + b"\r\n", head
