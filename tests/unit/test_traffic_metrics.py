"""The traffic metrics' buckets and codes: the pure path's (datapath.traffic) and
the native engine's (engine/metrics.c) are the same lists, and a status lands in
the same counter on both."""

from __future__ import annotations

import importlib.util

import pytest

from loadstone.datapath.traffic import (
    BUCKETS,
    ROW_LABELS,
    TRACKED_CODES,
    Histogram,
    TrafficCounters,
    code_row_index,
)

NATIVE = importlib.util.find_spec("loadstone._fastpath.relay") is not None


@pytest.mark.skipif(not NATIVE, reason="compares with the native build, which is not here")
def test_engine_counts_the_same_buckets_and_codes() -> None:
    from loadstone._fastpath import relay

    assert tuple(relay.metric_buckets()) == BUCKETS
    assert tuple(relay.metric_codes()) == TRACKED_CODES
    engine = relay.Engine(workers=1)
    try:
        (request, _), (connect, _), codes = engine.listener_metrics(engine.new_listener())
    finally:
        engine.close()
    assert len(request) == len(connect) == len(BUCKETS) + 1
    assert len(codes) == len(ROW_LABELS)


def test_codes_land_in_their_row() -> None:
    assert ROW_LABELS[code_row_index(503)] == ("503", "5xx")
    assert ROW_LABELS[code_row_index(418)] == ("other", "4xx")
    assert ROW_LABELS[code_row_index(299)] == ("other", "2xx")
    assert ROW_LABELS[code_row_index(0)] == ("other", "other")
    assert ROW_LABELS[code_row_index(999)] == ("other", "other")


def test_histogram_buckets_hold_their_upper_bound() -> None:
    hist = Histogram()
    hist.observe(0.0005)  # on a bound: that bucket (le)
    hist.observe(0.0006)
    hist.observe(120.0)  # above every bound
    assert hist.counts[0] == 1 and hist.counts[1] == 1 and hist.counts[-1] == 1
    assert hist.total == pytest.approx(120.0011)


def test_counters_per_server_and_none() -> None:
    counters = TrafficCounters()
    counters.response("s1", 200, 0.01)
    counters.response(None, 503, 0.0)  # the proxy's own answer: no server
    snap = counters.snapshot()
    assert sum(snap.codes) == 2 and sum(snap.request.counts) == 2
    assert snap.server_codes == {"s1": [1 if i == code_row_index(200) else 0 for i in range(40)]}
