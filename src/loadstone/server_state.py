"""The state of one server: what checks write, the operator sets, balancers read.

A server has two independent halves of state, as in HAProxy:
- health, written by its checker (up/down, with the last check's status and detail);
- admin state, written by the operator (ready, drain, maint).
The state shown to the world is derived from both (`ServerRuntime.state`).

This module sits below the balancers and the pool (loadstone.server): a
balancer reads servers and never sees the pool that holds it, as HAProxy's
lb_*.c work on servers for backend.c.
"""

from __future__ import annotations

import time
from typing import Literal, Protocol

from loadstone.config.model import Address, ServerConfig

AdminState = Literal["ready", "drain", "maint"]
CheckStatus = Literal["ok", "failed", "unchecked", "disabled"]

TLS_FAILURE_KINDS = 16  # distinct reasons counted per server, "other" included


class Session(Protocol):
    """What the control plane may do with a live session of the data path."""

    bytes_in: int  # client -> server, so far
    bytes_out: int  # server -> client, so far

    def shutdown(self, reason: str) -> None: ...


class NativeServers(Protocol):
    """The native data path, for the servers of its listener: it keeps their
    sessions and counters in its engine rather than in `ServerRuntime.live`."""

    def server_stats(self, server: ServerRuntime) -> tuple[int, int, int, int]:
        """(live sessions, sessions total, bytes in, bytes out)"""
        ...

    def shutdown_server(self, server: ServerRuntime, reason: str) -> int: ...


class ServerRuntime:
    """One server of one listener, with its live counters."""

    __slots__ = (
        "address",
        "admin",
        "backup",
        "bytes_in_done",
        "bytes_out_done",
        "check_detail",
        "check_duration",
        "check_status",
        "checks_failed",
        "checks_total",
        "config",
        "connect_errors",
        "connect_host",
        "healthy",
        "index",
        "last_change",
        "live",
        "maxconn",
        "name",
        "native",
        "sessions_started",
        "tls_failures",
        "weight",
        "weight_overridden",
    )

    def __init__(self, config: ServerConfig, index: int, checked: bool) -> None:
        self.config = config
        self.index = index  # position in configuration order
        self.name = config.name
        self.address: Address = config.address
        # What the data path connects to: the address's host, or the IP it resolved
        # to at start-up when it is a name (so no lookup per connection).
        self.connect_host = config.address.host
        self.backup = config.backup
        self.maxconn = config.maxconn
        self.weight = config.weight  # runtime weight; the admin API may change it
        self.weight_overridden = False  # set by the admin API: a reload keeps that weight
        self.admin: AdminState = "ready"
        # A checked server starts up but unconfirmed: its first failed check takes
        # it down at once (HAProxy's default init-state), so a dead server does not
        # wait `fall` intervals after a start.
        self.healthy = True
        self.check_status: CheckStatus = "unchecked" if checked else "disabled"
        self.check_detail = ""
        self.check_duration = 0.0
        self.checks_total = 0
        self.checks_failed = 0
        self.last_change = time.time()
        self.live: set[Session] = set()  # sessions currently relayed to this server
        self.sessions_started = 0
        # Set by the native data path: then the counters and sessions are its.
        self.native: NativeServers | None = None
        self.bytes_in_done = 0  # bytes of finished sessions
        self.bytes_out_done = 0
        self.connect_errors = 0
        # Failed TLS handshakes with the server (re-encryption), by reason: a
        # bounded set of labels (`tls_handshake_failed`), both data paths.
        self.tls_failures: dict[str, int] = {}

    @property
    def sessions(self) -> int:
        if self.native is not None:
            return self.native.server_stats(self)[0]
        return len(self.live)

    @property
    def sessions_total(self) -> int:
        if self.native is not None:
            return self.native.server_stats(self)[1]
        return self.sessions_started

    @property
    def usable(self) -> bool:
        """May take new sessions."""
        return self.healthy and self.admin == "ready"

    @property
    def state(self) -> str:
        if self.admin == "maint":
            return "maint"
        if not self.healthy:
            return "down"
        if self.admin == "drain":
            return "drain"
        return "up"

    @property
    def bytes_in(self) -> int:
        if self.native is not None:
            return self.native.server_stats(self)[2]
        return self.bytes_in_done + sum(s.bytes_in for s in self.live)

    @property
    def bytes_out(self) -> int:
        if self.native is not None:
            return self.native.server_stats(self)[3]
        return self.bytes_out_done + sum(s.bytes_out for s in self.live)

    def session_started(self, session: Session) -> None:
        self.live.add(session)
        self.sessions_started += 1

    def session_ended(self, session: Session) -> None:
        self.live.discard(session)
        self.bytes_in_done += session.bytes_in
        self.bytes_out_done += session.bytes_out

    def tls_handshake_failed(self, reason: str) -> None:
        """Count a failed TLS handshake with the server (a metrics label: past
        TLS_FAILURE_KINDS distinct reasons, the rest count as "other")."""
        failures = self.tls_failures
        if reason not in failures and len(failures) >= TLS_FAILURE_KINDS - 1:
            reason = "other"
        failures[reason] = failures.get(reason, 0) + 1

    def shutdown_sessions(self, reason: str) -> int:
        if self.native is not None:
            return self.native.shutdown_server(self, reason)
        sessions = list(self.live)
        for session in sessions:
            session.shutdown(reason)
        return len(sessions)

    def reconfigure(self, config: ServerConfig, index: int) -> None:
        """Take the settings of a reloaded configuration; keep health, admin
        state, counters, live sessions and a weight the operator set at runtime."""
        self.config = config
        self.index = index
        self.backup = config.backup
        self.maxconn = config.maxconn
        if not self.weight_overridden:
            self.weight = config.weight

    def __repr__(self) -> str:
        return f"<ServerRuntime {self.name} {self.address} {self.state}>"
