"""The admin server (aiohttp, on global.admin.bind and/or the unix socket
global.admin.socket): status API, metrics, the stats page, and the write API
that changes the running data path.

Everything read here is read on demand from the runtime's live objects: no
counter is pushed to Prometheus per packet or per session; a scrape walks the
pools. Writes go through `Pool.set_*`, the same path the checks use, so they
take effect on the next connection.

Access: reads are open (the admin server binds to loopback by default). With
global.admin.token_file set, every write needs `Authorization: Bearer <token>`:
401 without one, 403 with a wrong one, compared in constant time.
"""

from __future__ import annotations

import contextlib
import errno
import hmac
import os
import socket
import stat
import time
from collections.abc import Awaitable, Callable, Iterator
from importlib import resources
from typing import Any

import orjson
from aiohttp import web
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

import loadstone
from loadstone import datapath
from loadstone.config.model import AdminConfig
from loadstone.datapath.limits import LIMIT
from loadstone.datapath.seam import Frontend
from loadstone.runtime_view import ListenerView, RuntimeView
from loadstone.server import Pool, ServerRuntime
from loadstone.server_actions import ActionError, set_state, set_weight, shutdown_sessions


def server_status(server: ServerRuntime) -> dict[str, Any]:
    return {
        "state": server.state,
        "address": str(server.address),
        "weight": server.weight,
        "backup": server.backup,
        "admin": server.admin,
        "sessions": server.sessions,
        "sessions_total": server.sessions_total,
        "bytes_in": server.bytes_in,
        "bytes_out": server.bytes_out,
        "connect_errors": server.connect_errors,
        "last_change": server.last_change,
        "check": {
            "status": server.check_status,
            "detail": server.check_detail,
            "duration": round(server.check_duration, 6),
        },
    }


def frontend_totals(frontend: Frontend) -> dict[str, int]:
    """Queued sessions and bytes relayed (finished and live sessions), as the
    frontend counts them (the native data path keeps them in its engine)."""
    return {
        "queued": frontend.queued_count,
        "bytes_in": frontend.bytes_in,
        "bytes_out": frontend.bytes_out,
    }


def listener_status(lr: ListenerView) -> dict[str, Any]:
    frontend = lr.frontend
    status: dict[str, Any] = {
        "mode": lr.config.mode,
        "balance": lr.config.balance,
        "bind": [str(a) for a in lr.config.bind],
        "sessions": frontend.current_sessions,
        "sessions_total": frontend.sessions_total,
        **frontend_totals(frontend),
    }
    if lr.config.balance == "active-backup":
        active = lr.pool.active
        status["active"] = active.name if active is not None else None
    status["servers"] = {s.name: server_status(s) for s in lr.pool.servers}
    status.update(frontend.status_extra())  # mode http: request counters, routing pools
    draining = [s for s in lr.pool.removed if s.sessions]
    if draining:
        # Removed by a reload, still carrying sessions until they end.
        status["removed_servers"] = {s.name: server_status(s) for s in draining}
    return status


def status_document(runtime: RuntimeView) -> dict[str, Any]:
    return {
        "version": loadstone.__version__,
        "datapath": datapath.IMPLEMENTATION,
        "uptime": round(time.time() - runtime.started_at, 3),
        "reload": runtime.reload_report.as_dict(),
        "logs": runtime.log_status(),
        "limits": LIMIT.status(),
        "listeners": {name: listener_status(lr) for name, lr in runtime.listeners.items()},
        "vrrp": runtime.vrrp,
        "peers": runtime.peers_status(),
    }


class RuntimeCollector(Collector):
    """Prometheus metrics computed from the runtime at scrape time."""

    def __init__(self, runtime: RuntimeView) -> None:
        self.runtime = runtime

    def collect(self) -> Iterator[Metric]:
        sl = ["listener", "server"]
        up = GaugeMetricFamily(
            "loadstone_server_up", "1 when the server takes new sessions (state up)", labels=sl
        )
        state = GaugeMetricFamily(
            "loadstone_server_state", "1 for the server's current state", labels=[*sl, "state"]
        )
        weight = GaugeMetricFamily("loadstone_server_weight", "Current weight", labels=sl)
        cur = GaugeMetricFamily("loadstone_server_sessions", "Sessions open now", labels=sl)
        total = CounterMetricFamily(
            "loadstone_server_sessions", "Sessions sent to the server", labels=sl
        )
        nbytes = CounterMetricFamily(
            "loadstone_server_bytes",
            "Bytes relayed: in = client to server, out = server to client",
            labels=[*sl, "direction"],
        )
        conn_err = CounterMetricFamily(
            "loadstone_server_connect_errors", "Failed connects to the server", labels=sl
        )
        check_ok = GaugeMetricFamily(
            "loadstone_server_check_success", "1 if the last health check passed", labels=sl
        )
        check_dur = GaugeMetricFamily(
            "loadstone_server_check_duration_seconds", "Duration of the last check", labels=sl
        )
        checks = CounterMetricFamily("loadstone_server_checks", "Checks run", labels=sl)
        check_fail = CounterMetricFamily(
            "loadstone_server_check_failures", "Checks that failed", labels=sl
        )
        ll = ["listener"]
        l_cur = GaugeMetricFamily("loadstone_listener_sessions", "Sessions open now", labels=ll)
        l_total = CounterMetricFamily("loadstone_listener_sessions", "Sessions accepted", labels=ll)
        l_bytes = CounterMetricFamily(
            "loadstone_listener_bytes", "Bytes relayed", labels=[*ll, "direction"]
        )
        active = GaugeMetricFamily(
            "loadstone_server_active_writer",
            "1 for the server an active-backup listener sends to (the Galera writer)",
            labels=sl,
        )
        tls_metrics = TlsMetrics()
        for name, lr in self.runtime.listeners.items():
            doc = listener_status(lr)
            tls_metrics.add(name, doc.get("tls"))
            l_cur.add_metric([name], doc["sessions"])
            l_total.add_metric([name], doc["sessions_total"])
            l_bytes.add_metric([name, "in"], doc["bytes_in"])
            l_bytes.add_metric([name, "out"], doc["bytes_out"])
            for s in lr.pool.servers:
                labels = [name, s.name]
                if lr.config.balance == "active-backup":
                    active.add_metric(labels, 1 if doc["active"] == s.name else 0)
                up.add_metric(labels, 1 if s.state == "up" else 0)
                for st in ("up", "down", "drain", "maint"):
                    state.add_metric([*labels, st], 1 if s.state == st else 0)
                weight.add_metric(labels, s.weight)
                cur.add_metric(labels, s.sessions)
                total.add_metric(labels, s.sessions_total)
                nbytes.add_metric([*labels, "in"], s.bytes_in)
                nbytes.add_metric([*labels, "out"], s.bytes_out)
                conn_err.add_metric(labels, s.connect_errors)
                if s.check_status in ("ok", "failed"):
                    check_ok.add_metric(labels, 1 if s.check_status == "ok" else 0)
                    check_dur.add_metric(labels, s.check_duration)
                checks.add_metric(labels, s.checks_total)
                check_fail.add_metric(labels, s.checks_failed)
        yield from (up, state, weight, cur, total, nbytes, conn_err, check_ok, check_dur)
        reload_ok = GaugeMetricFamily(
            "loadstone_config_last_reload_successful", "0 if the last reload was rejected"
        )
        reload_ok.add_metric([], 1 if self.runtime.reload_report.ok else 0)
        generation = GaugeMetricFamily(
            "loadstone_config_generation", "Configurations applied since start (0 = first)"
        )
        generation.add_metric([], self.runtime.reload_report.generation)
        yield from (checks, check_fail, l_cur, l_total, l_bytes, active, reload_ok, generation)
        yield from tls_metrics.families()
        logs = self.runtime.log_status()
        if logs is not None:
            # A destination that cannot keep up costs lines, never the event loop
            # (loadstone.logtargets.sinks): how many is worth an alert.
            dropped = CounterMetricFamily(
                "loadstone_log_dropped",
                "Log lines dropped: their destination could not take them",
                labels=["output", "destination"],
            )
            for output, doc in logs.items():
                dropped.add_metric([output, doc["destination"]], doc["dropped"])
            yield dropped
        yield from peer_metrics(self.runtime.peers_status())
        yield from limit_metrics(LIMIT.status())


class TlsMetrics:
    """The TLS metrics of the listeners that terminate TLS (from their status)."""

    def __init__(self) -> None:
        ll = ["listener"]
        self.handshakes = CounterMetricFamily(
            "loadstone_tls_handshakes", "TLS handshakes completed", labels=ll
        )
        self.resumed = CounterMetricFamily(
            "loadstone_tls_resumed_handshakes", "TLS handshakes that resumed a session", labels=ll
        )
        self.failures = CounterMetricFamily(
            "loadstone_tls_handshake_failures",
            "TLS handshakes that failed, by reason",
            labels=[*ll, "reason"],
        )
        self.expiry = GaugeMetricFamily(
            "loadstone_tls_certificate_expiry_timestamp_seconds",
            "When a listener's certificate expires (seconds since the epoch)",
            labels=[*ll, "file", "subject"],
        )

    def add(self, listener: str, tls: Any) -> None:
        if not isinstance(tls, dict):
            return
        self.handshakes.add_metric([listener], tls["handshakes"])
        self.resumed.add_metric([listener], tls["resumed"])
        for reason, count in tls["failures"].items():
            self.failures.add_metric([listener, reason], count)
        for cert in tls["certificates"]:
            self.expiry.add_metric([listener, cert["file"], cert["subject"]], cert["not_after"])

    def families(self) -> Iterator[Metric]:
        yield from (self.handshakes, self.resumed, self.failures, self.expiry)


def limit_metrics(limits: dict[str, Any]) -> Iterator[Metric]:
    """global.maxconn and the descriptor limit (datapath.limits)."""
    conns = GaugeMetricFamily(
        "loadstone_process_connections", "Client connections of the process, all listeners"
    )
    conns.add_metric([], limits["connections"])
    yield conns
    if limits["maxconn"] is not None:
        maxconn = GaugeMetricFamily("loadstone_process_maxconn", "global.maxconn")
        maxconn.add_metric([], limits["maxconn"])
        yield maxconn
    paused = CounterMetricFamily(
        "loadstone_accept_paused",
        "Times accepting paused: at global.maxconn, or out of descriptors (fd_limit)",
        labels=["reason"],
    )
    for reason, count in limits["accept_paused"].items():
        paused.add_metric([reason], count)
    yield paused
    for name, doc, value in (
        ("loadstone_process_open_fds", "Open file descriptors", limits["open_files"]),
        ("loadstone_process_max_fds", "The descriptor limit (RLIMIT_NOFILE)", limits["max_files"]),
    ):
        gauge = GaugeMetricFamily(name, doc)
        gauge.add_metric([], value)
        yield gauge


def peer_metrics(peers: dict[str, Any] | None) -> Iterator[Metric]:
    """global.peers: which peers are heard, and the datagrams refused by reason."""
    if peers is None:
        return
    up = GaugeMetricFamily("loadstone_peer_up", "1 while the peer is heard", labels=["peer"])
    for name, peer in peers["peers"].items():
        up.add_metric([name], 1 if peer["up"] else 0)
    refused = CounterMetricFamily(
        "loadstone_peer_datagrams_refused",
        "peer datagrams ignored: garbage, bad-key, replayed, stale, unknown-peer, unknown-listener",
        labels=["reason"],
    )
    for reason, count in peers["rejected"].items():
        refused.add_metric([reason], count)
    adopted = CounterMetricFamily(
        "loadstone_peer_writers_adopted", "writers adopted from the peers' reports"
    )
    adopted.add_metric([], peers["adopted"])
    yield from (up, refused, adopted)


@web.middleware
async def require_token(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    runtime = request.app[RUNTIME_KEY]
    token = runtime.admin_token
    if request.method not in ("GET", "HEAD", "OPTIONS") and token is not None:
        header = request.headers.get("Authorization", "")
        if not header.startswith("Bearer "):
            return _error(
                401,
                "this endpoint needs 'Authorization: Bearer <token>'",
                headers={"WWW-Authenticate": 'Bearer realm="loadstone"'},
            )
        if not hmac.compare_digest(header[7:].strip().encode(), token.encode()):
            return _error(403, "wrong token")
    return await handler(request)


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(
        status=status,
        body=orjson.dumps({"error": message}),
        content_type="application/json",
        headers=headers,
    )


def _json(doc: Any) -> web.Response:
    return web.Response(
        body=orjson.dumps(doc, option=orjson.OPT_INDENT_2), content_type="application/json"
    )


RUNTIME_KEY: web.AppKey[RuntimeView] = web.AppKey("runtime")


class AdminBindError(Exception):
    """The admin server cannot listen; the message starts with the YAML path."""


def _reason(exc: OSError) -> str:
    return (os.strerror(exc.errno) if exc.errno else str(exc)).lower()


def remove_stale_socket(path: str) -> None:
    """Remove the socket a previous run left behind, so that binding works; an
    OSError (EADDRINUSE) if a running process still accepts on it, or if the
    path is something else than a socket."""
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        raise FileExistsError(errno.EEXIST, "exists and is not a socket")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        try:
            probe.connect(path)
        except ConnectionRefusedError:
            os.unlink(path)  # nobody accepts: left by a process that is gone
            return
    raise OSError(errno.EADDRINUSE, "another process accepts on it")  # a second loadstone


# What keepalived passes to a notify script as its third argument.
VRRP_STATES = ("MASTER", "BACKUP", "FAULT", "STOP")


class AdminServer:
    def __init__(self, runtime: RuntimeView, config: AdminConfig) -> None:
        self.runtime = runtime
        self.config = config
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(RuntimeCollector(runtime))
        self.app = web.Application(middlewares=[require_token])
        self.app[RUNTIME_KEY] = runtime
        r = self.app.router
        r.add_get("/api/v1/status", self.get_status)
        r.add_get("/api/v1/health", self.get_health)
        r.add_get("/metrics", self.get_metrics)
        r.add_get("/stats", self.get_stats)
        server_path = "/api/v1/listeners/{listener}/servers/{server}"
        r.add_post(server_path + "/state", self.post_state)
        r.add_post(server_path + "/weight", self.post_weight)
        r.add_post(server_path + "/shutdown-sessions", self.post_shutdown_sessions)
        r.add_post("/api/v1/reload", self.post_reload)
        r.add_post("/api/v1/reopen-logs", self.post_reopen_logs)
        r.add_post("/api/v1/vrrp", self.post_vrrp)
        self.runner: web.AppRunner | None = None

    async def start(self) -> None:
        """Listen on the address and the socket configured; AdminBindError
        (nothing left listening) when one cannot be bound."""
        self.runner = web.AppRunner(self.app, access_log=None, handle_signals=False)
        await self.runner.setup()
        bind, path = self.config.bind, self.config.socket
        try:
            if bind is not None:
                try:
                    await web.TCPSite(self.runner, bind.host, bind.port).start()
                except OSError as exc:
                    raise AdminBindError(
                        f"global.admin.bind: cannot bind {bind}: {_reason(exc)} "
                        "(set global.admin.bind to a free address, or null for no admin server)"
                    ) from None
            if path is not None:
                try:
                    remove_stale_socket(path)
                    await web.UnixSite(self.runner, path).start()
                except OSError as exc:
                    raise AdminBindError(
                        f"global.admin.socket: cannot bind {path}: {_reason(exc)}"
                    ) from None
        except AdminBindError:
            await self.runner.cleanup()
            self.runner = None
            raise

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()
            self.runner = None
            if self.config.socket is not None:
                with contextlib.suppress(OSError):
                    os.unlink(self.config.socket)

    async def get_status(self, request: web.Request) -> web.Response:
        return _json(status_document(self.runtime))

    async def get_health(self, request: web.Request) -> web.Response:
        """200 while this instance may hold the VIP, else 503 and why (ctl health)."""
        problems = self.runtime.health_problems()
        return web.Response(
            status=503 if problems else 200,
            body=orjson.dumps({"healthy": not problems, "problems": problems}),
            content_type="application/json",
        )

    async def get_stats(self, request: web.Request) -> web.Response:
        page = resources.files("loadstone").joinpath("static/stats.html").read_bytes()
        return web.Response(body=page, content_type="text/html", charset="utf-8")

    def _server(self, request: web.Request) -> tuple[Pool, ServerRuntime]:
        lr = self.runtime.listeners.get(request.match_info["listener"])
        if lr is None:
            raise web.HTTPNotFound(
                body=orjson.dumps({"error": "no such listener"}), content_type="application/json"
            )
        server = lr.pool.by_name.get(request.match_info["server"])
        if server is None:
            raise web.HTTPNotFound(
                body=orjson.dumps({"error": "no such server"}), content_type="application/json"
            )
        return lr.pool, server

    @staticmethod
    async def _body(request: web.Request) -> dict[str, Any]:
        try:
            doc = orjson.loads(await request.read())
        except orjson.JSONDecodeError:
            raise web.HTTPBadRequest(
                body=orjson.dumps({"error": "body must be JSON"}), content_type="application/json"
            ) from None
        if not isinstance(doc, dict):
            raise web.HTTPBadRequest(
                body=orjson.dumps({"error": "body must be a JSON object"}),
                content_type="application/json",
            )
        return doc

    async def post_state(self, request: web.Request) -> web.Response:
        pool, server = self._server(request)
        try:
            set_state(pool, server, (await self._body(request)).get("state"))
        except ActionError as err:
            return _error(400, str(err))
        return _json(server_status(server))

    async def post_weight(self, request: web.Request) -> web.Response:
        pool, server = self._server(request)
        try:
            set_weight(pool, server, (await self._body(request)).get("weight"))
        except ActionError as err:
            return _error(400, str(err))
        return _json(server_status(server))

    async def post_shutdown_sessions(self, request: web.Request) -> web.Response:
        _, server = self._server(request)
        return _json({"closed": shutdown_sessions(server)})

    async def post_reload(self, request: web.Request) -> web.Response:
        report = await self.runtime.reload()
        return web.Response(
            status=200 if report.ok else 422,
            body=orjson.dumps(report.as_dict(), option=orjson.OPT_INDENT_2),
            content_type="application/json",
        )

    async def post_reopen_logs(self, request: web.Request) -> web.Response:
        errors = await self.runtime.reopen_logs()
        return web.Response(
            status=500 if errors else 200,
            body=orjson.dumps({"ok": not errors, "errors": errors}),
            content_type="application/json",
        )

    async def post_vrrp(self, request: web.Request) -> web.Response:
        """keepalived's notify hook (`loadstone ctl notify`) reports a transition."""
        body = await self._body(request)
        instance, state = body.get("instance"), body.get("state")
        if not isinstance(instance, str) or state not in VRRP_STATES:
            return _error(400, f"need instance and state ({', '.join(VRRP_STATES)})")
        self.runtime.vrrp_transition(instance, state)
        return _json({"instance": instance, "state": state})

    async def get_metrics(self, request: web.Request) -> web.Response:
        return web.Response(
            body=generate_latest(self.registry),
            headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"},
        )
