"""The admin server (aiohttp, on global.admin.bind): status API and metrics.

Everything here is read on demand from the runtime's live objects: no counter is
pushed to Prometheus per packet or per session; a scrape walks the pools.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import orjson
from aiohttp import web
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

import loadstone
from loadstone import datapath
from loadstone.config.model import AdminConfig
from loadstone.server import ServerRuntime

if TYPE_CHECKING:
    from loadstone.runtime import ListenerRuntime, Runtime


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


def listener_status(lr: ListenerRuntime) -> dict[str, Any]:
    frontend = lr.frontend
    status: dict[str, Any] = {
        "mode": lr.config.mode,
        "balance": lr.config.balance,
        "bind": [str(a) for a in lr.config.bind],
        "sessions": frontend.current_sessions,
        "sessions_total": frontend.sessions_total,
        "queued": len(frontend.queued),
        "bytes_in": frontend.bytes_in_done + sum(s.bytes_in for s in frontend.active),
        "bytes_out": frontend.bytes_out_done + sum(s.bytes_out for s in frontend.active),
    }
    if lr.config.balance == "active-backup":
        active = lr.pool.active
        status["active"] = active.name if active is not None else None
    status["servers"] = {s.name: server_status(s) for s in lr.pool.servers}
    return status


def status_document(runtime: Runtime) -> dict[str, Any]:
    return {
        "version": loadstone.__version__,
        "datapath": datapath.IMPLEMENTATION,
        "uptime": round(time.time() - runtime.started_at, 3),
        "listeners": {name: listener_status(lr) for name, lr in runtime.listeners.items()},
    }


class RuntimeCollector(Collector):
    """Prometheus metrics computed from the runtime at scrape time."""

    def __init__(self, runtime: Runtime) -> None:
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
            "loadstone_listener_active_server",
            "1 for the server an active-backup listener sends to",
            labels=sl,
        )
        for name, lr in self.runtime.listeners.items():
            doc = listener_status(lr)
            l_cur.add_metric([name], doc["sessions"])
            l_total.add_metric([name], doc["sessions_total"])
            l_bytes.add_metric([name, "in"], doc["bytes_in"])
            l_bytes.add_metric([name, "out"], doc["bytes_out"])
            if doc.get("active"):
                active.add_metric([name, doc["active"]], 1)
            for s in lr.pool.servers:
                labels = [name, s.name]
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
        yield from (checks, check_fail, l_cur, l_total, l_bytes, active)


class AdminServer:
    def __init__(self, runtime: Runtime, config: AdminConfig) -> None:
        self.runtime = runtime
        self.config = config
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(RuntimeCollector(runtime))
        self.app = web.Application()
        self.app.router.add_get("/api/v1/status", self.get_status)
        self.app.router.add_get("/metrics", self.get_metrics)
        self.runner: web.AppRunner | None = None

    async def start(self) -> None:
        assert self.config.bind is not None
        self.runner = web.AppRunner(self.app, access_log=None, handle_signals=False)
        await self.runner.setup()
        site = web.TCPSite(self.runner, self.config.bind.host, self.config.bind.port)
        try:
            await site.start()
        except OSError:
            await self.runner.cleanup()
            self.runner = None
            raise

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()
            self.runner = None

    async def get_status(self, request: web.Request) -> web.Response:
        body = orjson.dumps(status_document(self.runtime), option=orjson.OPT_INDENT_2)
        return web.Response(body=body, content_type="application/json")

    async def get_metrics(self, request: web.Request) -> web.Response:
        return web.Response(
            body=generate_latest(self.registry),
            headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"},
        )
