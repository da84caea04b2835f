"""One measured wrk run through one proxy, and the summary of repeated runs."""

from __future__ import annotations

import resource
import statistics
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from benchmarks.harness import h2load, wrk
from benchmarks.harness.net import LOOPBACK
from benchmarks.harness.procs import (
    cpu_seconds,
    host_cpu_seconds,
    process_cpu_seconds,
    rss_bytes,
    thread_cpu_seconds,
    user_system_seconds,
)
from benchmarks.harness.proxies import Proxy
from benchmarks.harness.scenarios import Scenario
from benchmarks.harness.wrk import WrkResult

MIB = 1024 * 1024


@dataclass(frozen=True, slots=True)
class Run:
    proxy: str
    scenario: str
    repeat: int
    wrk: WrkResult
    proxy_cpu_seconds: float  # user + sys of the proxy's process tree across the wrk run
    proxy_rss_bytes: int  # VmRSS right after the run
    backend_cpu_seconds: float  # both nginx instances
    # CPU the rest of the machine used meanwhile: busy time of all CPUs minus the
    # proxies, backends and wrk. Anything sizeable means the figures are disturbed.
    foreign_cpu_seconds: float
    host_cpu_seconds: float  # all CPUs x wall time of the run, for scale
    wrk_threads: int
    command: list[str]
    # user + sys by thread name (threads gone before the run ends are missing)
    proxy_thread_cpu_seconds: dict[str, float] = field(default_factory=dict)
    # The user-space parts of proxy_cpu_seconds and backend_cpu_seconds (the rest
    # is system time: the kernel's, softirqs included; a sampled split, see
    # procs.user_system_seconds).
    proxy_user_seconds: float = 0.0
    backend_user_seconds: float = 0.0
    # CPU seconds of each backend worker process (measure()'s backend_worker_pids, in
    # that order): whether a proxy spread its load over a multi-worker server.
    backend_worker_cpu_seconds: tuple[float, ...] = ()

    @property
    def cpu_us_per_request(self) -> float:
        return self.proxy_cpu_seconds / self.wrk.requests * 1e6 if self.wrk.requests else 0.0

    @property
    def thread_cpu_us_per_request(self) -> dict[str, float]:
        """The proxy's CPU per request by thread name (those that used any)."""
        if not self.wrk.requests:
            return {}
        return {
            name: used / self.wrk.requests * 1e6
            for name, used in sorted(self.proxy_thread_cpu_seconds.items())
            if used > 0
        }

    @property
    def backend_worker_cores(self) -> tuple[float, ...]:
        """Each backend worker's CPU in cores over the run, the busiest first."""
        if not self.wrk.duration:
            return ()
        used = sorted(self.backend_worker_cpu_seconds, reverse=True)
        return tuple(seconds / self.wrk.duration for seconds in used)

    @property
    def foreign_cores(self) -> float:
        """Average number of cores other programs kept busy during the run."""
        return self.foreign_cpu_seconds / self.wrk.duration if self.wrk.duration else 0.0

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["cpu_us_per_request"] = self.cpu_us_per_request
        data["thread_cpu_us_per_request"] = self.thread_cpu_us_per_request
        data["foreign_cores"] = self.foreign_cores
        data["backend_worker_cores"] = self.backend_worker_cores
        data["errors_total"] = self.wrk.error_count
        return data


def wrk_argv(proxy: Proxy, scenario: Scenario, *, duration: int, threads: int) -> list[str]:
    if scenario.rate:
        return h2load.build_argv(
            f"http://{LOOPBACK}:{proxy.port}{scenario.path}",
            rate=scenario.rate,
            connections=scenario.connections,
            duration=duration,
            log_file=proxy.workdir / "h2load.log",
            headers=scenario.headers,
        )
    return wrk.build_argv(
        f"http://{LOOPBACK}:{proxy.port}{scenario.path}",
        connections=scenario.connections,
        duration=duration,
        threads=threads,
        headers=scenario.headers,
    )


def measure(
    proxy: Proxy,
    scenario: Scenario,
    *,
    duration: int,
    threads: int,
    backend_pids: Sequence[int],
    backend_worker_pids: Sequence[int] = (),
    idle_pids: Sequence[int] = (),
    repeat: int = 0,
    prefix: Sequence[str] = (),
) -> Run:
    """Run wrk through `proxy` and read CPU time around it.

    `idle_pids` are the benchmark's other processes (the proxy not under test): their
    CPU is neither the proxy's nor foreign load. `backend_worker_pids` (processes
    within the trees of `backend_pids`) get their CPU read one by one. `prefix` goes
    before wrk's command line (`taskset -c 0` to keep it on some CPUs:
    harness/pinning.py).
    """
    argv = [*prefix, *wrk_argv(proxy, scenario, duration=duration, threads=threads)]
    proxy.check_alive()
    host_before = host_cpu_seconds()
    # This process reads /proc around the run: a little CPU that is not foreign.
    self_before = _self_cpu_seconds()
    proxy_before = user_system_seconds(proxy.pid)
    threads_before = thread_cpu_seconds(proxy.pid)
    backends_before = user_system_seconds(*backend_pids)
    workers_before = [process_cpu_seconds(pid) for pid in backend_worker_pids]
    idle_before = cpu_seconds(*idle_pids)
    result, _ = (h2load if scenario.rate else wrk).run(argv, duration=duration)
    idle_used = cpu_seconds(*idle_pids) - idle_before
    backends_after = user_system_seconds(*backend_pids)
    workers_after = [process_cpu_seconds(pid) for pid in backend_worker_pids]
    proxy_after = user_system_seconds(proxy.pid)
    threads_after = thread_cpu_seconds(proxy.pid)
    self_used = _self_cpu_seconds() - self_before
    host_after = host_cpu_seconds()
    # A proxy that crashed mid-run makes every figure of this run meaningless.
    proxy.check_alive()
    host_busy = host_after[0] - host_before[0]
    proxy_user = proxy_after[0] - proxy_before[0]
    proxy_used = proxy_user + proxy_after[1] - proxy_before[1]
    backends_user = backends_after[0] - backends_before[0]
    backends_used = backends_user + backends_after[1] - backends_before[1]
    ours = proxy_used + backends_used + idle_used + self_used + result.wrk_cpu_seconds
    return Run(
        proxy=proxy.name,
        scenario=scenario.name,
        repeat=repeat,
        wrk=result,
        proxy_cpu_seconds=proxy_used,
        proxy_rss_bytes=rss_bytes(proxy.pid),
        backend_cpu_seconds=backends_used,
        # Clock-tick rounding can make this slightly negative on a quiet machine.
        foreign_cpu_seconds=max(0.0, host_busy - ours),
        host_cpu_seconds=host_after[1] - host_before[1],
        wrk_threads=wrk.effective_threads(threads, scenario.connections),
        command=argv,
        proxy_thread_cpu_seconds={
            name: used - threads_before.get(name, 0.0) for name, used in threads_after.items()
        },
        proxy_user_seconds=proxy_user,
        backend_user_seconds=backends_user,
        backend_worker_cpu_seconds=tuple(
            after - before for before, after in zip(workers_before, workers_after, strict=True)
        ),
    )


def _self_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def wait_for_quiet(max_cores: float, *, timeout: float, window: float = 0.5) -> float:
    """Wait until the machine's busy CPU drops to `max_cores`; return the last reading.

    Called between runs, when the benchmark's own processes are idle, so whatever
    load is seen belongs to other programs. Load can only be observed over an
    interval, hence the sampling window. Gives up after `timeout` seconds (the run
    is then measured anyway and flagged if it is disturbed).
    """
    deadline = time.monotonic() + timeout
    while True:
        busy_before, _ = host_cpu_seconds()
        started = time.monotonic()
        time.sleep(window)
        busy_after, _ = host_cpu_seconds()
        load = (busy_after - busy_before) / (time.monotonic() - started)
        if load <= max_cores or time.monotonic() >= deadline:
            return load


@dataclass(frozen=True, slots=True)
class Summary:
    """Medians over the repeats of one (scenario, proxy) pair."""

    proxy: str
    scenario: str
    runs: int
    requests_per_second: float
    mib_per_second: float
    cpu_us_per_request: float
    rss_mib: float
    latency_p99_ms: float
    wrk_cpu_share: float  # wrk's CPU time / (duration x threads), median
    backend_cpu_us_per_request: float
    foreign_cores: float  # CPU used by unrelated programs, in cores, the worst run
    errors: int  # summed over all repeats, so a single bad run is never hidden
    # CPU the backends used, in cores (their CPU time / the run's duration), median:
    # near compare.py --backend-cpus when the backends set the pace.
    backend_cores: float = 0.0
    # Each backend worker's cores, the busiest first, the median of each rank over
    # the runs (empty unless measured: compare.py --backend-cpus-per-worker). Under
    # per-worker caps, one worker at its cap and another well below it means the
    # proxy left that worker's capacity unused (both below: the proxy set the pace).
    backend_worker_cores: tuple[float, ...] = ()

    @classmethod
    def of(cls, runs: list[Run]) -> Summary:
        first = runs[0]

        def median(values: list[float]) -> float:
            return statistics.median(values) if values else 0.0

        return cls(
            proxy=first.proxy,
            scenario=first.scenario,
            runs=len(runs),
            requests_per_second=median([r.wrk.requests_per_second for r in runs]),
            mib_per_second=median([r.wrk.bytes_per_second / MIB for r in runs]),
            cpu_us_per_request=median([r.cpu_us_per_request for r in runs]),
            rss_mib=median([r.proxy_rss_bytes / MIB for r in runs]),
            latency_p99_ms=median([r.wrk.latency_percentiles.get("99", 0.0) * 1e3 for r in runs]),
            wrk_cpu_share=median(
                [
                    r.wrk.wrk_cpu_seconds / (r.wrk.duration * r.wrk_threads)
                    for r in runs
                    if r.wrk.duration
                ]
            ),
            backend_cpu_us_per_request=median(
                [r.backend_cpu_seconds / r.wrk.requests * 1e6 for r in runs if r.wrk.requests]
            ),
            foreign_cores=max(r.foreign_cores for r in runs),
            errors=sum(r.wrk.error_count for r in runs),
            backend_cores=median(
                [r.backend_cpu_seconds / r.wrk.duration for r in runs if r.wrk.duration]
            ),
            backend_worker_cores=tuple(
                median(list(rank))
                for rank in zip(
                    *(r.backend_worker_cores for r in runs if r.wrk.duration), strict=True
                )
            ),
        )
