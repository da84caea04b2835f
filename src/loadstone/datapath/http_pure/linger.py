"""The lingering close of a client connection on the pure HTTP path (the
native engine's http_linger.c, nginx's lingering_close).

Closing a socket whose receive queue holds bytes never read makes the kernel
send a RST instead of a FIN and drop what it had not sent yet; the client's
TCP may then discard the response it received but had not read. So a
connection closed while its client may still be sending (a request not all
read, requests pipelined after the one answered, reading paused) is not
closed: its write side is shut once the response is written (write_eof), and
what still comes is read and dropped until the client closes, for at most
timeouts.linger in all (0: no lingering), LINGER_IDLE without a byte,
LINGER_BYTES. The connection
keeps its maxconn place meanwhile (it holds a descriptor); a stop or shutdown
ends it at once.

Over TLS, the response and our close_notify are handed to the TCP transport
beneath (tls.termination.close_notify), whose write side is shut after them,
and the client's records are read raw through `Drain`: once our close_notify
is sent OpenSSL refuses application data, and nothing of it is answered.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

LINGER_IDLE = 0.5
LINGER_BYTES = 4 * 1024 * 1024


class Drain(asyncio.Protocol):
    """The protocol of a TLS connection's TCP transport while it lingers: the
    client's bytes, raw, go to its Lingering."""

    __slots__ = ("lingering",)

    def __init__(self, lingering: Lingering) -> None:
        self.lingering = lingering

    def data_received(self, data: bytes) -> None:
        self.lingering.data(len(data))

    def eof_received(self) -> bool:
        self.lingering.end(client_closed=True)
        return True  # closed by end(), after what is still buffered

    def connection_lost(self, exc: Exception | None) -> None:
        self.lingering.end()


class Lingering:
    """One connection's linger, from the shutdown of its write side to its close.

    While the response is still being written the bounds do not run (the
    client reading slowly is not one that lingers): `write_stall` (the
    listener's client timeout) bounds a write that makes no progress.

    That stall is watched here (the buffered size, and when it last shrank,
    looked at every LINGER_IDLE), not by the connection's own timer
    (ClientConnection.set_deadline with T_CLIENT): that deadline moves on
    what the client sends (on_body), not on what it takes, and is cancelled
    by the close; asyncio tells of a write's progress only at its
    watermarks (pause_writing/resume_writing), so a timer moved there would
    cut a slow reader that keeps taking bytes above the low watermark. The
    connection's timeout is reused as a duration only."""

    __slots__ = (
        "bytes",
        "done",
        "ends_at",
        "idle_until",
        "last_buffered",
        "linger",
        "loop",
        "on_done",
        "stalled_since",
        "timer",
        "transport",
        "write_stall",
    )

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        transport: asyncio.Transport,
        linger: float,
        write_stall: float,
        on_done: Callable[[], None],
        raw: bool = False,
    ) -> None:
        """`raw`: `transport` is the TCP one beneath a TLS connection, whose
        reads come here through a Drain (otherwise the connection's protocol
        passes them on)."""
        self.loop = loop
        self.linger = linger
        self.transport = transport
        self.write_stall = write_stall
        self.on_done = on_done
        self.bytes = 0
        self.done = False
        self.ends_at = -1.0  # set when the response is all written
        self.idle_until = 0.0
        self.last_buffered = transport.get_write_buffer_size()
        self.stalled_since = loop.time()
        if raw:
            transport.set_protocol(Drain(self))
        transport.write_eof()  # after what is buffered: the FIN follows the response
        transport.resume_reading()
        self.timer = loop.call_soon(self._check)

    def data(self, n: int) -> None:
        """`n` bytes came from the client: dropped."""
        self.bytes += n
        if self.bytes > LINGER_BYTES:
            self.end()
            return
        self.idle_until = self.loop.time() + LINGER_IDLE

    def _check(self) -> None:
        if self.done:
            return
        now = self.loop.time()
        buffered = self.transport.get_write_buffer_size()
        if self.ends_at < 0:  # the response is still being written
            if buffered:
                if buffered < self.last_buffered:
                    self.stalled_since = now
                self.last_buffered = buffered
                if now - self.stalled_since > self.write_stall:
                    self.end()
                    return
                self.timer = self.loop.call_later(LINGER_IDLE, self._check)
                return
            self.ends_at = now + self.linger
            self.idle_until = now + LINGER_IDLE
        if now >= self.ends_at or now >= self.idle_until:
            self.end()
            return
        self.timer = self.loop.call_at(min(self.ends_at, self.idle_until), self._check)

    def end(self, client_closed: bool = False) -> None:
        """Close now: the client closed (what is still buffered for it is written
        first), or a bound passed, or a stop (aborted: close() would wait for a
        client that does not read)."""
        if self.done:
            return
        self.done = True
        self.timer.cancel()
        if client_closed:
            self.transport.close()
        else:
            self.transport.abort()
        self.on_done()
