#!/usr/bin/env python3
"""Write configs/grafana-dashboard.json (run after changing a panel here).

Every query is filtered by $instance and $listener. The TLS panels (days until
a certificate expires, handshake failures) stay empty where no listener
terminates TLS; the alert rules (configs/prometheus/) watch expiry too. Panels say in their title
whether they sum over the selected instances ("all instances") or show one
line per instance: three controllers scraped separately would otherwise triple
every count. Rates use $__rate_interval, so they follow the scrape interval.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

OUT = Path(__file__).resolve().parents[1] / "configs" / "grafana-dashboard.json"
DS = {"type": "prometheus", "uid": "${datasource}"}
SEL = 'instance=~"$instance",listener=~"$listener"'
RI = "$__rate_interval"


def rate(metric: str, extra: str = "") -> str:
    return f"rate({metric}{{{SEL}{extra}}}[{RI}])"


FIVE = ',class="5xx"'
RESPONSES = "loadstone_listener_http_responses_total"
SERVER_RESPONSES = "loadstone_server_http_responses_total"
DURATION = "loadstone_listener_http_request_duration_seconds_bucket"
CONNECT = "loadstone_listener_connect_duration_seconds_bucket"
ONLY_INSTANCE = '{instance=~"$instance"}'
PROCESS = '{instance=~"$instance",job=~"$job"}'


def panel(
    kind: str, title: str, targets: list[tuple[str, str]], w: int, h: int, **extra: Any
) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "type": kind,
        "title": title,
        "datasource": DS,
        "gridPos": {"w": w, "h": h},
        "targets": [
            {"refId": chr(ord("A") + i), "expr": expr, "legendFormat": legend}
            for i, (expr, legend) in enumerate(targets)
        ],
    }
    doc.update(extra)
    return doc


def unit(name: str, **defaults: Any) -> dict[str, Any]:
    return {"fieldConfig": {"defaults": {"unit": name, **defaults}, "overrides": []}}


UP_MAPPING = {
    "mappings": [
        {
            "type": "value",
            "options": {
                "0": {"text": "not up", "color": "red"},
                "1": {"text": "up", "color": "green"},
            },
        }
    ]
}

PANELS = [
    # -- the state at a glance --------------------------------------------------------
    panel(
        "stat",
        "Instances scraped",
        [(f"count(loadstone_build_info{ONLY_INSTANCE})", "")],
        4,
        4,
    ),
    panel(
        "stat",
        "Servers not up (on any instance)",
        [
            (
                f"count(min by (listener, server) (loadstone_server_up{{{SEL}}}) == 0)"
                " or vector(0)",
                "",
            )
        ],
        5,
        4,
    ),
    panel(
        "stat",
        "Instances whose last reload failed",
        [
            (
                f"count(loadstone_config_last_reload_successful{ONLY_INSTANCE} == 0) or vector(0)",
                "",
            )
        ],
        5,
        4,
    ),
    panel(
        "table",
        "Active writer per instance (active-backup listeners)",
        [(f"loadstone_server_active_writer{{{SEL}}} == 1", "{{instance}} {{listener}}/{{server}}")],
        10,
        4,
    ),
    panel(
        "state-timeline",
        "Server state per instance",
        [(f"loadstone_server_up{{{SEL}}}", "{{instance}} {{listener}}/{{server}}")],
        24,
        8,
        fieldConfig={"defaults": UP_MAPPING, "overrides": []},
    ),
    # -- HTTP ---------------------------------------------------------------------------
    panel(
        "timeseries",
        "HTTP responses / s by class (all instances)",
        [(f"sum by (class) ({rate(RESPONSES)})", "{{class}}")],
        12,
        8,
        **unit("reqps"),
    ),
    panel(
        "timeseries",
        "HTTP 5xx share by listener (all instances)",
        [
            (
                f"sum by (listener) ({rate(RESPONSES, FIVE)})"
                f" / sum by (listener) ({rate(RESPONSES)})",
                "{{listener}}",
            )
        ],
        12,
        8,
        **unit("percentunit"),
    ),
    panel(
        "timeseries",
        "HTTP 5xx / s by server and code (all instances)",
        [
            (
                f"sum by (listener, server, code) ({rate(SERVER_RESPONSES, FIVE)})",
                "{{listener}}/{{server}} {{code}}",
            )
        ],
        12,
        8,
        **unit("reqps"),
    ),
    panel(
        "timeseries",
        "HTTP 5xx / s per instance",
        [
            (
                f"sum by (instance) ({rate(RESPONSES, FIVE)})",
                "{{instance}}",
            )
        ],
        12,
        8,
        **unit("reqps"),
    ),
    panel(
        "timeseries",
        "Request duration p50 / p95 / p99 by listener (all instances)",
        [
            (
                f"histogram_quantile({q}, sum by (le, listener) ({rate(DURATION)}))",
                f"{{{{listener}}}} p{int(q * 100)}",
            )
            for q in (0.5, 0.95, 0.99)
        ],
        12,
        8,
        **unit("s"),
    ),
    panel(
        "timeseries",
        "Request duration p95 per instance",
        [
            (
                f"histogram_quantile(0.95, sum by (le, instance) ({rate(DURATION)}))",
                "{{instance}}",
            )
        ],
        12,
        8,
        **unit("s"),
    ),
    panel(
        "timeseries",
        "Connect time p95 by listener (all instances)",
        [
            (
                f"histogram_quantile(0.95, sum by (le, listener) ({rate(CONNECT)}))",
                "{{listener}}",
            )
        ],
        12,
        8,
        **unit("s"),
    ),
    # -- sessions and queue ----------------------------------------------------------
    panel(
        "timeseries",
        "Queued sessions per instance (maxconn reached)",
        [
            (f"loadstone_listener_current_queued_sessions{{{SEL}}}", "{{instance}} {{listener}}"),
        ],
        12,
        8,
        **unit("short"),
    ),
    panel(
        "timeseries",
        "Open sessions by listener (all instances)",
        [(f"sum by (listener) (loadstone_listener_current_sessions{{{SEL}}})", "{{listener}}")],
        12,
        8,
        **unit("short"),
    ),
    panel(
        "timeseries",
        "Open sessions per instance, and maxconn",
        [
            (f"loadstone_listener_current_sessions{{{SEL}}}", "{{instance}} {{listener}}"),
            (f"loadstone_listener_max_sessions{{{SEL}}}", "{{instance}} {{listener}} maxconn"),
        ],
        12,
        8,
        **unit("short"),
    ),
    panel(
        "timeseries",
        "New sessions / s by server (all instances)",
        [
            (
                f"sum by (listener, server) ({rate('loadstone_server_sessions_total')})",
                "{{listener}}/{{server}}",
            )
        ],
        12,
        8,
        **unit("ops"),
    ),
    panel(
        "timeseries",
        "Throughput by listener (all instances)",
        [
            (
                f"sum by (listener, direction) ({rate('loadstone_listener_bytes_total')})",
                "{{listener}} {{direction}}",
            )
        ],
        12,
        8,
        **unit("Bps"),
    ),
    panel(
        "timeseries",
        "Connect errors / s by server (all instances)",
        [
            (
                f"sum by (listener, server) ({rate('loadstone_server_connect_errors_total')})",
                "{{listener}}/{{server}}",
            )
        ],
        12,
        8,
        **unit("ops"),
    ),
    # -- checks ------------------------------------------------------------------------
    panel(
        "timeseries",
        "Check duration per instance",
        [
            (
                f"loadstone_server_check_duration_seconds{{{SEL}}}",
                "{{instance}} {{listener}}/{{server}}",
            )
        ],
        12,
        8,
        **unit("s"),
    ),
    panel(
        "timeseries",
        "Check failures / s per instance",
        [(rate("loadstone_server_check_failures_total"), "{{instance}} {{listener}}/{{server}}")],
        12,
        8,
        **unit("ops"),
    ),
    # -- TLS ---------------------------------------------------------------------------
    panel(
        "table",
        "Days until a certificate expires (TLS listeners)",
        [
            (
                f"min by (listener, file, subject) ("
                f"loadstone_tls_certificate_expiry_timestamp_seconds{{{SEL}}} - time()) / 86400",
                "{{listener}} {{subject}}",
            )
        ],
        12,
        6,
        **unit(
            "d",
            thresholds={
                "mode": "absolute",
                "steps": [
                    {"color": "red", "value": None},
                    {"color": "orange", "value": 3},
                    {"color": "green", "value": 30},
                ],
            },
        ),
    ),
    panel(
        "timeseries",
        "TLS handshake failures / s by reason (all instances)",
        [
            (
                "sum by (listener, reason) ("
                f"rate(loadstone_tls_handshake_failures_total{{{SEL}}}[{RI}]))",
                "{{listener}} {{reason}}",
            )
        ],
        12,
        6,
        **unit("ops"),
    ),
    # -- the process -------------------------------------------------------------------
    panel(
        "timeseries",
        "Log lines dropped / s per instance",
        [
            (
                f"rate(loadstone_log_dropped_total{ONLY_INSTANCE}[{RI}])",
                "{{instance}} {{output}} {{destination}}",
            )
        ],
        8,
        8,
        **unit("ops"),
    ),
    panel(
        "timeseries",
        "CPU per instance",
        [
            (
                f"rate(process_cpu_seconds_total{PROCESS}[{RI}])",
                "{{instance}}",
            )
        ],
        8,
        8,
        **unit("percentunit"),
    ),
    panel(
        "timeseries",
        "Memory (RSS) per instance",
        [(f"process_resident_memory_bytes{PROCESS}", "{{instance}}")],
        8,
        8,
        **unit("bytes"),
    ),
]


def layout(panels: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Fill rows of 24 columns left to right, in order; ids in order."""
    x = y = row_h = 0
    for i, p in enumerate(panels, start=1):
        w, h = p["gridPos"]["w"], p["gridPos"]["h"]
        if x + w > 24:
            x, y, row_h = 0, y + row_h, 0
        p["id"] = i
        p["gridPos"] = {"h": h, "w": w, "x": x, "y": y}
        x += w
        row_h = max(row_h, h)
    return panels


def variable(name: str, label: str, query: str) -> dict[str, Any]:
    return {
        "name": name,
        "label": label,
        "type": "query",
        "datasource": DS,
        "query": query,
        "definition": query,
        "includeAll": True,
        "multi": True,
        "current": {"text": "All", "value": "$__all"},
        "refresh": 2,
        "allValue": ".*",
    }


def dashboard() -> dict[str, Any]:
    return {
        "title": "loadstone",
        "uid": "loadstone",
        "description": "Generated by scripts/grafana-dashboard.py",
        "schemaVersion": 39,
        "version": 2,
        "editable": True,
        "time": {"from": "now-1h", "to": "now"},
        "refresh": "10s",
        "tags": ["loadstone", "openstack"],
        "templating": {
            "list": [
                {
                    "name": "datasource",
                    "type": "datasource",
                    "query": "prometheus",
                    "label": "Data source",
                },
                variable("job", "Job", "label_values(loadstone_build_info, job)"),
                variable(
                    "instance",
                    "Instance",
                    'label_values(loadstone_build_info{job=~"$job"}, instance)',
                ),
                variable(
                    "listener",
                    "Listener",
                    'label_values(loadstone_server_up{instance=~"$instance"}, listener)',
                ),
            ]
        },
        "panels": layout(PANELS),
    }


def render() -> str:
    return json.dumps(dashboard(), indent=2) + "\n"


if __name__ == "__main__":
    if sys.argv[1:] == ["--check"]:
        sys.exit(0 if OUT.read_text() == render() else 1)
    OUT.write_text(render())
