"""Runtime state of servers and pools: what checks write and balancers read.

A server has two independent halves of state, as in HAProxy:
- health, written by its checker (up/down, with the last check's status and detail);
- admin state, written by the operator (ready, drain, maint).
The state shown to the world is derived from both (`ServerRuntime.state`).

Data flows one way: checkers and the admin API call `Pool.set_*`; the pool
updates the server, refreshes its balancer and tells its subscribers (the data
path, the session killer for `on_marked_down: shutdown-sessions`, metrics). The
data path only reads `Pool.pick()` and the server counters it owns.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Literal, Protocol

from loadstone.config.model import Address, ListenerConfig, ServerConfig

if TYPE_CHECKING:
    from loadstone.balance.base import Balancer

log = logging.getLogger("loadstone.server")

AdminState = Literal["ready", "drain", "maint"]
CheckStatus = Literal["ok", "failed", "unchecked", "disabled"]


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


ChangeCallback = Callable[["Pool", ServerRuntime | None], None]


class Pool:
    """The servers of one listener and the balancer that chooses among them."""

    def __init__(
        self,
        listener: ListenerConfig,
        balancer_factory: Callable[[list[ServerRuntime]], Balancer] | None = None,
        previous: Pool | None = None,
    ) -> None:
        """`previous`: the pool this one replaces on a reload. Its servers that
        remain (same name and address) are carried over with their state, and
        an active-backup pool keeps its active server (no failback on reload)."""
        from loadstone.balance import make_balancer

        self.listener = listener
        self.name = listener.name
        checked = listener.check is not None
        galera = listener.check is not None and listener.check.type == "galera"
        kept: dict[str, ServerRuntime] = previous.by_name if previous is not None else {}
        self.servers: list[ServerRuntime] = []
        for i, cfg in enumerate(listener.servers):
            old = kept.get(cfg.name)
            if old is not None and old.address == cfg.address and old.config.check == cfg.check:
                old.reconfigure(cfg, i)
                self.servers.append(old)
            else:
                server = ServerRuntime(cfg, i, checked and cfg.check)
                if galera and cfg.check:
                    # A Galera node takes no traffic before a check has read that
                    # it is Synced: writes sent to a joiner or a non-Primary node
                    # fail or hang, and an active-backup listener must not pick
                    # whichever node answers first (see ActiveBackup). Down and
                    # unchecked, its first passing check takes it up at once
                    # (HealthCounter).
                    server.healthy = False
                self.servers.append(server)
        # The Galera writer policy closes the sessions of a writer marked down
        # even when on_marked_down is not set: a client left on a node that is no
        # longer the writer either hangs on a dead node or keeps writing beside
        # the new writer, which is what active-backup is there to prevent.
        self.shutdown_on_down = listener.on_marked_down == "shutdown-sessions" or (
            galera and listener.balance == "active-backup"
        )
        self.by_name: dict[str, ServerRuntime] = {s.name: s for s in self.servers}
        # Servers of the previous pool that are gone: no new sessions reach them
        # (they are not candidates here); their open sessions run to their end.
        self.removed: list[ServerRuntime] = [
            s
            for s in (previous.servers if previous is not None else [])
            if self.by_name.get(s.name) is not s
        ]
        factory = balancer_factory or (lambda servers: make_balancer(listener.balance, servers))
        self.balancer: Balancer = factory(self.servers)
        restore = getattr(self.balancer, "restore_active", None)
        if previous is not None and previous.active is not None and restore is not None:
            restore(previous.active.name)
        self._subscribers: list[ChangeCallback] = []
        # Called when the data path saw a connect to a server fail: the checker
        # re-checks at once instead of waiting for its next interval.
        self.on_connect_failure: Callable[[ServerRuntime], None] | None = None

    # -- reading (data path, admin) ------------------------------------------------

    def pick(
        self, client_ip: str | None, exclude: Iterable[ServerRuntime] = ()
    ) -> ServerRuntime | None:
        return self.balancer.pick(client_ip, exclude)

    @property
    def active(self) -> ServerRuntime | None:
        """The server an active-backup pool sends to, None for other algorithms."""
        return self.balancer.active

    @property
    def sessions(self) -> int:
        return sum(s.sessions for s in self.servers)

    # -- writing (checks, admin) ---------------------------------------------------

    def subscribe(self, callback: ChangeCallback) -> None:
        self._subscribers.append(callback)

    def set_health(self, server: ServerRuntime, healthy: bool, detail: str = "") -> None:
        """A checker concluded: the server is (still) up or down."""
        changed = server.healthy != healthy
        server.healthy = healthy
        if changed:
            server.last_change = time.time()
            log.warning(
                "server %s/%s is %s%s",
                self.name,
                server.name,
                "UP" if healthy else "DOWN",
                f" ({detail})" if detail else "",
            )
            self._changed(server)
            if not healthy and self.shutdown_on_down:
                n = server.shutdown_sessions("server marked down")
                if n:
                    log.warning("closed %d session(s) of %s/%s", n, self.name, server.name)
        elif self.balancer.awaiting_checks:
            # A first verdict that leaves the health as it was (an unchecked down
            # server confirmed down) may still settle a choice that waited for it.
            self._changed(server)

    def set_admin(self, server: ServerRuntime, admin: AdminState) -> None:
        if server.admin == admin:
            return
        server.admin = admin
        server.last_change = time.time()
        self._changed(server)
        if admin == "maint":
            server.shutdown_sessions("server in maintenance")

    def set_weight(self, server: ServerRuntime, weight: int) -> None:
        """The operator's weight: it stays across reloads until the next restart."""
        server.weight_overridden = True
        if server.weight == weight:
            return
        server.weight = weight
        self._changed(server)

    def connect_failed(self, server: ServerRuntime) -> None:
        server.connect_errors += 1
        if self.on_connect_failure is not None:
            self.on_connect_failure(server)

    def _changed(self, server: ServerRuntime | None) -> None:
        self.balancer.refresh()
        for callback in self._subscribers:
            callback(self, server)
