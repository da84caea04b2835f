"""The exchange: one request of a client connection, from its parsed head to the
end of its response (datapath.http_pure.connection holds the connection).

    head parsed --start--> routed, server picked --idle conn--> attached
                                |                  `-connect-> attached (retries,
                                |                              redispatch: datapath.connect)
                                `-> 503 when no server is up
    attached: head + body so far written, the rest of the body streamed
    response: head rebuilt for the client, body streamed, re-framed if needed
    done: access-log line; server connection back to the idle pool (or closed);
          the connection starts the next pipelined request, or waits (keep-alive)

The policy decisions (header rewriting, cookies, routes) are made by the sans-IO
modules of `loadstone.http`. An exchange's state lives in the `Exchange` part of
the client connection object and is reset for each request (`_begin`): one
object per connection rather than one per request keeps the per-request cost
of the keep-alive path where it was. The server connection reports to it
through `upstream.Downstream`.
"""

from __future__ import annotations

import asyncio
import collections
import logging
from typing import Final

from loadstone.datapath.connect import Connector
from loadstone.datapath.http_counts import status_class
from loadstone.datapath.http_pure.frontend import HttpListener
from loadstone.datapath.http_pure.state import (
    PENDING_LIMIT,
    ST_RELAY,
    Request,
    State,
    now,
)
from loadstone.datapath.http_pure.upstream import Backend, HttpParserError, RewritingBackend
from loadstone.datapath.transport import apply_keepalive
from loadstone.http import message
from loadstone.http.request import HAS_BODY, IDEMPOTENT
from loadstone.http.response import BODY_CLOSE
from loadstone.server import ServerRuntime
from loadstone.sessionlog import logged

log = logging.getLogger("loadstone.datapath.http")

_METHODS: Final = {m: m.decode() for m in (b"GET", b"HEAD", b"POST", b"PUT", b"DELETE", b"PATCH")}


class Exchange(Connector[Backend]):
    """The request in flight on a client connection and its way to a server."""

    # Per exchange: reset by _begin (the Connector's attempts and failed servers too).
    __slots__ = (
        "backend",
        "backend_reusable",
        "bytes_in",
        "bytes_out",
        "head_written",
        "keep_client",
        "req",
        "response_started",
        "set_cookie",
        "status",
        "t_connect",
        "t_response",
        "t_sent",
        "t_wait",
        "to_server",
    )
    log = log

    # The connection's, which the exchange reads (datapath.http_pure.connection).
    frontend: HttpListener
    loop: asyncio.AbstractEventLoop
    transport: asyncio.Transport | None
    state: State
    peer: str
    client_ip: str | None
    tls_fields: str | None  # version/cipher/sni on a TLS listener, for the access log
    http11: bool
    client_eof: bool
    feeding: bool
    pipeline: collections.deque[Request]  # complete requests waiting their turn

    def _exchange_init(self) -> None:
        self._connector_init()
        self.req: Request | None = None  # the request being answered
        self.to_server: list[bytes] = []  # written at the end of the client's read
        self.backend: Backend | None = None
        self.backend_reusable = True
        self.keep_client = True  # the client connection stays after this response
        self.response_started = False
        self.set_cookie: bytes | None = None
        self.status = 0
        self.bytes_in = 0  # of the exchange in flight (status API, server counters)
        self.bytes_out = 0
        self.head_written = False  # some of the request in flight reached the server
        self.t_wait = 0.0
        self.t_connect = -1.0
        self.t_sent = -1.0
        self.t_response = -1.0

    # -- the connection's part ---------------------------------------------------------

    def pause_client_reading(self) -> None:
        raise NotImplementedError

    def resume_client_reading(self) -> None:
        raise NotImplementedError

    def server_progress(self) -> None:
        """The server sent something: its timeout starts again."""
        raise NotImplementedError

    def _request_sent(self) -> None:
        """The whole request is at the server: the server timeout runs."""
        raise NotImplementedError

    def start_tunnel(self) -> None:
        raise NotImplementedError

    def tunnel_data_from_server(self, data: bytes) -> None:
        raise NotImplementedError

    def _next(self) -> None:
        """Start the next pipelined request, or wait for one."""
        raise NotImplementedError

    def _close(self, end: str) -> None:
        raise NotImplementedError

    def _close_after_write(self, end: str) -> None:
        raise NotImplementedError

    # -- an exchange -------------------------------------------------------------------

    def _begin(self, req: Request, waited: float) -> None:
        """A new exchange for `req` (`waited`: seconds the connection was queued)."""
        self.req = req
        self.status = 0
        self.response_started = False
        self.set_cookie = None
        self.attempts = 0
        self.failed.clear()
        self.t_connect = -1.0
        self.t_sent = -1.0
        self.t_response = -1.0
        self.backend_reusable = True
        self.keep_client = not self.frontend.stopping
        self.head_written = False
        self.t_wait = waited

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
        server = self._same_server()
        if server is None and req.cookie is not None and frontend.cookies:
            sticky = route.by_cookie.get(req.cookie)
            if sticky is not None and sticky.usable and sticky not in self.failed:
                server = sticky
        if server is None:
            server = route.balancer.pick(self.client_ip, self.failed)
            if server is None:
                self._answer(503, "no-server")
                return
            if frontend.cookies:
                self.set_cookie = server.config.cookie_value.encode()
        self._take(server)
        backend = frontend.upstreams.take(server)
        if backend is not None:
            self.t_connect = 0.0
            self._attach(backend, reused=True)
            return
        self._open(server)

    _redispatch = _dispatch

    def _upstream(self, server: ServerRuntime) -> Backend:
        frontend = self.frontend
        return frontend.backend_class(frontend.upstreams, server)

    def _client_transport(self) -> asyncio.BaseTransport | None:
        return self.transport

    def _connected(self, transport: asyncio.Transport, upstream: Backend, took: float) -> None:
        apply_keepalive(transport, self.frontend.config)
        if self.frontend.config.proxy_version(upstream.server.config) is not None:
            # send_proxy: the header (the connect loop wrote it first) names this
            # client, so the connection serves no other one: it is closed after
            # this exchange, never pooled.
            self.backend_reusable = False
        self.t_connect = took
        self._attach(upstream, reused=False)

    def _give_up(self, why: str) -> None:
        self._answer(503, f"connect-failed ({why})")

    def _attach(self, backend: Backend, reused: bool) -> None:
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
            self.frontend.queue_write(
                backend.transport,
                to_server[0] if len(to_server) == 1 else b"".join(to_server),
            )
            self.head_written = True
        to_server.clear()

    def response_head(
        self, backend: Backend, status: int, headers: list[tuple[bytes, bytes]]
    ) -> tuple[bytes, int, bool]:
        req = self.req
        assert req is not None
        self.t_response = now()
        self.status = status
        frontend = self.frontend
        upgrade = status == 101
        if upgrade and not req.upgrade:
            raise HttpParserError("101 to a request that did not ask to upgrade")
        head, body, keep = frontend.resp_policy.prepare(
            status,
            headers,
            head_request=backend.head_only,
            client_keep_alive=req.keep_alive
            and not frontend.stopping
            and not self._last_before_eof()
            and (req.complete or req.flags & HAS_BODY == 0),
            client_http10=not self.http11,
            set_cookie=self.set_cookie,
        )
        if not keep:
            req.keep_alive = False
        return head, body, keep

    def interim_head(self, status: int, headers: list[tuple[bytes, bytes]]) -> bytes:
        """A 100 Continue or 103 Early Hints for an HTTP/1.1 client."""
        return self.frontend.resp_policy.prepare(
            status,
            headers,
            head_request=False,
            client_keep_alive=True,
            client_http10=False,
            set_cookie=None,
        )[0]

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
            and not self._last_before_eof()
            and not self.frontend.stopping
            and (req.complete or req.flags & HAS_BODY == 0)
        )

    def _last_before_eof(self) -> bool:
        """Is the response in flight the last one: the client has shut its side
        and no complete request waits behind this one? Requests it pipelined
        before its FIN are answered first (the connection starts them before it
        closes), so only the last response says `Connection: close`; one in
        the middle saying so would be followed by more, which a client may
        take for a protocol error."""
        return self.client_eof and not self.pipeline

    def send_bytes(self, data: bytes) -> None:
        self.response_started = True
        self.bytes_out += len(data)
        if self.transport is not None:
            self.frontend.queue_write(self.transport, data)

    def response_done(self, backend: Backend) -> None:
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
            frontend.upstreams.release(backend)
        elif transport is not None:
            transport.close()
        self._finish_exchange("ok")
        if not (self.keep_client and req.keep_alive):
            self._close_after_write("ok")
            return
        self._next()

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
        frontend.traffic.response(
            server.name if server is not None else None, status, now() - req.t_begin
        )
        if frontend.request_rules is not None:
            frontend.request_rules.answered(self.client_ip, status)  # error_rate counts
        if logged(frontend.config.log, end, status):
            t_end = now()
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
                    t_end - req.t_begin,
                ),
                end,
                tls=self.tls_fields,
            )
        self.bytes_in = 0
        self.bytes_out = 0

    # -- failures ------------------------------------------------------------------------

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

    def response_failed(self, backend: Backend, why: str) -> None:
        log.info("%s: server %s: %s", self.frontend.name, backend.server.name, why)
        self.backend_reusable = False
        if self.response_started:
            self._abort_exchange("server-error")
            self._close("server-error")
        else:
            self._answer(502, "server-error")

    def backend_lost(self, backend: Backend, exc: Exception | None) -> None:
        if backend is not self.backend:
            return
        if self.state is ST_RELAY:
            self._close("server-close")
            return
        req = self.req
        if backend.head_sent and (backend.raw or backend.body_mode == BODY_CLOSE):
            # The body ran until the server closed: that was its end. (Relaying raw,
            # a body cut short looks the same; the client, told nothing else, sees
            # the close and its own framing tells it.)
            if isinstance(backend, RewritingBackend) and backend.out:
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
