"""What benchmarks/costs.py reads from strace -c and the backend's `$pid $connection` log."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import types
from pathlib import Path

from benchmarks import costs
from benchmarks.costs import parse_strace_summary, percent_split, requests_per_pid, share

# strace -c -f output (strace 6.1): errors column only where a call failed.
STRACE = """\
% time     seconds  usecs/call     calls    errors syscall
------ ----------- ----------- --------- --------- ----------------
 40.12    0.010000           1     20010           recvfrom
 30.00    0.008000           0     20004           sendto
  5.03    0.000806           2       400       200 accept4
------ ----------- ----------- --------- --------- ----------------
100.00    0.018806           0     40414       200 total
"""


def test_strace_summary_gives_calls_per_syscall_without_the_total() -> None:
    assert parse_strace_summary(STRACE) == {"recvfrom": 20010, "sendto": 20004, "accept4": 400}


def test_requests_and_connections_per_worker_after_the_offset(tmp_path: Path) -> None:
    log = tmp_path / "access.log"
    earlier = b"11 1\n"  # a previous run's line: before the offset, not counted
    log.write_bytes(earlier + b"11 5\n11 5\n11 6\n12 7\n\n")
    requests, connections = requests_per_pid(log, len(earlier))
    assert requests == {11: 3, 12: 1}
    assert connections == {11: 2, 12: 1}
    assert share(connections) == "2/1"
    assert percent_split(requests) == "75%/25%"


def test_runqueue_time_counts_threads_waiting_for_a_cpu() -> None:
    # Two busy processes held to one CPU take turns: each waits about as long as
    # it runs, and the count over both is their waiting, not their running.
    cpu = min(os.sched_getaffinity(0))
    code = "import time\nend = time.monotonic() + 0.4\nwhile time.monotonic() < end: pass"
    children = [
        subprocess.Popen(
            [sys.executable, "-c", code], preexec_fn=lambda: os.sched_setaffinity(0, {cpu})
        )
        for _ in range(2)
    ]
    try:
        pids = [c.pid for c in children]
        before = costs.runqueue_seconds(pids)
        waited = 0.0
        deadline = time.monotonic() + 10
        while waited < 0.1 and time.monotonic() < deadline:
            time.sleep(0.05)  # sampling a counter that grows: nothing to await
            waited = costs.runqueue_seconds(pids) - before
        assert waited >= 0.1
    finally:
        for child in children:
            child.wait(timeout=10)


def test_caddy_is_counted_in_http_scenarios_only_and_the_shape_is_chosen(tmp_path: Path) -> None:
    args = costs.parse_args(["--proxies", "nginx,caddy", "--backends", "two-single"])
    assert args.backends == "two-single" and args.proxy_list == ["nginx", "caddy"]
    backends = types.SimpleNamespace(backends=[])  # build() reads only their addresses
    assert costs.build("caddy", [], tmp_path / "tcp", backends, "tcp") == []  # type: ignore[arg-type]
    (caddy,) = costs.build("caddy", [], tmp_path / "http", backends, "http")  # type: ignore[arg-type]
    assert caddy.name == "caddy" and caddy.mode == "http"
