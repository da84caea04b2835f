"""The issue's writer-agreement scenario with keepalived, in namespaces: A and B
write to ctl1's node, which fails; both move to ctl2's node; ctl1's comes back
(no failback); B restarts (alone it would pick ctl1's node again) and adopts
ctl2's from A; A's loadstone dies, the VIP moves to B, and the client's
requests still reach ctl2's node.

The backends (aiohttp, one per controller) stand in for Galera nodes behind an
active-backup listener: the agreement reads only each instance's eligibility
verdicts (see tests/integration/test_peers.py for why that is enough).
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.ha.pair import SERVICE_PORT, VIP, Pair, admin_get
from tests.integration.harness import wait_for
from tests.netbed.bed import NetBed

pytestmark = pytest.mark.skipif(
    shutil.which("keepalived") is None, reason="keepalived is not installed (scripts/test)"
)


@pytest.fixture
def bed() -> Iterator[NetBed]:
    with NetBed(["ctl1", "ctl2", "client"]) as b:
        yield b


def test_the_new_vip_holder_keeps_the_failed_over_writer(bed: NetBed, tmp_path: Path) -> None:
    key = tmp_path / "peers.key"
    key.write_text("shared-key-of-the-ha-group-42")
    pair = Pair(bed, tmp_path, ["ctl1", "ctl2"], balance="active-backup", peers_key=key).start()
    a = pair.wait_vip()
    b = "ctl2" if a == "ctl1" else "ctl1"
    wait_for(lambda: pair.active("ctl1") == pair.active("ctl2") == "ctl1", what="writer ctl1")

    bed.kill(pair.backends["ctl1"])
    wait_for(lambda: pair.active("ctl1") == pair.active("ctl2") == "ctl2", what="failover")
    pair.backends["ctl1"] = pair.start_backend("ctl1")  # back: no failback

    bed.kill(pair.loadstones[b])
    pair.start_loadstone(b)  # fresh: alone it would pick ctl1's node, first in order
    wait_for(lambda: pair.active(b) == "ctl2", timeout=10, what="B adopting A's writer")
    assert pair.active(a) == "ctl2"
    assert admin_get(bed, b, "/api/v1/status")["peers"]["adopted"] >= 1

    bed.kill(pair.loadstones[a])
    assert pair.wait_vip(away_from=a) == b

    def answer() -> str:
        return bed.run(
            "client", ["curl", "-sf", "--max-time", "1", f"http://{VIP}:{SERVICE_PORT}/"]
        )

    assert wait_for(answer, timeout=15, what="an answer through the VIP").strip() == "ctl2"
