"""Running hey (Debian's `hey`) at a fixed request rate, read into a WrkResult.

wrk drives a proxy as hard as it can; latency is then queueing. The HTTP-mode p99
target is taken at a fixed 5,000 req/s instead, with hey's rate limit: `-c C -q Q`
runs C workers of Q requests/second each. The report parsed here (hey 0.1.4):

    Summary:
      Total:        10.0019 secs
      Requests/sec: 4998.93
      Total data:   5000000 bytes
    Latency distribution:
      50% in 0.0004 secs
      99% in 0.0011 secs
    Status code distribution:
      [200] 49990 responses
    Error distribution:
      [10]  Get "http://...": dial tcp ...: connection refused

hey prints times in seconds with four decimals: 100 microsecond resolution.
"""

from __future__ import annotations

import dataclasses
import re
import resource
import shutil
import subprocess
from collections.abc import Sequence

from benchmarks.harness.wrk import WrkOutputError, WrkResult

_TOTAL = re.compile(r"^\s*Total:\s+([0-9.]+) secs", re.M)
_RPS = re.compile(r"^\s*Requests/sec:\s+([0-9.]+)", re.M)
_DATA = re.compile(r"^\s*Total data:\s+([0-9]+) bytes", re.M)
_PERCENTILE = re.compile(r"^\s+(50|75|90|99)% in ([0-9.]+) secs", re.M)
_STATUS = re.compile(r"^\s+\[(\d{3})\]\s+(\d+) responses", re.M)
_ERRORS = re.compile(r"^\s+\[(\d+)\]\s+\S", re.M)


def build_argv(
    url: str,
    *,
    rate: int,
    connections: int,
    duration: int,
    headers: Sequence[str] = (),
    hey: str = "hey",
) -> list[str]:
    """hey at `rate` requests/second in all, spread over `connections` workers."""
    per_worker = max(1, round(rate / connections))
    argv = [hey, "-z", f"{duration}s", "-c", str(connections), "-q", str(per_worker)]
    for header in headers:
        argv += ["-H", header]
    return [*argv, url]


def parse(text: str) -> WrkResult:
    total = _TOTAL.search(text)
    rps = _RPS.search(text)
    if total is None or rps is None:
        raise WrkOutputError(f"no summary in hey's output:\n{text[:2000]}")
    statuses = {int(code): int(n) for code, n in _STATUS.findall(text)}
    errors_part = text.split("Error distribution:", 1)
    socket_errors = (
        sum(int(n) for n in _ERRORS.findall(errors_part[1])) if len(errors_part) > 1 else 0
    )
    requests = sum(statuses.values())
    data = _DATA.search(text)
    duration = float(total.group(1))
    body_bytes = float(data.group(1)) if data else 0.0
    errors = {"status": sum(n for code, n in statuses.items() if not 200 <= code < 400)}
    if socket_errors:
        errors["socket"] = socket_errors
    return WrkResult(
        requests=requests,
        duration=duration,
        bytes_read=body_bytes,  # bodies only: hey does not count headers
        requests_per_second=float(rps.group(1)),
        bytes_per_second=body_bytes / duration if duration else 0.0,
        latency_percentiles={p: float(v) for p, v in _PERCENTILE.findall(text)},
        errors=errors,
    )


def run(argv: Sequence[str], *, duration: int) -> tuple[WrkResult, str]:
    if shutil.which(argv[0]) is None:
        raise FileNotFoundError(f"{argv[0]} not found (apt-get install -y hey)")
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    done = subprocess.run(argv, capture_output=True, text=True, timeout=duration + 60, check=False)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise RuntimeError(f"hey failed (exit {done.returncode}): {done.stderr.strip()}")
    result = parse(done.stdout)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return dataclasses.replace(result, wrk_cpu_seconds=cpu), done.stdout
