"""The native data path's control plane: `TcpFrontend` over the C engine.

Theory of operation
-------------------
One `relay.Engine` per process holds the worker threads (global.workers); each
listener is a numbered entry in it. Python never sees a connection: workers
accept, pick, connect and relay on their own (src/_fastpath/includes/engine.c).
What stays in Python, and when it runs:

- the server table: on every pool change (health, admin state, weight; Pool
  calls the subscribers after the balancer's refresh) `_publish()` sends the
  servers that may take new sessions, in the order the algorithm walks them,
  with their weights, maxconn and addresses, and for `source` the ring the
  Python balancer built. The C picker then makes the choices the Python
  balancer would (active-backup: the table holds only the active server, so
  the no-failback rule stays in Python alone);
- counters: read from the engine when the admin API asks (`ServerRuntime.native`
  points here, so `server.sessions` and friends are the engine's figures);
- records: the workers queue one per finished session and one per failed
  connect; an eventfd wakes the asyncio loop, which drains them in a batch:
  session log lines, and `Pool.connect_failed` (an immediate re-check);
- commands: stop accepting, shut a server's or the listener's sessions; each
  waits (without the GIL) until every worker has carried it out.

`configure()` sets the engine's shape from the global configuration before the
first listener is made; the workers, buffer and splice mode are fixed for the
process's life after that.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import errno
import ipaddress
import logging
import os
import resource
import socket
from typing import TYPE_CHECKING, TypedDict

import orjson

from loadstone._fastpath import relay
from loadstone.balance.base import Balancer
from loadstone.config.durations import parse_duration
from loadstone.config.model import GlobalConfig, ListenerConfig
from loadstone.datapath.limits import LIMIT
from loadstone.datapath.sni_native import NativeSni, Table
from loadstone.datapath.sni_native import end_word as sni_end_word
from loadstone.datapath.traffic import Histogram, TrafficSnapshot
from loadstone.server import Pool, ServerRuntime
from loadstone.tls import native as tls_native
from loadstone.tls import upstream as tls_upstream

if TYPE_CHECKING:
    from loadstone.sessionlog import SessionLog

log = logging.getLogger("loadstone.datapath")

# A server's send_proxy as the engine's table holds it (engine/proxy_proto.c).
_PROXY_VERSIONS = {None: 0, "v1": 1, "v2": 2}
# The engine's accept_proxy refusal counts, in its order (LS_PROXY_REFUSED_*).
_PROXY_REFUSALS = ("malformed", "truncated", "timeout", "untrusted")

BUILD: str = relay.BUILD


class _EngineSettings(TypedDict):
    workers: int
    splice: str
    io_uring: str


_settings: _EngineSettings = {"workers": 1, "splice": "auto", "io_uring": "auto"}
_poll_spin: float = GlobalConfig().poll_spin
_engine: relay.Engine | None = None  # made by the first listener
_reader_loop: asyncio.AbstractEventLoop | None = None
_frontends: dict[int, TcpFrontend] = {}


def configure(global_config: GlobalConfig) -> None:
    """Take the engine's shape from the configuration (before the first listener)."""
    set_poll_spin(global_config.poll_spin)
    wanted: _EngineSettings = {
        "workers": global_config.workers,
        "splice": _splice(global_config.splice),
        "io_uring": _io_uring(global_config.io_uring),
    }
    if _engine is not None and not _engine.closed:
        if wanted != _settings:
            log.warning(
                "global.workers, global.splice and global.io_uring change only at restart; "
                "keeping %s",
                ", ".join(f"{k}={v}" for k, v in _settings.items()),
            )
        return
    _settings.update(wanted)


def set_poll_spin(seconds: float) -> None:
    """global.poll_spin, at start and on reload (the workers take it at once)."""
    global _poll_spin
    _poll_spin = _spin(seconds)
    if _engine is not None and not _engine.closed:
        _engine.set_poll_spin(_poll_spin)


def _splice(configured: str) -> str:
    # LOADSTONE_SPLICE=auto|on|off overrides global.splice: a switch for
    # benchmarks and tests that run loadstone with a generated configuration.
    override = os.environ.get("LOADSTONE_SPLICE", "")
    return override if override in ("auto", "on", "off") else configured


def _io_uring(configured: str) -> str:
    # LOADSTONE_IO_URING=auto|off overrides global.io_uring, as LOADSTONE_SPLICE does.
    override = os.environ.get("LOADSTONE_IO_URING", "")
    return override if override in ("auto", "off") else configured


def _spin(configured: float) -> float:
    # LOADSTONE_POLL_SPIN (a duration: 0, 30us) overrides global.poll_spin, as
    # LOADSTONE_SPLICE does: benchmarks compare builds with and without it.
    override = os.environ.get("LOADSTONE_POLL_SPIN")
    if override is None:
        return configured
    try:
        return parse_duration(override)
    except ValueError:
        log.warning("LOADSTONE_POLL_SPIN=%r is not a duration; using %s", override, configured)
        return configured


def _raise_fd_limit() -> None:
    # Two descriptors per session, and a pipe pair per splicing direction: the
    # usual soft limit of 1024 would cap the proxy at a few hundred sessions.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        with contextlib.suppress(ValueError, OSError):  # a locked-down host
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def _io_uring_state(engine: relay.Engine) -> str:
    if engine.io_uring_workers == engine.workers:
        return "on"
    if _io_uring(_settings["io_uring"]) == "off":
        return "off"
    return "off (the kernel refused it)" if engine.io_uring_workers == 0 else "partly"


def engine(loop: asyncio.AbstractEventLoop) -> relay.Engine:
    """The process's engine, made on first use; its records are read on `loop`."""
    global _engine, _reader_loop
    if _engine is None or _engine.closed:
        _raise_fd_limit()
        _engine = relay.Engine(
            _settings["workers"],
            _splice(_settings["splice"]),
            io_uring=_io_uring(_settings["io_uring"]),
        )
        _engine.set_poll_spin(_poll_spin)
        log.info(
            "native data path: %d worker thread(s), splice %s, io_uring %s, poll spin %dus "
            "(%s build)",
            _settings["workers"],
            _engine.splice,
            _io_uring_state(_engine),
            round(_poll_spin * 1e6),
            BUILD,
        )
        atexit.register(_close)
        LIMIT.attach_native(_engine)  # global.maxconn is the engine's bound too
    if _reader_loop is not loop:
        if _reader_loop is not None and not _reader_loop.is_closed():
            _reader_loop.remove_reader(_engine.record_fd())
        loop.add_reader(_engine.record_fd(), _records_ready)
        _reader_loop = loop
    return _engine


# Records are drained at most this often: between two drains the workers keep
# appending to the engine's queue without writing its eventfd again, so a burst
# of short sessions costs a few wake-ups of each side, not one per session. It
# delays a log line or a failed connect's re-check by at most this much.
DRAIN_INTERVAL = 0.02

# A listener's `log` as the engine and relay.Engine.take_records take it: with
# `errors` the engine makes no record of a TCP session closed by a peer, with
# `none` of no TCP session or HTTP request at all (requests are counted by the
# workers: engine/metrics.c).
LOG_MODES: dict[str, int] = {"all": 0, "errors": 1, "none": 2}
IDLE_POLL = 0.05


def _records_ready() -> None:
    loop = _reader_loop
    if _engine is None or _engine.closed or loop is None:
        return
    drain_records()
    fd = _engine.record_fd()
    loop.remove_reader(fd)
    loop.call_later(DRAIN_INTERVAL, _watch_records, loop, fd)


def _watch_records(loop: asyncio.AbstractEventLoop, fd: int) -> None:
    if _engine is not None and not _engine.closed and _reader_loop is loop:
        loop.add_reader(fd, _records_ready)


def _close() -> None:
    global _engine
    if _engine is not None:
        LIMIT.attach_native(None)
        if not _engine.closed and _poll_spin > 0:
            # how the spin paid: benchmarks read it from the proxy's log
            log.info(
                "poll spin: %d sleeps, %d spins, %d hits, %dus spun, %dus of it found nothing",
                *_engine.spin_stats(),
            )
        _engine.close()
        _engine = None


def drain_records() -> None:
    """Hand the workers' records to their frontends (one batch per wake-up)."""
    if _engine is None or _engine.closed:
        return
    log_names = {lid: frontend.log_names() for lid, frontend in _frontends.items()}
    lines, others = _engine.take_records(log_names)
    touched: set[TcpFrontend] = set()
    for lid, text in lines.items():
        frontend = _frontends[lid]
        frontend.sessionlog.lines_formatted(text)
        touched.add(frontend)
    for record in others:
        owner = _frontends.get(record[1])
        if owner is not None:
            owner.record(record)
            touched.add(owner)
    for frontend in touched:
        frontend.check_idle()


class TcpFrontend:
    """A tcp listener served by the native engine (same surface as the pure one)."""

    data_path = "native"

    def __init__(
        self,
        config: ListenerConfig,
        pool: Pool,
        sessionlog: SessionLog,
        loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        self.data_path_reason: str | None = None
        self.loop = loop or asyncio.get_running_loop()
        self.engine = engine(self.loop)
        self.lid: int = self.engine.new_listener()
        _frontends[self.lid] = self
        self.config = config
        self.name = config.name
        self.sessionlog = sessionlog
        self.pool = pool
        self.sockets: dict[int, socket.socket] = {}  # by descriptor
        self.idle_waiters: list[asyncio.Future[None]] = []
        self._slots: dict[ServerRuntime, int] = {}
        self._by_slot: list[ServerRuntime] = []
        self._reasons: list[str] = []
        self._strerror: dict[int, str] = {}
        self._log_names: tuple[bool, bytes, list[bytes]] | None = None
        self.sni = NativeSni(self.engine, self.lid)  # sni_passthrough (engine/sni.c)
        self._configure()
        self._attach(pool)

    # -- configuration and the server table ------------------------------------------

    def _configure(self) -> None:
        c = self.config
        t = c.timeouts
        ka = c.tcp_keepalive
        self.engine.configure(
            self.lid,
            maxconn=c.maxconn,
            retries=c.retries,
            redispatch=c.redispatch,
            connect=t.connect,
            idle=min(t.client, t.server),
            idle_is_client=t.client <= t.server,
            queue=t.queue,
            log_mode=LOG_MODES[c.log],
            keepalive=None
            if ka is None
            else (max(1, int(ka.idle)), max(1, int(ka.interval)), ka.count),
        )
        tls_native.configure(self.engine, self.lid, c, self.loop)  # TLS in the workers
        self.sni.configure(c, self.pool)  # its pools, before their tables are published
        accept = c.accept_proxy
        if accept is None:
            self.engine.proxy_accept(self.lid, None, [])
        else:
            nets = [ipaddress.ip_network(n) for n in accept.trusted]
            self.engine.proxy_accept(
                self.lid,
                accept.timeout,
                [(n.version, n.network_address.packed, n.prefixlen) for n in nets],
            )

    def _slot(self, server: ServerRuntime) -> int:
        slot = self._slots.get(server)
        if slot is None:
            slot = self._slots[server] = self.engine.new_slot(self.lid)
            self._by_slot.append(server)
            self._log_names = None
        return slot

    def _server_at(self, slot: int) -> ServerRuntime | None:
        """The server of a record's slot (None for a record of no server)."""
        return self._by_slot[slot] if 0 <= slot < len(self._by_slot) else None

    def _shutdown_word(self, reason: int) -> str:
        """The log's end word for a session closed by the control plane (maint, reload...)."""
        return f"shutdown ({self._reasons[reason] if 0 <= reason < len(self._reasons) else '?'})"

    def log_names(self) -> tuple[bool, bytes, list[bytes]]:
        """What relay.Engine.take_records needs to write this listener's session
        lines itself: the format and the names as they appear in a line (which
        lines to write the engine decides: it makes no record of the others)."""
        if self._log_names is None:
            as_json = self.sessionlog.format == "json"

            def shown(name: str) -> bytes:
                return orjson.dumps(name)[1:-1] if as_json else name.encode()

            self._log_names = (
                as_json,
                shown(self.name),
                [shown(s.name) for s in self._by_slot],
            )
        return self._log_names

    def _attach(self, pool: Pool) -> None:
        for server in pool.servers:
            slot = self._slot(server)
            server.native = self
            # TLS to the server runs in the workers too (engine/tls_upstream.c)
            tls_native.configure_server(self.engine, self.lid, slot, self.config, server.config)
        pool.subscribe(self._pool_changed)
        self._publish()
        self.sni.install(self.config)  # routes to the pool tables just published

    def _pool_changed(self, pool: Pool, server: ServerRuntime | None) -> None:
        if pool is self.pool:
            self._publish()

    def _publish(self) -> None:
        """Send the engine the servers that take new sessions now: the listener's
        table, and with sni_passthrough one per pool."""
        balance = self.config.balance
        self.engine.publish(self.lid, balance, *self._table(balance, self.pool.balancer))
        for pool_id, algorithm, table in self.sni.tables(self._table):
            self.engine.publish(self.lid, algorithm, *table, pool=pool_id)

    def _table(self, balance: str, balancer: Balancer) -> Table:
        """The rows and `source` ring of a balancer's servers, as publish takes them."""
        if balance == "active-backup":
            active = balancer.active
            servers = [active] if active is not None else []
        elif balance == "first":
            servers = list(balancer.candidates)  # weight plays no part
        else:  # weighted: weight 0 means no new sessions
            servers = [s for s in balancer.candidates if s.weight > 0]
        rows = [
            (
                self._slot(s),
                s.weight,
                -1 if s.maxconn is None else s.maxconn,
                s.connect_host,
                s.address.port,
                _PROXY_VERSIONS[self.config.proxy_version(s.config)],
            )
            for s in servers
        ]
        ring_pos: list[int] = []
        ring_owner: list[int] = []
        ring = getattr(balancer, "ring", None)
        if balance == "source" and ring is not None:
            # The ring covers the whole group, down servers included; a point
            # whose server is not in the table is skipped by the C lookup.
            position = {s: i for i, s in enumerate(servers)}
            ring_pos = ring.positions
            ring_owner = [position.get(owner, -1) for owner in ring.owners]
        return rows, ring_pos, ring_owner

    def reconfigure(self, config: ListenerConfig, pool: Pool) -> None:
        """A reload: new sessions use the new settings and pool; open ones run on."""
        self.config = config
        self.pool = pool
        self._log_names = None  # the servers (or the log format) may have changed
        self._configure()
        self._attach(pool)

    # -- accepting -------------------------------------------------------------------

    async def start(self, sockets: list[socket.socket]) -> None:
        """Accept on these (already bound and listening) sockets too."""
        for sock in sockets:
            sock.setblocking(False)
            # Accepted sockets inherit it: one setsockopt per listener, not per
            # connection. The relay writes whole reads at once; Nagle would only
            # hold back the tail of a response.
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self.engine.add_socket(self.lid, sock.fileno())
            self.sockets[sock.fileno()] = sock

    def unserve(self, sock: socket.socket) -> None:
        """Stop accepting on one socket and close it (its address left the config)."""
        fd = sock.fileno()
        if self.sockets.pop(fd, None) is not None:
            self.engine.remove_socket(self.lid, fd)
        sock.close()

    def stop_accepting(self) -> None:
        for fd, sock in list(self.sockets.items()):
            self.engine.remove_socket(self.lid, fd)
            sock.close()
        self.sockets.clear()

    def end_keep_alive(self) -> None:
        """Nothing to end but http's keep-alive (HttpFrontend overrides)."""

    # -- counters --------------------------------------------------------------------

    def _stats(self, drain: bool = True) -> tuple[int, int, int, int, int, int]:
        # Whoever reads counters also sees the records behind them (the failed
        # connects counted on the servers, the log lines) rather than wait for
        # the next drain.
        if drain:
            drain_records()
        stats: tuple[int, int, int, int, int, int] = self.engine.listener_stats(self.lid)
        return stats

    @property
    def current_sessions(self) -> int:
        return self._stats()[0]

    @property
    def queued_count(self) -> int:
        return self._stats()[1]

    @property
    def sessions_total(self) -> int:
        return self._stats()[2]

    @property
    def bytes_in(self) -> int:
        return self._stats()[3]

    @property
    def bytes_out(self) -> int:
        return self._stats()[4]

    # The engine counts bytes as they move: there is no separate in-flight part.
    bytes_in_done = bytes_in
    bytes_out_done = bytes_out

    @property
    def denied_total(self) -> int:
        return self._stats()[5]

    def server_stats(self, server: ServerRuntime) -> tuple[int, int, int, int]:
        """(live sessions, sessions total, bytes in, bytes out) of one server."""
        slot = self._slots.get(server)
        if slot is None:
            return (0, 0, 0, 0)
        drain_records()
        stats: tuple[int, int, int, int] = self.engine.server_stats(self.lid, slot)
        return stats

    def traffic_metrics(self) -> TrafficSnapshot:
        """The histograms and HTTP codes the engine's workers counted."""
        (req_counts, req_sum), (conn_counts, conn_sum), codes = self.engine.listener_metrics(
            self.lid
        )
        server_codes: dict[str, list[int]] = {}
        for server, slot in self._slots.items():
            row = self.engine.server_codes(self.lid, slot)
            known = server_codes.get(server.name)
            server_codes[server.name] = (
                row if known is None else [a + b for a, b in zip(known, row, strict=True)]
            )
        return TrafficSnapshot(
            Histogram(req_counts, req_sum), Histogram(conn_counts, conn_sum), codes, server_codes
        )

    # -- records ---------------------------------------------------------------------

    def _reason_id(self, reason: str) -> int:
        try:
            return self._reasons.index(reason)
        except ValueError:
            self._reasons.append(reason)
            return len(self._reasons) - 1

    def _why(self, err: int) -> str:
        if err < 0:
            return "timeout"
        if err == errno.EPROTO:  # the engine's word for a failed TLS handshake with a server
            return "tls handshake failed"
        text = self._strerror.get(err)
        if text is None:
            text = self._strerror[err] = os.strerror(err).lower()
        return text

    def record(self, rec: relay.Record) -> None:
        kind, _lid, slot, reason, arg, client, bytes_in, bytes_out, duration = rec[:9]
        if kind == relay.REC_TLS_FAILED:
            tls_native.log_failure(client, rec[9])
            return
        server = self._server_at(slot)
        if kind == relay.REC_CONNECT_FAILED:
            if server is None:
                return
            handshake = rec[9]  # a TLS handshake's reason, if that failed
            log.info(
                "%s: connect to %s (%s) failed: %s",
                self.name,
                server.name,
                server.address,
                handshake or self._why(arg),
            )
            label = tls_upstream.failure_label(handshake)
            if label is not None:
                server.tls_handshake_failed(label)
            self.pool.connect_failed(server)
            return
        if reason == relay.END_CONNECT_FAILED:
            end = f"connect-failed ({self._why(arg)})"
        elif reason == relay.END_SHUTDOWN:
            end = self._shutdown_word(arg)
        else:
            end = sni_end_word(reason, arg) or relay.END_WORDS[reason]
        # No `log` check: the engine made this record only if the line is wanted.
        self.sessionlog.session(
            client=client,
            listener=self.name,
            server=server.name if server is not None else "-",
            bytes_in=bytes_in,
            bytes_out=bytes_out,
            duration=duration,
            end=end,
            tls=rec[9] or None,
        )

    def check_idle(self) -> None:
        if self.idle_waiters and self._stats(drain=False)[0] == 0:
            for waiter in self.idle_waiters:
                if not waiter.done():
                    waiter.set_result(None)
            self.idle_waiters.clear()

    # -- control ---------------------------------------------------------------------

    def status_extra(self) -> dict[str, object]:
        # mode tcp: TLS, PROXY and SNI passthrough only
        return {**self.tls_status(), **self.proxy_status(), **self.sni_status()}

    def sni_status(self) -> dict[str, object]:
        """sni_passthrough's counts (the pure path's shape); empty without it."""
        if self.config.sni_passthrough is None:
            return {}
        return {
            "data_path": self.data_path,
            "data_path_reason": None,
            "sni_passthrough": self.sni.status(),
        }

    def proxy_status(self) -> dict[str, object]:
        """Connections refused for their PROXY header (with accept_proxy), by reason,
        as the pure path shows them."""
        if self.config.accept_proxy is None:
            return {}
        counts = zip(_PROXY_REFUSALS, self.engine.proxy_refused(self.lid), strict=True)
        return {"proxy_protocol": {"refused": {r: n for r, n in counts if n}}}

    def tls_status(self) -> dict[str, object]:
        """The listener's TLS handshakes and certificates (the pure path's shape);
        empty without TLS."""
        if self.config.tls is None:
            return {}
        return {
            "data_path": self.data_path,
            "data_path_reason": None,
            "tls": tls_native.status(self.engine, self.lid, self.config),
        }

    async def wait_idle(self) -> None:
        if self.current_sessions == 0:
            return
        waiter: asyncio.Future[None] = self.loop.create_future()
        self.idle_waiters.append(waiter)
        if self.config.log != "all":
            # Session records wake the waiter (check_idle), and with `log:
            # errors` or `none` most ends make none: look every IDLE_POLL too.
            while not waiter.done():
                await asyncio.wait([waiter], timeout=IDLE_POLL)
                self.check_idle()
        await waiter

    def shutdown_server(self, server: ServerRuntime, reason: str) -> int:
        """Close one server's sessions now (shutdown-sessions, maint)."""
        slot = self._slots.get(server)
        if slot is None:
            return 0
        closed: int = self.engine.shutdown(self.lid, slot, self._reason_id(reason))
        drain_records()
        return closed

    def shutdown_all(self, reason: str) -> None:
        self.engine.shutdown(self.lid, -1, self._reason_id(reason))
        drain_records()
