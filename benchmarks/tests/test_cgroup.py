"""The backends' CPU cap (harness/cgroup.py, compare.py --backend-cpus).

The cap is measured on a real nginx backend under wrk: without it the backend
uses more CPU than the cap allows, with it no more than a little above the cap.
cgroups need root, as the benchmarks (and this suite) run.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks import compare
from benchmarks.harness import report, wrk
from benchmarks.harness.backends import SHAPES, NginxBackends
from benchmarks.harness.cgroup import CpuCap, period_and_quota
from benchmarks.harness.measure import Run, Summary
from benchmarks.harness.procs import cpu_seconds, process_tree
from benchmarks.tests.cgroup_support import cores_under_load, own_cgroup_line, sleepers

CAP = 0.2


def _backend_cores(backends: NginxBackends) -> float:
    """The backend's CPU, in cores, while wrk drives it flat out for WRK_SECONDS."""
    (cores,) = cores_under_load(backends, lambda: [cpu_seconds(*backends.pids)])
    return cores


def test_period_stays_short_and_the_quota_above_the_kernels_minimum() -> None:
    assert period_and_quota(0.5) == (10_000, 5_000)
    assert period_and_quota(1.5) == (10_000, 15_000)
    assert period_and_quota(0.05) == (20_000, 1_000)
    with pytest.raises(ValueError, match="positive"):
        period_and_quota(0)


def test_capped_backend_stays_near_its_cap_and_the_cgroup_goes(tmp_path: Path) -> None:
    backends = NginxBackends(tmp_path, SHAPES["one-multi"])
    try:
        master = backends.pids[0]
        outside = own_cgroup_line(master)
        # Uncapped, the backend takes more than the cap: the capped figure below
        # then shows the cap, not a backend that never needed more.
        assert _backend_cores(backends) > 0.3
        with CpuCap(CAP, "test") as cap:
            cap.add_tree(master)
            # The master and both workers.
            assert cap.members() == set(process_tree(master))
            assert len(cap.members()) == 3
            assert _backend_cores(backends) <= 0.3
        assert not cap.path.exists()
        assert own_cgroup_line(master) == outside
    finally:
        backends.stop()


def test_cgroup_is_removed_when_the_block_fails() -> None:
    with sleepers(1) as (sleeper,):
        with pytest.raises(RuntimeError, match="boom"), CpuCap(CAP, "fail") as cap:
            cap.add_tree(sleeper.pid)
            assert cap.members() == {sleeper.pid}
            raise RuntimeError("boom")
        assert not cap.path.exists()
        assert sleeper.poll() is None  # moved out, not stopped


def test_option_is_validated_and_adds_the_backend_columns() -> None:
    assert compare.parse_args([]).backend_cpus is None
    assert compare.parse_args(["--backend-cpus", "0.5"]).backend_cpus == 0.5
    for bad in ("0", "-1", "99"):
        with pytest.raises(SystemExit):
            compare.parse_args(["--backend-cpus", bad])
    summary = Summary(
        "loadstone", "http-keepalive", 1, 9e3, 1.0, 10.0, 20.0, 1.0, 0.5, 7.5, 0, 0, 0.49
    )
    default = report.tables([summary], ["loadstone"], markdown=False)
    assert "backend" not in default
    capped = report.tables(
        [summary], ["loadstone"], markdown=True, metrics=report.CAPPED_BACKEND_METRICS
    )
    assert "| p99 latency ms | backend us/req | backend cores | rss MB |" in capped
    assert "| 1.00 | 7.5 | 0.49 | 20.0 |" in capped


def test_fixed_rate_run_short_of_its_rate_is_flagged() -> None:
    def p99_run(rps: float) -> Summary:
        return Summary("haproxy", "http-p99", 1, rps, 1.0, 10.0, 20.0, 1.0, 0.5, 7.5, 0, 0, 0.2)

    (note,) = compare.rate_shortfalls([p99_run(3_000), p99_run(4_990)])
    assert note.startswith("http-p99/haproxy: 3,000 of the fixed 5,000 req/s")


def test_publish_shows_the_cap_and_keeps_it_in_the_json(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run.json"
    args = compare.parse_args(["--backend-cpus", "0.5", "--json", str(out), "--markdown"])
    # 30,000 requests in 10 s, the backends using 0.15 s of CPU: 5 us each, 0.015 cores.
    result = wrk.WrkResult(30_000, 10.0, 0.0, 3_000.0, 0.0)
    runs = [
        Run(name, "keepalive", 0, result, 0.3, 0, 0.15, 0.0, 20.0, 1, [])
        for name in ("loadstone", "haproxy")
    ]
    backends = "backends: one-multi (1 x nginx, 2 workers on one port), capped at 0.5 CPU (...)"
    meta = {
        "date": "d", "nproc": 2, "cpu_model": "c", "kernel": "k", "git_revision": "g",
        "command": "python benchmarks/compare.py --backend-cpus 0.5", "nginx": "nginx/1.22.1",
        "wrk": "wrk 4.1", "backends": backends, "proxies": {},
    }  # fmt: skip
    assert compare.publish(args, meta, runs) == 0
    printed = capsys.readouterr().out
    assert "capped at 0.5 CPU" in printed
    assert "| keepalive | loadstone | 3,000 | 0.0 | 10.0 | 0.00 | 5.0 | 0.01 |" in printed
    document = json.loads(out.read_text())
    assert document["options"]["backend_cpus"] == 0.5
    assert document["summary"][0]["backend_cores"] == pytest.approx(0.015)
