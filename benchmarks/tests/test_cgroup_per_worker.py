"""One CPU cap per backend worker (harness/cgroup.cap_each, compare.py
--backend-cpus-per-worker), measured on a real nginx with 2 workers under wrk:
uncapped its busiest worker uses more than a capped one may, capped each stays near
its own cap, each in a cgroup of its own, all removed afterwards. As root, as the
benchmarks run.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import pytest

from benchmarks import compare
from benchmarks.harness import wrk
from benchmarks.harness.backends import SHAPES, NginxBackends
from benchmarks.harness.cgroup import cap_each, describe_each
from benchmarks.harness.measure import Run
from benchmarks.harness.procs import process_cpu_seconds
from benchmarks.tests.cgroup_support import cores_under_load, own_cgroup_line, sleepers

CAP = 0.1
# Above the cap by what a 10-ms period lets through plus tick rounding; the
# uncapped busiest worker must exceed it, or the capped figure proves nothing.
LIMIT = 0.15


def test_each_worker_stays_near_its_own_cap_and_every_cgroup_goes(tmp_path: Path) -> None:
    backends = NginxBackends(tmp_path, SHAPES["one-multi"])
    try:
        master = backends.pids[0]
        workers = backends.worker_pids()
        assert len(workers) == 2 and master not in workers
        outside = {pid: own_cgroup_line(pid) for pid in (master, *workers)}

        def worker_cores() -> list[float]:
            return cores_under_load(backends, lambda: [process_cpu_seconds(pid) for pid in workers])

        assert max(worker_cores()) > LIMIT
        with contextlib.ExitStack() as stack:
            caps = cap_each(stack, CAP, workers, "test-worker")
            assert [cap.members() for cap in caps] == [{pid} for pid in workers]
            assert len({cap.path for cap in caps}) == 2
            # The master stays where it was: only the workers are capped.
            assert own_cgroup_line(master) == outside[master]
            assert "each of the 2 workers capped on its own at 0.1 CPU" in describe_each(caps)
            capped = worker_cores()
            assert max(capped) <= LIMIT, capped
        assert not any(cap.path.exists() for cap in caps)
        assert {pid: own_cgroup_line(pid) for pid in outside} == outside
    finally:
        backends.stop()


def test_every_cgroup_is_removed_when_the_block_fails() -> None:
    with sleepers(2) as procs:
        with pytest.raises(RuntimeError, match="boom"), contextlib.ExitStack() as stack:
            caps = cap_each(stack, CAP, [s.pid for s in procs], "fail-worker")
            assert all(cap.path.exists() for cap in caps)
            raise RuntimeError("boom")
        assert not any(cap.path.exists() for cap in caps)
        assert all(s.poll() is None for s in procs)  # moved out, not stopped


def test_two_single_has_one_worker_per_server(tmp_path: Path) -> None:
    backends = NginxBackends(tmp_path, SHAPES["two-single"])
    try:
        workers = backends.worker_pids()
        assert len(workers) == 2 and not set(workers) & set(backends.pids)
    finally:
        backends.stop()


def test_per_worker_and_shared_caps_exclude_each_other(capsys: pytest.CaptureFixture[str]) -> None:
    assert compare.parse_args(["--backend-cpus-per-worker", "0.1"]).backend_cpus_per_worker == 0.1
    with pytest.raises(SystemExit):
        compare.parse_args(["--backend-cpus", "0.5", "--backend-cpus-per-worker", "0.1"])
    assert "not allowed with argument" in capsys.readouterr().err
    for bad in ("0", "-1", "1.5"):
        with pytest.raises(SystemExit):
            compare.parse_args(["--backend-cpus-per-worker", bad])


def test_publish_shows_each_workers_cores_and_keeps_them_in_the_json(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run.json"
    argv = ["--backend-cpus-per-worker", "0.1", "--json", str(out), "--markdown"]
    args = compare.parse_args(argv)
    result = wrk.WrkResult(30_000, 10.0, 0.0, 3_000.0, 0.0)
    # Over 10 s loadstone's workers used 1.0 and 0.3 s (0.10 / 0.03 cores), HAProxy's
    # 1.0 and 1.0 s; listed in pid order, shown busiest first.
    runs = [
        Run(
            name,
            "keepalive",
            0,
            result,
            0.3,
            0,
            sum(used),
            0.0,
            20.0,
            1,
            [],
            backend_worker_cpu_seconds=used,
        )
        for name, used in (("loadstone", (0.3, 1.0)), ("haproxy", (1.0, 1.0)))
    ]
    meta = {
        "date": "d", "nproc": 2, "cpu_model": "c", "kernel": "k", "git_revision": "g",
        "command": "c", "nginx": "nginx/1.22.1", "wrk": "wrk 4.1", "proxies": {},
        "backends": "backends: one-multi, each of the 2 workers capped on its own at 0.1 CPU",
    }  # fmt: skip
    assert compare.publish(args, meta, runs) == 0
    printed = capsys.readouterr().out
    assert "| backend us/req | backend cores | backend cores per worker | rss MB |" in printed
    assert "| keepalive | loadstone | 3,000 | 0.0 | 10.0 | 0.00 | 43.3 | 0.13 | 0.10 / 0.03 |" in (
        printed
    )
    assert "| haproxy | 3,000 | 0.0 | 10.0 | 0.00 | 66.7 | 0.20 | 0.10 / 0.10 |" in printed
    document = json.loads(out.read_text())
    assert document["options"]["backend_cpus_per_worker"] == 0.1
    assert document["summary"][0]["backend_worker_cores"] == pytest.approx([0.1, 0.03])
    assert document["runs"][0]["backend_worker_cores"] == pytest.approx([0.1, 0.03])
