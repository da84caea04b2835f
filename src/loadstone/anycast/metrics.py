"""Prometheus families of the anycast status (global.anycast)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric


def anycast_metrics(status: dict[str, Any] | None) -> Iterator[Metric]:
    if status is None:
        return
    labels = ["vip", "prefix"]
    announced = GaugeMetricFamily(
        "loadstone_vip_announced",
        "1 while the BGP speaker confirmed the VIP's route announced; 0 withdrawn or unknown",
        labels=labels,
    )
    known = GaugeMetricFamily(
        "loadstone_vip_state_known", "0 while the speaker's state is unknown", labels=labels
    )
    decision = GaugeMetricFamily(
        "loadstone_vip_decision", "1 while this instance decides to announce", labels=labels
    )
    for name, vip in status["vips"].items():
        row = [name, vip["prefix"]]
        announced.add_metric(row, 1 if vip["announced"] else 0)
        known.add_metric(row, 0 if vip["announced"] is None else 1)
        decision.add_metric(row, 1 if vip["decision"] == "announce" else 0)
    driver = status["driver"]
    up = GaugeMetricFamily(
        "loadstone_anycast_driver_up", "1 while the BGP speaker answers", labels=["driver"]
    )
    up.add_metric([driver["name"]], 1 if driver["up"] else 0)
    errors = CounterMetricFamily(
        "loadstone_anycast_driver_errors", "failed attempts to tell the speaker", labels=["driver"]
    )
    errors.add_metric([driver["name"]], driver["errors"])
    yield from (announced, known, decision, up, errors)
