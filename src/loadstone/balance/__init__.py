"""Balancing algorithms, one module each, found by name in `BALANCERS`.

A pool (loadstone.server) builds its balancer with `make_balancer` from the
listener's `balance` name and calls it through the `Balancer` interface, as
HAProxy's backend.c calls its algorithm's lb_ops. The algorithms read servers
(loadstone.server_state) and know nothing of pools, so the imports run one way:
server -> balance -> server_state.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from loadstone.balance.active_backup import ActiveBackup
from loadstone.balance.base import Balancer
from loadstone.balance.first import First
from loadstone.balance.leastconn import LeastConn
from loadstone.balance.roundrobin import RoundRobin
from loadstone.balance.source import SourceHash
from loadstone.server_state import ServerRuntime

# By the `balance` names of the configuration (config.model.Balance; a test keeps
# the two in step).
BALANCERS: Mapping[str, type[Balancer]] = {
    cls.name: cls for cls in (RoundRobin, LeastConn, SourceHash, First, ActiveBackup)
}


def make_balancer(name: str, servers: Sequence[ServerRuntime]) -> Balancer:
    return BALANCERS[name](servers)


__all__ = ["BALANCERS", "Balancer", "make_balancer"]
