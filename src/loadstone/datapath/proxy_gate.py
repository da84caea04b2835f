"""The PROXY protocol on the pure data path: reading the header on listeners
(`accept_proxy`) and writing it to servers (`send_proxy`).

Accepting: a `ProxyGate` is a client connection's first protocol. From a
trusted source it reads the header (loadstone.proxy_protocol) before anything
else; from any other source it lets the connection through but closes it if
its first bytes are a header (a client must not choose its own address). Once
the header is read, the connection is handed to the listener's own protocol
(the TLS handshake or the tcp/http one) with a transport whose `peername` and
`sockname` are the header's addresses, so that everything reading the client
address (logs, `source` balancing, X-Forwarded-For, the request rules) sees the
original client. A missing, malformed, truncated or slow header closes the
connection and counts it (`ProxyCounts`).

Sending: `header_for(...)` is what a tcp session or an http server connection
writes first, built from the addresses the client connection was given.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
from typing import Any, cast

from loadstone.config.model import ListenerConfig, ProxyAccept, ServerConfig
from loadstone.proxy_protocol import (
    Endpoint,
    ProxyHeader,
    ProxyHeaderError,
    could_start_header,
    encode,
    parse,
)

log = logging.getLogger("loadstone.datapath")

# The most a header may take: v2's 16 fixed bytes and a 64 KiB length.
_MAX_HEADER = 16 + 65535


class ProxyCounts:
    """Connections closed for their PROXY header, by reason (the status API's)."""

    __slots__ = ("refused",)

    def __init__(self) -> None:
        self.refused: dict[str, int] = {}

    def count(self, reason: str) -> None:
        self.refused[reason] = self.refused.get(reason, 0) + 1


class _Networks:
    """The trusted networks of one listener, matched against a peer address."""

    __slots__ = ("networks",)

    def __init__(self, accept: ProxyAccept) -> None:
        self.networks = [ipaddress.ip_network(n) for n in accept.trusted]

    def trusts(self, host: str) -> bool:
        try:
            address = ipaddress.ip_address(host.partition("%")[0])
        except ValueError:
            return False
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            mapped = address.ipv4_mapped
            return any(mapped in n for n in self.networks) or any(
                address in n for n in self.networks
            )
        return any(address in n for n in self.networks)


class AddressedTransport(asyncio.Transport):
    """A client transport that reports the addresses a PROXY header gave.

    Everything but `get_extra_info("peername"/"sockname")` is the real transport's."""

    def __init__(self, real: asyncio.Transport, header: ProxyHeader) -> None:
        super().__init__()
        self._real = real
        self._peer = header.source
        self._local = header.destination

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        if name == "peername" and self._peer is not None:
            return self._peer
        if name == "sockname" and self._local is not None:
            return self._local
        return self._real.get_extra_info(name, default)

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self._real.write(data)

    def writelines(self, list_of_data: Any) -> None:
        self._real.writelines(list_of_data)

    def write_eof(self) -> None:
        self._real.write_eof()

    def can_write_eof(self) -> bool:
        return self._real.can_write_eof()

    def close(self) -> None:
        self._real.close()

    def abort(self) -> None:
        self._real.abort()

    def is_closing(self) -> bool:
        return self._real.is_closing()

    def pause_reading(self) -> None:
        self._real.pause_reading()

    def resume_reading(self) -> None:
        self._real.resume_reading()

    def is_reading(self) -> bool:
        return self._real.is_reading()

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        self._real.set_write_buffer_limits(high, low)

    def get_write_buffer_size(self) -> int:
        return self._real.get_write_buffer_size()

    def get_write_buffer_limits(self) -> tuple[int, int]:
        return self._real.get_write_buffer_limits()

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self._real.set_protocol(protocol)

    def get_protocol(self) -> asyncio.BaseProtocol:
        return self._real.get_protocol()


class ProxyGate(asyncio.Protocol):
    """A client connection until its PROXY header is read (or shown absent)."""

    __slots__ = (
        "buffer", "counts", "inner", "loop", "networks", "timeout", "timer", "transport", "trusted",
    )  # fmt: skip

    def __init__(
        self,
        inner: asyncio.BaseProtocol,
        networks: _Networks,
        timeout: float,
        counts: ProxyCounts,
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        self.inner = inner
        self.networks = networks
        self.timeout = timeout
        self.counts = counts
        self.loop = loop
        self.buffer = b""
        self.transport: asyncio.Transport | None = None
        self.timer: asyncio.TimerHandle | None = None
        self.trusted = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports do not subclass asyncio.Transport: no isinstance check.
        self.transport = tr = cast(asyncio.Transport, transport)
        peer = transport.get_extra_info("peername")
        self.trusted = isinstance(peer, tuple) and self.networks.trusts(peer[0])
        if self.trusted:
            self.timer = self.loop.call_later(self.timeout, self._expired)
        else:
            # Served as it is, under the listener's own timeouts (a server may
            # speak first); only its first bytes are looked at (_UntrustedWatch).
            self._hand_over(tr, b"")

    def data_received(self, data: bytes) -> None:
        # Only reached before the hand-over: afterwards the transport feeds `inner`.
        self.buffer += data
        try:
            parsed = parse(self.buffer)
        except ProxyHeaderError as exc:
            self._refuse("malformed", str(exc))
            return
        if parsed is None:
            if len(self.buffer) > _MAX_HEADER:
                self._refuse("malformed", "header too long")
            return
        header, length = parsed
        assert self.transport is not None
        self._hand_over(AddressedTransport(self.transport, header), self.buffer[length:])

    def eof_received(self) -> bool:
        self._refuse("truncated", "connection closed before the end of the header")
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_timer()

    def _expired(self) -> None:
        self.timer = None
        self._refuse("timeout", f"no complete header within {self.timeout:g}s")

    def _cancel_timer(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def _refuse(self, reason: str, why: str) -> None:
        self._cancel_timer()
        self.counts.count(reason)
        transport = self.transport
        if transport is not None:
            peer = transport.get_extra_info("peername")
            log.info("PROXY header from %s refused: %s", _peer_text(peer), why)
            transport.abort()

    def _hand_over(self, transport: asyncio.Transport, rest: bytes) -> None:
        real = self.transport
        assert real is not None
        inner = self.inner
        self._cancel_timer()
        if self.trusted:
            real.set_protocol(inner)
        else:
            real.set_protocol(_UntrustedWatch(inner, self))
        inner.connection_made(transport)
        if rest:
            feed(inner, rest)


class _UntrustedWatch(asyncio.BufferedProtocol):
    """An untrusted client's protocol until its first bytes show no PROXY header."""

    def __init__(self, inner: asyncio.BaseProtocol, gate: ProxyGate) -> None:
        self.inner = inner
        self.gate = gate
        self.seen = b""
        self.scratch = bytearray(65536)

    def get_buffer(self, sizehint: int) -> bytearray:
        return self.scratch

    def buffer_updated(self, nbytes: int) -> None:
        data = bytes(self.scratch[:nbytes])
        self.seen += data
        if could_start_header(self.seen):
            if len(self.seen) >= 12:  # as long as the longer signature: a header
                self.gate._refuse("untrusted", "header from a source not in accept_proxy.trusted")
                return
            return  # too short to tell: wait for more
        # Not a header: from now on the transport feeds the listener's protocol.
        transport = self.gate.transport
        assert transport is not None
        transport.set_protocol(self.inner)
        feed(self.inner, self.seen)

    def eof_received(self) -> bool | None:
        if self.seen:
            feed(self.inner, self.seen)
        # Both kinds of protocol (plain, buffered) have eof_received.
        return cast(asyncio.Protocol, self.inner).eof_received()

    def connection_lost(self, exc: Exception | None) -> None:
        self.inner.connection_lost(exc)

    def pause_writing(self) -> None:
        self.inner.pause_writing()

    def resume_writing(self) -> None:
        self.inner.resume_writing()


def feed(protocol: asyncio.BaseProtocol, data: bytes) -> None:
    """Give `data` to a protocol as its transport would."""
    if isinstance(protocol, asyncio.BufferedProtocol):
        view = memoryview(data)
        while view:
            buffer = memoryview(protocol.get_buffer(len(view)))
            n = min(len(buffer), len(view))
            buffer[:n] = view[:n]
            protocol.buffer_updated(n)
            view = view[n:]
    else:
        cast(asyncio.Protocol, protocol).data_received(data)


class Acceptance:
    """A listener's `accept_proxy`, ready to gate its connections."""

    __slots__ = ("networks", "timeout")

    def __init__(self, accept: ProxyAccept) -> None:
        self.networks = _Networks(accept)
        self.timeout = accept.timeout

    @classmethod
    def of(cls, listener: ListenerConfig) -> Acceptance | None:
        return None if listener.accept_proxy is None else cls(listener.accept_proxy)

    def gate(
        self, inner: asyncio.BaseProtocol, counts: ProxyCounts, loop: asyncio.AbstractEventLoop
    ) -> ProxyGate:
        """The first protocol of a client connection, handing over to `inner`."""
        return ProxyGate(inner, self.networks, self.timeout, counts, loop)


def header_to(
    listener: ListenerConfig, server: ServerConfig, client: asyncio.BaseTransport | None
) -> bytes:
    """The PROXY header a connection to `server` starts with (b"" for none): the
    client's address and the one it reached, as the client transport reports them
    (a PROXY header's own when the listener accepted one)."""
    version = listener.proxy_version(server)
    if version is None:
        return b""
    if client is None:
        return encode(version, None, None)
    peer = client.get_extra_info("peername")
    local = client.get_extra_info("sockname")
    return encode(version, _endpoint(peer), _endpoint(local))


def _endpoint(name: object) -> Endpoint | None:
    if isinstance(name, tuple) and len(name) >= 2:
        return str(name[0]), int(name[1])
    return None  # a unix socket, or a connection already gone


def _peer_text(peer: object) -> str:
    if isinstance(peer, tuple) and len(peer) >= 2:
        return f"{peer[0]}:{peer[1]}"
    return str(peer)
