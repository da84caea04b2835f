"""global.peers for loadstone instances on a bed's hosts (writer agreement)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tests.netbed.bed import NetBed

PEERS_PORT = 6957


def peers_section(bed: NetBed, me: str, group: Sequence[str], key: Path) -> dict[str, Any]:
    """`me`'s global.peers: the other hosts of `group` are its peers."""
    return {
        "name": me,
        "bind": f"{bed.host(me).address}:{PEERS_PORT}",
        "key_file": str(key),
        "interval": "250ms",
        "peers": [
            {"name": other, "address": f"{bed.host(other).address}:{PEERS_PORT}"}
            for other in group
            if other != me
        ],
    }
