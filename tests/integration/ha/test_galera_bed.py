"""Galera inside the namespace bed: three controller hosts, each with a
MariaDB/Galera node, loadstone and keepalived, and the bank workload on the
client host writing through the VIP.

Host death: the writer's host (db1 on ctl1) loses its link under the write
load, with the VIP elsewhere (ctl3), so what is measured is the database side:
no reset reaches anyone, Galera evicts ctl1 after evs.suspect_timeout +
inactive_check_period, and loadstone reads the new Primary Component from
db2/db3 (checks/membership.py) instead of waiting for three timed-out checks
of db1. Measured: the first commit acknowledged after the cut, and that every
acknowledged commit is found afterwards.

The cluster boots once for the module (~30-60 s on a loaded 2-core machine);
each test starts its own loadstone and keepalived instances.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.galera.cluster import GaleraCluster
from tests.integration.galera.conftest import require_galera_software
from tests.integration.ha.galera_bed import (
    EVICTION,
    BankClient,
    GaleraPair,
    lost_commits,
    setup_bank,
    start_cluster,
)
from tests.integration.ha.pair import admin_get
from tests.integration.harness import wait_for
from tests.netbed.bed import NetBed

CONTROLLERS = ["ctl1", "ctl2", "ctl3"]

pytestmark = [
    pytest.mark.integration,
    pytest.mark.slow,
    pytest.mark.skipif(
        shutil.which("keepalived") is None, reason="keepalived is not installed (scripts/test)"
    ),
]


@pytest.fixture(scope="module")
def galera_bed() -> Iterator[tuple[NetBed, GaleraCluster]]:
    require_galera_software()
    with NetBed([*CONTROLLERS, "client", "client2"]) as bed:
        started = time.monotonic()
        cluster = start_cluster(bed, CONTROLLERS)
        print(f"\nGalera in the bed booted in {time.monotonic() - started:.1f}s")
        try:
            yield bed, cluster
        finally:
            cluster.stop()


def test_writer_host_cut_is_out_when_the_primary_component_drops_it(
    galera_bed: tuple[NetBed, GaleraCluster], tmp_path: Path
) -> None:
    bed, cluster = galera_bed
    # The VIP on ctl3, the writer db1 on ctl1.
    pair = GaleraPair(bed, tmp_path, CONTROLLERS, cluster=cluster).start(vip_on="ctl3")
    try:
        assert pair.wait_vip() == "ctl3"
        wait_for(lambda: pair.writer("ctl3") == "db1", timeout=15, what="db1 the writer")
        setup_bank(cluster)
        bank = BankClient(bed, "client", tmp_path / "bank.json")
        try:
            bank.wait_more(30)
            cut = time.monotonic()
            bed.cut_link("ctl1")
            wait_for(lambda: pair.writer("ctl3") == "db2", timeout=20, what="db2 the writer")
            out_after = time.monotonic() - cut
            detail = pair_detail(pair, "ctl3", "db1")
            wait_for(
                lambda: any(t > cut + 0.1 for t in bank.state()["times"]),
                timeout=20,
                what="a commit after the cut",
            )
            # Within 0.1 s of the cut: acknowledged before it, noted after.
            first = min(t for t in bank.state()["times"] if t > cut + 0.1) - cut
            bank.wait_more(30)
        finally:
            state = bank.finish()
        print(
            f"\nwriter host's link cut: db1 out after {out_after:.2f}s ({detail}), "
            f"first commit through the VIP after {first:.2f}s "
            f"(the issue's target: {EVICTION + 0.5:.2f}s), "
            f"{len(state['committed'])} transfers acknowledged, errors {state['errors']}"
        )
        assert detail.startswith("outside the primary component (per db")
        # The target is Galera's eviction + 0.5 s (1.75 s): measured
        # 1.67-1.90 s at load average 5-8, 3.4 s at 15 (docs/high-availability.md).
        # Asserted: below what three timed-out checks of db1 would take
        # (fall 3 x timeout 2 s = 6 s), which only the member list achieves.
        assert first < 3 * 2.0 - 0.5, first
        assert out_after < 3 * 2.0 - 1.0, out_after
    finally:
        bed.restore_link("ctl1")
        pair.stop()
    cluster["db1"].wait_synced(120)  # evicted, it rejoins
    missing = lost_commits(cluster, "db2", state["committed"])
    assert not missing, f"{len(missing)} acknowledged transfers lost"


def test_partition_splits_the_vip_and_no_side_writes_outside_the_primary_component(
    galera_bed: tuple[NetBed, GaleraCluster], tmp_path: Path
) -> None:
    """The seed's warning: a partition leaves the VIP on both sides. ctl1 (VIP
    and writer db1) with client2 on one side; ctl2, ctl3 and client on the other."""
    bed, cluster = galera_bed
    pair = GaleraPair(bed, tmp_path, CONTROLLERS, cluster=cluster).start(vip_on="ctl1")
    minority, majority = ["ctl1", "client2"], ["ctl2", "ctl3", "client"]
    try:
        wait_for(lambda: pair.writer("ctl1") == "db1", timeout=15, what="db1 the writer")
        setup_bank(cluster)
        banks = {
            "client": BankClient(bed, "client", tmp_path / "bank-majority.json"),
            "client2": BankClient(bed, "client2", tmp_path / "bank-minority.json"),
        }
        try:
            banks["client"].wait_more(20)
            banks["client2"].wait_more(20)
            bed.partition(minority, majority)
            # After the partition is in place: a commit acknowledged while the
            # links were being cut may have been replicated before they were.
            cut = time.monotonic()

            # Both sides hold the VIP: ctl1 hears no one and stays MASTER, the
            # majority's keepalived elects one of its own.
            wait_for(lambda: len(pair.vip_holders()) == 2, timeout=20, what="the split VIP")
            holders = pair.vip_holders()
            assert "ctl1" in holders
            (other,) = set(holders) - {"ctl1"}

            # The majority: db2 and db3 form the Primary Component; its
            # loadstone drops db1 (per their member list) and writes to db2.
            wait_for(lambda: pair.writer(other) == "db2", timeout=20, what="majority: db2")
            banks["client"].wait_more(30, timeout=30)

            # The minority: db1 says non-Primary, ctl1's loadstone takes it
            # out and closes its sessions; db2/db3 are unreachable from here.
            wait_for(
                lambda: pair_detail(pair, "ctl1", "db1") == "non-primary",
                timeout=20,
                what="minority: db1 non-primary",
            )
            status = admin_get(bed, "ctl1", "/api/v1/status")["listeners"]["writer"]
            assert status["active"] != "db1"
            assert status["servers"]["db1"]["state"] == "down"
            assert status["servers"]["db1"]["sessions"] == 0
            minority_count = banks["client2"].count()
            time.sleep(3.0)  # a window in which the minority must commit nothing
            assert banks["client2"].count() == minority_count
            # A commit the minority acknowledged after the cut must have been
            # replicated before it (its answer was late, e.g. a loaded client
            # host): it is in the majority's Primary Component, read now, while
            # the sides are still apart. One missing there was written outside it.
            seen = banks["client2"].state()
            late = [i for t, i in zip(seen["times"], seen["ids"], strict=True) if t > cut]
            outside = set(late) - majority_transfers(cluster, "db2")
            assert not outside, f"{len(outside)} of {len(late)} late minority commits not on db2"
        finally:
            bed.heal()
            states = {name: bank.finish() for name, bank in banks.items()}
        print(
            f"\npartition: VIP on {holders}; majority committed "
            f"{len(states['client']['committed'])}, minority "
            f"{len(states['client2']['committed'])} ({len(late)} acknowledged after the cut, "
            f"all on db2), minority errors {states['client2']['errors']}"
        )
    finally:
        bed.heal()
        pair.stop()
    cluster["db1"].wait_synced(120)
    committed = states["client"]["committed"] + states["client2"]["committed"]
    missing = lost_commits(cluster, "db2", committed)
    assert not missing, f"{len(missing)} acknowledged transfers lost"


def majority_transfers(cluster: GaleraCluster, node: str) -> set[str]:
    return {str(row[0]) for row in cluster[node].query("SELECT id FROM app.transfers")}


def pair_detail(pair: GaleraPair, host: str, server: str) -> str:
    doc = admin_get(pair.bed, host, "/api/v1/status")
    return str(doc["listeners"]["writer"]["servers"][server]["check"]["detail"])
