"""SNI passthrough on the pure tcp path: pick a pool by the ClientHello's server
name, then relay the client's TLS untouched (listeners.NAME.sni_passthrough).

A session of such a listener, once admitted, does not connect at once: it feeds
what the client sends to a `ClientHelloInspection` (which keeps nothing but the
parser's state; the bytes stay in the session's pending buffer, to be written
to the server unchanged). When the ClientHello is whole, `SniPools.route`
names the pool and the session connects as any tcp session does. Bytes that
cannot be a ClientHello end the session at once; a ClientHello that is not
whole by `inspect_timeout` (truncated, slow, or a client that sends nothing)
ends it then. Both are counted by reason in the listener's status.

The native engine has the same state in its workers (engine/sni.c, with the
C twin of the ClientHello reader, engine/clienthello.c; datapath/sni_native.py
is its control plane), up to MAX_NATIVE_POOLS pools: `native_refusal` sends a
listener with more to the pure path, which says so in its data_path_reason.
"""

from __future__ import annotations

from collections import Counter

from loadstone.config.model import ListenerConfig, SniPassthrough
from loadstone.datapath.http_pure.frontend import RoutePool
from loadstone.server import Pool, ServerRuntime
from loadstone.tls.clienthello import ClientHello, version_name

# The engine numbers a listener's pools (LS_SNI_MAX_POOLS in includes/sni.h).
MAX_NATIVE_POOLS = 64
INSPECT_TIMEOUT_REASON = "sni-inspect-timeout"


def native_refusal(config: ListenerConfig) -> str | None:
    """Why the native tcp path does not serve this listener, or None when it may."""
    if config.sni_passthrough is None:
        return None
    pools = {"default", *(p.name for p in config.pools), *(s.pool for s in config.servers)}
    if len(pools) > MAX_NATIVE_POOLS:
        return f"SNI passthrough with more than {MAX_NATIVE_POOLS} pools (native data path)"
    return None


def _grease(version: int) -> bool:
    # RFC 8701: 0x0a0a, 0x1a1a, ... 0xfafa are sent to keep servers tolerant; never real.
    return version & 0x0F0F == 0x0A0A and version >> 8 == version & 0xFF


def log_field(hello: ClientHello) -> str:
    """The session log's tls field of a passed-through connection: the newest
    version offered, no cipher (the proxy never sees the one chosen), the SNI."""
    offered = [v for v in hello.versions if not _grease(v)]
    version = version_name(max(offered)) if offered else "-"
    return f"{version}/passthrough/{hello.server_name or '-'}"


class SniCounts:
    """A passthrough listener's counters, kept across reloads (status API)."""

    __slots__ = ("refused", "routed")

    def __init__(self) -> None:
        self.routed: Counter[str] = Counter()  # connections by pool
        self.refused: Counter[str] = Counter()  # connections ended before routing, by reason


class SniPools:
    """The pools of one passthrough listener and the routes between them; the
    servers are the listener Pool's objects, so health and counters are shared."""

    __slots__ = ("counts", "default", "exact", "pools", "suffixes")

    def __init__(self, config: ListenerConfig, pool: Pool, counts: SniCounts) -> None:
        passthrough = config.sni_passthrough
        assert passthrough is not None
        groups: dict[str, list[ServerRuntime]] = {}
        for server in pool.servers:
            groups.setdefault(server.config.pool, []).append(server)
        balances = {p.name: p.balance for p in config.pools}
        names = {"default", *balances, *groups}
        self.pools = {
            name: RoutePool(name, groups.get(name, []), balances.get(name, config.balance))
            for name in names
        }
        self.default = self.pools[passthrough.default_pool]
        self.exact, self.suffixes = _compile(passthrough)
        self.counts = counts
        pool.subscribe(self._pool_changed)

    def _pool_changed(self, pool: Pool, server: ServerRuntime | None) -> None:
        for route in self.pools.values():
            route.balancer.refresh()

    def route(self, server_name: str | None) -> RoutePool:
        """The pool of a ClientHello's server name (None: the client sent no SNI)."""
        chosen = self.default
        if server_name is not None:
            name = self.exact.get(server_name)
            if name is None:
                name = next((p for s, p in self.suffixes if server_name.endswith(s)), None)
            if name is not None:
                chosen = self.pools[name]
        self.counts.routed[chosen.name] += 1
        return chosen

    def status(self) -> dict[str, object]:
        return {
            "routed": dict(self.counts.routed),
            "refused": dict(self.counts.refused),
            "pools": {name: [s.name for s in p.servers] for name, p in self.pools.items()},
        }


def _compile(passthrough: SniPassthrough) -> tuple[dict[str, str], tuple[tuple[str, str], ...]]:
    """Exact names to pools, and wildcard suffixes (".example.com") to pools in
    the order written. An exact name wins over a wildcard; among routes naming
    the same exact name, the first written wins (as the first route matching)."""
    exact: dict[str, str] = {}
    suffixes: list[tuple[str, str]] = []
    for route in passthrough.routes:
        for name in route.names:
            if name.startswith("*."):
                suffixes.append((name[1:], route.pool))
            else:
                exact.setdefault(name, route.pool)
    return exact, tuple(suffixes)
