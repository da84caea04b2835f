"""Per-source rates (loadstone.http.rates) with a clock the test moves, and the
rate conditions of request rules."""

from __future__ import annotations

import pytest

from loadstone.http.rates import ERRORS, REQUESTS, RateTable, is_error
from tests.unit.test_request_rules import rules, run


def test_sliding_estimate_as_haproxy_s_freq_ctr() -> None:
    table = RateTable([10.0])
    for t in range(5):
        table.count("a", REQUESTS, 100.0 + t)
    assert table.rate("a", REQUESTS, 10.0, 104.0) == 5
    # Half-way through the next window: half of the previous window still counts.
    assert table.rate("a", REQUESTS, 10.0, 115.0) == pytest.approx(2.5)
    assert table.rate("a", REQUESTS, 10.0, 125.0) == 0  # two periods on: nothing left
    assert table.rate("b", REQUESTS, 10.0, 104.0) == 0
    assert table.rate("a", ERRORS, 10.0, 104.0) == 0


def test_silent_sources_expire_and_the_table_is_bounded() -> None:
    table = RateTable([1.0], max_sources=3)
    for i, source in enumerate(["a", "b", "c", "d"]):
        table.count(source, REQUESTS, 50.0 + i * 0.1)
    assert list(table.table) == ["b", "c", "d"]  # the least recently seen went first
    table.count("e", REQUESTS, 60.0)
    assert list(table.table) == ["e"]  # silent for two periods: forgotten


def test_errors_are_4xx_but_authentication() -> None:
    assert [is_error(s) for s in (200, 302, 400, 401, 403, 404, 407, 429, 500)] == [
        False, False, True, False, True, True, False, True, False,
    ]  # fmt: skip


def test_request_rate_rule_limits_one_source_only() -> None:
    compiled = rules(
        "[{deny: 429, if: {request_rate: {above: 3, per: 60s}}, unless: {src: 10.9.0.0/16}}]"
    )
    statuses = [getattr(run(compiled, src="192.0.2.1")[0], "status", 200) for _ in range(5)]
    assert statuses == [200, 200, 200, 429, 429]
    assert run(compiled, src="192.0.2.2")[0] is None  # another client is served
    assert all(run(compiled, src="10.9.1.1")[0] is None for _ in range(5))  # exempt


def test_error_rate_rule_counts_answers() -> None:
    compiled = rules("[{deny: 429, if: {error_rate: {above: 2, per: 60s}}}]")
    for status in (404, 401, 403, 200, 404):
        assert run(compiled, src="192.0.2.1")[0] is None
        compiled.answered("192.0.2.1", status)
    verdict = run(compiled, src="192.0.2.1")[0]
    assert verdict is not None and verdict.status == 429
    assert run(compiled, src="192.0.2.9")[0] is None
