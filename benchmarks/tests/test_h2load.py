"""h2load's report and log, and the HTTP scenario groups (no h2load, nginx or proxies needed)."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks.harness import h2load, wrk
from benchmarks.harness.scenarios import DEFAULT, HTTP, select

# nghttp2 1.52's h2load --h1 against nginx; the progress lines left out.
REPORT = """\
starting benchmark...
Application protocol: http/1.1

finished in 10.00s, 4999.80 req/s, 1.03MB/s
requests: 50000 total, 50000 started, 49998 done, 49990 succeeded, 10 failed, 2 errored, 0 timeout
status codes: 49990 2xx, 0 3xx, 0 4xx, 8 5xx
traffic: 7.47MB (7830000) total, 5.27MB (5526000) headers (space savings 0.00%), 292.97KB (300000) \
data
                     min         max         mean         sd        +/- sd
time for request:      140us      3.56ms       423us       518us    93.50%
"""


def log_of(durations_us: list[int], failed: int = 0) -> str:
    lines = [f"1795472768069167\t200\t{d}" for d in durations_us]
    lines += ["1795472768069999\t-1\t5000000"] * failed  # no answer: not a latency
    return "\n".join(lines) + "\n"


def test_parse() -> None:
    result = h2load.parse(REPORT, log_of(list(range(1, 101)), failed=2))
    assert result.requests == 49998
    assert result.duration == pytest.approx(10.0)
    assert result.requests_per_second == pytest.approx(4999.80)
    assert result.bytes_read == 7830000
    assert result.latency_percentiles == {"50": 50e-6, "75": 75e-6, "90": 90e-6, "99": 99e-6}
    # 10 failed = 8 answered 5xx + 2 without an answer; 2 errored
    assert result.errors == {"status": 8, "socket": 4}
    assert result.error_count == 12


def test_percentiles_are_nearest_rank() -> None:
    assert h2load.percentiles([300, 100, 200]) == {"50": 2e-4, "75": 3e-4, "90": 3e-4, "99": 3e-4}
    assert h2load.percentiles([]) == {}


def test_parse_refuses_garbage() -> None:
    with pytest.raises(wrk.WrkOutputError):
        h2load.parse("Error: something\n", "")


def test_argv_spreads_the_rate_over_clients() -> None:
    argv = h2load.build_argv(
        "http://h/",
        rate=5000,
        connections=50,
        duration=10,
        log_file=Path("/t/l"),
        headers=("A: b",),
    )
    assert argv == [
        "h2load", "--h1", "-c", "50", "--rps", "100", "-D", "10", "--log-file", "/t/l",
        "-H", "A: b", "http://h/",
    ]  # fmt: skip


def test_scenario_groups() -> None:
    assert [s.name for s in select("tcp")] == list(DEFAULT)
    http = select("http")
    assert [s.name for s in http] == list(HTTP)
    assert {s.mode for s in http} == {"http"}
    assert [s.rate for s in http] == [0, 0, 5000]
    assert [s.name for s in select("keepalive,http-p99")] == ["keepalive", "http-p99"]
