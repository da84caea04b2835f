"""The pure HTTP path's frontend: accepts on a listener's sockets and serves HTTP
with httptools (mode http, when the native path does not serve the listener).

Its parts, by lifetime (uvicorn splits a connection from its request cycle alike):

    frontend.py    the listener: policies compiled from the configuration, the
                   routing pools, the server connection pool, the batched writes
                   (HttpFrontend, in __init__.py, adds the connections' class)
    connection.py  a client connection: parser callbacks, pipelining, timers, tunnel
    exchange.py    a request in flight: routing, persistence, pick, connect,
                   response head, access-log line
    upstream.py    server connections and their idle pool
    framing.py     body framing (chunks, trailers), sans I/O
    state.py       the connection's states and timers, a parsed request

Accepting, admission at maxconn and the counters are datapath.accept's; the
connect loop (retries, redispatch, back-off) is datapath.connect's.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any, Final, Protocol

from loadstone.balance import make_balancer
from loadstone.balance.active_backup import ActiveBackup
from loadstone.datapath.accept import AcceptingFrontend, Admitted
from loadstone.datapath.http_counts import responses_by_class
from loadstone.datapath.http_pure.upstream import Backend, IdlePool, RewritingBackend
from loadstone.http.request import RequestPolicy
from loadstone.http.request_rules import RequestRules
from loadstone.http.response import ResponsePolicy
from loadstone.http.routing import Router
from loadstone.server import Pool, ServerRuntime

# Bytes of batched writes (HttpListener.queue_write) after which they are made at
# once rather than at the end of the loop iteration: a few small answers batch
# as before; a bulk read goes out before the next read is made.
FLUSH_AT: Final = 64 * 1024

if TYPE_CHECKING:
    from loadstone.balance.base import Balancer


class RoutePool:
    """The servers of one routing pool, with their own balancer; the servers are
    the listener Pool's objects, so health, admin state and counters are shared."""

    __slots__ = ("balancer", "by_cookie", "name", "servers")

    def __init__(self, name: str, servers: list[ServerRuntime], balance: str) -> None:
        self.name = name
        self.servers = servers
        self.balancer: Balancer = make_balancer(balance, servers)
        self.by_cookie = {s.config.cookie_value.encode(): s for s in servers}

    def pick(
        self, client_ip: str | None, exclude: list[ServerRuntime] | tuple[()] = ()
    ) -> ServerRuntime | None:
        return self.balancer.pick(client_ip, exclude)


class HttpConnection(Admitted, Protocol):
    """A client connection, as the listener sees it (connection.ClientConnection)."""

    requests: int  # requests read on it so far

    def close_if_idle(self) -> bool:
        """Close it now if it waits between requests (soft stop)."""


class HttpListener(AcceptingFrontend[HttpConnection]):
    """Accepts on the listener's sockets and serves HTTP (pure Python + httptools).

    `active`/`queued` hold client connections, and a connection is a server's
    "session" while one of its requests is in flight to that server. The client
    connections read their settings here; `HttpFrontend` (the package's) makes
    them, so that this module need not import theirs.
    """

    def _prepare(self) -> None:
        self.requests_total = 0
        self.status_counts = [0] * 6  # by class: [other, 1xx, 2xx, 3xx, 4xx, 5xx]
        self.stopping = False
        self.upstreams = IdlePool(self.loop)  # server connections between requests
        # Writes of this loop iteration, as (transport, data) pairs, made together
        # once every read of the iteration is handled (as HAProxy sends after its
        # event pass): a peer woken by the first write is still awake for the
        # next ones, instead of each write waking it (and preempting us) anew.
        self.writes: list[Any] = []
        self.writes_size = 0  # bytes in self.writes
        self.flush_pending = False

    def _configured(self) -> None:
        """(Re)compile the listener's policies; requests in flight keep theirs."""
        config = self.config
        pool = self.pool
        t = config.timeouts
        # How often a connection's timer fires at most: deadlines then move by
        # plain stores on the hot path, and no timer is ever re-armed earlier.
        self.tick = min(t.http_request, t.http_keep_alive, t.client, t.server, t.tunnel)
        self.t_http_request = t.http_request
        self.t_http_keep_alive = t.http_keep_alive
        self.t_linger = t.linger  # the lingering close (linger.py), 0: none
        self.upstreams.keep_alive = t.http_keep_alive
        self.upstreams.max_requests = config.server_max_requests
        self.t_client = t.client
        self.t_server = t.server
        self.req_policy = RequestPolicy(config)
        self.resp_policy = ResponsePolicy(config)
        rewrite = config.response_headers or config.rewrite_location or config.cookie
        self.backend_class: type[Backend] = RewritingBackend if rewrite else Backend
        self.max_head_size = config.max_head_size
        self.cookies = config.cookie is not None
        self.redirect = config.redirect  # every request answered by a redirect (to https)
        self.request_rules = RequestRules(config.request_rules) if config.request_rules else None
        self.monitor = config.monitor
        self.monitor_path = config.monitor.path.encode("latin-1") if config.monitor else b""
        # httptools hands headers one by one; refuse an endless stream of them
        # before the head completes (the exact limit is checked on the whole head).
        self.max_headers_hard = config.max_headers
        groups: dict[str, list[ServerRuntime]] = {}
        for server in pool.servers:
            groups.setdefault(server.config.pool, []).append(server)
        balances = {p.name: p.balance for p in config.pools}
        self.pools = {
            name: RoutePool(name, servers, balances.get(name, config.balance))
            for name, servers in groups.items()
        }
        for p in config.pools:  # a pool may have lost all its servers on a reload
            self.pools.setdefault(p.name, RoutePool(p.name, [], p.balance))
        self.pools.setdefault("default", RoutePool("default", [], config.balance))
        self.default_pool = self.pools[config.default_pool]
        self.router = Router(config.routes, config.default_pool) if config.routes else None
        pool.subscribe(self._pool_changed)
        for old in [s for s in self.upstreams.servers() if pool.by_name.get(s.name) is not s]:
            self.upstreams.close_server(old)

    def _pool_changed(self, pool: Pool, server: ServerRuntime | None) -> None:
        if pool is not self.pool:
            return
        for route in self.pools.values():
            route.balancer.refresh()
        self._follow_adopted_writer(pool)
        if server is not None and not server.usable:
            self.upstreams.close_server(server)

    def _follow_adopted_writer(self, pool: Pool) -> None:
        """A writer adopted from the peers (Pool.adopt_active, loadstone.peers)
        is set on the listener pool's balancer; a listener without routing
        pools sends through its default route pool's own balancer, which would
        otherwise keep the writer it chose itself."""
        route = self.pools.get("default")
        active = pool.active
        if (
            route is None
            or active is None
            or len(self.pools) != 1
            or not isinstance(pool.balancer, ActiveBackup)
            or not isinstance(route.balancer, ActiveBackup)
            or route.balancer.active is active
        ):
            return
        route.balancer.adopt(active.name, pool.balancer.chosen_at, pool.balancer.since)

    # -- accepting ---------------------------------------------------------------------

    def stop_accepting(self) -> None:
        """Soft stop: no new connections; idle keep-alive ones close now, the others
        after the response in flight (which says Connection: close)."""
        self.stopping = True
        self.upstreams.closing = True
        super().stop_accepting()
        for conn in list(self.active):
            conn.close_if_idle()
        self._check_idle()

    def end_keep_alive(self) -> None:
        """Responses say Connection: close (`stopping`); idle connections stay
        (a client may be sending on one right now: it learns of the close with
        its next answer); new connections are still accepted."""
        self.stopping = True

    def _account(self, conn: HttpConnection) -> None:
        if conn.requests == 0:
            self.denied_total += 1

    def _check_idle(self) -> None:
        super()._check_idle()
        if self.stopping and not self.active and not self.queued:
            self.upstreams.close_all()

    def queue_write(self, transport: asyncio.Transport, data: bytes) -> None:
        """Write `data` at the end of this loop iteration, or at once past FLUSH_AT.

        Flow control needs the write to happen within the read that produced it:
        libuv (uvloop) reads a readable socket up to 32 times in one go, and only
        a transport that has been written to can pause the reading of the other
        side (`pause_writing`) before the next of those reads. Held back until
        the end of the iteration, the reads of one slow reader's server piled up
        32 x 256 KiB instead of stopping at the high-water mark."""
        self.writes += (transport, data)
        self.writes_size += len(data)
        if self.writes_size >= FLUSH_AT:
            self.flush_writes()
        elif not self.flush_pending:
            self.flush_pending = True
            self.loop.call_soon(self.flush_writes)

    def flush_writes(self) -> None:
        self.flush_pending = False
        writes = self.writes
        if not writes:
            return
        self.writes = []
        self.writes_size = 0
        for i in range(0, len(writes), 2):
            transport = writes[i]
            if not transport.is_closing():
                transport.write(writes[i + 1])

    # -- control ---------------------------------------------------------------------------

    def status_extra(self) -> dict[str, Any]:
        """HTTP counters and the routing pools, for the status API."""
        counts = self.status_counts
        return {
            "data_path": self.data_path,
            "data_path_reason": self.data_path_reason,
            "http": {
                "requests_total": self.requests_total,
                "responses": responses_by_class(counts),
                "idle_server_connections": self.upstreams.count(),
            },
            "pools": {
                name: {"balance": _balance_name(route), "servers": [s.name for s in route.servers]}
                for name, route in self.pools.items()
                if route.servers or name != "default"
            },
            **self.tls_status(),
            **self.proxy_status(),
        }

    def shutdown_all(self, reason: str) -> None:
        super().shutdown_all(reason)
        self.upstreams.close_all()


def _balance_name(route: RoutePool) -> str:
    return route.balancer.name
