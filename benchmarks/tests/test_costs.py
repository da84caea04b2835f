"""What benchmarks/costs.py reads from strace -c and the backend's `$pid $connection` log."""

from __future__ import annotations

from pathlib import Path

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
