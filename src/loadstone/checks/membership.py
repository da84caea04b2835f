"""Which monitored servers a cluster member says are outside its Primary Component:
pure logic, no I/O.

Theory of operation
-------------------
A host that vanishes (power loss, a cut link, a kernel panic) sends no reset:
its monitor connection just stops answering, and its own check fails only by
timing out, `fall` times in a row (2 s x 3 with the defaults, plus the waits
between). Its Galera peers notice sooner: they evict it after
evs.suspect_timeout + evs.inactive_check_period (5.5 s by default, about 1 s as
tuned in many deployments) and form a new Primary Component without it. Every
surviving member then lists the new component's members in
wsrep_incoming_addresses (the address each member serves clients on).

So the Galera probe reads that list with the status it already reads, and a
member that is itself eligible (Primary, Synced: a node outside the Primary
Component cannot vouch for anyone) reports it with its passing verdict. The
scheduler asks `outside_component` which of the servers it monitors in the
same pool are missing from the list, and takes those out at once, as a
definitive failure. Their own checks go on and bring them back (`rise`
successes) once they rejoined and are Synced again.

The addresses must be comparable to be trusted: the list must be well formed
(no "AUTO", no empty entry: a member still starting), as long as the cluster
size, and name the reporter itself at the address loadstone checks it on. A
cluster whose nodes advertise other addresses than the ones loadstone connects
to (wsrep_node_incoming_address set to a name, a NAT between) therefore never
takes anyone out this way: it falls back to the timeouts, never to a wrong
exclusion.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from typing import TypeVar

Endpoint = tuple[str, int]  # (host as normalised by `endpoint`, port)

K = TypeVar("K")


def endpoint(host: str, port: int) -> Endpoint:
    """A comparable (host, port): IP literals in their canonical form, names lower-case."""
    host = host.strip().removeprefix("[").removesuffix("]")
    try:
        return (ipaddress.ip_address(host).compressed, port)
    except ValueError:
        return (host.lower(), port)


def parse_members(text: str | None, cluster_size: int | None) -> frozenset[Endpoint] | None:
    """wsrep_incoming_addresses ("10.0.0.1:3306,[fd00::2]:3306,...") as endpoints;
    None when it cannot be trusted (see the module docstring)."""
    if not text or cluster_size is None:
        return None
    members: set[Endpoint] = set()
    entries = text.split(",")
    for entry in entries:
        host, sep, port = entry.strip().rpartition(":")
        if not sep or not host or not port.isdigit() or host.upper() == "AUTO":
            return None
        members.add(endpoint(host, int(port)))
    if len(entries) != cluster_size or len(members) != cluster_size:
        return None
    return frozenset(members)


def outside_component(
    reporter: Endpoint, members: frozenset[Endpoint], monitored: Mapping[K, Endpoint]
) -> list[K]:
    """The monitored servers (key -> endpoint) missing from a Primary member's list.

    Nothing when the reporter does not find itself in the list: the addresses
    are then not comparable with the ones loadstone uses."""
    if reporter not in members:
        return []
    return [key for key, where in monitored.items() if where not in members]


def describe(members: Iterable[Endpoint]) -> str:
    return ",".join(f"[{h}]:{p}" if ":" in h else f"{h}:{p}" for h, p in sorted(members))
