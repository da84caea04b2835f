"""Balancing algorithms, one module each, behind `make_balancer`."""

from __future__ import annotations

from collections.abc import Sequence

from loadstone.balance.base import Balancer
from loadstone.server import ServerRuntime


def make_balancer(name: str, servers: Sequence[ServerRuntime]) -> Balancer:
    from loadstone.balance.active_backup import ActiveBackup
    from loadstone.balance.first import First
    from loadstone.balance.leastconn import LeastConn
    from loadstone.balance.roundrobin import RoundRobin
    from loadstone.balance.source import SourceHash

    algorithms: dict[str, type[Balancer]] = {
        "roundrobin": RoundRobin,
        "leastconn": LeastConn,
        "source": SourceHash,
        "first": First,
        "active-backup": ActiveBackup,
    }
    return algorithms[name](servers)


__all__ = ["Balancer", "make_balancer"]
