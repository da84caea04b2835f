"""Pools: the servers of one listener and the balancer that chooses among them.

Data flows one way: checkers and the admin API call `Pool.set_*`; the pool
updates the server, refreshes its balancer and tells its subscribers (the data
path, the session killer for `on_marked_down: shutdown-sessions`, metrics). The
data path only reads `Pool.pick()` and the server counters it owns.

The pool gets its balancer from the algorithms of loadstone.balance by the
listener's `balance` name (or from the factory it is given), and calls it
through the small interface of `Balancer`, as HAProxy's backend.c calls the
lb_ops of its algorithm. The balancers read servers (loadstone.server_state),
never the pool.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable

from loadstone.balance import Balancer, make_balancer
from loadstone.balance.active_backup import ActiveBackup
from loadstone.config.model import ListenerConfig
from loadstone.server_state import AdminState, CheckStatus, NativeServers, ServerRuntime, Session

log = logging.getLogger("loadstone.server")

# The server state is defined below the balancers; it is re-exported here, where
# the data path, the checks and the admin API have always found it beside Pool.
__all__ = [
    "AdminState",
    "ChangeCallback",
    "CheckStatus",
    "NativeServers",
    "Pool",
    "ServerRuntime",
    "Session",
]


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
        if previous is not None and previous.active is not None:
            self.balancer.restore_active(previous.active.name)
            # The writer's age goes along (the peers' agreement compares it).
            before, now = previous.balancer, self.balancer
            if (
                isinstance(before, ActiveBackup)
                and isinstance(now, ActiveBackup)
                and now.active is before.active
            ):
                now.chosen_at, now.since = before.chosen_at, before.since
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

    def adopt_active(self, name: str, chosen_at: float, since: float) -> bool:
        """Make `name` the active server of an active-backup pool, as a peer
        instance chose it (loadstone.peers); False if that cannot be."""
        if not isinstance(self.balancer, ActiveBackup):
            return False
        previous = self.balancer.active
        if not self.balancer.adopt(name, chosen_at, since):
            return False
        self._changed(None)  # the subscribers (native data path) learn the new writer
        if previous is not None and previous is not self.balancer.active and self.shutdown_on_down:
            # As when a writer is marked down: a client left on the old writer
            # would keep writing beside the new one.
            n = previous.shutdown_sessions("writer adopted from a peer")
            if n:
                log.warning("closed %d session(s) of %s/%s", n, self.name, previous.name)
        return True

    def connect_failed(self, server: ServerRuntime) -> None:
        server.connect_errors += 1
        if self.on_connect_failure is not None:
            self.on_connect_failure(server)

    def _changed(self, server: ServerRuntime | None) -> None:
        self.balancer.refresh()
        for callback in self._subscribers:
            callback(self, server)
