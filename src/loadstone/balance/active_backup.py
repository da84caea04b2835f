"""Active-backup: exactly one server takes all new sessions.

Made for the Galera writer (DESIGN.md, "Galera writer policy"): writing to two
nodes at once invites certification conflicts and deadlocks, so one node is the
writer and keeps the role while it stays usable. There is no failback: when an
earlier server returns, the current one stays active, because moving the writer
under load was a known source of deadlocks and errors in HAProxy deployments.

The choice is made in refresh(), not lazily in pick(), so that it is a function
of the state history alone (two instances that saw the same history agree) and
so that the status API shows the server traffic will go to, before any goes.

A fresh start must pick the first eligible server in order, not the first one
to pass a check. With a Galera check, servers start down and unchecked (Pool);
their first checks are staggered and take different times, so had db2's check
answered before db1's, db2 would be chosen and, with no failback, kept, while
another instance that heard db1 first would write to db1. So a server is chosen
only once every server before it in order has had a first verdict: while an
earlier server is down and unchecked there is no active server yet, and new
sessions are refused for that moment. The wait needs no timer of its own: a
first check ends within the check timeout of its start (a timeout is a
verdict), and first checks start within ~1 s of start-up (the scheduler's
stagger). Servers that start up and unchecked (other check types: HAProxy's
init-state) are usable, so they are chosen at once, as before.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence

from loadstone.balance.base import Balancer
from loadstone.server_state import ServerRuntime


class ActiveBackup(Balancer):
    name = "active-backup"

    def __init__(self, servers: Sequence[ServerRuntime]) -> None:
        self._active: ServerRuntime | None = None  # before super(): its __init__ refreshes
        self._waiting = False  # no active server because an earlier one is unchecked
        # The active server as a choice, for the peers' agreement
        # (loadstone.peers.agreement): `chosen_at` is the wall-clock time of
        # the failover that chose it, 0.0 for a fresh pick (made with no usable
        # writer before it: at start, or after every server was down), and
        # `since` when the choice was made. Both are a peer's when adopted.
        self.chosen_at = 0.0
        self.since = 0.0
        # Non-backup servers first, each group in configuration order (sorted is stable).
        self._in_order = tuple(sorted(servers, key=lambda s: s.backup))
        super().__init__(servers)

    def rebuild(self) -> None:
        current = self._active
        if current is not None and current.usable:
            return
        self._active = None
        self._waiting = False
        # The first usable server, non-backup servers first, each group in
        # configuration order (the head of `candidates`); weight plays no part.
        # A server that is down only because its first check has not answered
        # yet stops the search: it may be the first eligible one (docstring).
        for server in self._in_order:
            if server.usable:
                self._active = server
                self.since = time.time()
                # A failover only if it replaces a writer that was in use: an
                # instance that saw every server down (cut off from its site)
                # and picks the first to come back saw no failure of the
                # group's writer, and must not move the group (agreement.py).
                self.chosen_at = self.since if current is not None else 0.0
                return
            if _unchecked(server):
                self._waiting = True
                return

    @property
    def awaiting_checks(self) -> bool:
        return self._waiting

    def restore_active(self, name: str | None) -> ServerRuntime | None:
        """Carry the active server over a reload; returns the active server.

        The runtime builds a new pool on SIGHUP and passes the name of the old
        pool's active server. It becomes active if it still exists and is
        usable; otherwise (or with None) the usual rule applies.
        """
        for server in self.servers:
            if server.name == name and server.usable:
                self._active = server
                self._waiting = False
                return server
        self.rebuild()
        return self._active

    def adopt(self, name: str, chosen_at: float, since: float) -> bool:
        """Make `name` the active server, as a peer's choice (`chosen_at`,
        `since`: loadstone.peers); False if it is not usable here."""
        for server in self.servers:
            if server.name == name and server.usable:
                self._active = server
                self._waiting = False
                self.chosen_at, self.since = chosen_at, since
                return True
        return False

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


def _unchecked(server: ServerRuntime) -> bool:
    """Down only because no check has answered yet, and usable if one passes."""
    return not server.healthy and server.check_status == "unchecked" and server.admin == "ready"
