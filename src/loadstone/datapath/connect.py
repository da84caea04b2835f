"""The pure data path's connect loop: one attempt after another until a server
connection is up, shared by a tcp session and an http exchange.

    pick --> take (server's session count +1) --> [back-off] --> connect --> connected
     ^                                                              |
     +-- redispatch: pick again, failed servers excluded -----------+ failed / timed out
                                                                    |  (count, log)
                                               attempts > retries --+--> give up

Picking is the owner's (a tcp session asks the pool's balancer; an http
exchange routes, honours its persistence cookie and may reuse an idle server
connection), and so is what "connected" and "give up" mean. What is shared is
everything between: the attempt count, the server's session accounting, the
back-off before trying a server that already failed, the connect timeout, the
PROXY header (send_proxy), the log line, the count of failed TLS handshakes and
the pool's re-check of a failed server (Pool.connect_failed).

To a TLS server (re-encryption) the connect has two steps, as HAProxy's and
the native engine's (engine/proxy_proto.c server_connected): the TCP connection,
on which the PROXY header goes in clear, then the TLS handshake, whose failure
(or a timeout during it) is counted per server and reason.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import os
import socket
import ssl
import time
from typing import Generic, Protocol, TypeVar

from loadstone.config.model import ListenerConfig
from loadstone.datapath.proxy_gate import header_to
from loadstone.datapath.traffic import TrafficCounters
from loadstone.server import Pool, ServerRuntime
from loadstone.tls.material import server_context, server_tls
from loadstone.tls.upstream import (
    HANDSHAKE_CLOSED,
    HANDSHAKE_TIMEOUT,
    failure_label,
    handshake_error_text,
    server_name,
)

P = TypeVar("P", bound=asyncio.BaseProtocol)

# Request timings: the loop's clock is only millisecond-grained under uvloop.
_now = time.monotonic


def errno_text(exc: BaseException) -> str:
    """A failed connect's reason as a log line says it ("connection refused")."""
    if isinstance(exc, ssl.SSLError):
        return handshake_error_text(exc)
    if isinstance(exc, OSError) and exc.errno is not None:
        return os.strerror(exc.errno).lower()
    return str(exc) or type(exc).__name__


def _sni(listener: ListenerConfig, server: ServerRuntime) -> str | None:
    settings = server_tls(listener, server.config)
    return None if settings is None else server_name(settings, server.config)


def _handshake_error_text(exc: BaseException) -> str:
    """A failure during the TLS handshake with a server, in the engine's words."""
    if isinstance(exc, ConnectionError | EOFError | ssl.SSLEOFError | ssl.SSLZeroReturnError):
        return HANDSHAKE_CLOSED
    if isinstance(exc, ssl.SSLError):
        return handshake_error_text(exc)
    if isinstance(exc, TimeoutError):
        return HANDSHAKE_TIMEOUT
    return f"tls: {errno_text(exc)}"


async def _tcp_connect(loop: asyncio.AbstractEventLoop, host: str, port: int) -> socket.socket:
    """A connected non-blocking socket to `host` (an address, or a name looked up
    here), for a connection that goes on with a TLS handshake."""
    try:
        family = socket.AF_INET6 if ipaddress.ip_address(host).version == 6 else socket.AF_INET
        address: tuple[object, ...] = (host, port)
    except ValueError:
        found = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        family, _type, _proto, _name, address = found[0]
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        await loop.sock_connect(sock, address)
    except BaseException:
        sock.close()
        raise
    return sock


class _Frontend(Protocol):
    """What the connect loop reads of its frontend."""

    name: str
    config: ListenerConfig
    pool: Pool
    traffic: TrafficCounters


class Connector(Generic[P]):
    """Mixin of an object that connects to servers: a tcp session, an http client
    connection. `P` is the protocol of its server connections."""

    __slots__ = (
        "attempts", "connect_task", "connect_timed_out", "failed", "server", "tls_handshaking",
    )  # fmt: skip

    # Provided by the owner, which is the servers' Session (loadstone.server).
    frontend: _Frontend
    loop: asyncio.AbstractEventLoop
    log: logging.Logger  # the data path's logger, for the failed-connect line
    bytes_in: int
    bytes_out: int

    def _connector_init(self) -> None:
        self.server: ServerRuntime | None = None  # the one of the attempt in flight
        self.attempts = 0
        self.failed: list[ServerRuntime] = []  # of this session/exchange, in order
        self.connect_task: asyncio.Task[None] | None = None
        self.connect_timed_out = False
        self.tls_handshaking = False  # the attempt in flight is in its TLS handshake

    # -- the owner's hooks -------------------------------------------------------------

    def _ended(self) -> bool:
        """Is the owner closed (no attempt is wanted any more)?"""
        raise NotImplementedError

    def _upstream(self, server: ServerRuntime) -> P:
        """A new protocol object for a connection to `server`."""
        raise NotImplementedError

    def _client_transport(self) -> asyncio.BaseTransport | None:
        """The client's connection, whose addresses a PROXY header names."""
        raise NotImplementedError

    def _connected(self, transport: asyncio.Transport, upstream: P, took: float) -> None:
        """The connection is up (`took` seconds after the connect began)."""
        raise NotImplementedError

    def _redispatch(self) -> None:
        """Pick a server again after a failed attempt (failed ones are in self.failed)."""
        raise NotImplementedError

    def _give_up(self, why: str) -> None:
        """Out of retries; `why` is the last failure."""
        raise NotImplementedError

    def shutdown(self, reason: str) -> None:
        """Close now (Session.shutdown: shutdown-sessions, maint, stop after grace)."""
        raise NotImplementedError

    # -- the loop ----------------------------------------------------------------------

    def _take(self, server: ServerRuntime) -> None:
        """`server` is picked for this attempt: it counts the session from now."""
        self.server = server
        self.attempts += 1
        server.session_started(self)

    def _same_server(self) -> ServerRuntime | None:
        """The server a retry must go to again when redispatch is off (HAProxy
        retries the same server then), else None: the owner picks."""
        if self.failed and not self.frontend.config.redispatch:
            return self.failed[-1]
        return None

    def _open(self, server: ServerRuntime, delay: float | None = None) -> None:
        """Start connecting to `server`, taken for this attempt."""
        if delay is None:
            delay = 0.0
            if server in self.failed:
                # Retrying the same server (no other left, or no redispatch): back off
                # a little so that a check has time to mark a dead server down and the
                # balancer to choose another (active-backup's failover).
                delay = min(0.05 * 2 ** len(self.failed), self.frontend.config.timeouts.connect)
        self.connect_task = self.loop.create_task(self._connect(server, delay))

    async def _connect(self, server: ServerRuntime, delay: float) -> None:
        if delay:
            await asyncio.sleep(delay)
        loop = self.loop
        self.connect_timed_out = False
        self.tls_handshaking = False
        started = _now()
        # A plain timer that cancels this task costs less than asyncio.timeout()
        # on a path taken once per connection.
        timer = loop.call_later(self.frontend.config.timeouts.connect, self._connect_expired)
        listener = self.frontend.config
        # send_proxy: the header goes before any other byte, a TLS ClientHello's too
        header = header_to(listener, server.config, self._client_transport())
        # TLS to the server (re-encryption): the handshake is part of the connect,
        # under the same timeout, and a failed verification a failed connect.
        tls = server_context(listener, server.config)
        try:
            if tls is None:
                transport, upstream = await loop.create_connection(
                    lambda: self._upstream(server), server.connect_host, server.address.port
                )
            else:
                transport, upstream = await self._connect_tls(server, tls, header)
        except asyncio.CancelledError:
            timer.cancel()
            if self._ended() or not self.connect_timed_out:
                return  # cancelled by the owner (closed, answered itself)
            self.connect_task = None
            self._connect_failed(server, TimeoutError())
            return
        except OSError as exc:
            timer.cancel()
            self.connect_task = None
            if not self._ended():
                self._connect_failed(server, exc)
            return
        timer.cancel()
        self.connect_task = None
        if self._ended() or self.server is not server:
            transport.close()
            return
        if header and tls is None:
            transport.write(header)  # (to a TLS server it went before the handshake)
        took = _now() - started
        self.frontend.traffic.connect.observe(took)
        self._connected(transport, upstream, took)

    async def _connect_tls(
        self, server: ServerRuntime, tls: ssl.SSLContext, header: bytes
    ) -> tuple[asyncio.Transport, P]:
        """The TCP connection, the PROXY header on it in clear, then the TLS
        handshake (what a failure counts as depends on the step: tls_handshaking)."""
        loop = self.loop
        sock = await _tcp_connect(loop, server.connect_host, server.address.port)
        try:
            if header:
                await loop.sock_sendall(sock, header)
        except BaseException:
            sock.close()
            raise
        self.tls_handshaking = True
        # The socket is the transport's from here, closed with it.
        connected = await loop.create_connection(
            lambda: self._upstream(server),
            sock=sock,
            ssl=tls,
            # (asyncio's default with a host: the address connected to)
            server_hostname=_sni(self.frontend.config, server) or server.connect_host,
        )
        self.tls_handshaking = False
        return connected

    def _connect_expired(self) -> None:
        if self.connect_task is not None:
            self.connect_timed_out = True
            self.connect_task.cancel()

    def _connect_failed(self, server: ServerRuntime, exc: BaseException) -> None:
        server.session_ended(self)
        self.server = None
        frontend = self.frontend
        frontend.pool.connect_failed(server)
        self.failed.append(server)
        if self.tls_handshaking:
            why = _handshake_error_text(exc)
            server.tls_handshake_failed(failure_label(why) or "other")
        else:
            why = "timeout" if isinstance(exc, TimeoutError) else errno_text(exc)
        self.log.info(
            "%s: connect to %s (%s) failed: %s", frontend.name, server.name, server.address, why
        )
        if self.attempts > frontend.config.retries:
            self._give_up(why)
        else:
            self._redispatch()
