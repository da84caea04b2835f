"""hey's report, and the HTTP scenario groups (no hey, nginx or proxies needed)."""

from __future__ import annotations

import pytest

from benchmarks.harness import hey
from benchmarks.harness.scenarios import DEFAULT, HTTP, select

REPORT = """
Summary:
  Total:\t10.0021 secs
  Slowest:\t0.0455 secs
  Fastest:\t0.0001 secs
  Average:\t0.0009 secs
  Requests/sec:\t4987.2345

  Total data:\t4985000 bytes
  Size/request:\t100 bytes

Latency distribution:
  10% in 0.0003 secs
  25% in 0.0004 secs
  50% in 0.0005 secs
  75% in 0.0007 secs
  90% in 0.0011 secs
  95% in 0.0016 secs
  99% in 0.0095 secs

Status code distribution:
  [200]\t49850 responses
  [503]\t3 responses

Error distribution:
  [2]\tGet "http://127.0.0.1:1/": dial tcp 127.0.0.1:1: connect: connection refused
"""


def test_parse() -> None:
    result = hey.parse(REPORT)
    assert result.requests == 49853
    assert result.duration == pytest.approx(10.0021)
    assert result.requests_per_second == pytest.approx(4987.2345)
    assert result.latency_percentiles == {"50": 0.0005, "75": 0.0007, "90": 0.0011, "99": 0.0095}
    assert result.errors == {"status": 3, "socket": 2}
    assert result.error_count == 5


def test_parse_refuses_garbage() -> None:
    with pytest.raises(hey.WrkOutputError):
        hey.parse("Error: something\n")


def test_argv_spreads_the_rate_over_workers() -> None:
    argv = hey.build_argv("http://h/", rate=5000, connections=50, duration=10, headers=("A: b",))
    assert argv == ["hey", "-z", "10s", "-c", "50", "-q", "100", "-H", "A: b", "http://h/"]


def test_scenario_groups() -> None:
    assert [s.name for s in select("tcp")] == list(DEFAULT)
    http = select("http")
    assert [s.name for s in http] == list(HTTP)
    assert {s.mode for s in http} == {"http"}
    assert [s.rate for s in http] == [0, 0, 5000]
    assert [s.name for s in select("keepalive,http-p99")] == ["keepalive", "http-p99"]
