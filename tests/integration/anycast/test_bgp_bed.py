"""Three loadstone instances announce one VIP by BGP through their BIRDs; a
router merges the routes into one ECMP route (tests/netbed/bgp.py). Smoke
versions of the failures; the measured runs are benchmarks/anycast_failover.py.
"""

from __future__ import annotations

import signal
import subprocess
import time
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.harness import LOADSTONE, wait_for
from tests.netbed.bgp import ADMIN, SERVICE_PORT, VIP, AnycastBed
from tests.netbed.flows import Flow, parse

ALL = {"lb1", "lb2", "lb3"}


@pytest.fixture(scope="module")
def anycast(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AnycastBed]:
    with AnycastBed(tmp_path_factory.mktemp("anycast")).start() as bed:
        yield bed


def flows_for(bed: AnycastBed, mode: str, seconds: float) -> list[Flow]:
    out, proc = bed.start_flows(mode)
    time.sleep(seconds)  # a load of this length, not a synchronisation
    bed.bed.kill(proc)
    return parse(out.read_text().splitlines())


def test_every_instance_is_a_next_hop_and_source_hashing_agrees_across_them(
    anycast: AnycastBed,
) -> None:
    assert anycast.next_hops() == ALL
    route = anycast.bed.run("router", ["ip", "-4", "route", "show", f"{VIP}/32"])
    assert route.count("nexthop via") == 3
    flows = flows_for(anycast, "new", 2.0)
    assert flows and all(f.ok for f in flows)
    assert {f.served_by for f in flows} == ALL  # the router spreads new flows
    # balance: source, the same hash on every instance: a client address meets
    # one backend whichever instance its flow reached.
    backends: dict[str, set[str]] = defaultdict(set)
    instances: dict[str, set[str]] = defaultdict(set)
    for f in flows:
        backends[f.source].add(f.backend)
        instances[f.source].add(f.served_by)
    assert all(len(b) == 1 for b in backends.values()), backends
    assert any(len(i) > 1 for i in instances.values()), instances
    metrics = anycast.metrics("lb1")
    assert 'loadstone_vip_announced{prefix="198.19.0.10/32",vip="vip_web"} 1.0' in metrics
    assert 'loadstone_anycast_driver_up{driver="bird"} 1.0' in metrics
    ctl = anycast.bed.run("lb1", [str(LOADSTONE), "ctl", "--url", ADMIN, "status"])
    assert "vip vip_web 198.19.0.10/32: announced, decision announce" in ctl


def test_kill_9_of_loadstone_and_a_cut_link_take_the_instance_out(anycast: AnycastBed) -> None:
    # kill -9: BIRD stays up; the shell around loadstone disables the VIP's
    # protocol when loadstone ends (systemd's ExecStopPost in docs/anycast.md).
    killed = time.monotonic()
    subprocess.run(["kill", "-9", str(anycast.loadstone_pid("lb1"))], check=True)
    anycast.wait_next_hops(ALL - {"lb1"}, timeout=10)
    withdrawn = time.monotonic() - killed
    assert withdrawn < 1.2, withdrawn
    anycast.start_loadstone("lb1")
    anycast.wait_next_hops(ALL)

    # A cut link: nothing is sent to anyone; the router's BFD (300 ms x 3)
    # takes the session down. The bound has slack for a loaded machine.
    cut = time.monotonic()
    anycast.bed.cut_link("lb2")
    anycast.wait_next_hops(ALL - {"lb2"}, timeout=10)
    detected = time.monotonic() - cut
    assert detected < 2.5, detected
    anycast.bed.restore_link("lb2")
    anycast.wait_next_hops(ALL, timeout=40)


def test_a_planned_stop_withdraws_first_and_fails_no_request(anycast: AnycastBed) -> None:
    out, prober = anycast.start_flows("new")
    wait_for(lambda: len(out.read_text().splitlines()) > 20, what="requests before the stop")
    shell = anycast.loadstones["lb3"]
    stopped = time.monotonic()
    subprocess.run(["kill", "-TERM", str(anycast.loadstone_pid("lb3"))], check=True)
    withdrawn = anycast.wait_next_hops(ALL - {"lb3"}, timeout=10)
    assert withdrawn < 1.0, withdrawn  # withdraw comes first, stop_delay after it
    shell.wait(20)  # stop_delay (2s), the drain, the exit
    after = time.monotonic()
    wait_for(
        lambda: any(f.start > after for f in parse(out.read_text().splitlines())),
        what="requests after the stop",
    )
    anycast.bed.kill(prober)
    flows = [f for f in parse(out.read_text().splitlines()) if f.start >= stopped - 0.5]
    assert [f for f in flows if not f.ok] == []
    assert any(f.served_by == "lb3" for f in flows)  # lb3 was serving when it began
    anycast.start_loadstone("lb3")
    anycast.wait_next_hops(ALL)


def test_bird_stopped_under_loadstone_keeps_it_serving_and_reported(anycast: AnycastBed) -> None:
    anycast.bed.kill(anycast.birds["lb1"], signal.SIGTERM)
    anycast.wait_next_hops(ALL - {"lb1"}, timeout=10)  # its session closed with BIRD

    def reported() -> bool:
        driver = anycast.status("lb1")["anycast"]["driver"]
        return driver["up"] is False and "cannot connect" in (driver["error"] or "")

    wait_for(reported, timeout=10, what="the driver reported down")
    status = anycast.status("lb1")["anycast"]["vips"]["vip_web"]
    assert status["announced"] is None and status["decision"] == "announce"
    assert 'loadstone_anycast_driver_up{driver="bird"} 0.0' in anycast.metrics("lb1")
    ctl = anycast.bed.run("lb1", [str(LOADSTONE), "ctl", "--url", ADMIN, "status"])
    assert "vip vip_web 198.19.0.10/32: state unknown" in ctl
    assert "anycast driver bird down: cannot connect" in ctl
    # Still serving the VIP (from its own host: the router no longer sends here).
    url = f"http://{VIP}:{SERVICE_PORT}/"
    answer = anycast.bed.run("lb1", ["curl", "-sf", "--max-time", "2", url])
    assert answer.strip().startswith("be")
    assert anycast.bed.run("lb1", ["curl", "-sf", f"{ADMIN}/api/v1/health"])

    anycast._start_bird("lb1", (anycast.tmp / "bird-lb1.conf").read_text())
    anycast.wait_next_hops(ALL, timeout=30)  # loadstone told the new BIRD again
    assert anycast.status("lb1")["anycast"]["driver"]["up"] is True


def test_a_lost_site_fails_over_to_the_other_and_its_writer(tmp_path: Path) -> None:
    # Site a (lb1, lb2) preferred by the router's local_pref; site b (lb3)
    # stands by. The instances are peers behind an active-backup listener (the
    # backends stand in for Galera nodes, tests/integration/anycast/test_active_active.py;
    # with a real cluster and the bank workload: test_galera_writer.py).
    sites = {"lb1": 200, "lb2": 200, "lb3": 100}
    key = tmp_path / "peers.key"
    key.write_text("shared-key-of-the-anycast-group-42")
    with AnycastBed(tmp_path, sites=sites, peers_key=key, balance="active-backup").start() as bed:
        assert bed.next_hops() == {"lb1", "lb2"}

        def writers() -> set[str | None]:
            return {bed.status(lb)["listeners"]["web"]["active"] for lb in bed.instances}

        bed.fail_file("be1").touch()
        wait_for(lambda: writers() == {"be2"}, timeout=15, what="every instance on be2")
        bed.fail_file("be1").unlink()
        lost = time.monotonic()
        bed.bed.cut_link("lb1")
        bed.bed.cut_link("lb2")
        bed.wait_next_hops({"lb3"}, timeout=10)
        took = time.monotonic() - lost
        assert took < 2.5, took
        flows = flows_for(bed, "new", 0.5)
        assert flows and all(f.ok and f.served_by == "lb3" for f in flows)
        assert {f.backend for f in flows} == {"be2"}  # the writer the group agreed on
