"""Unit tests of the benchmark's parsing and reporting (no wrk, nginx or proxies needed).

Run with: .venv/bin/pytest benchmarks/tests
"""

from __future__ import annotations

import os

import pytest

from benchmarks.harness import wrk
from benchmarks.harness.measure import Run, Summary
from benchmarks.harness.procs import cpu_seconds, process_tree, rss_bytes
from benchmarks.harness.report import (
    figure_rows,
    paired,
    ratio_rows,
    tables,
    warnings,
)
from benchmarks.harness.scenarios import SCENARIOS, select

CLEAN = """\
Running 10s test @ http://127.0.0.1:40001/
  1 threads and 50 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     1.17ms  250.08us   5.43ms   81.58%
    Req/Sec    42.95k     2.47k   46.69k    80.00%
  Latency Distribution
     50%    1.14ms
     75%    1.27ms
     90%  850.00us
     99%    1.02s
  428207 requests in 10.00s, 95.61MB read
Requests/sec:  42716.16
Transfer/sec:      9.53MB
"""

WITH_ERRORS = """\
Running 1m test @ http://127.0.0.1:40001/10m
  1 threads and 4 connections
  Latency Distribution
     50%   60.00ms
     99%  120.00ms
  3721 requests in 1.00m, 36.34GB read
  Socket errors: connect 1, read 2, write 3, timeout 4
  Non-2xx or 3xx responses: 5
Requests/sec:     62.01
Transfer/sec:    620.20MB
"""


def test_parse_clean_run() -> None:
    result = wrk.parse(CLEAN)
    assert result.requests == 428207
    assert result.duration == pytest.approx(10.0)
    assert result.bytes_read == pytest.approx(95.61 * 2**20)
    assert result.requests_per_second == pytest.approx(42716.16)
    assert result.bytes_per_second == pytest.approx(9.53 * 2**20)
    assert result.latency_percentiles == pytest.approx(
        {"50": 1.14e-3, "75": 1.27e-3, "90": 850e-6, "99": 1.02}
    )
    assert result.error_count == 0


def test_parse_errors_and_units() -> None:
    result = wrk.parse(WITH_ERRORS)
    assert result.duration == pytest.approx(60.0)
    assert result.bytes_read == pytest.approx(36.34 * 2**30)
    assert result.errors == {"connect": 1, "read": 2, "write": 3, "timeout": 4, "status": 5}
    assert result.error_count == 15


def test_parse_rejects_truncated_output() -> None:
    with pytest.raises(wrk.WrkOutputError):
        wrk.parse(CLEAN.replace("Requests/sec", "Reqs"))


def test_build_argv_never_asks_for_more_threads_than_connections() -> None:
    argv = wrk.build_argv(
        "http://127.0.0.1:1/", connections=4, duration=3, threads=8, headers=("A: b",)
    )
    assert argv == [
        "wrk", "-t", "4", "-c", "4", "-d", "3s", "--latency", "-H", "A: b", "http://127.0.0.1:1/"
    ]  # fmt: skip


def test_select_scenarios() -> None:
    assert [s.name for s in select("10m, keepalive")] == ["10m", "keepalive"]
    assert SCENARIOS["close"].headers == ("Connection: close",)
    with pytest.raises(ValueError, match="nope"):
        select("keepalive,nope")


def test_proc_readings_of_this_process() -> None:
    assert process_tree(os.getpid())[0] == os.getpid()
    assert cpu_seconds(os.getpid()) > 0
    assert rss_bytes(os.getpid()) > 1024 * 1024


def _summary(proxy: str, rps: float, errors: int = 0, foreign: float = 0.0) -> Summary:
    return Summary(
        proxy=proxy,
        scenario="keepalive",
        runs=1,
        requests_per_second=rps,
        mib_per_second=1.0,
        cpu_us_per_request=10.0,
        rss_mib=20.0,
        latency_p99_ms=1.0,
        wrk_cpu_share=0.5,
        backend_cpu_us_per_request=5.0,
        foreign_cores=foreign,
        errors=errors,
    )


def test_rows_give_ratio_candidate_over_baseline_and_flag_errors() -> None:
    summaries = [_summary("haproxy", 1000.0), _summary("loadstone", 850.0, errors=3)]
    # figures: scenario, proxy, req/s, MB/s, cpu us/req, p99, rss, errors
    assert figure_rows(summaries) == [
        ("keepalive", "haproxy", "1,000", "1.0", "10.0", "1.00", "20.0", "0"),
        ("", "loadstone", "850", "1.0", "10.0", "1.00", "20.0", "3 !"),
    ]
    # ratios: scenario, build, to, req/s, MB/s, cpu us/req, p99, rss (no errors column)
    assert ratio_rows(summaries, ["loadstone"]) == [
        ("keepalive", "loadstone", "haproxy", "0.85x", "1.00x", "1.00x", "1.00x", "1.00x")
    ]
    assert "| keepalive | loadstone | haproxy | 0.85x | 1.00x |" in tables(
        [_summary("haproxy", 1000.0), _summary("loadstone", 850.0)], ["loadstone"], markdown=True
    )


def test_rows_with_one_proxy_have_no_ratio() -> None:
    only = [_summary("haproxy", 1000.0)]
    assert figure_rows(only)[0][:3] == ("keepalive", "haproxy", "1,000")
    assert ratio_rows(only, ["loadstone"]) == []
    assert "ratio to" not in tables(only, ["loadstone"], markdown=False)


def test_warnings_name_errors_and_disturbed_runs() -> None:
    notes = warnings(
        [_summary("haproxy", 1.0, errors=2), _summary("loadstone", 1.0, foreign=0.5)],
        max_foreign=0.15,
    )
    assert any("keepalive/haproxy" in n and "FLAGGED" in n for n in notes)
    assert any("keepalive/loadstone" in n and "DISTURBED" in n for n in notes)


def _run(proxy: str, scenario: str, repeat: int, rps: float, cpu_seconds: float) -> Run:
    result = wrk.WrkResult(
        requests=int(rps * 10), duration=10.0, bytes_read=0.0,
        requests_per_second=rps, bytes_per_second=0.0,
    )  # fmt: skip
    return Run(proxy, scenario, repeat, result, cpu_seconds, 0, 0.0, 0.0, 20.0, 1, ["wrk"])


def test_paired_ratios_follow_each_repeat_not_the_medians() -> None:
    # The machine's speed moves between repeats: each repeat's two runs are
    # compared with each other (median 1.10x), not the medians of each proxy
    # (7,600 / 7,000 = 1.09x).
    runs = [
        _run("haproxy", "close", 0, 8000, 10.0),
        _run("loadstone", "close", 0, 7600, 7.6),
        _run("loadstone", "close", 1, 6900, 6.9),
        _run("haproxy", "close", 1, 6000, 7.5),
        _run("haproxy", "close", 2, 7000, 8.0),
        _run("loadstone", "close", 2, 7700, 7.7),
        _run("loadstone", "keepalive", 0, 40000, 6.0),  # no HAProxy run to pair with
    ]
    (close,) = paired(runs, ["loadstone"])
    assert close.scenario == "close" and close.pairs == 3
    assert (close.candidate, close.baseline) == ("loadstone", "haproxy")
    assert close.rps_ratios == pytest.approx((0.95, 1.15, 1.1), abs=1e-3)
    assert close.cpu_ratios == pytest.approx((0.8, 0.8, 0.875), abs=1e-3)
    assert close.describe() == (
        "close loadstone/haproxy: req/s 1.10x (0.95-1.15), cpu us/req 0.80x (0.80-0.88) "
        "over 3 repeat(s)"
    )


def test_both_proxies_log_every_session_unless_told_otherwise() -> None:
    from benchmarks import compare_haproxy

    default = compare_haproxy.parse_args([])
    assert (default.peer_log, default.loadstone_log) == (True, "all")
    assert compare_haproxy.equal_logging(default)
    neither = compare_haproxy.parse_args(["--no-haproxy-log", "--loadstone-log", "none"])
    assert compare_haproxy.equal_logging(neither)
    assert compare_haproxy.logging_line(neither) == "session logs: peers none, loadstone none"
    assert compare_haproxy.parse_args(["--no-peer-log"]).peer_log is False
    # The old default, loadstone logging and HAProxy not, is flagged as unequal work.
    assert not compare_haproxy.equal_logging(compare_haproxy.parse_args(["--no-haproxy-log"]))
    assert not compare_haproxy.equal_logging(
        compare_haproxy.parse_args(["--loadstone-log", "errors"])
    )
