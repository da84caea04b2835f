"""Source-IP affinity by consistent hashing (Horizon, consoles, federation).

Each server of the candidate group with weight > 0 owns points on a 64-bit ring,
in proportion to its weight; a client IP hashes to a position on the ring and
goes to the owner of the first point clockwise from it whose server is usable.
The ring is built over the whole group, down servers included, and a lookup
just steps over their points. So when a server goes down only its own clients
move (each to the next usable point, spread over the other servers), and when it
comes back exactly those clients return to it. A modulo hash over the usable
servers would reshuffle almost every client on any health flip, logging users out
of every Horizon session at once.

The hash is blake2b, not hash(): Python salts str hashes per process, and two
loadstone instances behind one VIP (or one instance before and after a restart)
must send a client to the same server.
"""

from __future__ import annotations

import hashlib
from bisect import bisect_left
from collections.abc import Iterable, Sequence
from math import gcd
from operator import itemgetter

from loadstone.balance.base import Balancer, as_container
from loadstone.balance.roundrobin import SmoothWeighted
from loadstone.server_state import ServerRuntime

# Points per unit of weight. A server's share of the ring is the sum of its arcs,
# whose relative spread shrinks as 1/sqrt(points). Measured over farms of 2 to 12
# servers named ctl1.., db1.., a.., the worst server's share was off its fair
# share by 21% with ketama's 160 points, 13% with 320 and 9% with 1000, so 1000
# it is; a ring of 10 servers is then 10k points, built in about 20 ms, and only
# when weights change. Weights are first divided by their greatest common
# divisor, so 100/100/100 costs what 1/1/1 does.
POINTS_PER_WEIGHT = 1000
# Cap on the ring size for large weight mixes (say 255 and 256): beyond it the
# points per unit shrink, so that a rebuild (on the event loop, after an admin
# weight change) stays well under 100 ms and the ring a few MB at most.
MAX_POINTS = 1 << 15

_MAPPED_V4 = "::ffff:"


def _position(key: str) -> int:
    return int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "big")


class _Ring:
    __slots__ = ("owners", "positions", "signature")

    def __init__(self, group: Sequence[ServerRuntime]) -> None:
        weighted = [(s, s.weight) for s in group if s.weight > 0]
        # Only weights can change for a given group (the servers are fixed for
        # the balancer's life); membership and health do not enter the ring.
        self.signature = tuple((s.index, w) for s, w in weighted)
        divisor = 0
        for _, w in weighted:
            divisor = gcd(divisor, w)
        units = sum(w // divisor for _, w in weighted) if weighted else 0
        per_unit = POINTS_PER_WEIGHT
        if units * per_unit > MAX_POINTS:
            per_unit = max(1, MAX_POINTS // units)
        points: list[tuple[int, str, ServerRuntime]] = []
        for s, w in weighted:
            # Keyed by name, not position or address: names are unique in a
            # listener and survive inserting a server earlier in the list or
            # renumbering one, so those changes do not remap unrelated clients.
            # Point k of a server does not depend on its weight, so raising a
            # weight adds points and moves clients only to that server (as long
            # as the common divisor and the cap stay as they were).
            points.extend(
                (_position(f"{s.name}#{k}"), s.name, s) for k in range(w // divisor * per_unit)
            )
        # The name breaks (astronomically unlikely) position ties the same way in
        # every instance.
        points.sort(key=itemgetter(0, 1))
        self.positions = [p[0] for p in points]
        self.owners = [p[2] for p in points]


class SourceHash(Balancer):
    name = "source"

    def __init__(self, servers: Sequence[ServerRuntime]) -> None:
        # One ring per group (non-backup, backup), kept while its weights stay:
        # a health flip, the common event, only changes `_live`.
        self._rings: dict[bool, _Ring] = {}
        self._ring: _Ring | None = None
        self._live: frozenset[ServerRuntime] = frozenset()
        # Sessions without a client address (a UNIX socket listener) cannot be
        # hashed; they are spread by weight instead.
        self._wrr = SmoothWeighted()
        super().__init__(servers)

    def rebuild(self) -> None:
        self._wrr.update(self.candidates)
        self._live = frozenset(s for s in self.candidates if s.weight > 0)
        if not self._live:
            self._ring = None
            return
        backup = self.candidates[0].backup  # candidates are all of one group
        group = [s for s in self.servers if s.backup == backup]
        ring = self._rings.get(backup)
        signature = tuple((s.index, s.weight) for s in group if s.weight > 0)
        if ring is None or ring.signature != signature:
            ring = self._rings[backup] = _Ring(group)
        self._ring = ring

    @property
    def ring(self) -> _Ring | None:
        """The ring lookups walk now (None: no candidate); the native data path
        publishes it to its workers instead of building its own."""
        return self._ring

    def pick(
        self, client_ip: str | None, exclude: Iterable[ServerRuntime] = ()
    ) -> ServerRuntime | None:
        if client_ip is None:
            return self._wrr.pick(exclude)
        ring = self._ring
        if ring is None:
            return None
        live = self._live
        excluded = as_container(exclude) if exclude else ()
        if excluded and all(s in excluded for s in live):
            # Every candidate excluded: the client's own server again, as if none
            # were (see Balancer.pick); the walk below would find nothing.
            excluded = ()
        # A dual-stack listener sees IPv4 clients as ::ffff:a.b.c.d; hash them as
        # a.b.c.d so that they map as on an IPv4 listener or another instance.
        if client_ip.startswith(_MAPPED_V4) and "." in client_ip:
            client_ip = client_ip[len(_MAPPED_V4) :]
        positions = ring.positions
        owners = ring.owners
        n = len(positions)
        at = bisect_left(positions, _position(client_ip))
        for _ in range(n):
            if at == n:
                at = 0
            server = owners[at]
            if server in live and not (excluded and server in excluded):
                return server
            at += 1
        return None  # not reached: a live, non-excluded server owns points
