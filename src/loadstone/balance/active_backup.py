"""Active-backup: exactly one server takes all new sessions.

Made for the Galera writer (DESIGN.md, "Galera writer policy"): writing to two
nodes at once invites certification conflicts and deadlocks, so one node is the
writer and keeps the role while it stays usable. There is no failback: when an
earlier server returns, the current one stays active, because moving the writer
under load was a known source of deadlocks and errors in HAProxy deployments.

The choice is made in refresh(), not lazily in pick(), so that it is a function
of the state history alone (two instances that saw the same history agree) and
so that the status API shows the server traffic will go to, before any goes.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from loadstone.balance.base import Balancer
from loadstone.server import ServerRuntime


class ActiveBackup(Balancer):
    name = "active-backup"

    def __init__(self, servers: Sequence[ServerRuntime]) -> None:
        self._active: ServerRuntime | None = None  # before super(): its __init__ refreshes
        super().__init__(servers)

    def rebuild(self) -> None:
        current = self._active
        if current is not None and current.usable:
            return
        # `candidates` is the usable non-backup servers in configuration order,
        # or the usable backup servers when there is none, so its head is the
        # first usable server with non-backup servers first. Weight plays no part.
        self._active = self.candidates[0] if self.candidates else None

    def restore_active(self, name: str | None) -> ServerRuntime | None:
        """Carry the active server over a reload; returns the active server.

        The runtime builds a new pool on SIGHUP and passes the name of the old
        pool's active server. It becomes active if it still exists and is
        usable; otherwise (or with None) the usual rule applies.
        """
        for server in self.servers:
            if server.name == name and server.usable:
                self._active = server
                return server
        self.rebuild()
        return self._active

    def pick(
        self, client_ip: str | None, exclude: Iterable[ServerRuntime] = ()
    ) -> ServerRuntime | None:
        # `exclude` is ignored on purpose: redispatching a failed connect to
        # another server would make a second writer. A retry goes to the active
        # server again; if it is really dead its checker marks it down and the
        # refresh moves the role.
        return self._active

    @property
    def active(self) -> ServerRuntime | None:
        return self._active
