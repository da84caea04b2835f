"""What the two pure frontends share: accepting, admission, the maxconn queue,
idle waiters and the listener's counters.

A frontend admits each accepted client connection (a tcp session, an http
client connection): under `maxconn` it becomes active at once; over it, it is
held (not read) in a FIFO queue until a slot frees, or answered by its
`queue_expired` after `timeouts.queue`, as HAProxy's queue does. What a
connection does once admitted (connect to a server, or wait for a request) is
its own business, through the `Admitted` hooks. `wait_idle` returns when nothing
is active or queued (a stop's grace).

The concrete frontends, datapath.tcp_pure.TcpFrontend and
datapath.http_pure.HttpFrontend, add the protocol of their connections and,
for http, the server connection pool and the request counters.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import socket
from typing import Generic, Protocol, TypeVar

from loadstone.config.model import ListenerConfig
from loadstone.datapath.acceptor import Acceptor
from loadstone.datapath.limits import LIMIT
from loadstone.datapath.proxy_gate import Acceptance, ProxyCounts
from loadstone.datapath.traffic import TrafficCounters, TrafficSnapshot
from loadstone.server import Pool
from loadstone.sessionlog import SessionLog
from loadstone.tls import material
from loadstone.tls.termination import Termination


class Admitted(Protocol):
    """A client connection, as admission and the counters see it."""

    # Set by the frontend while the connection waits in the maxconn queue.
    queue_timer: asyncio.TimerHandle | None
    bytes_in: int  # client -> server, of what is not yet in the frontend's totals
    bytes_out: int

    @property
    def closed(self) -> bool: ...

    def hold(self) -> None:
        """Queued at maxconn: stop reading the client until admitted."""

    def admitted(self, waited: bool) -> None:
        """A slot is the connection's (`waited`: it was queued for it)."""

    def queue_expired(self) -> None:
        """timeouts.queue passed before a slot freed."""

    def shutdown(self, reason: str) -> None:
        """Close now (shutdown-sessions, maint, stop after grace)."""


C = TypeVar("C", bound=Admitted)


class AcceptingFrontend(Generic[C]):
    """Accepts on a listener's sockets and admits its client connections (pure path)."""

    data_path = "pure"

    def __init__(
        self,
        config: ListenerConfig,
        pool: Pool,
        sessionlog: SessionLog,
        loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        self.data_path_reason: str | None = None
        self.name = config.name
        self.sessionlog = sessionlog
        self.loop = loop or asyncio.get_running_loop()
        self.active: set[C] = set()  # admitted: connecting, relaying, serving
        self.queued: collections.deque[C] = collections.deque()
        self.sessions_total = 0
        self.bytes_in_done = 0  # of finished sessions (http: finished exchanges)
        self.bytes_out_done = 0
        self.denied_total = 0  # sessions ended before reaching a server
        self.servers: dict[socket.socket, Acceptor] = {}
        self.idle_waiters: list[asyncio.Future[None]] = []
        self.traffic = TrafficCounters()  # histograms, HTTP codes: /metrics
        self.proxy_counts = ProxyCounts()  # connections closed for their PROXY header
        self._prepare()
        self.reconfigure(config, pool)

    def traffic_metrics(self) -> TrafficSnapshot:
        return self.traffic.snapshot()

    def _prepare(self) -> None:
        """Make the state a subclass keeps across reloads (before the first configure)."""

    def _accepted(self) -> asyncio.Protocol:
        """The protocol object of a newly accepted client connection."""
        raise NotImplementedError

    def _configured(self) -> None:
        """Derive what the frontend needs from self.config and self.pool (start, reload)."""

    def reconfigure(self, config: ListenerConfig, pool: Pool) -> None:
        """A reload: new sessions use the new settings and pool; open ones run on."""
        self.config = config
        self.pool = pool
        # TLS: connections accepted from now on use the reloaded certificates.
        self.tls: Termination | None = material.termination(config)
        self.proxy_accept = Acceptance.of(config)
        self._configured()
        self._admit_waiting()

    # -- accepting ---------------------------------------------------------------------

    async def start(self, sockets: list[socket.socket]) -> None:
        """Accept on these (already bound and listening) sockets too."""
        # Our own accept loop, not loop.create_server: it pauses at global.maxconn
        # and at the descriptor limit (datapath.acceptor).
        for sock in sockets:
            acceptor = Acceptor(self.loop, sock, self._protocol)
            self.servers[sock] = acceptor
            acceptor.start()

    def _protocol(self) -> asyncio.BaseProtocol:
        """A new connection's protocol; on a TLS listener it first does the handshake."""
        app = self._accepted()
        tls = self.tls
        first = app if tls is None else tls.protocol(self.loop, app)
        # accept_proxy: the PROXY header comes before anything, TLS included.
        accept = self.proxy_accept
        return first if accept is None else accept.gate(first, self.proxy_counts, self.loop)

    def unserve(self, sock: socket.socket) -> None:
        """Stop accepting on one socket and close it (its address left the config)."""
        acceptor = self.servers.pop(sock, None)
        if acceptor is not None:
            acceptor.close()
        sock.close()

    def stop_accepting(self) -> None:
        for acceptor in self.servers.values():
            acceptor.close()
        self.servers.clear()

    def end_keep_alive(self) -> None:
        """Nothing to end but http's keep-alive (HttpListener overrides)."""

    # -- admission ---------------------------------------------------------------------

    def admit(self, conn: C) -> None:
        self.sessions_total += 1
        LIMIT.opened()
        if len(self.active) >= self.config.maxconn:
            # Over maxconn: hold the client (not reading) until a slot frees, as
            # HAProxy's queue does, bounded by timeouts.queue.
            conn.hold()
            self.queued.append(conn)
            conn.queue_timer = self.loop.call_later(self.config.timeouts.queue, conn.queue_expired)
            return
        self.active.add(conn)
        conn.admitted(False)

    def _admit_waiting(self) -> None:
        lingering: list[C] = []
        while self.queued and len(self.active) < self.config.maxconn:
            waiting = self.queued.popleft()
            if waiting.closed:
                # Its queue timeout's answer lingers (http_pure/linger.py): it
                # stays queued, to be counted out by connection_finished.
                lingering.append(waiting)
                continue
            if waiting.queue_timer is not None:
                waiting.queue_timer.cancel()
                waiting.queue_timer = None
            self.active.add(waiting)
            waiting.admitted(True)
        self.queued.extendleft(reversed(lingering))

    def connection_finished(self, conn: C) -> None:
        """A connection closed: its slot (or its place in the queue) is free."""
        if conn in self.active:
            self.active.discard(conn)
            self._admit_waiting()
            LIMIT.closed()
        else:
            with contextlib.suppress(ValueError):
                self.queued.remove(conn)
                LIMIT.closed()
        self._account(conn)
        self._check_idle()

    def _account(self, conn: C) -> None:
        """Count (and log) what a finished connection did."""

    def _check_idle(self) -> None:
        if not self.active and not self.queued and self.idle_waiters:
            for waiter in self.idle_waiters:
                if not waiter.done():
                    waiter.set_result(None)
            self.idle_waiters.clear()

    # -- control -----------------------------------------------------------------------

    @property
    def current_sessions(self) -> int:
        return len(self.active) + self.queued_count

    @property
    def queued_count(self) -> int:
        # A closed one is a queue timeout's answer lingering (http_pure/linger.py):
        # no longer waiting, and not counted, as on the native path.
        return sum(1 for waiting in self.queued if not waiting.closed)

    @property
    def bytes_in(self) -> int:
        """Client -> server bytes, finished sessions and live ones."""
        return self.bytes_in_done + sum(c.bytes_in for c in self.active)

    @property
    def bytes_out(self) -> int:
        return self.bytes_out_done + sum(c.bytes_out for c in self.active)

    def status_extra(self) -> dict[str, object]:
        return {**self.tls_status(), **self.proxy_status()}  # mode tcp: TLS and PROXY only

    def proxy_status(self) -> dict[str, object]:
        """Connections refused for their PROXY header (with accept_proxy), and why
        the native path does not serve a listener using the PROXY protocol."""
        status: dict[str, object] = {}
        if self.data_path_reason is not None:
            status["data_path"] = self.data_path
            status["data_path_reason"] = self.data_path_reason
        if self.config.accept_proxy is not None:
            status["proxy_protocol"] = {"refused": dict(self.proxy_counts.refused)}
        return status

    def tls_status(self) -> dict[str, object]:
        """The listener's TLS handshakes and certificates; empty without TLS."""
        tls = self.tls
        if tls is None:
            return {}
        counts = tls.counts
        return {
            "data_path": self.data_path,
            "data_path_reason": self.data_path_reason,
            "tls": {
                "handshakes": counts.completed,
                "resumed": counts.resumed,
                "failures": dict(counts.failed),
                "certificates": [
                    {
                        "file": c.cert_path,
                        "subject": c.subject,
                        "names": list(c.names),
                        "not_after": c.not_after,
                    }
                    for c in tls.certificates.certificates
                ],
            },
        }

    async def wait_idle(self) -> None:
        if not self.active and not self.queued:
            return
        waiter: asyncio.Future[None] = self.loop.create_future()
        self.idle_waiters.append(waiter)
        await waiter

    def shutdown_all(self, reason: str) -> None:
        for conn in list(self.active) + list(self.queued):
            conn.shutdown(reason)
