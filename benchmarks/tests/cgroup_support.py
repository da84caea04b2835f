"""What the cgroup tests share: a backend's CPU under wrk, the cgroup a process
is in, and processes that only wait (to be moved between cgroups)."""

from __future__ import annotations

import contextlib
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

from benchmarks.harness import wrk
from benchmarks.harness.backends import NginxBackends

WRK_SECONDS = 2


def cores_under_load(backends: NginxBackends, read: Callable[[], list[float]]) -> list[float]:
    """The CPU seconds `read` gives, as cores, while wrk drives the first backend flat
    out for WRK_SECONDS."""
    url = f"http://{backends.backends[0].address}/"
    argv = wrk.build_argv(url, connections=20, duration=WRK_SECONDS, threads=1)
    before = read()
    result, _ = wrk.run(argv, duration=WRK_SECONDS)
    assert result.requests and not result.error_count
    return [(after - b) / result.duration for b, after in zip(before, read(), strict=True)]


def own_cgroup_line(pid: int) -> str:
    """The line of /proc/PID/cgroup that names the process's cpu cgroup: v1's
    hierarchy whose controllers include cpu (`cpu` alone, or `cpu,cpuacct`), else
    v2's unified one (no controllers listed)."""
    lines = Path(f"/proc/{pid}/cgroup").read_text().splitlines()
    v1 = [line for line in lines if "cpu" in line.split(":")[1].split(",")]
    return v1[0] if v1 else next(line for line in lines if line.split(":")[1] == "")


@contextlib.contextmanager
def sleepers(count: int) -> Iterator[list[subprocess.Popen[bytes]]]:
    """`count` processes that wait, stopped (killed) at the end."""
    procs = [
        subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
        for _ in range(count)
    ]
    try:
        yield procs
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()
