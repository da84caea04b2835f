"""SNI passthrough on the native data path: what the control plane gives the
engine and reads back (the engine's part is src/_fastpath/engine/sni.c).

The engine's workers read each admitted client's ClientHello with their own
reader (engine/clienthello.c, the twin of loadstone.tls.clienthello), choose a
pool by its server name and relay the bytes untouched, as the pure path does
(datapath.sni_passthrough, tcp_pure). This module:

- numbers the pools: an id per pool name for the listener's life, so that the
  engine's counts by id stay across reloads, as the pure path's SniCounts do;
- hands the engine the routes (exact names, and "*." names as suffixes, in the
  order written), the default pool and the inspect timeout;
- keeps the pure path's RoutePools (SniPools: one balancer per pool over the
  listener Pool's servers) so that the TcpFrontend can publish one server
  table per pool whenever the pool changes;
- turns the engine's counts into the status API's shape.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator

from loadstone._fastpath import relay
from loadstone.balance.base import Balancer
from loadstone.config.model import ListenerConfig
from loadstone.datapath.http_pure.frontend import RoutePool
from loadstone.datapath.sni_passthrough import SniCounts, SniPools
from loadstone.server import Pool

# (rows, ring positions, ring owners) of one table, as relay.Engine.publish takes
# them; a row: (slot, weight, maxconn or -1, address, port, PROXY version)
Table = tuple[list[tuple[int, int, int, str, int, int]], list[int], list[int]]


def end_word(reason: int, arg: int) -> str | None:
    """The session log's end of a session the engine refused before routing
    (the pure path's words), or None for any other end."""
    if reason == relay.END_SNI_REFUSED:
        return f"sni-refused ({relay.SNI_REASONS[arg]})"
    if reason == relay.END_SNI_TIMEOUT:
        return relay.SNI_REASONS[-1]
    return None


class NativeSni:
    """One native tcp listener's passthrough, across its reloads."""

    __slots__ = ("_base", "_ids", "_retired", "engine", "lid", "pools")

    def __init__(self, engine: relay.Engine, lid: int) -> None:
        self.engine = engine
        self.lid = lid
        self._ids: dict[str, int] = {}  # pool name -> the engine's pool id
        self._base: dict[int, int] = {}  # an id's count when it was given to another name
        self._retired: Counter[str] = Counter()  # counts of names whose id was reused
        self.pools: SniPools | None = None

    def configure(self, config: ListenerConfig, pool: Pool) -> None:
        """The pools of this configuration (before the pool tables are published).
        SniPools subscribes to the pool first, so its balancers are refreshed
        before the TcpFrontend republishes the tables."""
        if config.sni_passthrough is None:
            self.pools = None
            return
        self.pools = SniPools(
            config, pool, SniCounts()
        )  # its counts stay unused: the engine counts
        for name in self.pools.pools:
            self._pool_id(name)

    def tables(self, table: Callable[[str, Balancer], Table]) -> Iterator[tuple[int, str, Table]]:
        """(pool id, algorithm, table) of each pool, `table` making the rows from a balancer."""
        if self.pools is None:
            return
        for name, route in self.pools.pools.items():
            balance = route.balancer.name
            yield self._pool_id(name), balance, table(balance, route.balancer)

    def install(self, config: ListenerConfig) -> None:
        """Turn passthrough on with this configuration's routes (after the pool
        tables are published: a routed session finds its pool's), or off."""
        passthrough = config.sni_passthrough
        if passthrough is None or self.pools is None:
            self.engine.set_sni(self.lid, None, 0, [])
            return
        routes = []
        for route in passthrough.routes:
            for name in route.names:
                wildcard = name.startswith("*.")
                routes.append((name[1:] if wildcard else name, self._pool_id(route.pool), wildcard))
        self.engine.set_sni(
            self.lid, passthrough.inspect_timeout, self._pool_id(passthrough.default_pool), routes
        )

    def _pool_id(self, name: str) -> int:
        known = self._ids.get(name)
        if known is not None:
            return known
        if len(self._ids) < relay.SNI_MAX_POOLS:
            self._ids[name] = len(self._ids)
            return self._ids[name]
        # Every id is taken (names came and went over reloads): reuse one of a
        # name no longer configured, keeping the counts it had.
        assert self.pools is not None
        gone = next(n for n in self._ids if n not in self.pools.pools)
        pid = self._ids.pop(gone)
        routed = self.engine.sni_stats(self.lid)[0][pid]
        self._retired[gone] += routed - self._base.get(pid, 0)
        self._base[pid] = routed
        self._ids[name] = pid
        return pid

    def status(self) -> dict[str, object]:
        """The pure path's sni_passthrough status: routed by pool, refused by reason."""
        routed, refused = self.engine.sni_stats(self.lid)
        by_pool = Counter(self._retired)
        for name, pid in self._ids.items():
            count = routed[pid] - self._base.get(pid, 0)
            if count:
                by_pool[name] += count
        pools: dict[str, RoutePool] = self.pools.pools if self.pools is not None else {}
        return {
            "routed": dict(by_pool),
            "refused": {relay.SNI_REASONS[i]: n for i, n in enumerate(refused) if n},
            "pools": {name: [s.name for s in p.servers] for name, p in pools.items()},
        }
