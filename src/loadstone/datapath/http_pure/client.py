"""The HTTP data path (mode http): HTTP/1.1 on both sides, parsed by httptools.

Theory of operation
-------------------
One `_Client` per accepted connection; it is the asyncio Protocol *and* the
httptools callback target, as uvicorn's HttpToolsProtocol is. One `_Backend` per
server connection, likewise the Protocol and the response parser's target.
Backend connections outlive requests: when a response is complete and both the
server and the request allow it, the connection goes back to its server's idle
list (`HttpFrontend.idle`) and the next request to that server, from any client,
reuses it. The policy decisions (checks, header rewriting, cookies, routes) are
made by the sans-IO modules of `loadstone.http`.

A request's life (one at a time per client connection; pipelined requests wait,
parsed, in `_Client.pipeline`, and are answered in order):

    head parsed --prepare--> routed, server picked --idle conn--> attached
                                  |                  `-connect-> attached (retries,
                                  |                               redispatch)
                                  `-> 503 when no server is up
    attached: head + body so far written, the rest of the body streamed
    response: head rebuilt for the client, body streamed, re-framed if needed
    done: access-log line; server connection back to idle (or closed);
          the next pipelined request starts, or the client waits (keep-alive)

Framing is never copied: llhttp decodes the body, and it is written again as
Content-Length data or as fresh chunks, so the two sides cannot disagree on
where a message ends (the root of request smuggling).

Writes are batched twice: everything one `data_received` produces for the other
side is joined into one write, so a small request or response costs one
send(2); and the writes of one event-loop pass are made together at its end
(`HttpFrontend.flush_writes`), as HAProxy sends after its event pass. Writing
on loopback wakes the reader; writing in the middle of the pass let each woken
peer preempt the proxy once per write (about one involuntary context switch per
request); at the end of the pass the peers woken first are still running for
the later writes. This cut the CPU per keep-alive request by about a fifth.

Flow control is end to end, as in the TCP path: a transport over its high-water
mark pauses reading on the other side. Body bytes that arrive while the server
connection is being set up are kept up to PENDING_LIMIT, then the client is
paused.

Timeouts: one timer per client connection with a moving deadline (re-armed only
when the deadline moves earlier, so the per-request cost is a float store):
http_request for the head (408), http_keep_alive between requests (silent
close), client during a request body, server while waiting for and reading the
response (504 before a response head), tunnel after an Upgrade, queue at maxconn.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time
from typing import TYPE_CHECKING, Any, Final, cast

import httptools

from loadstone.balance import make_balancer
from loadstone.datapath.accept import AcceptingFrontend
from loadstone.datapath.connect import Connector
from loadstone.datapath.http_counts import responses_by_class, status_class
from loadstone.datapath.http_pure.framing import chunk, end_of_body, last_chunk
from loadstone.datapath.transport import WRITE_HIGH_WATER, WRITE_LOW_WATER, apply_keepalive
from loadstone.http import message
from loadstone.http.request import (
    CHUNKED,
    HAS_BODY,
    IDEMPOTENT,
    BadRequest,
    RequestPolicy,
)
from loadstone.http.response import (
    BODY_CHUNKED,
    BODY_CLOSE,
    BODY_NONE,
    ResponsePolicy,
    close_head,
)
from loadstone.http.routing import Router
from loadstone.server import Pool, ServerRuntime
from loadstone.sessionlog import logged

if TYPE_CHECKING:
    from loadstone.balance.base import Balancer

log = logging.getLogger("loadstone.datapath.http")

PENDING_LIMIT: Final = 256 * 1024  # request body kept while connecting / pipelined
IDLE_SWEEP: Final = 1.0  # seconds between sweeps of idle server connections
MAX_IDLE_PER_SERVER: Final = 1024

# What the client connection's timer is for.
_T_HEAD: Final = 0  # waiting for (the rest of) a request head
_T_IDLE: Final = 1  # keep-alive: waiting for the first byte of the next request
_T_CLIENT: Final = 2  # receiving a request body
_T_SERVER: Final = 3  # waiting for / receiving the response
_T_TUNNEL: Final = 4
_T_QUEUE: Final = 5

_HttpParserError = httptools.HttpParserError
_HttpParserUpgrade = httptools.HttpParserUpgrade
_METHODS: Final = {m: m.decode() for m in (b"GET", b"HEAD", b"POST", b"PUT", b"DELETE", b"PATCH")}
# Request timings: the loop's clock is only millisecond-grained under uvloop.
_now = time.monotonic


class _HeadOnly(Exception):
    """Raised from the response parser's head callback when no body may follow
    (HEAD request): httptools cannot be told to skip a body, so parsing stops."""


class _Request:
    """One parsed request head and what arrived of its body before it could be sent."""

    __slots__ = (
        "body",
        "body_size",
        "complete",
        "cookie",
        "error",
        "flags",
        "head",
        "headers",
        "host",
        "keep_alive",
        "method",
        "t_begin",
        "t_head",
        "target",
        "upgrade",
        "version",
    )

    def __init__(self, t_begin: float) -> None:
        self.t_begin = t_begin
        self.t_head = -1.0
        self.method = b""
        self.target = b""
        self.version = "1.1"
        self.headers: list[tuple[bytes, bytes]] = []
        self.head = b""  # as sent to the server
        self.host: bytes | None = None
        self.cookie: bytes | None = None
        self.flags = 0
        self.keep_alive = True
        self.upgrade = False
        self.body: list[bytes] = []  # framed for the server, not yet written
        self.body_size = 0
        self.complete = False
        self.error: BadRequest | None = None


class _RoutePool:
    """The servers of one routing pool, with their own balancer; the servers are
    the listener Pool's objects, so health, admin state and counters are shared."""

    __slots__ = ("balancer", "by_cookie", "name", "servers")

    def __init__(self, name: str, servers: list[ServerRuntime], balance: str) -> None:
        self.name = name
        self.servers = servers
        self.balancer: Balancer = make_balancer(balance, servers)
        self.by_cookie = {s.config.cookie_value.encode(): s for s in servers}

    def pick(
        self, client_ip: str | None, exclude: list[ServerRuntime] | tuple[()] = ()
    ) -> ServerRuntime | None:
        return self.balancer.pick(client_ip, exclude)


class _Backend(asyncio.Protocol):
    """One connection to a server, relaying responses byte for byte.

    This is the class used when nothing needs to change in response heads (no
    response rules, Location rewriting or cookie insertion): llhttp then only
    tracks where each response ends (two callbacks per response), and every
    read from the server is written to the client as it is, chunked framing
    included, in one write. `_RewritingBackend` rebuilds heads instead.
    """

    __slots__ = (
        "body_mode",
        "client",
        "done",
        "first",
        "frontend",
        "head_only",
        "head_sent",
        "idle_since",
        "interim",
        "keep_alive",
        "parser",
        "reading_paused",
        "requests",
        "server",
        "transport",
        "tunnel",
    )

    raw = True  # responses go to the client as received

    def __init__(self, frontend: HttpFrontend, server: ServerRuntime) -> None:
        self.frontend = frontend
        self.server = server
        self.transport: asyncio.Transport | None = None
        self.client: _Client | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.head_sent = False
        self.head_only = False
        self.first = True  # the next read starts a response
        self.interim = False
        self.done = False
        self.body_mode = BODY_NONE
        self.tunnel = False
        self.keep_alive = False  # the server lets the connection stay open
        self.requests = 0  # served on this connection
        self.idle_since = 0.0
        self.reading_paused = False  # by a client that reads slower than we receive

    def reset(self, client: _Client, head_only: bool) -> None:
        self.client = client
        self.head_sent = False
        self.head_only = head_only
        self.first = True
        self.done = False
        self.requests += 1

    # -- asyncio -----------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports do not subclass asyncio.Transport: no isinstance check.
        self.transport = tr = cast(asyncio.Transport, transport)
        tr.set_write_buffer_limits(WRITE_HIGH_WATER, WRITE_LOW_WATER)

    def data_received(self, data: bytes) -> None:
        client = self.client
        if client is None:
            # Bytes from an idle connection: nothing was asked; it cannot be reused.
            self.frontend.drop_idle(self)
            return
        if self.tunnel:
            client.tunnel_data_from_server(data)
            return
        if client.timeout_kind == _T_SERVER:
            client.deadline = client.loop.time() + client.frontend.t_server
        try:
            self.parser.feed_data(data)
        except _HttpParserUpgrade:
            if not self.head_sent:
                client.response_failed(self, "invalid upgrade response")
                return
            self.tunnel = True  # the 101 and what follows go as they came
            client.send_bytes(data)
            client.start_tunnel()
            return
        except _HttpParserError as exc:
            if isinstance(exc.__context__, _HeadOnly):
                self._head_only_done(client, data)
                end = data.find(b"\r\n\r\n") + 4
                if 4 <= end < len(data):
                    data = data[:end]  # a body the server should not have sent: dropped
            elif self.done:
                # Bytes after a complete response: the server is broken. What came
                # goes to the client, which is then closed; the connection is not
                # reused.
                client.backend_reusable = False
                client.keep_client = False
            else:
                client.response_failed(self, f"invalid response: {exc}")
                return
        if self.first:
            self.first = False
            if self.head_sent and self.keep_alive and not client.keeps_connection():
                data = close_head(data)
        client.send_bytes(data)
        if self.done:
            client.response_done(self)

    def _head_only_done(self, client: _Client, data: bytes) -> None:
        # A HEAD response ends with its head; httptools cannot be told so, hence a
        # fresh parser. Bytes after the head would be a body the server should not
        # have sent: that connection is then not reused.
        self.done = True
        self.parser = httptools.HttpResponseParser(self)
        if not data.endswith(b"\r\n\r\n"):
            client.backend_reusable = False

    def eof_received(self) -> bool:
        return False  # close our side too; connection_lost follows

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        client = self.client
        if client is None:
            self.frontend.drop_idle(self)
        else:
            client.backend_lost(self, exc)

    def pause_writing(self) -> None:
        if self.client is not None:
            self.client.pause_client_reading()

    def resume_writing(self) -> None:
        if self.client is not None:
            self.client.resume_client_reading()

    # -- httptools callbacks -------------------------------------------------------

    def on_headers_complete(self) -> None:
        parser = self.parser
        status = parser.get_status_code()
        if status < 200 and status != 101:
            self.interim = True  # 100 Continue, 103 Early Hints: passed on as they are
            return
        client = self.client
        assert client is not None
        self.keep_alive = parser.should_keep_alive()
        self.head_sent = True
        client.status = status
        client.t_response = _now()
        if status == 101 and (client.req is None or not client.req.upgrade):
            raise _HttpParserError("101 to a request that did not ask to upgrade")
        if not self.keep_alive:
            client.keep_client = False  # its Connection: close reaches the client
        if self.head_only:
            raise _HeadOnly

    def on_message_complete(self) -> None:
        if self.interim:
            self.interim = False
            return
        self.done = True

    @property
    def reusable(self) -> bool:
        return (
            self.transport is not None
            and not self.transport.is_closing()
            and self.body_mode != BODY_CLOSE
            and not self.tunnel
            and self.keep_alive
        )


class _RewritingBackend(_Backend):
    """A server connection whose response heads are rebuilt for the client
    (`ResponsePolicy`): hop-by-hop fields, Location, rules, the persistence cookie.
    The body is re-framed from what llhttp decoded."""

    __slots__ = ("headers", "out", "rechunk", "trailers")

    raw = False

    def __init__(self, frontend: HttpFrontend, server: ServerRuntime) -> None:
        self.out: list[bytes] = []
        self.headers: list[tuple[bytes, bytes]] = []
        self.trailers: list[tuple[bytes, bytes]] | None = None
        self.rechunk = False
        super().__init__(frontend, server)

    def reset(self, client: _Client, head_only: bool) -> None:
        super().reset(client, head_only)
        self.headers = []
        self.trailers = None
        self.rechunk = False

    def data_received(self, data: bytes) -> None:
        client = self.client
        if client is None:
            self.frontend.drop_idle(self)
            return
        if self.tunnel:
            client.tunnel_data_from_server(data)
            return
        if client.timeout_kind == _T_SERVER:
            client.deadline = client.loop.time() + client.frontend.t_server
        out = self.out
        try:
            self.parser.feed_data(data)
        except _HttpParserUpgrade as exc:
            if self.head_sent:
                self.tunnel = True
                rest = data[exc.args[0] :]
                if rest:
                    out.append(rest)
                client.send(out)
                client.start_tunnel()
                return
            client.response_failed(self, "invalid upgrade response")
            return
        except _HttpParserError as exc:
            if isinstance(exc.__context__, _HeadOnly):
                self._head_only_done(client, data)
            elif self.done:
                client.backend_reusable = False  # bytes after the response: dropped
            else:
                if out:
                    client.send(out)
                client.response_failed(self, f"invalid response: {exc}")
                return
        if out:
            client.send(out)
        if self.done:
            client.response_done(self)

    def on_header(self, name: bytes, value: bytes) -> None:
        if self.head_sent:
            if self.trailers is None:
                self.trailers = []
            self.trailers.append((name, value))
        else:
            self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        client = self.client
        assert client is not None
        status = self.parser.get_status_code()
        if 100 <= status < 200 and status != 101:
            # Interim (100 Continue, 103 Early Hints): passed on to HTTP/1.1
            # clients; the final response follows on the same parser.
            self.interim = True
            if client.http11:
                head = client.frontend.resp_policy.prepare(
                    status,
                    self.headers,
                    head_request=False,
                    client_keep_alive=True,
                    client_http10=False,
                    set_cookie=None,
                )[0]
                self.out.append(head)
            self.headers = []
            return
        self.keep_alive = self.parser.should_keep_alive()
        head, body, _ = client.response_head(self, status, self.headers)
        self.head_sent = True
        self.body_mode = body
        self.rechunk = body == BODY_CHUNKED and client.http11
        self.out.append(head)
        if self.head_only:
            raise _HeadOnly

    def on_body(self, data: bytes) -> None:
        if self.rechunk:
            self.out += chunk(data)
        else:
            self.out.append(data)

    def on_message_complete(self) -> None:
        if self.interim:
            self.interim = False
            return
        if self.rechunk:
            self.out.append(last_chunk(self.trailers))
        self.done = True


class _Client(asyncio.Protocol, Connector[_Backend]):
    """One client connection: the Protocol, the request parser's target, and the
    exchange in flight (one at a time)."""

    # Per connection, then per exchange: see __init__.
    __slots__ = (
        "backend",
        "backend_reusable",
        "bytes_in",
        "bytes_out",
        "client_eof",
        "client_ip",
        "closed",
        "deadline",
        "extra",
        "feeding",
        "frontend",
        "head_bytes",
        "head_written",
        "http11",
        "keep_client",
        "loop",
        "parser",
        "parsing",
        "paused",
        "peer",
        "pipeline",
        "queue_timer",
        "queued_at",
        "queued_data",
        "queued_for",
        "req",
        "requests",
        "response_started",
        "set_cookie",
        "status",
        "t_connect",
        "t_response",
        "t_sent",
        "t_wait",
        "timeout_kind",
        "timer",
        "to_server",
        "transport",
        "tunnel",
        "tunnel_buf",
    )
    log = log
    frontend: HttpFrontend

    def __init__(self, frontend: HttpFrontend) -> None:
        self.frontend = frontend
        self.loop = frontend.loop
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpRequestParser(self)
        self.client_ip: str | None = None
        self.peer = "-"
        self.extra = b""
        self.closed = False
        self.client_eof = False
        self.paused = False
        self.tunnel = False
        self.tunnel_buf: list[bytes] | None = None
        self.http11 = True
        self.requests = 0
        self.bytes_in = 0  # of the exchange in flight (status API, server counters)
        self.bytes_out = 0
        self.queued_at = -1.0
        self.queued_for = 0.0  # time the connection waited in the maxconn queue
        self.queue_timer: asyncio.TimerHandle | None = None
        self.queued_data: list[bytes] = []  # read while queued at maxconn
        self.feeding = False  # inside parser.feed_data: writes to the server wait
        self.head_bytes = 0  # of a request head spread over several reads
        self.head_written = False  # some of the request in flight reached the server
        self.timer: asyncio.TimerHandle | None = None
        self.deadline = 0.0
        self.timeout_kind = _T_HEAD
        self.parsing: _Request | None = None  # the request the parser is on
        self.pipeline: collections.deque[_Request] = collections.deque()
        self.req: _Request | None = None  # the request being answered
        self.to_server: list[bytes] = []
        self._connector_init()
        self.backend: _Backend | None = None
        self.backend_reusable = True
        self.keep_client = True  # the client connection stays after this response
        self.response_started = False
        self.set_cookie: bytes | None = None
        self.status = 0
        self.t_wait = 0.0
        self.t_connect = -1.0
        self.t_sent = -1.0
        self.t_response = -1.0

    # -- asyncio: client side ------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports do not subclass asyncio.Transport: no isinstance check.
        self.transport = tr = cast(asyncio.Transport, transport)
        tr.set_write_buffer_limits(WRITE_HIGH_WATER, WRITE_LOW_WATER)
        frontend = self.frontend
        peer = transport.get_extra_info("peername")
        if peer:
            self.client_ip = peer[0]
            self.peer = f"[{peer[0]}]:{peer[1]}" if ":" in peer[0] else f"{peer[0]}:{peer[1]}"
        policy = frontend.req_policy
        # getsockname(2) only when X-Forwarded-Port needs the local port.
        local = transport.get_extra_info("sockname") if policy.port_header else None
        self.extra = policy.connection_lines(self.client_ip, local[1] if local else None)
        self.set_deadline(_T_HEAD, frontend.t_http_request)
        apply_keepalive(tr, frontend.config)
        frontend.admit(self)

    def data_received(self, data: bytes) -> None:
        if self.queue_timer is not None:
            # Queued at maxconn. uvloop starts reading a new connection after
            # connection_made returns, undoing the pause made there: keep what
            # arrives for the admission, and pause again.
            self.queued_data.append(data)
            if self.transport is not None:
                self.transport.pause_reading()
            return
        if self.tunnel:
            self._tunnel_data_from_client(data)
            return
        if self.tunnel_buf is not None:
            # An upgrade is on its way: these bytes are for the tunnel.
            self.tunnel_buf.append(data)
            return
        if self.closed:
            return
        self.bytes_in += len(data)
        parsing = self.parsing
        if parsing is not None and parsing.t_head < 0:
            # A head still incomplete after an earlier read: bound what httptools
            # buffers for it (a header value dripping in forever).
            self.head_bytes += len(data)
            if self.head_bytes > self.frontend.max_head_size:
                self._parse_failed(
                    _HttpParserError("head too large"), BadRequest(431, "request head too large")
                )
                return
        self.feeding = True
        try:
            self.parser.feed_data(data)
        except _HttpParserUpgrade as exc:
            self._upgrade_requested(data[exc.args[0] :])
        except _HttpParserError as exc:
            self._parse_failed(exc)
        self.feeding = False
        if self.to_server and not self.closed:
            self.flush_to_server()

    def eof_received(self) -> bool:
        self.client_eof = True
        if self.req is None and self.parsing is None:
            self._close("client-close")
            return False
        backend = self.backend
        if (
            self.tunnel
            and backend is not None
            and backend.transport is not None
            and backend.transport.can_write_eof()
        ):
            backend.transport.write_eof()
        return True  # a request in flight still gets its response

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        if not self.closed:
            self._close("client-reset" if exc is not None else "client-close")

    def pause_writing(self) -> None:
        # The client reads slower than the server sends: stop reading the server.
        backend = self.backend
        if backend is not None and backend.transport is not None:
            backend.reading_paused = True
            backend.transport.pause_reading()

    def resume_writing(self) -> None:
        backend = self.backend
        if backend is not None and backend.transport is not None:
            backend.reading_paused = False
            backend.transport.resume_reading()

    def pause_client_reading(self) -> None:
        if not self.paused and self.transport is not None:
            self.paused = True
            self.transport.pause_reading()

    def resume_client_reading(self) -> None:
        if self.paused and self.transport is not None and self.queue_timer is None:
            self.paused = False
            self.transport.resume_reading()

    # -- httptools callbacks (request parser) ------------------------------------------

    def on_message_begin(self) -> None:
        req = _Request(_now())
        self.parsing = req
        self.head_bytes = 0
        if self.req is None and not self.pipeline:
            # The timer runs while the connection is admitted (see set_deadline):
            # moving a deadline is two stores.
            self.timeout_kind = _T_HEAD
            self.deadline = self.loop.time() + self.frontend.t_http_request

    def on_url(self, url: bytes) -> None:
        req = self.parsing
        assert req is not None
        req.target += url

    def on_header(self, name: bytes, value: bytes) -> None:
        req = self.parsing
        assert req is not None
        headers = req.headers
        headers.append((name, value))
        if len(headers) > self.frontend.max_headers_hard:
            raise BadRequest(431, "too many header fields")

    def on_headers_complete(self) -> None:
        req = self.parsing
        assert req is not None
        parser = self.parser
        req.t_head = _now()
        req.method = method = parser.get_method()
        req.version = version = parser.get_http_version()
        req.keep_alive = parser.should_keep_alive()
        req.upgrade = upgrade = parser.should_upgrade()
        if method == b"CONNECT":
            req.error = BadRequest(501, "CONNECT is not supported")
            raise req.error
        try:
            req.head, req.host, req.cookie, req.flags = self.frontend.req_policy.prepare(
                method, req.target, version, req.headers, self.extra, upgrade
            )
        except BadRequest as exc:
            req.error = exc
            raise
        req.headers = []  # now only trailers would land here
        if self.req is None:
            self._start(req)
        else:
            self.pipeline.append(req)

    def on_body(self, data: bytes) -> None:
        req = self.parsing
        assert req is not None
        pieces = chunk(data) if req.flags & CHUNKED else (data,)
        if req is self.req and self.backend is not None:
            self.to_server += pieces
            if self.timeout_kind == _T_CLIENT:
                self.deadline = self.loop.time() + self.frontend.t_client
            return
        req.body += pieces
        req.body_size += len(data)
        if req.body_size > PENDING_LIMIT:
            self.pause_client_reading()

    def on_message_complete(self) -> None:
        req = self.parsing
        assert req is not None
        self.parsing = None
        req.complete = True
        end = end_of_body(req.flags & CHUNKED != 0)
        if req is self.req:
            if self.backend is not None:
                if end:
                    self.to_server.append(end)
                self._request_sent()
            elif end:
                req.body.append(end)
        elif end:
            req.body.append(end)
        if len(self.pipeline) > 8 or (self.pipeline and not self.http11):
            # Pipelined requests wait parsed; past a few, stop reading for now.
            self.pause_client_reading()

    # -- an exchange -------------------------------------------------------------------

    def _start(self, req: _Request) -> None:
        """A request head is complete and nothing else is in flight: send it on."""
        frontend = self.frontend
        self.req = req
        self.requests += 1
        frontend.requests_total += 1
        self.http11 = req.version == "1.1"
        self.status = 0
        self.response_started = False
        self.set_cookie = None
        self.attempts = 0
        self.failed.clear()
        self.t_connect = -1.0
        self.t_sent = -1.0
        self.t_response = -1.0
        self.backend_reusable = True
        self.keep_client = not frontend.stopping
        self.head_written = False
        self.t_wait = self.queued_for
        self.queued_for = 0.0
        if req.flags & HAS_BODY and not req.complete:
            self.timeout_kind = _T_CLIENT
            self.deadline = self.loop.time() + frontend.t_client
        else:
            self.timeout_kind = _T_SERVER
            self.deadline = self.loop.time() + frontend.t_server
        self._dispatch()

    def _dispatch(self) -> None:
        frontend = self.frontend
        req = self.req
        assert req is not None
        router = frontend.router
        route = (
            frontend.default_pool
            if router is None
            else frontend.pools[router.route(req.host, req.target)]
        )
        server: ServerRuntime | None = None
        if req.cookie is not None and frontend.cookies:
            sticky = route.by_cookie.get(req.cookie)
            if sticky is not None and sticky.usable and sticky not in self.failed:
                server = sticky
        if server is None:
            failed = self.failed
            server = route.balancer.pick(
                self.client_ip, failed if failed and frontend.config.redispatch else ()
            )
            if server is None:
                self._answer(503, "no-server")
                return
            if frontend.cookies:
                self.set_cookie = server.config.cookie_value.encode()
        self._take(server)
        idle = frontend.idle.get(server)
        while idle:
            backend = idle.pop()
            if backend.transport is not None and not backend.transport.is_closing():
                self.t_connect = 0.0
                self._attach(backend, reused=True)
                return
        self._open(server)

    _redispatch = _dispatch

    def _upstream(self, server: ServerRuntime) -> _Backend:
        return self.frontend.backend_class(self.frontend, server)

    def _connected(self, transport: asyncio.Transport, upstream: _Backend, took: float) -> None:
        apply_keepalive(transport, self.frontend.config)
        self.t_connect = took
        self._attach(upstream, reused=False)

    def _give_up(self, why: str) -> None:
        self._answer(503, f"connect-failed ({why})")

    def _attach(self, backend: _Backend, reused: bool) -> None:
        req = self.req
        assert req is not None and backend.transport is not None
        self.backend = backend
        backend.reset(self, req.method == b"HEAD")
        to_server = self.to_server
        to_server.insert(0, req.head)
        if req.body:
            to_server[1:1] = req.body
            if req.body_size > PENDING_LIMIT:
                self.resume_client_reading()
            req.body = []
            req.body_size = 0
        if not self.feeding:
            # Inside a read of the client, the write waits for the end of that read:
            # one write for head and body, and nothing at all if the read turns out
            # to be malformed further on (the server never sees a smuggling try).
            self.flush_to_server()
        if req.complete:
            self._request_sent()

    def flush_to_server(self) -> None:
        to_server = self.to_server
        backend = self.backend
        if backend is not None and backend.transport is not None:
            frontend = self.frontend
            frontend.writes += (
                backend.transport,
                to_server[0] if len(to_server) == 1 else b"".join(to_server),
            )
            if not frontend.flush_pending:
                frontend.flush_pending = True
                self.loop.call_soon(frontend.flush_writes)
            self.head_written = True
        to_server.clear()

    def _request_sent(self) -> None:
        self.t_sent = _now()
        self.timeout_kind = _T_SERVER
        self.deadline = self.loop.time() + self.frontend.t_server

    def response_head(
        self, backend: _Backend, status: int, headers: list[tuple[bytes, bytes]]
    ) -> tuple[bytes, int, bool]:
        req = self.req
        assert req is not None
        self.t_response = _now()
        self.status = status
        frontend = self.frontend
        upgrade = status == 101
        if upgrade and not req.upgrade:
            raise _HttpParserError("101 to a request that did not ask to upgrade")
        head, body, keep = frontend.resp_policy.prepare(
            status,
            headers,
            head_request=backend.head_only,
            client_keep_alive=req.keep_alive
            and not frontend.stopping
            and not self.client_eof
            and (req.complete or req.flags & HAS_BODY == 0),
            client_http10=not self.http11,
            set_cookie=self.set_cookie,
        )
        if not keep:
            req.keep_alive = False
        return head, body, keep

    def send(self, out: list[bytes]) -> None:
        """Write what one read from the server produced, in one write."""
        data = out[0] if len(out) == 1 else b"".join(out)
        out.clear()
        self.send_bytes(data)

    def keeps_connection(self) -> bool:
        """Will the client connection stay open after the response in flight?"""
        req = self.req
        return (
            req is not None
            and req.keep_alive
            and self.keep_client
            and not self.client_eof
            and not self.frontend.stopping
            and (req.complete or req.flags & HAS_BODY == 0)
        )

    def send_bytes(self, data: bytes) -> None:
        self.response_started = True
        self.bytes_out += len(data)
        if self.transport is not None:
            frontend = self.frontend
            frontend.writes += (self.transport, data)
            if not frontend.flush_pending:
                frontend.flush_pending = True
                self.loop.call_soon(frontend.flush_writes)

    def response_done(self, backend: _Backend) -> None:
        req = self.req
        assert req is not None
        frontend = self.frontend
        if not req.complete:
            # The server answered before the whole request body arrived (an error,
            # typically): the rest of the body cannot be told apart from the next
            # request, and the server connection is mid-request. Close both.
            self.keep_client = False
            self.backend_reusable = False
        self.backend = None
        backend.client = None
        transport = backend.transport
        if (
            self.backend_reusable
            and backend.keep_alive
            and transport is not None
            and not transport.is_closing()
            and backend.body_mode != BODY_CLOSE
            and not backend.tunnel
        ):
            frontend.release(backend)
        elif transport is not None:
            transport.close()
        self._finish_exchange("ok")
        if not (self.keep_client and req.keep_alive):
            self._close_after_write("ok")
            return
        self._next()

    def _next(self) -> None:
        """Start the next pipelined request, or wait for one."""
        if self.pipeline:
            req = self.pipeline.popleft()
            self.resume_client_reading()
            if req.error is not None:
                self._answer(req.error.status, "bad-request")
                return
            self._start(req)
            return
        if self.frontend.stopping or self.client_eof:
            self._close("ok")
            return
        if self.parsing is None:
            self.timeout_kind = _T_IDLE
            self.deadline = self.loop.time() + self.frontend.t_http_keep_alive
        self.resume_client_reading()

    def _finish_exchange(self, end: str) -> None:
        req = self.req
        self.req = None
        frontend = self.frontend
        server = self.server
        self.server = None
        if server is not None:
            server.session_ended(self)
        frontend.bytes_in_done += self.bytes_in
        frontend.bytes_out_done += self.bytes_out
        if req is None:
            return
        status = self.status
        frontend.status_counts[status_class(status)] += 1
        if logged(frontend.config.log, end, status):
            now = _now()
            t_sent = self.t_sent
            frontend.sessionlog.request(
                self.peer,
                frontend.name,
                server.name if server is not None else "-",
                _METHODS.get(req.method) or req.method.decode("latin-1"),
                req.target[:1024].decode("latin-1"),
                status,
                self.bytes_in,
                self.bytes_out,
                (
                    req.t_head - req.t_begin if req.t_head >= 0 else -1.0,
                    self.t_wait,
                    self.t_connect,
                    self.t_response - t_sent if self.t_response >= 0 and t_sent >= 0 else -1.0,
                    now - req.t_begin,
                ),
                end,
            )
        self.bytes_in = 0
        self.bytes_out = 0

    # -- failures ------------------------------------------------------------------------

    def _parse_failed(self, exc: Exception, bad: BadRequest | None = None) -> None:
        context = bad or exc.__context__
        if isinstance(context, BadRequest):
            status, reason = context.status, context.reason
        else:
            status, reason = 400, str(exc)
        req = self.parsing
        log.info("%s: %s: %d %s", self.frontend.name, self.peer, status, reason)
        if self.req is not None:
            if req is not None and req is not self.req:
                # A pipelined request is bad: answer it after the ones before it.
                req.error = BadRequest(status, reason)
                if req not in self.pipeline:
                    self.pipeline.append(req)
                self.parsing = None
                self.pause_client_reading()
                return
            if not self.head_written:
                # The body of the request in flight is malformed, and nothing of
                # it has left yet: refuse it whole.
                self.to_server.clear()
                self.parsing = None
                self._answer(status, "bad-request")
                return
            # Part of the request is at the server already: that connection is
            # mid-request and cannot be trusted; nothing more can be answered.
            self.to_server.clear()
            self._abort_exchange("bad-request-body")
            self._close("bad-request-body")
            return
        if req is None:
            req = _Request(_now())
        self.req = req
        self.parsing = None
        self.requests += 1
        self.frontend.requests_total += 1
        self._answer(status, "bad-request")

    def _answer(self, status: int, end: str) -> None:
        """Answer the request in flight ourselves and close the connection."""
        if self.server is not None:
            self.server.session_ended(self)
            self.server = None
        if self.connect_task is not None:
            self.connect_task.cancel()
            self.connect_task = None
        if self.backend is not None:
            backend, self.backend = self.backend, None
            backend.client = None
            if backend.transport is not None:
                backend.transport.abort()
        self.status = status
        if self.frontend.writes:
            self.frontend.flush_writes()
        data = message.ANSWERS.get(status) or message.answer(status)
        if not self.response_started and self.transport is not None:
            self.bytes_out += len(data)
            self.transport.write(data)
        if self.req is not None and self.req.t_head < 0:
            self.req.t_head = -1.0
        self._finish_exchange(end)
        self._close_after_write(end)

    def response_failed(self, backend: _Backend, why: str) -> None:
        log.info("%s: server %s: %s", self.frontend.name, backend.server.name, why)
        self.backend_reusable = False
        if self.response_started:
            self._abort_exchange("server-error")
            self._close("server-error")
        else:
            self._answer(502, "server-error")

    def backend_lost(self, backend: _Backend, exc: Exception | None) -> None:
        if backend is not self.backend:
            return
        if self.tunnel:
            self._close("server-close")
            return
        req = self.req
        if backend.head_sent and (backend.raw or backend.body_mode == BODY_CLOSE):
            # The body ran until the server closed: that was its end. (Relaying raw,
            # a body cut short looks the same; the client, told nothing else, sees
            # the close and its own framing tells it.)
            if isinstance(backend, _RewritingBackend) and backend.out:
                self.send(backend.out)
            self.keep_client = False
            self.response_done(backend)
            return
        if not self.response_started:
            if (
                req is not None
                and backend.requests > 1
                and req.complete
                and req.method in IDEMPOTENT
                and not req.flags & HAS_BODY
                and self.attempts <= self.frontend.config.retries
            ):
                # A reused connection the server had closed just as the request
                # went out: nothing was processed; send it again on a fresh one.
                self.backend = None
                backend.client = None
                server = self.server
                assert server is not None
                server.session_ended(self)
                self._take(server)
                self._open(server, delay=0.0)
                return
            self._answer(502, "server-reset" if exc is not None else "server-close")
            return
        self._abort_exchange("server-abort")
        self._close("server-abort")

    def _abort_exchange(self, end: str) -> None:
        backend = self.backend
        self.backend = None
        if backend is not None:
            backend.client = None
            if backend.transport is not None:
                backend.transport.abort()
        if self.connect_task is not None:
            self.connect_task.cancel()
            self.connect_task = None
        self._finish_exchange(end)

    # -- upgrade (WebSocket) -----------------------------------------------------------

    def _upgrade_requested(self, rest: bytes) -> None:
        # The head went to the server; bytes after it are the tunnel's, held until
        # the server agrees (101).
        self.tunnel_buf = [rest] if rest else []
        self.pause_client_reading()

    def start_tunnel(self) -> None:
        self.tunnel = True
        # Tunnel bytes are written at once: what is queued (the 101) goes first.
        self.frontend.flush_writes()
        backend = self.backend
        assert backend is not None and backend.transport is not None
        buffered = self.tunnel_buf or []
        self.tunnel_buf = None
        if buffered:
            backend.transport.write(b"".join(buffered))
        self.set_deadline(_T_TUNNEL, self.frontend.config.timeouts.tunnel)
        self.resume_client_reading()

    def _tunnel_data_from_client(self, data: bytes) -> None:
        self.bytes_in += len(data)
        self.deadline = self.loop.time() + self.frontend.config.timeouts.tunnel
        backend = self.backend
        if backend is not None and backend.transport is not None:
            backend.transport.write(data)

    def tunnel_data_from_server(self, data: bytes) -> None:
        self.bytes_out += len(data)
        self.deadline = self.loop.time() + self.frontend.config.timeouts.tunnel
        if self.transport is not None:
            self.transport.write(data)

    # -- timers ----------------------------------------------------------------------------

    def set_deadline(self, kind: int, delay: float) -> None:
        """The timer need not move: it fires at least every `frontend.tick` seconds
        (the shortest timeout), so never later than any deadline set since."""
        self.timeout_kind = kind
        self.deadline = self.loop.time() + delay
        if self.timer is None:
            self._arm()

    def _arm(self) -> None:
        now = self.loop.time()
        at = min(self.deadline, now + self.frontend.tick)
        self.timer = self.loop.call_at(at, self._timer_fired)

    def _timer_fired(self) -> None:
        self.timer = None
        if self.closed:
            return
        if self.loop.time() < self.deadline - 0.001:
            self._arm()
            return
        kind = self.timeout_kind
        if kind == _T_IDLE and self.parsing is None:
            self._close("keep-alive-timeout")
        elif kind in (_T_HEAD, _T_IDLE):
            if self.req is None:
                self.req = self.parsing or _Request(_now())
                self.parsing = None
                self.requests += 1
                self.frontend.requests_total += 1
                self._answer(408, "request-timeout")
            else:
                self._close("request-timeout")
        elif kind == _T_CLIENT:
            if self.response_started:
                self._abort_exchange("client-timeout")
                self._close("client-timeout")
            else:
                self._answer(408, "client-timeout")
        elif kind == _T_SERVER:
            if self.response_started:
                self._abort_exchange("server-timeout")
                self._close("server-timeout")
            else:
                self._answer(504, "server-timeout")
        elif kind == _T_TUNNEL:
            self._abort_exchange("tunnel-timeout")
            self._close("tunnel-timeout")

    # -- the maxconn queue (datapath.accept) ------------------------------------------------

    def hold(self) -> None:
        self.pause_client_reading()
        if self.timer is not None:  # the queue has its own timeout
            self.timer.cancel()
            self.timer = None
        self.queued_at = _now()

    def admitted(self, waited: bool) -> None:
        if not waited:
            return  # the request timer runs since connection_made
        self.queued_for = _now() - self.queued_at
        self.set_deadline(_T_HEAD, self.frontend.t_http_request)
        self.resume_client_reading()
        pending, self.queued_data = self.queued_data, []
        for data in pending:
            if self.closed:
                break
            self.data_received(data)

    def queue_expired(self) -> None:
        self.queue_timer = None
        if self.closed:
            return
        self.status = 503
        if self.transport is not None:
            self.transport.write(message.ANSWERS[503])
        self._close_after_write("queue-timeout")

    # -- ending ------------------------------------------------------------------------------

    def shutdown(self, reason: str) -> None:
        """Close now (shutdown-sessions, maint, stop after grace)."""
        if self.closed:
            return
        if self.req is not None:
            self._abort_exchange(f"shutdown ({reason})")
        self._close(f"shutdown ({reason})")

    def close_if_idle(self) -> bool:
        """Close a connection that waits between requests (soft stop)."""
        if self.req is None and self.parsing is None and not self.closed:
            self._close("stopping")
            return True
        return False

    def _close_after_write(self, end: str) -> None:
        if self.transport is not None:
            if self.frontend.writes:
                self.frontend.flush_writes()
            self.transport.close()  # flushes what is buffered first
        self._close(end)

    def _close(self, end: str) -> None:
        if self.closed:
            return
        if self.frontend.writes:
            self.frontend.flush_writes()
        if self.req is not None:
            self._abort_exchange(end)
        self.closed = True
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if self.queue_timer is not None:
            self.queue_timer.cancel()
            self.queue_timer = None
        if self.connect_task is not None:
            self.connect_task.cancel()
            self.connect_task = None
        if self.transport is not None:
            self.transport.close()
        self.pipeline.clear()
        self.frontend.connection_finished(self)


class HttpFrontend(AcceptingFrontend[_Client]):
    """Accepts on the listener's sockets and serves HTTP (pure Python + httptools).

    `active`/`queued` hold client connections, and a connection is a server's
    "session" while one of its requests is in flight to that server.
    """

    def _prepare(self) -> None:
        self.requests_total = 0
        self.status_counts = [0] * 6  # by class: [other, 1xx, 2xx, 3xx, 4xx, 5xx]
        self.stopping = False
        self.idle: dict[ServerRuntime, list[_Backend]] = {}
        # Writes of this loop iteration, as (transport, data) pairs, made together
        # once every read of the iteration is handled (as HAProxy sends after its
        # event pass): a peer woken by the first write is still awake for the
        # next ones, instead of each write waking it (and preempting us) anew.
        self.writes: list[Any] = []
        self.flush_pending = False
        self.idle_sweeper: asyncio.TimerHandle | None = None

    def _accepted(self) -> asyncio.Protocol:
        return _Client(self)

    def _configured(self) -> None:
        """(Re)compile the listener's policies; requests in flight keep theirs."""
        config = self.config
        pool = self.pool
        t = config.timeouts
        # How often a connection's timer fires at most: deadlines then move by
        # plain stores on the hot path, and no timer is ever re-armed earlier.
        self.tick = min(t.http_request, t.http_keep_alive, t.client, t.server, t.tunnel)
        self.t_http_request = t.http_request
        self.t_http_keep_alive = t.http_keep_alive
        self.t_client = t.client
        self.t_server = t.server
        self.req_policy = RequestPolicy(config)
        self.resp_policy = ResponsePolicy(config)
        rewrite = config.response_headers or config.rewrite_location or config.cookie
        self.backend_class: type[_Backend] = _RewritingBackend if rewrite else _Backend
        self.max_head_size = config.max_head_size
        self.cookies = config.cookie is not None
        # httptools hands headers one by one; refuse an endless stream of them
        # before the head completes (the exact limit is checked on the whole head).
        self.max_headers_hard = config.max_headers
        groups: dict[str, list[ServerRuntime]] = {}
        for server in pool.servers:
            groups.setdefault(server.config.pool, []).append(server)
        balances = {p.name: p.balance for p in config.pools}
        self.pools = {
            name: _RoutePool(name, servers, balances.get(name, config.balance))
            for name, servers in groups.items()
        }
        for p in config.pools:  # a pool may have lost all its servers on a reload
            self.pools.setdefault(p.name, _RoutePool(p.name, [], p.balance))
        self.pools.setdefault("default", _RoutePool("default", [], config.balance))
        self.default_pool = self.pools[config.default_pool]
        self.router = Router(config.routes, config.default_pool) if config.routes else None
        pool.subscribe(self._pool_changed)
        for old in [s for s in self.idle if pool.by_name.get(s.name) is not s]:
            self._close_idle(old)

    def _pool_changed(self, pool: Pool, server: ServerRuntime | None) -> None:
        if pool is not self.pool:
            return
        for route in self.pools.values():
            route.balancer.refresh()
        if server is not None and not server.usable:
            self._close_idle(server)

    # -- accepting ---------------------------------------------------------------------

    def stop_accepting(self) -> None:
        """Soft stop: no new connections; idle keep-alive ones close now, the others
        after the response in flight (which says Connection: close)."""
        self.stopping = True
        super().stop_accepting()
        for conn in list(self.active):
            conn.close_if_idle()
        self._check_idle()

    def _account(self, conn: _Client) -> None:
        if conn.requests == 0:
            self.denied_total += 1

    def _check_idle(self) -> None:
        super()._check_idle()
        if self.stopping and not self.active and not self.queued:
            for server in list(self.idle):
                self._close_idle(server)

    def flush_writes(self) -> None:
        self.flush_pending = False
        writes = self.writes
        if not writes:
            return
        self.writes = []
        for i in range(0, len(writes), 2):
            transport = writes[i]
            if not transport.is_closing():
                transport.write(writes[i + 1])

    # -- server connections --------------------------------------------------------------

    def release(self, backend: _Backend) -> None:
        """A server connection that finished a response cleanly: keep it for reuse."""
        if self.stopping:
            if backend.transport is not None:
                backend.transport.close()
            return
        idle = self.idle.get(backend.server)
        if idle is None:
            idle = self.idle[backend.server] = []
        if len(idle) >= MAX_IDLE_PER_SERVER or not backend.server.usable:
            if backend.transport is not None:
                backend.transport.close()
            return
        backend.idle_since = self.loop.time()
        idle.append(backend)
        if backend.reading_paused and backend.transport is not None:
            backend.reading_paused = False
            backend.transport.resume_reading()  # paused by a slow client
        if self.idle_sweeper is None:
            self.idle_sweeper = self.loop.call_later(IDLE_SWEEP, self._sweep_idle)

    def drop_idle(self, backend: _Backend) -> None:
        """An idle server connection closed or misbehaved: forget it."""
        idle = self.idle.get(backend.server)
        if idle is not None:
            with contextlib.suppress(ValueError):
                idle.remove(backend)
        if backend.transport is not None:
            backend.transport.close()

    def _close_idle(self, server: ServerRuntime) -> None:
        for backend in self.idle.pop(server, []):
            if backend.transport is not None:
                backend.transport.close()

    def _sweep_idle(self) -> None:
        # Server connections idle for longer than http_keep_alive are closed, before
        # the server closes them itself (the race that makes a reused connection
        # fail just as a request is sent).
        self.idle_sweeper = None
        limit = self.loop.time() - self.t_http_keep_alive
        remaining = False
        for server, idle in list(self.idle.items()):
            while idle and idle[0].idle_since < limit:
                backend = idle.pop(0)
                if backend.transport is not None:
                    backend.transport.close()
            if idle:
                remaining = True
            else:
                del self.idle[server]
        if remaining:
            self.idle_sweeper = self.loop.call_later(IDLE_SWEEP, self._sweep_idle)

    # -- control ---------------------------------------------------------------------------

    def status_extra(self) -> dict[str, Any]:
        """HTTP counters and the routing pools, for the status API."""
        counts = self.status_counts
        return {
            "data_path": self.data_path,
            "data_path_reason": self.data_path_reason,
            "http": {
                "requests_total": self.requests_total,
                "responses": responses_by_class(counts),
                "idle_server_connections": sum(len(v) for v in self.idle.values()),
            },
            "pools": {
                name: {"balance": _balance_name(route), "servers": [s.name for s in route.servers]}
                for name, route in self.pools.items()
                if route.servers or name != "default"
            },
        }

    def shutdown_all(self, reason: str) -> None:
        super().shutdown_all(reason)
        for server in list(self.idle):
            self._close_idle(server)
        if self.idle_sweeper is not None:
            self.idle_sweeper.cancel()
            self.idle_sweeper = None


def _balance_name(route: _RoutePool) -> str:
    return route.balancer.name
