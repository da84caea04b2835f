"""Least connections: the server with the fewest live sessions for its weight.

Suited to long-lived or uneven sessions (slow API calls, WebSocket consoles),
where round-robin would keep feeding a server that is still busy.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from loadstone.balance.base import Balancer, as_container
from loadstone.server_state import ServerRuntime


class LeastConn(Balancer):
    name = "leastconn"

    def __init__(self, servers: Sequence[ServerRuntime]) -> None:
        self._eligible: tuple[tuple[ServerRuntime, int], ...] = ()
        # Where the next scan starts: one past the last server picked. Scanning
        # from there and keeping the first strictly-better server makes equal
        # servers take turns; always scanning from 0 would pile every burst of
        # connections (picked before any of them registered a session) on the
        # first server.
        self._next = 0
        super().__init__(servers)

    def rebuild(self) -> None:
        # Weight 0 means "no new sessions" for weighted algorithms.
        self._eligible = tuple((s, s.weight) for s in self.candidates if s.weight > 0)
        if self._next >= len(self._eligible):
            self._next = 0

    def pick(
        self, client_ip: str | None, exclude: Iterable[ServerRuntime] = ()
    ) -> ServerRuntime | None:
        eligible = self._eligible
        n = len(eligible)
        excluded = as_container(exclude) if exclude else ()
        best: ServerRuntime | None = None
        best_load = 0
        best_weight = 1
        best_at = 0
        at = self._next
        for _ in range(n):
            server, weight = eligible[at]
            if not (excluded and server in excluded):
                # Compare (sessions + 1) / weight, the load the server would have
                # with this session, by cross-multiplying to stay in integers.
                # The +1 makes an idle heavy server beat an idle light one, so
                # weights count from the first connection instead of only once
                # every server already holds sessions.
                load = server.sessions + 1
                if best is None or load * best_weight < best_load * weight:
                    best, best_load, best_weight, best_at = server, load, weight, at
            at = at + 1 if at + 1 < n else 0
        if best is None:
            # Every candidate excluded: retry one as if none were (see Balancer.pick).
            return self.pick(client_ip) if excluded else None
        self._next = best_at + 1 if best_at + 1 < n else 0
        return best
