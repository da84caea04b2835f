"""/metrics with traffic on both data paths, checked by Prometheus' own promtool
(Debian's prometheus package) and parsed back: HTTP responses by code and class
per listener and server, the request-duration and connect-time histograms
(counted by the engine's workers on the native path, in Python on the pure
one), queue and limits, loadstone_build_info, process metrics, and no family
whose name clashes under OpenMetrics."""

from __future__ import annotations

import json
import re
import shutil
import socket
import subprocess
import sys
import urllib.request
from collections.abc import Callable
from typing import Any

import pytest
from prometheus_client.openmetrics import parser as om_parser
from prometheus_client.parser import text_string_to_metric_families

from tests.integration.conftest import listener_config
from tests.integration.harness import ROOT, Backend, Loadstone, free_port

pytestmark = pytest.mark.integration

PROMTOOL = shutil.which("promtool") or "/usr/bin/promtool"

# What each http listener is sent: (path, how many times, the status it gets)
REQUESTS = [("/", 5, 200), ("/status?code=503", 3, 503), ("/status?code=404", 2, 404),
            ("/status?code=418", 1, 418)]  # fmt: skip


def get(port: int, path: str) -> int:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
            response.read()
            return int(response.status)
    except urllib.error.HTTPError as err:
        err.read()
        return int(err.code)


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def value(
    found: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str
) -> float:
    return found[(name, frozenset(labels.items()))]


def test_metrics_pass_promtool_with_traffic_on_both_paths(
    backends: Callable[..., list[Backend]], loadstone: Callable[..., Loadstone]
) -> None:
    servers = backends(2)
    tcp_servers = backends(1, mode="echo", prefix="e")
    ports = {"native_web": free_port(), "pure_web": free_port(), "db": free_port()}

    def http_listener(name: str, **extra: Any) -> dict[str, Any]:
        return {
            "bind": [f"127.0.0.1:{ports[name]}"],
            "mode": "http",
            "maxconn": 100,
            "servers": [{"name": b.name, "address": b.address} for b in servers],
            **extra,
        }

    config = {
        "global": {"grace": "5s"},
        "defaults": {"timeouts": {"connect": "1s", "check": "500ms"}},
        "listeners": {
            "native_web": http_listener("native_web"),
            # Location rewriting keeps this one on the pure path
            "pure_web": http_listener("pure_web", rewrite_location="https"),
            "db": {
                "bind": [f"127.0.0.1:{ports['db']}"],
                "mode": "tcp",
                "maxconn": 7,
                "servers": [{"name": b.name, "address": b.address} for b in tcp_servers],
            },
        },
    }
    ls = loadstone(config)
    status = ls.status()["listeners"]
    if status["native_web"]["data_path"] != "native":
        pytest.fail(f"native_web is not native: {status['native_web'].get('data_path_reason')}")
    assert status["pure_web"]["data_path"] == "pure"
    ls.wait_all_up("native_web")
    ls.wait_all_up("pure_web")

    for name in ("native_web", "pure_web"):
        for path, times, expected in REQUESTS:
            for _ in range(times):
                assert get(ports[name], path) == expected
    for _ in range(3):
        with socket.create_connection(("127.0.0.1", ports["db"]), timeout=5) as conn:
            conn.sendall(b"ping")
            assert conn.recv(16) == b"ping"

    text = ls.get("/metrics").decode()
    checked = subprocess.run(
        [PROMTOOL, "check", "metrics"], input=text, capture_output=True, text=True, timeout=30
    )
    assert checked.returncode == 0 and not checked.stdout + checked.stderr.strip(), (
        checked.stdout + checked.stderr
    )

    found = samples(text)
    total = sum(times for _, times, _ in REQUESTS)
    for name in ("native_web", "pure_web"):
        responses = "loadstone_listener_http_responses_total"
        assert value(found, responses, listener=name, code="200", **{"class": "2xx"}) == 5
        assert value(found, responses, listener=name, code="503", **{"class": "5xx"}) == 3
        assert value(found, responses, listener=name, code="404", **{"class": "4xx"}) == 2
        # 418 is not counted one by one: it is one of the other 4xx codes
        assert value(found, responses, listener=name, code="other", **{"class": "4xx"}) == 1
        per_server = sum(
            v
            for (metric, labels), v in found.items()
            if metric == "loadstone_server_http_responses_total" and ("listener", name) in labels
        )
        assert per_server == total
        hist = "loadstone_listener_http_request_duration_seconds"
        assert value(found, hist + "_count", listener=name) == total
        assert value(found, hist + "_bucket", listener=name, le="+Inf") == total
        assert 0 < value(found, hist + "_sum", listener=name) < total * 5
        assert value(found, hist + "_bucket", listener=name, le="60.0") == total
        connects = value(found, "loadstone_listener_connect_duration_seconds_count", listener=name)
        assert 1 <= connects <= total  # new server connections: keep-alive reuses some
        assert value(found, "loadstone_listener_max_sessions", listener=name) == 100
    assert value(found, "loadstone_listener_connect_duration_seconds_count", listener="db") == 3
    assert value(found, "loadstone_listener_max_sessions", listener="db") == 7
    assert value(found, "loadstone_listener_current_queued_sessions", listener="db") == 0
    assert value(found, "loadstone_listener_queue_timeout_seconds", listener="db") == 30
    assert value(found, "loadstone_server_sessions_total", listener="db", server="e3") == 3
    assert (
        "loadstone_server_current_sessions",
        frozenset({("listener", "db"), ("server", "e3")}),
    ) in found

    info = [labels for (metric, labels) in found if metric == "loadstone_build_info"]
    assert len(info) == 1
    build = dict(info[0])
    assert build["data_path"] == "native" and build["llhttp"].count(".") == 2
    assert build["openssl"][0].isdigit() and build["version"] and build["build"]
    assert value(found, "process_open_fds") > 0
    assert value(found, "process_resident_memory_bytes") > 0
    assert value(found, "process_max_fds") > 0
    assert ("process_cpu_seconds_total", frozenset()) in found
    assert ("process_start_time_seconds", frozenset()) in found

    # OpenMetrics, for a scraper that asks: its parser refuses a gauge and a
    # counter that share a name (the old loadstone_server_sessions pair).
    request = urllib.request.Request(
        f"http://127.0.0.1:{ls.admin_port}/metrics",
        headers={"Accept": "application/openmetrics-text; version=1.0.0"},
    )
    with urllib.request.urlopen(request, timeout=5) as response:
        assert response.headers["Content-Type"].startswith("application/openmetrics-text")
        families = list(om_parser.text_string_to_metric_families(response.read().decode()))
    names = [f.name for f in families]
    assert len(names) == len(set(names))
    assert "loadstone_build" in names


PROMETHEUS_DIR = ROOT / "configs" / "prometheus"
DASHBOARD = ROOT / "configs" / "grafana-dashboard.json"
METRICS_DOC = ROOT / "docs" / "metrics.md"
METRIC_NAME = re.compile(r"\b((?:loadstone|process)_[a-z_]+)")


def documented_metrics() -> set[str]:
    """The names in docs/metrics.md (counters with _total)."""
    return set(METRIC_NAME.findall(METRICS_DOC.read_text()))


def base_name(sample: str) -> str:
    for suffix in ("_bucket", "_count", "_sum"):
        if sample.endswith(suffix) and "duration_seconds" in sample:
            return sample[: -len(suffix)]
    return sample


def test_every_exported_metric_is_documented(
    backends: Callable[..., list[Backend]], loadstone: Callable[..., Loadstone]
) -> None:
    servers = backends(1)
    ls = loadstone(listener_config(servers, mode="http", balance="active-backup"))
    ls.wait_all_up("web")
    exported = {base_name(name) for name, _ in samples(ls.get("/metrics").decode())}
    assert exported - documented_metrics() == set()


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [PROMTOOL, *args], cwd=PROMETHEUS_DIR, capture_output=True, text=True, timeout=60
    )


def test_alert_rules_pass_promtool() -> None:
    rules = promtool("check", "rules", "loadstone-alerts.yml")
    assert rules.returncode == 0, rules.stdout + rules.stderr
    assert "SUCCESS: 9 rules found" in rules.stdout
    unit = promtool("test", "rules", "loadstone-alerts.test.yml")
    assert unit.returncode == 0 and "SUCCESS" in unit.stdout, unit.stdout + unit.stderr


def test_dashboard_and_rules_use_documented_metrics() -> None:
    current = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "grafana-dashboard.py"), "--check"], timeout=60
    )
    assert current.returncode == 0, "configs/grafana-dashboard.json is stale: run the script"
    documented = documented_metrics()
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    assert all("$__rate_interval" in e for e in exprs if "rate(" in e)
    assert all('instance=~"$instance"' in e for e in exprs)
    used = {base_name(n) for e in exprs for n in METRIC_NAME.findall(e)}
    used |= {
        base_name(n)
        for n in METRIC_NAME.findall((PROMETHEUS_DIR / "loadstone-alerts.yml").read_text())
    }
    assert used - documented == set()
    assert "histogram_quantile" in "".join(exprs) and 'class=\\"5xx\\"' in json.dumps(exprs)


def test_pure_tcp_listener_counts_connect_times(
    backends: Callable[..., list[Backend]], loadstone: Callable[..., Loadstone]
) -> None:
    servers = backends(1, mode="echo")
    config = listener_config(servers)
    ls = loadstone(config, env={"LOADSTONE_NO_EXTENSIONS": "1"})
    assert ls.status()["datapath"] == "pure"
    port = int(config["listeners"]["web"]["bind"][0].rsplit(":", 1)[1])
    for _ in range(2):
        with socket.create_connection(("127.0.0.1", port), timeout=5) as conn:
            conn.sendall(b"ping")
            assert conn.recv(16) == b"ping"
    found = samples(ls.get("/metrics").decode())
    hist = "loadstone_listener_connect_duration_seconds"
    assert value(found, hist + "_count", listener="web") == 2
    assert value(found, hist + "_bucket", listener="web", le="+Inf") == 2
    assert (
        "loadstone_listener_http_request_duration_seconds_count",
        frozenset({("listener", "web")}),
    ) not in found
    info = [dict(labels) for (metric, labels) in found if metric == "loadstone_build_info"]
    assert info[0]["data_path"] == "pure" and info[0]["llhttp"] == "none"
