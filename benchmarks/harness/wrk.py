"""Running wrk and reading its text report.

The report parsed here (wrk 4.x, with --latency):

    Running 10s test @ http://127.0.0.1:40001/
      1 threads and 50 connections
      Thread Stats   Avg      Stdev     Max   +/- Stdev
        Latency     1.17ms  250.08us   5.43ms   81.58%
        Req/Sec    42.95k     2.47k   46.69k    80.00%
      Latency Distribution
         50%    1.14ms
         75%    1.27ms
         90%    1.43ms
         99%    1.96ms
      428207 requests in 10.00s, 95.61MB read
      Socket errors: connect 0, read 12, write 0, timeout 0      <- only when nonzero
      Non-2xx or 3xx responses: 3                                <- only when nonzero
    Requests/sec:  42716.16
    Transfer/sec:      9.53MB

Sizes use binary multiples (KB = 1024 B), times use us/ms/s/m/h.
"""

from __future__ import annotations

import dataclasses
import re
import resource
import shutil
import subprocess
from collections.abc import Sequence

_SIZE_UNITS = {"B": 1, "KB": 1024, "MB": 1024**2, "GB": 1024**3, "TB": 1024**4}
_TIME_UNITS = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}

_NUMBER = r"([0-9]+(?:\.[0-9]+)?)"
_TOTALS = re.compile(
    rf"^\s*(\d+) requests in {_NUMBER}(us|ms|s|m|h), {_NUMBER}([KMGT]?B) read", re.M
)
_SOCKET_ERRORS = re.compile(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)")
_NON_2XX = re.compile(r"Non-2xx or 3xx responses: (\d+)")
_RPS = re.compile(rf"^Requests/sec:\s+{_NUMBER}", re.M)
_TRANSFER = re.compile(rf"^Transfer/sec:\s+{_NUMBER}([KMGT]?B)", re.M)
_PERCENTILE = re.compile(rf"^\s+(50|75|90|99)%\s+{_NUMBER}(us|ms|s|m|h)", re.M)


class WrkOutputError(ValueError):
    """wrk's output lacks a line every successful run prints."""


@dataclasses.dataclass(frozen=True, slots=True)
class WrkResult:
    requests: int  # completed requests over the whole run
    duration: float  # seconds, as wrk measured it
    bytes_read: float  # total bytes, to wrk's 3 significant digits
    requests_per_second: float
    bytes_per_second: float  # "Transfer/sec": response headers and bodies
    latency_percentiles: dict[str, float] = dataclasses.field(
        default_factory=dict
    )  # "50" -> seconds
    # connect/read/write/timeout socket errors and "status" (non-2xx/3xx answers).
    errors: dict[str, int] = dataclasses.field(default_factory=dict)
    wrk_cpu_seconds: float = 0.0  # the load generator's own user + system time
    wrk_user_seconds: float = 0.0  # the user part of it (sampled: procs.user_system_seconds)

    @property
    def error_count(self) -> int:
        return sum(self.errors.values())


def _match(pattern: re.Pattern[str], text: str, what: str) -> re.Match[str]:
    found = pattern.search(text)
    if found is None:
        raise WrkOutputError(f"no {what} line in wrk output:\n{text}")
    return found


def parse(text: str) -> WrkResult:
    totals = _match(_TOTALS, text, "'N requests in T, S read'")
    rps = _match(_RPS, text, "'Requests/sec'")
    transfer = _match(_TRANSFER, text, "'Transfer/sec'")
    errors = {"connect": 0, "read": 0, "write": 0, "timeout": 0, "status": 0}
    if socket_errors := _SOCKET_ERRORS.search(text):
        for key, value in zip(
            ("connect", "read", "write", "timeout"), socket_errors.groups(), strict=True
        ):
            errors[key] = int(value)
    if non_2xx := _NON_2XX.search(text):
        errors["status"] = int(non_2xx.group(1))
    return WrkResult(
        requests=int(totals.group(1)),
        duration=float(totals.group(2)) * _TIME_UNITS[totals.group(3)],
        bytes_read=float(totals.group(4)) * _SIZE_UNITS[totals.group(5)],
        requests_per_second=float(rps.group(1)),
        bytes_per_second=float(transfer.group(1)) * _SIZE_UNITS[transfer.group(2)],
        latency_percentiles={
            m.group(1): float(m.group(2)) * _TIME_UNITS[m.group(3)]
            for m in _PERCENTILE.finditer(text)
        },
        errors=errors,
    )


def effective_threads(threads: int, connections: int) -> int:
    """wrk refuses fewer connections than threads; a scenario's concurrency wins."""
    return max(1, min(threads, connections))


def build_argv(
    url: str,
    *,
    connections: int,
    duration: int,
    threads: int,
    headers: Sequence[str] = (),
    wrk: str = "wrk",
) -> list[str]:
    argv = [
        wrk,
        "-t",
        str(effective_threads(threads, connections)),
        "-c",
        str(connections),
        "-d",
        f"{duration}s",
        "--latency",
    ]
    for header in headers:
        argv += ["-H", header]
    return [*argv, url]


def run(argv: Sequence[str], *, duration: int) -> tuple[WrkResult, str]:
    """Run wrk to completion; return the parsed result and its raw output."""
    if shutil.which(argv[0]) is None:
        raise FileNotFoundError(f"{argv[0]} not found (apt-get install -y wrk)")
    # wrk is the only child that exits during the run, so the growth of the
    # children's rusage across it is wrk's own CPU time.
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    done = subprocess.run(argv, capture_output=True, text=True, timeout=duration + 60, check=False)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        output = (done.stderr.strip() + "\n" + done.stdout.strip()).strip()
        raise RuntimeError(f"wrk failed (exit {done.returncode}): {output}")
    return with_cpu(parse(done.stdout), before, after), done.stdout


def with_cpu(
    result: WrkResult, before: resource.struct_rusage, after: resource.struct_rusage
) -> WrkResult:
    """`result` with the load generator's CPU: the growth of the children's rusage."""
    user = after.ru_utime - before.ru_utime
    cpu = user + after.ru_stime - before.ru_stime
    return dataclasses.replace(result, wrk_cpu_seconds=cpu, wrk_user_seconds=user)
