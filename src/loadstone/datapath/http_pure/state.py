"""What the parts of the pure HTTP path share: the client connection's states,
what its timer is for, and a parsed request.

The names follow the C engine's (src/_fastpath/includes/engine.c, http_engine.c),
so that the two HTTP paths read alike: ST_QUEUED, ST_HTTP, ST_RELAY, ST_CLOSED
for a client connection, T_HEAD, T_IDLE, T_CLIENT, T_SERVER for its timer.
"""

from __future__ import annotations

import enum
import time
from typing import Final

from loadstone.http.request import BadRequest
from loadstone.http.request_rules import Verdict

PENDING_LIMIT: Final = 256 * 1024  # request body kept while connecting / pipelined

# Request timings: the loop's clock is only millisecond-grained under uvloop.
now = time.monotonic


class State(enum.Enum):
    """A client connection's state (the C engine's names).

    QUEUED --(slot free)--> HTTP --(101 Switching Protocols)--> RELAY
      |                      |  ^                                 |
      +--(queue timeout)-----+--+ one request after another       |
                             v    (pipelined ones wait, parsed)   v
                           CLOSED <-------------------------------+
    """

    QUEUED = "queued"  # over maxconn: held, not read, until a slot frees
    HTTP = "http"  # admitted: reading requests, one exchange in flight at a time
    RELAY = "relay"  # after an Upgrade: bytes pass both ways untouched (a tunnel)
    CLOSED = "closed"


# Typed State, not the member's literal: mypy would otherwise take a state tested
# once as fixed for the rest of a method, though the calls in between change it.
ST_QUEUED: Final[State] = State.QUEUED
ST_HTTP: Final[State] = State.HTTP
ST_RELAY: Final[State] = State.RELAY
ST_CLOSED: Final[State] = State.CLOSED

# What the client connection's timer is for (plain ints: compared on every read).
T_HEAD: Final = 0  # waiting for (the rest of) a request head
T_IDLE: Final = 1  # keep-alive: waiting for the first byte of the next request
T_CLIENT: Final = 2  # receiving a request body
T_SERVER: Final = 3  # waiting for / receiving the response
T_TUNNEL: Final = 4  # relaying an upgraded connection


class Request:
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
        "verdict",
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
        # The proxy's own answer (request_rules: deny, redirect), given instead of forwarding.
        self.verdict: Verdict | None = None
