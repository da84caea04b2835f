"""/metrics: the Prometheus families, computed from the runtime at scrape time.

Nothing is pushed per packet, session or request: a scrape walks the listeners
and pools, and reads what the data paths counted (on the native path the
engine's workers count the histograms and HTTP codes themselves, read here in
one call per listener: loadstone.datapath.traffic).

Naming: counters end in `_total` (added by the client library), gauges of a
thing that also has a counter say `current` (`loadstone_server_current_sessions`
beside `loadstone_server_sessions_total`), so that no gauge and counter share a
base name, which OpenMetrics forbids. docs/operations.md lists the renames.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    InfoMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from loadstone.anycast.metrics import anycast_metrics
from loadstone.buildinfo import build_info
from loadstone.datapath.limits import LIMIT
from loadstone.datapath.traffic import BUCKETS, ROW_LABELS, Histogram, TrafficSnapshot
from loadstone.runtime_view import ListenerView, RuntimeView
from loadstone.status import listener_status

SERVER_STATES = ("up", "down", "drain", "maint")


class RuntimeCollector(Collector):
    """Prometheus metrics computed from the runtime at scrape time."""

    def __init__(self, runtime: RuntimeView) -> None:
        self.runtime = runtime

    def collect(self) -> Iterator[Metric]:
        # loadstone_build_info{version, data_path, build, llhttp, openssl} 1
        info = InfoMetricFamily("loadstone_build", "What this loadstone is built with")
        info.add_metric([], build_info().labels())
        yield info
        servers = ServerFamilies()
        listeners = ListenerFamilies()
        tls = TlsMetrics()
        for name, lr in self.runtime.listeners.items():
            doc = listener_status(lr)
            tls.add(name, doc.get("tls"))
            traffic = lr.frontend.traffic_metrics()
            listeners.add(name, lr, doc, traffic)
            servers.add(name, lr, doc, traffic)
        yield from servers.families()
        yield from listeners.families()
        reload_ok = GaugeMetricFamily(
            "loadstone_config_last_reload_successful", "0 if the last reload was rejected"
        )
        reload_ok.add_metric([], 1 if self.runtime.reload_report.ok else 0)
        generation = GaugeMetricFamily(
            "loadstone_config_generation", "Configurations applied since start (0 = first)"
        )
        generation.add_metric([], self.runtime.reload_report.generation)
        yield from (reload_ok, generation)
        yield from tls.families()
        logs = self.runtime.log_status()
        if logs is not None:
            # A destination that cannot keep up costs lines, never the event loop
            # (loadstone.logtargets.sinks): how many is worth an alert.
            dropped = CounterMetricFamily(
                "loadstone_log_dropped",
                "Log lines dropped: their destination could not take them",
                labels=["output", "destination"],
            )
            for output, ldoc in logs.items():
                dropped.add_metric([output, ldoc["destination"]], ldoc["dropped"])
            yield dropped
        yield from peer_metrics(self.runtime.peers_status())
        yield from anycast_metrics(self.runtime.anycast_status())
        yield from limit_metrics(LIMIT.status())


def add_codes(family: CounterMetricFamily, labels: list[str], row: list[int]) -> None:
    """One sample per code seen (code, class labels last)."""
    for (code, cls), count in zip(ROW_LABELS, row, strict=True):
        if count:
            family.add_metric([*labels, code, cls], count)


def add_histogram(family: HistogramMetricFamily, labels: list[str], hist: Histogram) -> None:
    cumulative, buckets = 0, []
    for bound, count in zip(BUCKETS, hist.counts[:-1], strict=True):
        cumulative += count
        buckets.append((repr(bound), cumulative))  # "0.0005", "1.0": Prometheus' own form
    cumulative += hist.counts[-1]
    buckets.append(("+Inf", cumulative))
    family.add_metric(labels, buckets, hist.total)


class ServerFamilies:
    def __init__(self) -> None:
        sl = ["listener", "server"]
        self.up = GaugeMetricFamily(
            "loadstone_server_up", "1 when the server takes new sessions (state up)", labels=sl
        )
        self.state = GaugeMetricFamily(
            "loadstone_server_state", "1 for the server's current state", labels=[*sl, "state"]
        )
        self.weight = GaugeMetricFamily("loadstone_server_weight", "Current weight", labels=sl)
        self.current = GaugeMetricFamily(
            "loadstone_server_current_sessions", "Sessions open now", labels=sl
        )
        self.limit = GaugeMetricFamily(
            "loadstone_server_max_sessions", "The server's maxconn, where it has one", labels=sl
        )
        self.total = CounterMetricFamily(
            "loadstone_server_sessions", "Sessions sent to the server", labels=sl
        )
        self.bytes = CounterMetricFamily(
            "loadstone_server_bytes",
            "Bytes relayed: in = client to server, out = server to client",
            labels=[*sl, "direction"],
        )
        self.connect_errors = CounterMetricFamily(
            "loadstone_server_connect_errors", "Failed connects to the server", labels=sl
        )
        self.tls_failures = CounterMetricFamily(
            "loadstone_server_tls_handshake_failures",
            "TLS handshakes with the server (re-encryption) that failed, by reason",
            labels=[*sl, "reason"],
        )
        self.check_ok = GaugeMetricFamily(
            "loadstone_server_check_success", "1 if the last health check passed", labels=sl
        )
        self.check_duration = GaugeMetricFamily(
            "loadstone_server_check_duration_seconds", "Duration of the last check", labels=sl
        )
        self.checks = CounterMetricFamily("loadstone_server_checks", "Checks run", labels=sl)
        self.check_failures = CounterMetricFamily(
            "loadstone_server_check_failures", "Checks that failed", labels=sl
        )
        self.active = GaugeMetricFamily(
            "loadstone_server_active_writer",
            "1 for the server an active-backup listener sends to (the Galera writer)",
            labels=sl,
        )
        self.responses = CounterMetricFamily(
            "loadstone_server_http_responses",
            "HTTP responses relayed from the server, by code (codes not listed "
            "one by one: code=other) and class",
            labels=[*sl, "code", "class"],
        )

    def add(
        self, name: str, lr: ListenerView, doc: dict[str, Any], traffic: TrafficSnapshot
    ) -> None:
        for s in lr.pool.servers:
            labels = [name, s.name]
            if lr.config.balance == "active-backup":
                self.active.add_metric(labels, 1 if doc["active"] == s.name else 0)
            self.up.add_metric(labels, 1 if s.state == "up" else 0)
            for st in SERVER_STATES:
                self.state.add_metric([*labels, st], 1 if s.state == st else 0)
            self.weight.add_metric(labels, s.weight)
            self.current.add_metric(labels, s.sessions)
            if s.maxconn is not None:
                self.limit.add_metric(labels, s.maxconn)
            self.total.add_metric(labels, s.sessions_total)
            self.bytes.add_metric([*labels, "in"], s.bytes_in)
            self.bytes.add_metric([*labels, "out"], s.bytes_out)
            self.connect_errors.add_metric(labels, s.connect_errors)
            for reason, count in s.tls_failures.items():
                self.tls_failures.add_metric([*labels, reason], count)
            if s.check_status in ("ok", "failed"):
                self.check_ok.add_metric(labels, 1 if s.check_status == "ok" else 0)
                self.check_duration.add_metric(labels, s.check_duration)
            self.checks.add_metric(labels, s.checks_total)
            self.check_failures.add_metric(labels, s.checks_failed)
            codes = traffic.server_codes.get(s.name)
            if codes is not None and lr.config.mode == "http":
                add_codes(self.responses, labels, codes)

    def families(self) -> Iterator[Metric]:
        yield from (
            self.up,
            self.state,
            self.weight,
            self.current,
            self.limit,
            self.total,
            self.bytes,
            self.connect_errors,
            self.tls_failures,
            self.check_ok,
            self.check_duration,
            self.checks,
            self.check_failures,
            self.active,
            self.responses,
        )


class ListenerFamilies:
    def __init__(self) -> None:
        ll = ["listener"]
        self.current = GaugeMetricFamily(
            "loadstone_listener_current_sessions",
            "Sessions open now (queued ones included; http: client connections)",
            labels=ll,
        )
        self.queued = GaugeMetricFamily(
            "loadstone_listener_current_queued_sessions",
            "Sessions waiting in the maxconn queue now",
            labels=ll,
        )
        self.limit = GaugeMetricFamily(
            "loadstone_listener_max_sessions", "The listener's maxconn", labels=ll
        )
        self.queue_timeout = GaugeMetricFamily(
            "loadstone_listener_queue_timeout_seconds",
            "How long a session may wait in the queue (timeouts.queue)",
            labels=ll,
        )
        self.total = CounterMetricFamily(
            "loadstone_listener_sessions", "Sessions accepted", labels=ll
        )
        self.bytes = CounterMetricFamily(
            "loadstone_listener_bytes", "Bytes relayed", labels=[*ll, "direction"]
        )
        self.responses = CounterMetricFamily(
            "loadstone_listener_http_responses",
            "HTTP responses sent to clients, by code (codes not listed one by one: "
            "code=other) and class; the proxy's own answers (502, 503, 504) included",
            labels=[*ll, "code", "class"],
        )
        self.duration = HistogramMetricFamily(
            "loadstone_listener_http_request_duration_seconds",
            "HTTP requests, from their first byte to the response's last (the log's Ta)",
            labels=ll,
        )
        self.connect = HistogramMetricFamily(
            "loadstone_listener_connect_duration_seconds",
            "Time to open a new server connection (TLS handshake included)",
            labels=ll,
        )

    def add(
        self, name: str, lr: ListenerView, doc: dict[str, Any], traffic: TrafficSnapshot
    ) -> None:
        labels = [name]
        self.current.add_metric(labels, doc["sessions"])
        self.queued.add_metric(labels, doc["queued"])
        self.limit.add_metric(labels, lr.config.maxconn)
        self.queue_timeout.add_metric(labels, lr.config.timeouts.queue)
        self.total.add_metric(labels, doc["sessions_total"])
        self.bytes.add_metric([*labels, "in"], doc["bytes_in"])
        self.bytes.add_metric([*labels, "out"], doc["bytes_out"])
        add_histogram(self.connect, labels, traffic.connect)
        if lr.config.mode == "http":
            add_codes(self.responses, labels, traffic.codes)
            add_histogram(self.duration, labels, traffic.request)

    def families(self) -> Iterator[Metric]:
        yield from (
            self.current,
            self.queued,
            self.limit,
            self.queue_timeout,
            self.total,
            self.bytes,
            self.responses,
            self.duration,
            self.connect,
        )


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
    """global.maxconn and the accept pauses at it or at the descriptor limit
    (datapath.limits); the descriptors themselves are process_open_fds/_max_fds."""
    conns = GaugeMetricFamily(
        "loadstone_process_connections", "Client connections of the process, all listeners"
    )
    conns.add_metric([], limits["connections"])
    yield conns
    if limits["maxconn"] is not None:
        maxconn = GaugeMetricFamily("loadstone_process_maxconn", "global.maxconn")
        maxconn.add_metric([], limits["maxconn"])
        yield maxconn
    if limits.get("fd_bound") is not None:
        fd_bound = GaugeMetricFamily(
            "loadstone_process_fd_bound",
            "Client connections RLIMIT_NOFILE leaves room for (two descriptors each, a reserve"
            " kept); accepting pauses there too",
        )
        fd_bound.add_metric([], limits["fd_bound"])
        yield fd_bound
    paused = CounterMetricFamily(
        "loadstone_accept_paused",
        "Times accepting paused: at global.maxconn, or out of descriptors (fd_limit)",
        labels=["reason"],
    )
    for reason, count in limits["accept_paused"].items():
        paused.add_metric([reason], count)
    yield paused


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
