"""A core of its own for the proxy: the view of a machine where the proxy does
not share its CPU with the load generator and the servers.

On the 2-core benchmark machine every process (wrk, the proxy, the backend's
workers) runs where the scheduler puts it, so a proxy that needs less CPU per
request leaves idle time the others cannot turn into requests when they wait on
each other's wake-ups. Pinned, the proxy has the last CPU and everything else
the others: whichever side saturates its CPU first sets the rate, and the idle
share of each CPU says which side that was.

    pinned = Pinning.of_machine()
    pinned.pin_proxy(proxy.pid)       # every thread of its process tree
    pinned.pin_rest(backend_pids)
    argv = [*pinned.rest_prefix(), *wrk_argv]
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from benchmarks.harness.procs import process_tree


@dataclass(frozen=True, slots=True)
class Pinning:
    proxy_cpus: tuple[int, ...]
    rest_cpus: tuple[int, ...]

    @classmethod
    def of_machine(cls) -> Pinning:
        cpus = sorted(os.sched_getaffinity(0))
        if len(cpus) < 2:
            raise ValueError("pinning needs at least 2 CPUs (one for the proxy)")
        return cls(proxy_cpus=(cpus[-1],), rest_cpus=tuple(cpus[:-1]))

    def pin_proxy(self, pid: int) -> None:
        _pin(process_tree(pid), self.proxy_cpus)

    def pin_rest(self, pids: Sequence[int]) -> None:
        _pin([p for root in pids for p in process_tree(root)], self.rest_cpus)

    def rest_prefix(self) -> list[str]:
        """A command line prefix that runs a program (wrk) on the others' CPUs."""
        return ["taskset", "-c", _cpu_list(self.rest_cpus)]

    def describe(self) -> str:
        return (
            f"proxy on CPU {_cpu_list(self.proxy_cpus)}, "
            f"wrk and the backends on CPU {_cpu_list(self.rest_cpus)}"
        )


def _cpu_list(cpus: Sequence[int]) -> str:
    return ",".join(str(c) for c in cpus)


def _pin(pids: Sequence[int], cpus: Sequence[int]) -> None:
    # taskset -a: every thread of the process; threads started later inherit it.
    for pid in pids:
        subprocess.run(
            ["taskset", "-a", "-p", "-c", _cpu_list(cpus), str(pid)],
            capture_output=True,
            check=True,
        )


def cpu_times(stat: Path = Path("/proc/stat")) -> dict[int, tuple[float, float]]:
    """Per CPU: (idle + iowait, all) in seconds since boot, from /proc/stat."""
    tick = os.sysconf("SC_CLK_TCK")
    times = {}
    for line in stat.read_text().splitlines():
        name, *fields = line.split()
        if name.startswith("cpu") and name[3:].isdigit():
            # user nice system idle iowait irq softirq steal: guest time is
            # already in user and nice, so the fields after these are not added.
            values = [int(v) for v in fields[:8]]
            times[int(name[3:])] = ((values[3] + values[4]) / tick, sum(values) / tick)
    return times


def idle_cores(
    before: dict[int, tuple[float, float]], after: dict[int, tuple[float, float]]
) -> dict[int, float]:
    """Each CPU's idle share between two cpu_times() readings (0: busy throughout)."""
    shares = {}
    for cpu, (idle, total) in after.items():
        idle0, total0 = before.get(cpu, (idle, total))
        shares[cpu] = (idle - idle0) / (total - total0) if total > total0 else 0.0
    return shares
