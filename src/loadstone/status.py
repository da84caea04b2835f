"""The status API's documents (GET /api/v1/status, and what /metrics and the
stats page read): built on demand from the runtime's live objects."""

from __future__ import annotations

import time
from typing import Any

import loadstone
from loadstone import datapath
from loadstone.datapath.limits import LIMIT
from loadstone.datapath.seam import Frontend
from loadstone.datapath.traffic import by_class
from loadstone.runtime_view import ListenerView, RuntimeView
from loadstone.server import ServerRuntime


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
        # failed TLS handshakes with the server (re-encryption), by reason
        "tls_handshake_failures": dict(server.tls_failures),
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
    status["maxconn"] = lr.config.maxconn  # the stats page shows the queue against it
    status["servers"] = {s.name: server_status(s) for s in lr.pool.servers}
    if lr.config.mode == "http":
        # Each server's responses by class (the stats page's 2xx/4xx/5xx rates).
        codes = frontend.traffic_metrics().server_codes
        for name, doc in status["servers"].items():
            doc["http_responses"] = by_class(codes.get(name))
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
        "anycast": runtime.anycast_status(),
    }
