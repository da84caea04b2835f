"""The pure-Python TCP data path: accept, pick a server, connect, relay.

Theory of operation
-------------------
One `TcpSession` per accepted client. Two thin `asyncio.Protocol` objects,
`_ClientSide` and `_ServerSide`, forward their events to it; the session owns
every decision. Its life:

    accepted --(slot free)--> connecting --(connected)--> relaying --> closed
        |                         |  ^                        |
        +--(maxconn: queued)      +--+ connect failed: retry  +-- one side's FIN is
                                       (redispatch to another      passed on; the other
                                        server when allowed)       direction keeps flowing

Bytes the client sends while the server connection is being set up are kept
(bounded: reading pauses past PENDING_LIMIT) and written once it is up.

A listener with `sni_passthrough` puts one state before connecting: once
admitted, the session feeds those kept bytes to a ClientHello reader until it
names the pool (datapath.sni_passthrough), or ends the session on bytes that
cannot be a ClientHello, or at `inspect_timeout`.

Flow control is end to end: when one side's transport buffers more than its
high-water mark, asyncio calls `pause_writing()` on that side's protocol and we
stop reading from the *other* side until `resume_writing()`. Nothing is ever
buffered without bound: a slow reader slows the fast writer.

Idle timeouts: one timer per session, re-armed lazily. Every read records the
loop time; when the timer fires it either finds recent activity and re-arms
for the remainder, or ends the session. A transfer in either direction keeps
both sides alive (HAProxy's tcp-mode behaviour); the session idles out after
min(client, server) seconds of silence.

The native data path (loadstone._fastpath) replaces this module for tcp
listeners and keeps the same seams: `Pool.pick()` (through the server table the
control plane publishes), `ServerRuntime.session_started/ended`,
`Pool.connect_failed`, and the session log.
"""

from __future__ import annotations

import asyncio
import logging
import time

from loadstone.datapath.accept import AcceptingFrontend
from loadstone.datapath.connect import Connector
from loadstone.datapath.http_pure.frontend import RoutePool
from loadstone.datapath.sni_passthrough import (
    INSPECT_TIMEOUT_REASON,
    SniCounts,
    SniPools,
    log_field,
)
from loadstone.datapath.transport import WRITE_HIGH_WATER, WRITE_LOW_WATER, apply_keepalive
from loadstone.server import ServerRuntime
from loadstone.sessionlog import logged
from loadstone.tls.clienthello import ClientHelloError, ClientHelloReader
from loadstone.tls.termination import session_fields

log = logging.getLogger("loadstone.datapath")

PENDING_LIMIT = 256 * 1024  # client bytes kept while connecting before reading pauses


class _ClientSide(asyncio.Protocol):
    __slots__ = ("session",)

    def __init__(self, frontend: TcpFrontend) -> None:
        self.session = TcpSession(frontend)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.session.client_made(transport)  # type: ignore[arg-type]

    def data_received(self, data: bytes) -> None:
        self.session.client_data(data)

    def eof_received(self) -> bool:
        return self.session.client_eof()

    def connection_lost(self, exc: Exception | None) -> None:
        self.session.client_lost(exc)

    def pause_writing(self) -> None:
        self.session.client_congested(True)

    def resume_writing(self) -> None:
        self.session.client_congested(False)


class _ServerSide(asyncio.Protocol):
    __slots__ = ("session",)

    def __init__(self, session: TcpSession) -> None:
        self.session = session

    def data_received(self, data: bytes) -> None:
        self.session.server_data(data)

    def eof_received(self) -> bool:
        return self.session.server_eof()

    def connection_lost(self, exc: Exception | None) -> None:
        self.session.server_lost(exc)

    def pause_writing(self) -> None:
        self.session.server_congested(True)

    def resume_writing(self) -> None:
        self.session.server_congested(False)


class TcpSession(Connector[_ServerSide]):
    """One client connection relayed to one server."""

    __slots__ = (
        "bytes_in",
        "bytes_out",
        "client",
        "client_eof_seen",
        "client_ip",
        "client_peer",
        "client_tls",
        "closed",
        "end_reason",
        "frontend",
        "hello",
        "last_activity",
        "loop",
        "pending",
        "pending_size",
        "queue_timer",
        "route",
        "server_eof_seen",
        "server_transport",
        "started",
        "timer",
    )
    log = log
    frontend: TcpFrontend

    def __init__(self, frontend: TcpFrontend) -> None:
        self.frontend = frontend
        self.loop = frontend.loop
        self.client: asyncio.Transport | None = None
        self.client_peer = "-"  # stays so when the client is gone before we ask
        self.client_tls: str | None = None  # version/cipher/sni on a TLS listener
        self.client_ip: str | None = None
        self._connector_init()
        self.server_transport: asyncio.Transport | None = None
        self.pending: list[bytes] | None = []  # None once the server side is up
        self.pending_size = 0
        self.bytes_in = 0  # client -> server
        self.bytes_out = 0  # server -> client
        self.client_eof_seen = False
        self.server_eof_seen = False
        self.closed = False
        self.end_reason = ""
        self.timer: asyncio.TimerHandle | None = None
        self.queue_timer: asyncio.TimerHandle | None = None
        self.started = time.time()
        self.last_activity = 0.0
        # sni_passthrough: the ClientHello being read, then the pool it chose.
        self.hello: ClientHelloReader | None = None
        self.route: RoutePool | None = None

    # -- client side ---------------------------------------------------------------

    def client_made(self, transport: asyncio.Transport) -> None:
        self.client = transport
        transport.set_write_buffer_limits(WRITE_HIGH_WATER, WRITE_LOW_WATER)
        peer = transport.get_extra_info("peername")
        if peer:
            self.client_ip = peer[0]
            self.client_peer = (
                f"[{peer[0]}]:{peer[1]}" if ":" in peer[0] else f"{peer[0]}:{peer[1]}"
            )
        if self.frontend.tls is not None:
            self.client_tls = session_fields(transport)
        apply_keepalive(transport, self.frontend.config)
        self.frontend.admit(self)

    def client_data(self, data: bytes) -> None:
        self.last_activity = self.loop.time()
        self.bytes_in += len(data)
        server = self.server_transport
        if server is not None:
            server.write(data)
            return
        pending = self.pending
        if pending is not None:
            pending.append(data)
            self.pending_size += len(data)
            if self.pending_size > PENDING_LIMIT and self.client is not None:
                self.client.pause_reading()
            if self.hello is not None:
                self._inspect(data)

    def client_eof(self) -> bool:
        self.client_eof_seen = True
        if self.server_eof_seen:
            self.finish("server-close")  # the server closed first
        elif self.server_transport is not None:
            self._write_eof(self.server_transport)
        # else: still connecting or queued; _connected() passes the FIN on.
        return True  # keep the transport open: the other direction may still flow

    def client_lost(self, exc: Exception | None) -> None:
        if not self.closed:
            self.finish("client-reset" if exc is not None else "client-close")

    def client_congested(self, congested: bool) -> None:
        # The client does not read as fast as the server sends: stop reading the server.
        if self.server_transport is not None:
            if congested:
                self.server_transport.pause_reading()
            else:
                self.last_activity = self.loop.time()
                self.server_transport.resume_reading()

    # -- server side ---------------------------------------------------------------

    def server_data(self, data: bytes) -> None:
        self.last_activity = self.loop.time()
        self.bytes_out += len(data)
        assert self.client is not None
        self.client.write(data)

    def server_eof(self) -> bool:
        self.server_eof_seen = True
        if self.client_eof_seen:
            self.finish("client-close")  # the client closed first
        elif self.client is not None:
            self._write_eof(self.client)
        return True

    def server_lost(self, exc: Exception | None) -> None:
        if not self.closed:
            self.finish("server-reset" if exc is not None else "server-close")

    def server_congested(self, congested: bool) -> None:
        if self.client is not None:
            if congested:
                self.client.pause_reading()
            else:
                self.last_activity = self.loop.time()
                self.client.resume_reading()

    # -- connecting ----------------------------------------------------------------

    def connect(self) -> None:
        """Pick a server and start connecting to it (datapath.connect's loop)."""
        frontend = self.frontend
        pool = self.route or frontend.pool
        server = self._same_server() or pool.pick(self.client_ip, self.failed)
        if server is None:
            self.finish("no-server")
            return
        self._take(server)
        self._open(server)

    _redispatch = connect

    def _ended(self) -> bool:
        return self.closed

    def _upstream(self, server: ServerRuntime) -> _ServerSide:
        return _ServerSide(self)

    def _client_transport(self) -> asyncio.BaseTransport | None:
        return self.client

    def _give_up(self, why: str) -> None:
        self.end_reason = f"connect-failed ({why})"
        self.finish(self.end_reason)

    def _connected(self, transport: asyncio.Transport, upstream: _ServerSide, took: float) -> None:
        self.server_transport = transport
        transport.set_write_buffer_limits(WRITE_HIGH_WATER, WRITE_LOW_WATER)
        apply_keepalive(transport, self.frontend.config)
        # (send_proxy: the connect loop wrote the header first, datapath.connect)
        pending = self.pending
        self.pending = None
        if pending:
            transport.write(b"".join(pending))
            if self.pending_size > PENDING_LIMIT and self.client is not None:
                self.client.resume_reading()
        if self.client_eof_seen:
            self._write_eof(transport)
        self.last_activity = self.loop.time()
        self._arm_timer(self.frontend.idle_timeout)

    # -- sni_passthrough: the ClientHello first ----------------------------------------

    def _start_inspection(self, sni: SniPools) -> None:
        """Read the ClientHello before choosing a pool (bytes already received
        count: they arrived while the session was queued)."""
        self.hello = ClientHelloReader()
        assert self.frontend.config.sni_passthrough is not None
        timeout = self.frontend.config.sni_passthrough.inspect_timeout
        self.timer = self.loop.call_later(timeout, self._inspect_expired)
        if self.pending:
            self._inspect(b"".join(self.pending))

    def _inspect(self, data: bytes) -> None:
        hello_reader = self.hello
        sni = self.frontend.sni
        assert hello_reader is not None and sni is not None
        try:
            hello = hello_reader.feed(data)
        except ClientHelloError as exc:
            self.hello = None
            sni.counts.refused[exc.reason] += 1
            self._abort_client()
            self.finish(f"sni-refused ({exc.reason})")
            return
        if hello is None:
            return
        self.hello = None
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        self.client_tls = log_field(hello)
        self.route = sni.route(hello.server_name)
        self.connect()

    def _inspect_expired(self) -> None:
        self.timer = None
        if self.closed or self.hello is None:
            return
        self.hello = None
        if self.frontend.sni is not None:
            self.frontend.sni.counts.refused[INSPECT_TIMEOUT_REASON] += 1
        self._abort_client()
        self.finish(INSPECT_TIMEOUT_REASON)

    def _abort_client(self) -> None:
        # Nothing is owed to a client refused before routing: abort, not close,
        # so that one that stopped reading does not hold the descriptor.
        if self.client is not None:
            self.client.abort()

    # -- timers ----------------------------------------------------------------------

    def _arm_timer(self, delay: float) -> None:
        self.timer = self.loop.call_later(delay, self._timer_fired)

    def _timer_fired(self) -> None:
        self.timer = None
        if self.closed:
            return
        idle_for = self.loop.time() - self.last_activity
        remaining = self.frontend.idle_timeout - idle_for
        if remaining > 0.001:
            self._arm_timer(remaining)
            return
        # Abort, not close: close() would wait to flush what a peer that stopped
        # reading never takes, and hold the descriptor for ever.
        for transport in (self.client, self.server_transport):
            if transport is not None:
                transport.abort()
        self.finish(self.frontend.idle_reason)

    # -- the maxconn queue (datapath.accept) ------------------------------------------

    def hold(self) -> None:
        if self.client is not None:
            self.client.pause_reading()

    def admitted(self, waited: bool) -> None:
        if waited and self.client is not None:
            self.client.resume_reading()
        sni = self.frontend.sni
        if sni is not None and self.route is None:
            self._start_inspection(sni)
            return
        self.connect()

    def queue_expired(self) -> None:
        self.queue_timer = None
        self.finish("queue-timeout")

    # -- ending ----------------------------------------------------------------------

    def shutdown(self, reason: str) -> None:
        """Close both sides now (shutdown-sessions, maint, stop after grace)."""
        if self.closed:
            return
        if self.server_transport is not None:
            self.server_transport.abort()
        self.finish(f"shutdown ({reason})")

    @staticmethod
    def _write_eof(transport: asyncio.Transport) -> None:
        if not transport.can_write_eof() and not transport.is_closing():
            # A TLS client connection has no half-close: closing it (close_notify
            # after what is still buffered) is the nearest thing to passing the FIN on.
            transport.close()
        elif transport.can_write_eof() and not transport.is_closing():
            try:
                transport.write_eof()
            except OSError:
                transport.close()

    def finish(self, reason: str) -> None:
        if self.closed:
            return
        self.closed = True
        self.end_reason = reason
        if self.timer is not None:
            self.timer.cancel()
        if self.queue_timer is not None:
            self.queue_timer.cancel()
        if self.connect_task is not None:
            self.connect_task.cancel()
        if self.client is not None:
            self.client.close()
        if self.server_transport is not None:
            self.server_transport.close()
        if self.server is not None:
            self.server.session_ended(self)
        self.frontend.connection_finished(self)


class TcpFrontend(AcceptingFrontend[TcpSession]):
    """Accepts on the listener's sockets and runs its sessions (pure path)."""

    def _accepted(self) -> asyncio.Protocol:
        return _ClientSide(self)

    def _prepare(self) -> None:
        self.sni_counts = SniCounts()  # sni_passthrough's, across reloads

    def _configured(self) -> None:
        t = self.config.timeouts
        self.idle_timeout = min(t.client, t.server)
        self.idle_reason = "client-timeout" if t.client <= t.server else "server-timeout"
        # sni_passthrough: the pools by name, routed to by the ClientHello's SNI
        passthrough = self.config.sni_passthrough is not None
        self.sni = SniPools(self.config, self.pool, self.sni_counts) if passthrough else None

    def status_extra(self) -> dict[str, object]:
        extra = super().status_extra()
        if self.sni is not None:
            extra.update(
                data_path=self.data_path,
                data_path_reason=self.data_path_reason,
                sni_passthrough=self.sni.status(),
            )
        return extra

    def _account(self, session: TcpSession) -> None:
        self.bytes_in_done += session.bytes_in
        self.bytes_out_done += session.bytes_out
        if session.server is None:
            self.denied_total += 1
        if logged(self.config.log, session.end_reason):
            self.sessionlog.session(
                client=session.client_peer,
                listener=self.name,
                server=session.server.name if session.server is not None else "-",
                bytes_in=session.bytes_in,
                bytes_out=session.bytes_out,
                duration=time.time() - session.started,
                end=session.end_reason,
                tls=session.client_tls,
            )
