"""The data-path seam: what the runtime and the admin API ask of a listener's frontend.

Four classes serve a listener, one per cell of the grid

                  pure (asyncio)                   native (C engine)
    mode tcp      datapath.tcp_pure.TcpFrontend    datapath.tcp_native.TcpFrontend
    mode http     datapath.http_pure.HttpFrontend  datapath.http_native.HttpFrontend

and the runtime holds each through `Frontend` alone, so a feature that the
control plane drives (a stop, a reload, a counter) is added once here and then
implemented in each cell, with mypy checking that none is missed. The pure pair
shares its accepting, admission and connect loop (datapath.accept,
datapath.connect); the native pair shares the engine handle (tcp_native).
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from typing import Protocol

from loadstone.config.model import ListenerConfig
from loadstone.datapath.traffic import TrafficSnapshot
from loadstone.server import Pool
from loadstone.sessionlog import SessionLog


class Frontend(Protocol):
    """One listener's data path, as the runtime (start, reload, stop) and the
    admin API (status, metrics) drive it."""

    # "pure" | "native": which implementation serves the listener (status API).
    data_path: str
    # Why an http listener is not on the native path (None when it is, or for tcp);
    # set by the runtime when it picks the class.
    data_path_reason: str | None

    # -- lifecycle -------------------------------------------------------------------

    async def start(self, sockets: list[socket.socket]) -> None:
        """Accept on these (already bound and listening) sockets too."""

    def unserve(self, sock: socket.socket) -> None:
        """Stop accepting on one socket and close it (its address left the config)."""

    def stop_accepting(self) -> None:
        """Soft stop: no new connections; open ones run on (http: idle keep-alive
        connections close now, the others after the response in flight)."""

    def end_keep_alive(self) -> None:
        """Leaving (global.stop_delay): accepting goes on, but http responses say
        Connection: close, so each client's next request opens a connection to
        wherever the VIP is by then. Idle connections stay open: closing one
        races with a request the client may be sending on it."""

    def reconfigure(self, config: ListenerConfig, pool: Pool) -> None:
        """A reload: new sessions use the new settings and pool; open ones run on."""

    async def wait_idle(self) -> None:
        """Return once no session is open or queued."""

    def shutdown_all(self, reason: str) -> None:
        """Close every session now (the end of a stop's grace)."""

    # -- counters (status API, metrics) ---------------------------------------------

    @property
    def current_sessions(self) -> int:
        """Sessions open now, queued ones included (http: client connections)."""

    @property
    def sessions_total(self) -> int:
        """Sessions accepted since start."""

    @property
    def queued_count(self) -> int:
        """Sessions waiting in the maxconn queue."""

    @property
    def bytes_in(self) -> int:
        """Client -> server bytes, of finished sessions and live ones."""

    @property
    def bytes_out(self) -> int:
        """Server -> client bytes, of finished sessions and live ones."""

    def traffic_metrics(self) -> TrafficSnapshot:
        """Request-duration and connect-time histograms, HTTP responses by code
        (listener and servers): /metrics."""

    def status_extra(self) -> dict[str, object]:
        """Keys a listener's status adds for its mode (http: request counters,
        routing pools, data_path); empty for tcp."""


# What the runtime calls to make a listener's frontend: one of the four classes.
FrontendFactory = Callable[[ListenerConfig, Pool, SessionLog], Frontend]
