"""Active/active: writer agreement (global.peers) among three announcing
instances, and an instance announcing through ExaBGP beside BIRD ones.

The backends (aiohttp) stand in for Galera nodes behind an active-backup
listener, as in tests/integration/ha/test_writer_agreement.py: the agreement
reads only each instance's eligibility verdicts, and a backend fails at the
touch of a file. The same agreement in front of a real Galera cluster, with
the bank workload through the VIP: test_galera_writer.py.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

import pytest

from tests.integration.harness import wait_for
from tests.netbed.bgp import AnycastBed
from tests.netbed.flows import parse

ALL = {"lb1", "lb2", "lb3"}


def test_announcing_instances_agree_on_one_writer(tmp_path: Path) -> None:
    key = tmp_path / "peers.key"
    key.write_text("shared-key-of-the-anycast-group-42")
    with AnycastBed(tmp_path, peers_key=key, balance="active-backup").start() as bed:

        def writers() -> set[str | None]:
            return {bed.status(lb)["listeners"]["web"]["active"] for lb in bed.instances}

        wait_for(lambda: writers() == {"be1"}, what="every instance writing to be1")
        bed.fail_file("be1").touch()
        wait_for(lambda: writers() == {"be2"}, timeout=15, what="every instance on be2")
        bed.fail_file("be1").unlink()  # be1 is back: no failback anywhere
        wait_for(
            lambda: all(
                bed.status(lb)["listeners"]["web"]["servers"]["be1"]["state"] == "up"
                for lb in bed.instances
            ),
            timeout=15,
            what="be1 up again",
        )
        # A fresh start alone would pick be1 (first in order); it adopts be2.
        subprocess.run(["kill", "-9", str(bed.loadstone_pid("lb3"))], check=True)
        bed.loadstones["lb3"].wait(10)
        bed.start_loadstone("lb3")
        wait_for(lambda: writers() == {"be2"}, timeout=10, what="lb3 adopting be2")
        assert bed.status("lb3")["peers"]["adopted"] >= 1
        bed.wait_next_hops(ALL)
        out, proc = bed.start_flows("new")
        time.sleep(1.5)  # a load of this length, not a synchronisation
        bed.bed.kill(proc)
        flows = parse(out.read_text().splitlines())
        assert {f.served_by for f in flows} == ALL  # every instance took writes...
        assert {f.backend for f in flows} == {"be2"}  # ...all to the one writer


@pytest.mark.skipif(shutil.which("exabgp") is None, reason="exabgp is not installed (scripts/test)")
def test_exabgp_instance_announces_and_its_feed_withdraws_when_loadstone_dies(
    tmp_path: Path,
) -> None:
    with AnycastBed(tmp_path, exabgp=("lb3",)).start() as bed:
        assert bed.next_hops() == ALL
        assert bed.status("lb3")["anycast"]["driver"]["feed_connected"] is True
        killed = time.monotonic()
        subprocess.run(["kill", "-9", str(bed.loadstone_pid("lb3"))], check=True)
        bed.wait_next_hops(ALL - {"lb3"}, timeout=10)  # the feed saw loadstone go
        assert time.monotonic() - killed < 1.2
        bed.loadstones["lb3"].wait(10)
        bed.start_loadstone("lb3")
        bed.wait_next_hops(ALL, timeout=20)

        bed.bed.kill(bed.birds["lb3"])  # ExaBGP gone: loadstone serves and says so
        wait_for(
            lambda: bed.status("lb3")["anycast"]["driver"]["up"] is False,
            what="the exabgp driver reported down",
        )
        assert "no ExaBGP feed connected" in bed.status("lb3")["anycast"]["driver"]["error"]
