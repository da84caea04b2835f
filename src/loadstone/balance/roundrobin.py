"""Smooth weighted round-robin, nginx's algorithm.

Each pick adds every candidate's weight to its running `current` value, takes
the candidate with the largest `current` and subtracts the total weight from it.
Over any window of `sum(weights)` picks each server gets exactly its weight, and
the picks of a heavy server are spread out instead of coming in a burst: weights
5, 1, 1 give a a b a c a a, not a a a a a b c. A burst would hand a freshly
(re)started server all the new connections of a reconnect storm at once.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from loadstone.balance.base import Balancer, as_container
from loadstone.server_state import ServerRuntime


class SmoothWeighted:
    """The round-robin state machine, shared with `source` for its IP-less fallback."""

    __slots__ = ("current", "eligible")

    def __init__(self) -> None:
        # (server, weight) of the candidates with weight > 0, in configuration
        # order so that ties go to the earlier server, as in nginx. The weight is
        # copied here because it only changes through Pool.set_weight, which
        # refreshes; the hot path then reads a local instead of an attribute.
        self.eligible: tuple[tuple[ServerRuntime, int], ...] = ()
        # Running value per server index. Kept across updates for the servers
        # that stay, so a refresh caused by an unrelated server (a health flip
        # elsewhere, a drain) does not restart the sequence and skew it.
        self.current: dict[int, int] = {}

    def update(self, candidates: Sequence[ServerRuntime]) -> None:
        self.eligible = tuple((s, s.weight) for s in candidates if s.weight > 0)
        # A server that left starts afresh at 0 when it comes back: a value it
        # carried through a long absence would mean nothing by then.
        self.current = {s.index: self.current.get(s.index, 0) for s, _ in self.eligible}

    def pick(self, exclude: Iterable[ServerRuntime]) -> ServerRuntime | None:
        current = self.current
        best: ServerRuntime | None = None
        best_value = 0
        total = 0
        # Redispatch: excluded servers sit this round out entirely (no weight
        # added), as nginx skips the peers already tried for a request.
        excluded = as_container(exclude) if exclude else ()
        for server, weight in self.eligible:
            if excluded and server in excluded:
                continue
            value = current[server.index] + weight
            current[server.index] = value
            total += weight
            if best is None or value > best_value:
                best, best_value = server, value
        if best is None:
            # Every candidate excluded: this pass changed nothing, so pick as if
            # none were (see Balancer.pick).
            return self.pick(()) if excluded else None
        current[best.index] = best_value - total
        return best


class RoundRobin(Balancer):
    name = "roundrobin"

    def __init__(self, servers: Sequence[ServerRuntime]) -> None:
        self._wrr = SmoothWeighted()  # before super(): its __init__ refreshes
        super().__init__(servers)

    def rebuild(self) -> None:
        self._wrr.update(self.candidates)

    def pick(
        self, client_ip: str | None, exclude: Iterable[ServerRuntime] = ()
    ) -> ServerRuntime | None:
        return self._wrr.pick(exclude)
