"""The namespace test bed itself: hosts reach each other, faults cut them off
without a reset, and nothing is left behind."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from tests.integration.ha.conftest import PROBE, connect_result
from tests.netbed.bed import NetBed, _namespaces


@pytest.fixture
def bed() -> Iterator[NetBed]:
    with NetBed(["ctl1", "ctl2", "ctl3", "client"]) as b:
        yield b


def serve(bed: NetBed, host: str, port: int) -> subprocess.Popen[bytes]:
    proc = bed.spawn(
        host,
        [sys.executable, str(PROBE), "serve", bed.host(host).address, str(port)],
        stdout=subprocess.PIPE,
    )
    assert proc.stdout is not None and proc.stdout.readline().strip() == b"ready"
    return proc


def wait_connected(bed: NetBed, host: str, address: str, port: int) -> None:
    """After a link or the network comes back, ARP takes a moment (a neighbour
    that failed to answer is retried on the kernel's own timer)."""
    t0 = time.monotonic()
    while connect_result(bed, host, address, port) != "connected":
        assert time.monotonic() - t0 < 15, f"{address} not reachable from {host}"


def test_hosts_reach_each_other_and_a_cut_link_is_silent(bed: NetBed) -> None:
    serve(bed, "ctl1", 8000)
    target = bed.host("ctl1").address
    assert connect_result(bed, "client", target, 8000) == "connected"
    assert connect_result(bed, "client", target, 8001) == "refused"  # a reset: host is there
    bed.cut_link("ctl1")
    # Gone from the wire: no reset, no ICMP, the connect just times out.
    assert connect_result(bed, "client", target, 8000) == "timeout"
    bed.restore_link("ctl1")
    wait_connected(bed, "client", target, 8000)


def test_partition_splits_the_hosts_and_heal_joins_them(bed: NetBed) -> None:
    for host in ("ctl1", "ctl3"):
        serve(bed, host, 8000)
    bed.partition(["ctl1", "ctl2"], ["ctl3", "client"])
    assert connect_result(bed, "ctl2", bed.host("ctl1").address, 8000) == "connected"
    assert connect_result(bed, "client", bed.host("ctl3").address, 8000) == "connected"
    assert connect_result(bed, "client", bed.host("ctl1").address, 8000) == "timeout"
    assert connect_result(bed, "ctl2", bed.host("ctl3").address, 8000) == "timeout"
    bed.heal()
    wait_connected(bed, "client", bed.host("ctl1").address, 8000)


def test_a_killed_process_resets_its_connections(bed: NetBed) -> None:
    proc = serve(bed, "ctl2", 8000)
    bed.kill(proc)
    assert connect_result(bed, "client", bed.host("ctl2").address, 8000) == "refused"


def test_close_removes_every_namespace_and_process() -> None:
    bed = NetBed(["a", "b"])
    proc = serve(bed, "a", 8000)
    tag = bed.tag
    assert any(ns.startswith(tag) for ns in _namespaces())
    bed.close()
    assert proc.poll() is not None
    assert not any(ns.startswith(tag) for ns in _namespaces())
