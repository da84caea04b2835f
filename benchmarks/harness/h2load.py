"""Running h2load (Debian's nghttp2-client) at a fixed request rate, into a WrkResult.

wrk drives a proxy as hard as it can; latency is then queueing. The HTTP-mode p99
target is taken at a fixed 5,000 req/s instead: `h2load --h1 -c C --rps Q` runs C
HTTP/1.1 clients of Q requests/second each. h2load is C++ on one thread, so the
load generator takes far less of a 2-core machine than hey (Go, one goroutine per
worker) did, and its per-request log has microsecond times where hey printed
tenths of milliseconds.

What is read:
* the summary on stdout (nghttp2 1.52):

      finished in 10.00s, 4999.80 req/s, 1.03MB/s
      requests: 50000 total, 50000 started, 49998 done, 49990 succeeded, 10 failed,
                2 errored, 0 timeout   (one line)
      status codes: 49990 2xx, 0 3xx, 8 4xx, 0 5xx

* the `--log-file`, one line per request: start time (us since the epoch),
  status (-1 when the request failed without an answer), duration (us). The
  latency percentiles are computed from it, nearest-rank.
"""

from __future__ import annotations

import math
import re
import resource
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path

from benchmarks.harness.wrk import WrkOutputError, WrkResult, with_cpu

_FINISHED = re.compile(r"^finished in ([0-9.]+)(m?s), ([0-9.]+) req/s", re.M)
_REQUESTS = re.compile(
    r"^requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, "
    r"(\d+) errored, (\d+) timeout",
    re.M,
)
_STATUS = re.compile(r"^status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", re.M)
_TRAFFIC = re.compile(r"^traffic: \S+ \((\d+)\) total", re.M)

PERCENTILES = ("50", "75", "90", "99")


def build_argv(
    url: str,
    *,
    rate: int,
    connections: int,
    duration: int,
    log_file: Path,
    headers: Sequence[str] = (),
    h2load: str = "h2load",
) -> list[str]:
    """h2load at `rate` requests/second in all, spread over `connections` clients."""
    per_client = max(1, round(rate / connections))
    argv = [h2load, "--h1", "-c", str(connections), "--rps", str(per_client)]
    argv += ["-D", str(duration), "--log-file", str(log_file)]
    for header in headers:
        argv += ["-H", header]
    return [*argv, url]


def percentiles(durations_us: Sequence[int]) -> dict[str, float]:
    """Nearest-rank percentiles of request durations, in seconds."""
    if not durations_us:
        return {}
    ordered = sorted(durations_us)
    out = {}
    for p in PERCENTILES:
        rank = max(1, math.ceil(int(p) / 100 * len(ordered)))
        out[p] = ordered[rank - 1] / 1e6
    return out


def parse(text: str, log: str) -> WrkResult:
    finished = _FINISHED.search(text)
    requests = _REQUESTS.search(text)
    if finished is None or requests is None:
        raise WrkOutputError(f"no summary in h2load's output:\n{text[:2000]}")
    duration = float(finished.group(1)) / (1000 if finished.group(2) == "ms" else 1)
    done = int(requests.group(3))
    failed, errored, timeouts = (int(requests.group(i)) for i in (5, 6, 7))
    status = _STATUS.search(text)
    bad_status = int(status.group(3)) + int(status.group(4)) if status else 0
    durations = []
    for line in log.splitlines():
        fields = line.split("\t")
        if len(fields) == 3 and fields[1] != "-1":
            durations.append(int(fields[2]))
    traffic = _TRAFFIC.search(text)
    total_bytes = float(traffic.group(1)) if traffic else 0.0
    errors = {"status": bad_status}
    # h2load counts an answered request with a 4xx/5xx as failed too.
    if failed - bad_status > 0 or errored or timeouts:
        errors["socket"] = max(0, failed - bad_status) + errored + timeouts
    return WrkResult(
        requests=done,
        duration=duration,
        bytes_read=total_bytes,
        requests_per_second=float(finished.group(3)),
        bytes_per_second=total_bytes / duration if duration else 0.0,
        latency_percentiles=percentiles(durations),
        errors=errors,
    )


def run(argv: Sequence[str], *, duration: int) -> tuple[WrkResult, str]:
    if shutil.which(argv[0]) is None:
        raise FileNotFoundError(f"{argv[0]} not found (apt-get install -y nghttp2-client)")
    log_file = Path(argv[argv.index("--log-file") + 1])
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    done = subprocess.run(argv, capture_output=True, text=True, timeout=duration + 60, check=False)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise RuntimeError(f"h2load failed (exit {done.returncode}): {done.stderr.strip()}")
    result = parse(done.stdout, log_file.read_text())
    log_file.unlink()
    return with_cpu(result, before, after), done.stdout
