"""The client connection of the pure HTTP path: the asyncio Protocol and the
request parser's target, as uvicorn's HttpToolsProtocol is.

Theory of operation
-------------------
A connection lives through the states of `state.State` (the C engine's names):
QUEUED at maxconn, HTTP while it reads requests and answers them one at a time,
RELAY after an Upgrade, CLOSED. Pipelined requests wait, parsed, in `pipeline`
and are answered in order; the request in flight is the connection's
`Exchange` (datapath.http_pure.exchange), whose state is reset per request.

Writes are batched twice: everything one `data_received` produces for the other
side is joined into one write, so a small request or response costs one
send(2); and the writes of one event-loop pass are made together at its end
(`HttpListener.flush_writes`), as HAProxy sends after its event pass.

Flow control is end to end: a transport over its high-water mark pauses reading
on the other side (`pause_writing` here pauses the server connection; the
server connection's pauses this one). Body bytes that arrive while the server
connection is being set up are kept up to PENDING_LIMIT, then the client is
paused.

Timeouts: one timer per connection with a moving deadline (re-armed only when
the deadline moves earlier, so the per-request cost is a float store):
http_request for the head (408), http_keep_alive between requests (silent
close), client during a request body, server while waiting for and reading the
response (504 before a response head), tunnel after an Upgrade; the maxconn
queue has its own (datapath.accept).
"""

from __future__ import annotations

import asyncio
import collections
import logging
from typing import cast

import httptools

from loadstone.config.model import Redirect
from loadstone.datapath import monitor
from loadstone.datapath.http_pure.exchange import Exchange
from loadstone.datapath.http_pure.framing import chunk, end_of_body
from loadstone.datapath.http_pure.frontend import HttpListener
from loadstone.datapath.http_pure.linger import Lingering
from loadstone.datapath.http_pure.state import (
    PENDING_LIMIT,
    ST_CLOSED,
    ST_HTTP,
    ST_QUEUED,
    ST_RELAY,
    T_CLIENT,
    T_HEAD,
    T_IDLE,
    T_SERVER,
    T_TUNNEL,
    Request,
    now,
)
from loadstone.datapath.http_pure.upstream import HttpParserError, HttpParserUpgrade
from loadstone.datapath.transport import WRITE_HIGH_WATER, WRITE_LOW_WATER, apply_keepalive
from loadstone.http import message
from loadstone.http.request import CHUNKED, HAS_BODY, BadRequest
from loadstone.http.request_rules import Verdict
from loadstone.tls.termination import close_notify, session_fields

log = logging.getLogger("loadstone.datapath.http")


class ClientConnection(asyncio.Protocol, Exchange):
    """One client connection: its state, parser, pipeline, timer and tunnel; the
    request in flight is its Exchange part."""

    # Per connection (the exchange's are in Exchange.__slots__).
    __slots__ = (
        "client_eof",
        "client_ip",
        "deadline",
        "extra",
        "feeding",
        "frontend",
        "head_bytes",
        "http11",
        "lingering",
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
        "requests",
        "state",
        "timeout_kind",
        "timer",
        "tls_fields",
        "transport",
        "tunnel_buf",
    )

    def __init__(self, frontend: HttpListener) -> None:
        self.frontend = frontend
        self.loop = frontend.loop
        self.state = ST_HTTP  # until the frontend holds it in its queue
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpRequestParser(self)
        self.client_ip: str | None = None
        self.peer = "-"
        self.tls_fields: str | None = None
        self.extra = b""  # header lines added to every request (X-Forwarded-For...)
        self.client_eof = False
        self.paused = False  # reading paused (flow control, pipelining, the queue)
        self.tunnel_buf: list[bytes] | None = None  # an upgrade waits for the 101
        self.http11 = True
        self.requests = 0
        self.queued_at = -1.0
        self.queued_for = 0.0  # time the connection waited in the maxconn queue
        self.queue_timer: asyncio.TimerHandle | None = None
        self.queued_data: list[bytes] = []  # read while queued at maxconn
        self.feeding = False  # inside parser.feed_data: writes to the server wait
        self.head_bytes = 0  # of a request head spread over several reads
        self.timer: asyncio.TimerHandle | None = None
        self.deadline = 0.0
        self.timeout_kind = T_HEAD
        self.parsing: Request | None = None  # the request the parser is on
        self.pipeline: collections.deque[Request] = collections.deque()
        self.lingering: Lingering | None = None  # closed, the client's last bytes read
        self._exchange_init()

    @property
    def closed(self) -> bool:
        return self.state is ST_CLOSED

    def _ended(self) -> bool:
        return self.state is ST_CLOSED

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
        if frontend.tls is not None:  # the handshake is done: asyncio calls us after it
            self.tls_fields = session_fields(tr)
        policy = frontend.req_policy
        # getsockname(2) only when X-Forwarded-Port needs the local port.
        local = transport.get_extra_info("sockname") if policy.port_header else None
        self.extra = policy.connection_lines(self.client_ip, local[1] if local else None)
        self.set_deadline(T_HEAD, frontend.t_http_request)
        apply_keepalive(tr, frontend.config)
        frontend.admit(self)

    def data_received(self, data: bytes) -> None:
        if self.state is ST_QUEUED:
            # Queued at maxconn. uvloop starts reading a new connection after
            # connection_made returns, undoing the pause made there: keep what
            # arrives for the admission, and pause again.
            self.queued_data.append(data)
            if self.transport is not None:
                self.transport.pause_reading()
            return
        if self.state is ST_RELAY:
            self._tunnel_data_from_client(data)
            return
        if self.tunnel_buf is not None:
            # An upgrade is on its way: these bytes are for the tunnel.
            self.tunnel_buf.append(data)
            return
        if self.state is ST_CLOSED:
            if self.lingering is not None:
                self.lingering.data(len(data))  # dropped
            return
        self.bytes_in += len(data)
        parsing = self.parsing
        growing = parsing is not None and parsing.t_head < 0
        if growing:
            # A head still incomplete after an earlier read: bound what httptools
            # buffers for it (a header value dripping in forever).
            self.head_bytes += len(data)
        self.feeding = True
        try:
            self.parser.feed_data(data)
        except HttpParserUpgrade as exc:
            self._upgrade_requested(data[exc.args[0] :])
        except HttpParserError as exc:
            self._parse_failed(exc)
        self.feeding = False
        if (
            growing
            and self.parsing is parsing
            and parsing.t_head < 0  # type: ignore[union-attr]
            and self.head_bytes > self.frontend.max_head_size
            and self.state is not ST_CLOSED
        ):
            # Checked once the read is parsed: the bytes of a read that ends the
            # head and holds pipelined requests after it are not the head's.
            self._parse_failed(
                HttpParserError("head too large"), BadRequest(431, "request head too large")
            )
            return
        if self.to_server and self.state is not ST_CLOSED:
            self.flush_to_server()

    def eof_received(self) -> bool:
        if self.lingering is not None:
            self.lingering.end(client_closed=True)  # so do we
            return True  # (closed by end(), after what is still buffered)
        self.client_eof = True
        parsing = self.parsing
        if parsing is None and self.req is None:
            self._close("client-close")
            return False
        if parsing is not None and (parsing is self.req or self.req is None):
            # The request being answered (or about to be) was cut short, its head
            # or its body: it can never end. Its server connection and ours go
            # now, as HAProxy frees both, rather than after the client timeout.
            self._close("client-close")
            return False
        if parsing is not None and self.pipeline and self.pipeline[-1] is parsing:
            # A pipelined request whose body the FIN cut short can never end
            # either: dropped, so that the one before it is the last answered.
            self.pipeline.pop()
        backend = self.backend
        if (
            self.state is ST_RELAY
            and backend is not None
            and backend.transport is not None
            and backend.transport.can_write_eof()
        ):
            backend.transport.write_eof()
        return True  # a request in flight still gets its response

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        if self.lingering is not None:
            self.lingering.end()
        elif self.state is not ST_CLOSED:
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
        if self.paused and self.transport is not None and self.state is not ST_QUEUED:
            self.paused = False
            self.transport.resume_reading()

    # -- httptools callbacks (request parser) ------------------------------------------

    def on_message_begin(self) -> None:
        req = Request(now())
        self.parsing = req
        self.head_bytes = 0
        if self.req is None and not self.pipeline:
            # The timer runs while the connection is admitted (see set_deadline):
            # moving a deadline is two stores.
            self.timeout_kind = T_HEAD
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
        req.t_head = now()
        req.method = method = parser.get_method()
        req.version = version = parser.get_http_version()
        req.keep_alive = parser.should_keep_alive()
        req.upgrade = upgrade = parser.should_upgrade()
        if method == b"CONNECT":
            req.error = BadRequest(501, "CONNECT is not supported")
            raise req.error
        frontend = self.frontend
        if frontend.monitor is not None and req.target == frontend.monitor_path:
            # monitor (monitor-uri): answered before any rule, as HAProxy does.
            req.verdict = monitor.verdict(frontend.monitor, frontend.pool, frontend.stopping)
        rules = frontend.request_rules
        if rules is not None and req.verdict is None:
            # request_rules: header edits before the head is checked and rebuilt.
            req.verdict = rules.run(
                method, req.target, req.headers, self.client_ip, self._local_ip(rules.needs_local)
            )
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
            if self.timeout_kind == T_CLIENT:
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

    # -- one request after another, bad requests -----------------------------------------

    def _start(self, req: Request) -> None:
        """A request head is complete and nothing else is in flight: send it on."""
        frontend = self.frontend
        self.requests += 1
        frontend.requests_total += 1
        self.http11 = req.version == "1.1"
        self._begin(req, self.queued_for)
        self.queued_for = 0.0
        if req.verdict is not None:
            self._say(req.verdict)
            return
        if frontend.redirect is not None:
            self._redirect(req, frontend.redirect)
            return
        if req.flags & HAS_BODY and not req.complete:
            self.timeout_kind = T_CLIENT
            self.deadline = self.loop.time() + frontend.t_client
        else:
            self.timeout_kind = T_SERVER
            self.deadline = self.loop.time() + frontend.t_server
        self._dispatch()

    def _redirect(self, req: Request, redirect: Redirect) -> None:
        """`redirect: https` on a plain listener: the same URL over https, then close
        (HAProxy's `redirect scheme https code 301`)."""
        if not req.host:  # HTTP/1.0 without Host: there is no URL to redirect to
            self._answer(400, "bad-request")
            return
        scheme = redirect.scheme.encode()
        data = message.redirect(redirect.code, b"%s://%s%s" % (scheme, req.host, req.target))
        self.status = redirect.code
        self.bytes_out += len(data)
        if self.transport is not None:
            self.transport.write(data)
        self._finish_exchange("redirect")
        self._close_after_write("redirect")

    def _say(self, verdict: Verdict) -> None:
        """Answer the request in flight with the proxy's own answer, then close."""
        self.status = verdict.status
        self.bytes_out += len(verdict.data)
        if self.transport is not None:
            self.transport.write(verdict.data)
        if verdict.quiet:
            self.req = None  # _finish_exchange then neither logs nor counts it by status
        self._finish_exchange(verdict.end)
        self._close_after_write(verdict.end)

    def _local_ip(self, wanted: bool) -> str | None:
        """The address the client reached, if `wanted` (a getsockname(2) otherwise saved)."""
        if not wanted or self.transport is None:
            return None
        local = self.transport.get_extra_info("sockname")
        return str(local[0]) if isinstance(local, tuple) else None

    def _request_sent(self) -> None:
        self.t_sent = now()
        self.timeout_kind = T_SERVER
        self.deadline = self.loop.time() + self.frontend.t_server

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
            self.timeout_kind = T_IDLE
            self.deadline = self.loop.time() + self.frontend.t_http_keep_alive
        self.resume_client_reading()

    def _parse_failed(self, exc: Exception, bad: BadRequest | None = None) -> None:
        context = bad or exc.__context__
        if isinstance(context, BadRequest):
            status, reason = context.status, context.reason
        else:
            status, reason = 400, str(exc)
        req = self.parsing
        if req is None and self.req is not None and self.req.complete and not self.req.keep_alive:
            # Bytes after a request that said `Connection: close` (httptools
            # refuses them): not that request's, which gets its response; the
            # close after it lingers (linger.py) and drops them, as the native
            # path does.
            self.pause_client_reading()
            return
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
            req = Request(now())
        self.req = req
        self.parsing = None
        self.requests += 1
        self.frontend.requests_total += 1
        self._answer(status, "bad-request")

    # -- upgrade (WebSocket) -----------------------------------------------------------

    def _upgrade_requested(self, rest: bytes) -> None:
        # The head went to the server; bytes after it are the tunnel's, held until
        # the server agrees (101).
        self.tunnel_buf = [rest] if rest else []
        self.pause_client_reading()

    def start_tunnel(self) -> None:
        self.state = ST_RELAY
        # Tunnel bytes are written at once: what is queued (the 101) goes first.
        self.frontend.flush_writes()
        backend = self.backend
        assert backend is not None and backend.transport is not None
        buffered = self.tunnel_buf or []
        self.tunnel_buf = None
        if buffered:
            backend.transport.write(b"".join(buffered))
        self.set_deadline(T_TUNNEL, self.frontend.config.timeouts.tunnel)
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

    def server_progress(self) -> None:
        if self.timeout_kind == T_SERVER:
            self.deadline = self.loop.time() + self.frontend.t_server

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
        if self.state is ST_CLOSED:
            return
        if self.loop.time() < self.deadline - 0.001:
            self._arm()
            return
        kind = self.timeout_kind
        if kind == T_IDLE and self.parsing is None:
            self._close("keep-alive-timeout")
        elif kind in (T_HEAD, T_IDLE):
            if self.req is None:
                self.req = self.parsing or Request(now())
                self.parsing = None
                self.requests += 1
                self.frontend.requests_total += 1
                self._answer(408, "request-timeout")
            else:
                self._close("request-timeout")
        elif kind == T_CLIENT:
            if self.response_started:
                self._cut("client-timeout")
            else:
                self._answer(408, "client-timeout")
        elif kind == T_SERVER:
            if self.response_started:
                self._cut("server-timeout")
            else:
                self._answer(504, "server-timeout")
        elif kind == T_TUNNEL:
            self._cut("tunnel-timeout")

    def _cut(self, end: str) -> None:
        """A timeout in the middle of a response: abort, not close, as mode tcp does.
        close() would keep the descriptor and the unsent bytes until a client that
        stopped reading takes them, which a slow reader never does: hundreds of them
        held gigabytes and every descriptor (benchmarks/slow_clients.py)."""
        self._abort_exchange(end)
        if self.frontend.writes:
            self.frontend.flush_writes()
        if self.transport is not None:
            self.transport.abort()
        self._close(end)

    # -- the maxconn queue (datapath.accept) ------------------------------------------------

    def hold(self) -> None:
        self.state = ST_QUEUED
        self.pause_client_reading()
        if self.timer is not None:  # the queue has its own timeout
            self.timer.cancel()
            self.timer = None
        self.queued_at = now()

    def admitted(self, waited: bool) -> None:
        if not waited:
            return  # the request timer runs since connection_made
        self.state = ST_HTTP
        self.queued_for = now() - self.queued_at
        self.set_deadline(T_HEAD, self.frontend.t_http_request)
        self.resume_client_reading()
        pending, self.queued_data = self.queued_data, []
        for data in pending:
            if self._ended():  # one of them closed it
                break
            self.data_received(data)

    def queue_expired(self) -> None:
        self.queue_timer = None
        if self.state is ST_CLOSED:
            return
        self.status = 503
        if self.transport is not None:
            self.transport.write(message.ANSWERS[503])
        self._close_after_write("queue-timeout")

    # -- ending ------------------------------------------------------------------------------

    def shutdown(self, reason: str) -> None:
        """Close now (shutdown-sessions, maint, stop after grace)."""
        if self.lingering is not None:
            self.lingering.end()
        if self.state is ST_CLOSED:
            return
        if self.req is not None:
            self._abort_exchange(f"shutdown ({reason})")
        self._close(f"shutdown ({reason})")

    def close_if_idle(self) -> bool:
        """Close a connection that waits between requests (soft stop)."""
        if self.lingering is not None:
            self.lingering.end()
            return True
        if self.req is None and self.parsing is None and self.state is not ST_CLOSED:
            self._close("stopping")
            return True
        return False

    def _close_after_write(self, end: str) -> None:
        transport = self.transport
        linger = transport is not None and self._client_may_send(transport)
        if transport is not None:
            if self.frontend.writes:
                self.frontend.flush_writes()
            if not linger:
                transport.close()  # flushes what is buffered first
        self._close(end, linger)

    def _client_may_send(self, transport: asyncio.Transport) -> bool:
        """Is a close now at risk of a reset (linger.py)? A request not all
        read (its head or body), requests after it, or reading paused (the
        kernel may hold more): known without a syscall. Over TLS too, once
        our close_notify is sent (_close: tls.termination.close_notify)."""
        req = self.req
        if (
            self.client_eof
            or not self.frontend.t_linger
            or not (
                self.parsing is not None
                or self.pipeline
                or self.paused
                or (req is not None and not req.complete)
            )
        ):
            return False
        return self.frontend.tls is not None or transport.can_write_eof()

    def _lingered(self) -> None:
        self.lingering = None
        self.transport = None
        self.frontend.connection_finished(self)

    def _close(self, end: str, linger: bool = False) -> None:
        if self.state is ST_CLOSED:
            return
        if self.frontend.writes:
            self.frontend.flush_writes()
        if self.req is not None:
            self._abort_exchange(end)
        self.state = ST_CLOSED
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if self.queue_timer is not None:
            self.queue_timer.cancel()
            self.queue_timer = None
        if self.connect_task is not None:
            self.connect_task.cancel()
            self.connect_task = None
        self.pipeline.clear()
        transport = self.transport
        if linger and transport is not None:
            # its maxconn place is kept until the linger ends (_lingered)
            frontend = self.frontend
            raw = close_notify(transport) if frontend.tls is not None else None
            if frontend.tls is None or raw is not None:
                self.lingering = Lingering(
                    self.loop,
                    raw or transport,
                    frontend.t_linger,
                    frontend.t_client,
                    self._lingered,
                    raw=raw is not None,
                )
                self.transport = None  # nothing more is written to it
                return
        if transport is not None:
            transport.close()
        self.frontend.connection_finished(self)
