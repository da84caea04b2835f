"""The upstream side of the pure HTTP path: server connections and their idle pool.

One `Backend` per server connection: the asyncio Protocol and the response
parser's target, as the client connection is for requests. It serves one
exchange at a time, for whichever client connection (`Downstream`) is attached
to it, and outlives requests: when a response is complete and both the server
and the request allow it, the connection waits in the `IdlePool` and the next
request to that server, from any client, reuses it.

`Backend` relays responses byte for byte, chunked framing included;
`RewritingBackend` rebuilds each head for the client (ResponsePolicy) and
re-frames the body (datapath.http_pure.framing).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import random
from typing import Final, Protocol, cast

import httptools

from loadstone.datapath.http_pure.framing import chunk, last_chunk
from loadstone.datapath.http_pure.state import Request, now
from loadstone.datapath.transport import WRITE_HIGH_WATER, WRITE_LOW_WATER
from loadstone.http.response import (
    BODY_CHUNKED,
    BODY_CLOSE,
    BODY_NONE,
    close_head,
    kept_open_head,
)
from loadstone.server import ServerRuntime

IDLE_SWEEP: Final = 1.0  # seconds between sweeps of idle server connections
MAX_IDLE_PER_SERVER: Final = 1024

HttpParserError = httptools.HttpParserError
HttpParserUpgrade = httptools.HttpParserUpgrade


class Downstream(Protocol):
    """The client side of an exchange, as its server connection reports to it
    (datapath.http_pure.exchange)."""

    req: Request | None  # the request being answered
    http11: bool  # the client speaks HTTP/1.1 (interim responses reach it)
    status: int
    t_response: float
    keep_client: bool  # the client connection stays after this response
    backend_reusable: bool  # the server connection may serve another request

    def server_progress(self) -> None:
        """The server sent something: its timeout starts again."""

    def response_head(
        self, backend: Backend, status: int, headers: list[tuple[bytes, bytes]]
    ) -> tuple[bytes, int, bool]:
        """The head for the client, how its body is framed, and keep-alive."""

    def interim_head(self, status: int, headers: list[tuple[bytes, bytes]]) -> bytes:
        """A 1xx head for the client."""

    def keeps_connection(self) -> bool:
        """Will the client connection stay open after the response in flight?"""

    def send(self, out: list[bytes]) -> None: ...

    def send_bytes(self, data: bytes) -> None: ...

    def response_done(self, backend: Backend) -> None: ...

    def response_failed(self, backend: Backend, why: str) -> None: ...

    def backend_lost(self, backend: Backend, exc: Exception | None) -> None: ...

    def start_tunnel(self) -> None: ...

    def tunnel_data_from_server(self, data: bytes) -> None: ...

    def pause_client_reading(self) -> None: ...

    def resume_client_reading(self) -> None: ...


class HeadOnly(Exception):
    """Raised from the response parser's head callback when no body may follow
    (HEAD request): httptools cannot be told to skip a body, so parsing stops."""


class Backend(asyncio.Protocol):
    """One connection to a server, relaying responses byte for byte.

    This is the class used when nothing needs to change in response heads (no
    response rules, Location rewriting or cookie insertion): llhttp then only
    tracks where each response ends (two callbacks per response), and every
    read from the server is written to the client as it is, chunked framing
    included, in one write. `RewritingBackend` rebuilds heads instead.
    """

    __slots__ = (
        "body_mode",
        "client",
        "done",
        "first",
        "head_only",
        "head_sent",
        "idle_since",
        "interim",
        "keep_alive",
        "max_requests",
        "parser",
        "pool",
        "reading_paused",
        "requests",
        "server",
        "transport",
        "tunnel",
    )

    raw = True  # responses go to the client as received

    def __init__(self, pool: IdlePool, server: ServerRuntime) -> None:
        self.pool = pool  # where the connection waits between requests
        self.server = server
        self.transport: asyncio.Transport | None = None
        self.client: Downstream | None = None
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
        # its own limit, drawn now: see IdlePool.max_requests
        top = pool.max_requests
        self.max_requests = random.randint((top + 1) // 2, top)
        self.idle_since = 0.0
        self.reading_paused = False  # by a client that reads slower than we receive

    def reset(self, client: Downstream, head_only: bool) -> None:
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
            self.pool.drop(self)
            return
        if self.tunnel:
            client.tunnel_data_from_server(data)
            return
        client.server_progress()
        self._response_data(client, data)

    def _response_data(self, client: Downstream, data: bytes) -> None:
        """Bytes of a response: parsed (where it ends), relayed as they came."""
        try:
            self.parser.feed_data(data)
        except HttpParserUpgrade:
            if not self.head_sent:
                client.response_failed(self, "invalid upgrade response")
                return
            self.tunnel = True  # the 101 and what follows go as they came
            client.send_bytes(data)
            client.start_tunnel()
            return
        except HttpParserError as exc:
            if isinstance(exc.__context__, HeadOnly):
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
            if self.head_sent:
                data = self._head_for_client(client, data)
        client.send_bytes(data)
        if self.done:
            client.response_done(self)

    def _head_for_client(self, client: Downstream, data: bytes) -> bytes:
        """The first read of a response, its head made to say what happens to the
        client connection, which the server's closing does not decide."""
        if self.keep_alive:
            return data if client.keeps_connection() else close_head(data)
        if client.keeps_connection():
            bodiless = self.head_only or client.status in (204, 304)
            kept = kept_open_head(data, not client.http11, bodiless)
            if kept is not None:
                return kept
        client.keep_client = False  # the server's close reaches the client
        return data

    def _head_only_done(self, client: Downstream, data: bytes) -> None:
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
            self.pool.drop(self)
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
        if not 100 <= status <= 599:  # RFC 9110 15: a 0xx would pass for interim
            raise HttpParserError(f"status {status} is not a status code")
        if status < 200 and status != 101:
            self.interim = True  # 100 Continue, 103 Early Hints: passed on as they are
            return
        client = self.client
        assert client is not None
        self.keep_alive = parser.should_keep_alive()
        self.head_sent = True
        client.status = status
        client.t_response = now()
        if status == 101 and (client.req is None or not client.req.upgrade):
            raise HttpParserError("101 to a request that did not ask to upgrade")
        if not self.keep_alive and not self.first:
            # The head came in more than one read: it went on unchanged, its
            # close with it (_head_for_client decides when it is all in one).
            client.keep_client = False
        if self.head_only:
            raise HeadOnly

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


class RewritingBackend(Backend):
    """A server connection whose response heads are rebuilt for the client
    (`ResponsePolicy`): hop-by-hop fields, Location, rules, the persistence cookie.
    The body is re-framed from what llhttp decoded."""

    __slots__ = ("headers", "out", "rechunk", "trailers")

    raw = False

    def __init__(self, pool: IdlePool, server: ServerRuntime) -> None:
        self.out: list[bytes] = []
        self.headers: list[tuple[bytes, bytes]] = []
        self.trailers: list[tuple[bytes, bytes]] | None = None
        self.rechunk = False
        super().__init__(pool, server)

    def reset(self, client: Downstream, head_only: bool) -> None:
        super().reset(client, head_only)
        self.headers = []
        self.trailers = None
        self.rechunk = False

    def _response_data(self, client: Downstream, data: bytes) -> None:
        """Bytes of a response: parsed, its head rebuilt and its body re-framed."""
        out = self.out
        try:
            self.parser.feed_data(data)
        except HttpParserUpgrade as exc:
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
        except HttpParserError as exc:
            if isinstance(exc.__context__, HeadOnly):
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
        if not 100 <= status <= 599:  # RFC 9110 15: a 0xx would pass for interim
            raise HttpParserError(f"status {status} is not a status code")
        if 100 <= status < 200 and status != 101:
            # Interim (100 Continue, 103 Early Hints): passed on to HTTP/1.1
            # clients; the final response follows on the same parser.
            self.interim = True
            if client.http11:
                self.out.append(client.interim_head(status, self.headers))
            self.headers = []
            return
        self.keep_alive = self.parser.should_keep_alive()
        head, body, _ = client.response_head(self, status, self.headers)
        self.head_sent = True
        self.body_mode = body
        self.rechunk = body == BODY_CHUNKED and client.http11
        self.out.append(head)
        if self.head_only:
            raise HeadOnly

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


class IdlePool:
    """Server connections waiting between requests, by server, newest last.

    The one idle longest is taken first: every idle connection takes its turn, so
    the requests spread over the workers of a multi-worker server (uwsgi, nginx)
    as the connections do, instead of piling on the most recently used ones.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.idle: dict[ServerRuntime, collections.deque[Backend]] = {}
        self.sweeper: asyncio.TimerHandle | None = None
        self.keep_alive = 0.0  # timeouts.http_keep_alive: how long one may wait
        # server_max_requests: the most one connection serves before it is closed
        # instead of pooled again. Behind one server with several workers on one
        # port, the kernel gives a new connection to whichever worker waits in
        # accept then, so connections opened in a burst at start all land on one
        # worker and would stay there; renewed while the server is busy, they land
        # on the worker with time to spare. Each connection draws its own limit
        # when it opens (Backend.max_requests), uniform in [ceil(max/2), max]: with
        # one limit for all, the connections, taken in turn, would reach it
        # together and be renewed in one burst, all landing on the one worker
        # waiting then; drawn apart, the renewals spread in time and each new
        # connection lands on whichever worker is free at its moment. The native
        # path does the same (http_pool.c).
        self.max_requests = 1000
        self.closing = False  # the listener stops: no connection waits any more

    def take(self, server: ServerRuntime) -> Backend | None:
        """An idle connection to `server` still open, if there is one."""
        idle = self.idle.get(server)
        while idle:
            backend = idle.popleft()
            if backend.transport is not None and not backend.transport.is_closing():
                return backend
        return None

    def count(self) -> int:
        return sum(len(v) for v in self.idle.values())

    def servers(self) -> list[ServerRuntime]:
        return list(self.idle)

    def release(self, backend: Backend) -> None:
        """A server connection that finished a response cleanly: keep it for reuse."""
        if self.closing:
            if backend.transport is not None:
                backend.transport.close()
            return
        idle = self.idle.get(backend.server)
        if idle is None:
            idle = self.idle[backend.server] = collections.deque()
        if (
            len(idle) >= MAX_IDLE_PER_SERVER
            or backend.requests >= backend.max_requests
            or backend.requests >= self.max_requests  # lowered by a reload
            or not backend.server.usable
        ):
            if backend.transport is not None:
                backend.transport.close()
            return
        backend.idle_since = self.loop.time()
        idle.append(backend)
        if backend.reading_paused and backend.transport is not None:
            backend.reading_paused = False
            backend.transport.resume_reading()  # paused by a slow client
        if self.sweeper is None:
            self.sweeper = self.loop.call_later(IDLE_SWEEP, self._sweep)

    def drop(self, backend: Backend) -> None:
        """An idle server connection closed or misbehaved: forget it."""
        idle = self.idle.get(backend.server)
        if idle is not None:
            with contextlib.suppress(ValueError):
                idle.remove(backend)
        if backend.transport is not None:
            backend.transport.close()

    def close_server(self, server: ServerRuntime) -> None:
        for backend in self.idle.pop(server, []):
            if backend.transport is not None:
                backend.transport.close()

    def _sweep(self) -> None:
        # Server connections idle for longer than http_keep_alive are closed, before
        # the server closes them itself (the race that makes a reused connection
        # fail just as a request is sent).
        self.sweeper = None
        limit = self.loop.time() - self.keep_alive
        remaining = False
        for server, idle in list(self.idle.items()):
            while idle and idle[0].idle_since < limit:
                backend = idle.popleft()
                if backend.transport is not None:
                    backend.transport.close()
            if idle:
                remaining = True
            else:
                del self.idle[server]
        if remaining:
            self.sweeper = self.loop.call_later(IDLE_SWEEP, self._sweep)

    def close_all(self) -> None:
        for server in list(self.idle):
            self.close_server(server)
        if self.sweeper is not None:
            self.sweeper.cancel()
            self.sweeper = None
