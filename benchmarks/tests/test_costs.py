"""What benchmarks/costs.py reads from strace -c and the backend's `$pid $connection` log."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import types
from dataclasses import asdict
from pathlib import Path

import pytest

from benchmarks import costs
from benchmarks.compare import logging_line
from benchmarks.costs import parse_strace_summary, percent_split, requests_per_pid, share
from benchmarks.harness import pinning
from benchmarks.harness.lineup import parse_builds
from benchmarks.harness.measure import Run
from benchmarks.harness.procs import cpu_seconds, process_tree, user_system_seconds
from benchmarks.harness.wrk import WrkResult

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


def test_log_mode_defaults_to_nobody_and_all_makes_every_proxy_log(tmp_path: Path) -> None:
    assert costs.parse_args([]).log == "none"
    args = costs.parse_args(["--log", "all", "--scenarios", "close,http-close"])
    assert (args.log, args.peer_log, args.loadstone_log) == ("all", True, "all")
    # compare.py's logging line, read from the same switches, says so.
    assert logging_line(args) == "session logs: peers all, loadstone all"
    with pytest.raises(SystemExit) as exited:
        costs.parse_args(["--log", "errors"])  # no twin among the peers: not equal work
    assert exited.value.code == 2
    backends = types.SimpleNamespace(backends=[])  # build() reads only their addresses
    for log, logging in (("all", True), ("none", False)):
        made = [
            proxy
            for name in ("loadstone", "haproxy", "nginx", "caddy")
            for proxy in costs.build(name, [], tmp_path / log / "http", backends, "http", log)  # type: ignore[arg-type]
        ]
        assert [p.name for p in made] == ["haproxy", "nginx", "caddy"]  # no builds given
        assert all(p.log_sessions is logging for p in made)  # type: ignore[attr-defined]
        haproxy_config = made[0].write_config().read_text()
        assert ("option httplog" in haproxy_config) is logging
        nginx_config = made[1].write_config().read_text()
        assert ("access_log off" in nginx_config) is not logging
    (loadstone,) = costs.build(
        "loadstone",
        parse_builds(None),
        tmp_path / "ls",
        backends,  # type: ignore[arg-type]
        "tcp",
        "all",
    )
    assert "    log: all\n" in loadstone.write_config().read_text()


# A run on 2 cores: 25,000 req/s for 5 s, the cores split among the processes.
CORES = {"proxy": 0.8, "backend": 0.4, "wrk": 0.5, "other": 0.05, "idle": 0.25}


def test_cpu_per_request_adds_up_to_the_whole_machine() -> None:
    per_request = costs.cpu_us_per_request(CORES, seconds=5.0, requests=125_000)
    assert per_request["proxy"] == pytest.approx(32.0)
    assert per_request["idle"] == pytest.approx(10.0)
    # 2 cores / 25,000 req/s: every process's share plus the idle one.
    assert per_request["machine"] == pytest.approx(80.0)
    assert costs.cpu_us_per_request(CORES, seconds=5.0, requests=0)["proxy"] > 0  # no division by 0


def fabricated_costs() -> costs.Costs:
    return costs.Costs(
        proxy="loadstone",
        scenario="close",
        requests=125_000,
        requests_per_second=25_000.0,
        ctx_switches_per_request=0.514,
        cpu_cores=CORES,
        runqueue_us_per_request={"proxy": 4.7, "backend": 33.2},
        syscalls_per_request=13.47,
        top_syscalls={"close": 2.0, "accept4": 1.0},
        spread=None,
        cpu_us_per_request=costs.cpu_us_per_request(CORES, 5.0, 125_000),
        backends="two-single",
        log="all",
        idle_per_cpu={0: 0.05, 1: 0.2},
    )


def test_table_shows_cpu_per_request_beside_the_cores_and_json_keeps_its_keys() -> None:
    row = fabricated_costs()
    text = costs.render([row])
    header, align, line, _, top = text.splitlines()
    assert "| cores: proxy / backend / wrk / other / idle | CPU us/req:" in header
    assert align.count("|") == header.count("|") == line.count("|")
    assert "| 0.80 / 0.40 / 0.50 / 0.05 / 0.25 | 32.0 / 16.0 / 20.0 / 2.0 / 10.0 = 80.0 |" in line
    assert line.startswith("| close | loadstone | 13.47 | 0.514 |") and "| 25,000 |" in line
    assert "| cpu0 0.05 / cpu1 0.20 |" in line
    assert top == "close loadstone: close 2.00, accept4 1.00"
    record = json.loads(json.dumps(asdict(row)))
    old = {"proxy", "scenario", "requests", "requests_per_second", "ctx_switches_per_request"}
    old |= {"cpu_cores", "runqueue_us_per_request", "syscalls_per_request", "top_syscalls"}
    new = {"spread", "cpu_us_per_request", "backends", "log", "idle_per_cpu", "pinning"}
    new |= {"user_us_per_request", "system_us_per_request"}  # the user/system split
    assert old | new == set(record)
    assert record["cpu_us_per_request"]["machine"] == pytest.approx(80.0)


def test_markdown_puts_the_invocation_above_the_table() -> None:
    argv = ["--backends", "two-single", "--log", "all", "-d", "1", "--markdown"]
    meta = costs.provenance(costs.parse_args(argv), argv)
    meta["proxies"]["haproxy"] = "HAProxy version 2.6.12"  # as main() adds them
    text = costs.render([fabricated_costs()], meta)
    head, table, _ = text.split("\n\n")
    assert meta["date"] in head and "python benchmarks/costs.py --backends two-single" in head
    assert "HAProxy version 2.6.12" in head and "backends: two-single (2 x nginx" in head
    assert "session logs: peers all, loadstone all" in head
    assert "--backends two-single, --log all" in head and "for 1 s per scenario" in head
    assert table == costs.render([fabricated_costs()]).split("\n\n")[0]


# /proc/stat as Linux writes it: user nice system idle iowait irq softirq steal ...
PROC_STAT = """\
cpu  300 0 100 900 20 0 10 0 0 0
cpu0 100 0 50 500 10 0 5 0 0 0
cpu1 200 0 50 400 10 0 5 0 0 0
intr 12345
"""


def test_idle_share_per_cpu_from_two_proc_stat_readings(tmp_path: Path) -> None:
    stat = tmp_path / "stat"
    stat.write_text(PROC_STAT)
    before = pinning.cpu_times(stat)
    assert sorted(before) == [0, 1]  # the summary line "cpu" is not a CPU
    tick = os.sysconf("SC_CLK_TCK")
    # cpu0: 100 more ticks, 75 of them idle or iowait; cpu1: 100 more, all busy.
    stat.write_text(
        PROC_STAT.replace("cpu0 100 0 50 500 10", "cpu0 125 0 50 570 15").replace(
            "cpu1 200 0 50 400 10", "cpu1 280 0 70 400 10"
        )
    )
    after = pinning.cpu_times(stat)
    assert after[0][1] - before[0][1] == pytest.approx(100 / tick)
    assert pinning.idle_cores(before, after) == {0: pytest.approx(0.75), 1: 0.0}


def test_pinning_gives_the_proxy_the_last_cpu_and_the_rest_the_others() -> None:
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        with pytest.raises(ValueError, match="at least 2 CPUs"):
            pinning.Pinning.of_machine()
        return
    pinned = pinning.Pinning.of_machine()
    assert pinned.proxy_cpus == (cpus[-1],) and pinned.rest_cpus == tuple(cpus[:-1])
    assert pinned.rest_prefix() == ["taskset", "-c", ",".join(map(str, cpus[:-1]))]
    args = costs.parse_args(["--pin", "--scenarios", "close"])
    assert args.pin and "pinned: proxy on CPU" in costs.provenance(args, [])["settings"]


def test_pin_proxy_pins_every_thread_of_a_real_process_tree() -> None:
    """A real process with a second thread and a child: taskset -a must reach all."""
    code = (
        "import os, threading, time, subprocess, sys\n"
        "threading.Thread(target=time.sleep, args=(60,), daemon=True).start()\n"
        "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
        "print(child.pid, flush=True); time.sleep(60)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    child = 0
    try:
        assert proc.stdout is not None
        with proc.stdout:
            child = int(proc.stdout.readline())
        pinned = pinning.Pinning.of_machine()
        pinned.pin_proxy(proc.pid)
        tasks = [int(t) for pid in (proc.pid, child) for t in os.listdir(f"/proc/{pid}/task")]
        assert len(tasks) >= 3  # the main thread, the sleeping one, the child
        assert {frozenset(os.sched_getaffinity(t)) for t in tasks} == {frozenset(pinned.proxy_cpus)}
    finally:
        if child:
            os.kill(child, signal.SIGKILL)
        proc.kill()
        proc.wait()


def test_user_and_system_time_per_request_in_their_own_column_and_the_json() -> None:
    row = fabricated_costs()
    row.user_us_per_request = {"proxy": 1.7, "backend": 5.0, "wrk": 3.25}
    row.system_us_per_request = {"proxy": 30.3, "backend": 11.0, "wrk": 16.75}
    header, _, line, _, _ = costs.render([row]).splitlines()
    # The new column follows the CPU one, whose cells stay as they were.
    assert "= machine | user / sys us/req: proxy, backend, wrk | run-queue" in header
    assert "= 80.0 | 1.7 / 30.3, 5.0 / 11.0, 3.2 / 16.8 | 4.7 / 33.2 |" in line
    record = json.loads(json.dumps(asdict(row)))
    assert record["user_us_per_request"] == {"proxy": 1.7, "backend": 5.0, "wrk": 3.25}
    assert record["system_us_per_request"]["proxy"] == 30.3


def test_user_and_system_microseconds_per_request_of_a_run() -> None:
    """The split of measure()'s Run: user parts as read, system the rest of each total."""
    # 100,000 requests in 5 s; wrk used 2 CPU seconds, 0.5 of them in user space.
    result = WrkResult(100_000, 5.0, 0.0, 20_000.0, 0.0, wrk_cpu_seconds=2.0, wrk_user_seconds=0.5)
    run = Run(
        "loadstone", "close", 0, result, 3.2, 0, 1.6, 0.0, 10.0, 1, ["wrk"],
        proxy_user_seconds=0.2,
        backend_user_seconds=0.6,
    )  # fmt: skip
    user, system = costs.user_system_us_per_request(run)
    assert user == pytest.approx({"proxy": 2.0, "backend": 6.0, "wrk": 5.0})
    assert system == pytest.approx({"proxy": 30.0, "backend": 10.0, "wrk": 15.0})


BURN_CPU = """\
import os, resource, sys
def used():
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime
buffer, zero = bytearray(1 << 20), open("/dev/zero", "rb", buffering=0)
while used() < {seconds}:
    if sys.argv[1] == "syscalls":
        zero.readinto(buffer)  # the kernel clears 1 MiB: system time
    else:
        sum(range(20_000))  # the interpreter's own instructions: user time
print("done", flush=True)
sys.stdin.read()  # stay (and stay countable) until the test has read /proc
"""


def test_user_and_system_split_of_real_processes() -> None:
    """A process spinning in user space and one living in read(2): tick sampling
    (250 Hz here) charges the first's CPU to user time and the second's to system."""
    seconds = 0.6  # 150 ticks at 250 Hz: enough for a sampled split
    children = {
        kind: subprocess.Popen(
            [sys.executable, "-c", BURN_CPU.format(seconds=seconds), kind],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for kind in ("user", "syscalls")
    }
    try:
        split = {}
        for kind, child in children.items():
            assert child.stdout is not None
            assert child.stdout.readline() == "done\n"  # it has used its CPU seconds
            split[kind] = user_system_seconds(child.pid)
            assert sum(split[kind]) == pytest.approx(cpu_seconds(child.pid), abs=0.05)
            assert sum(split[kind]) >= seconds - 0.05
        user, system = split["user"]
        assert user > 0.8 * (user + system)
        user, system = split["syscalls"]
        assert system > 0.6 * (user + system)
    finally:
        for child in children.values():
            child.communicate(timeout=10)  # closes stdin: it exits


class PinningSeen(Exception):
    """Ends main() once its run function has seen the processes (no benchmark)."""


def test_main_pins_the_proxy_and_backends_and_hands_wrk_the_other_cpus(tmp_path: Path) -> None:
    """main() with --pin, up to the first run: the real proxy and backends it
    started have the CPUs Pinning intends, and wrk's prefix runs a program there."""
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        with pytest.raises(SystemExit):  # parse_args refuses --pin on one CPU
            costs.main(["--pin", "--scenarios", "close"])
        return
    seen: dict[str, object] = {}

    def affinities(pids: list[int]) -> set[frozenset[int]]:
        tasks = [int(t) for pid in pids for t in os.listdir(f"/proc/{pid}/task")]
        return {frozenset(os.sched_getaffinity(t)) for t in tasks}

    def observe(proxy, scenario, backends, args, pinned):  # type: ignore[no-untyped-def]
        seen["pinning"] = pinned
        seen["proxy"] = affinities(process_tree(proxy.pid))
        seen["backends"] = affinities([p for b in backends.pids for p in process_tree(b)])
        seen["pids"] = [proxy.pid, *backends.pids]
        where = "import os; print(sorted(os.sched_getaffinity(0)))"
        prefix = costs.wrk_prefix(pinned)
        seen["wrk"] = subprocess.run(
            [*prefix, sys.executable, "-c", where], capture_output=True, text=True, check=True
        ).stdout
        raise PinningSeen

    argv = ["--pin", "--proxies", "haproxy", "--scenarios", "close", "--backends", "two-single"]
    with pytest.raises(PinningSeen):
        costs.main(argv, run=observe)
    intended = pinning.Pinning.of_machine()
    assert seen["pinning"] == intended
    assert seen["proxy"] == {frozenset(intended.proxy_cpus)}
    assert seen["backends"] == {frozenset(intended.rest_cpus)}
    assert seen["wrk"] == f"{sorted(intended.rest_cpus)}\n"
    # main() stopped what it started on its way out.
    assert not [p for p in seen["pids"] if Path(f"/proc/{p}").exists()]  # type: ignore[attr-defined]

    # Without --pin nobody is pinned: wrk runs bare, the proxy where it started.
    def unpinned(proxy, scenario, backends, args, pinned):  # type: ignore[no-untyped-def]
        seen["pinning"], seen["proxy"] = pinned, affinities(process_tree(proxy.pid))
        raise PinningSeen

    with pytest.raises(PinningSeen):
        costs.main(argv[1:], run=unpinned)
    assert seen["pinning"] is None and costs.wrk_prefix(None) == []
    assert seen["proxy"] == {frozenset(cpus)}
