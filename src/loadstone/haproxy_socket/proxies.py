"""loadstone's listeners seen as HAProxy proxies.

A listener imported from `frontend F` + `backend B` is shown as HAProxy shows
those two (a FRONTEND row under F, the servers and a BACKEND row under B), and
B/S names its server S in commands; one imported from `listen X` is X for both;
one written by hand is known by its own name. The routing pools of an http
listener are the other backends its frontend used: the importer names the pool
after the backend and its servers `<backend>.<server>`, so `B/S` also finds
server `B.S` of pool B.

A backend that several frontends used was copied into each of their listeners:
a command on it acts on every copy (as on HAProxy's one backend), and `show
stat` prints the first copy only, so that each pxname/svname pair stays unique.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass

from loadstone.runtime_view import ListenerView
from loadstone.server import ServerRuntime


@dataclass(frozen=True, slots=True)
class Backend:
    """One HAProxy backend: some or all servers of one listener."""

    name: str
    listener: ListenerView
    servers: tuple[tuple[str, ServerRuntime], ...]  # (HAProxy's server name, the server)


def frontend_name(lr: ListenerView) -> str:
    names = lr.config.haproxy_names
    return names.frontend if names is not None and names.frontend else lr.config.name


def backend_name(lr: ListenerView) -> str:
    names = lr.config.haproxy_names
    return names.backend if names is not None and names.backend else lr.config.name


def backends_of(lr: ListenerView) -> Iterator[Backend]:
    """The listener's default servers as its backend, then one backend per pool."""
    default = backend_name(lr)
    pools = [p.name for p in lr.config.pools]
    yield Backend(
        default,
        lr,
        tuple((s.name, s) for s in lr.pool.servers if s.config.pool not in pools),
    )
    for pool in pools:
        prefix = f"{pool}."
        yield Backend(
            pool,
            lr,
            tuple(
                (s.name.removeprefix(prefix), s) for s in lr.pool.servers if s.config.pool == pool
            ),
        )


def all_backends(listeners: Mapping[str, ListenerView]) -> list[Backend]:
    """Every backend once, in listener order (see the module docstring on copies)."""
    seen: set[str] = set()
    out = []
    for lr in listeners.values():
        for backend in backends_of(lr):
            if backend.name not in seen:
                seen.add(backend.name)
                out.append(backend)
    return out


def find_backends(listeners: Mapping[str, ListenerView], name: str) -> list[Backend]:
    """Every backend `name` denotes: by HAProxy's name, every copy; or a listener by its own."""
    found = [b for lr in listeners.values() for b in backends_of(lr) if b.name == name]
    if not found and name in listeners:
        found = list(backends_of(listeners[name]))[:1]
    return found
