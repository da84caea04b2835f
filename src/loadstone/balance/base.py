"""The interface every balancing algorithm implements, and the pool calls.

Like HAProxy's lb_ops, it is a few hooks: `refresh()` on any change of health,
admin state or weight, `pick()` for a new session, `restore_active()` when a
reload replaces the pool, and the `active` and `awaiting_checks` the pool
reports. A balancer owns no server state. It reads `ServerRuntime.usable`, `.weight`,
`.backup`, `.sessions` and `.maxconn`, and is told by `refresh()` whenever any
of them may have changed (health, admin state, weight). `pick()` is on the
data path's hot path: keep it O(1) or O(servers) with no allocation where
possible; do the expensive work in `refresh()`.

Backup servers: only when no non-backup server is usable do the usable backup
servers become the candidates (HAProxy's semantics without `allbackups`... all
usable backups share the load).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Container, Iterable, Sequence

from loadstone.server_state import ServerRuntime


class Balancer(ABC):
    name: str = "?"

    def __init__(self, servers: Sequence[ServerRuntime]) -> None:
        self.servers: tuple[ServerRuntime, ...] = tuple(servers)
        self.candidates: tuple[ServerRuntime, ...] = ()
        self.refresh()

    def refresh(self) -> None:
        """Recompute after a change of health, admin state or weight."""
        primary = tuple(s for s in self.servers if s.usable and not s.backup)
        self.candidates = primary or tuple(s for s in self.servers if s.usable and s.backup)
        self.rebuild()

    def rebuild(self) -> None:  # noqa: B027 - optional hook
        """Algorithm-specific precomputation over `self.candidates`."""

    @abstractmethod
    def pick(
        self, client_ip: str | None, exclude: Iterable[ServerRuntime] = ()
    ) -> ServerRuntime | None:
        """The server for a new session, or None when no candidate is left.

        `exclude` holds servers whose connect already failed for this session
        (redispatch); an algorithm returns another candidate when it can, and
        when every candidate is excluded it picks as if nothing were (so the
        data path retries the same server, as HAProxy does with one server left)
        rather than give up on a session that still has retries.
        """

    @property
    def active(self) -> ServerRuntime | None:
        """Only active-backup has a single active server."""
        return None

    def restore_active(self, name: str | None) -> ServerRuntime | None:
        """Carry the active server of the pool a reload replaces (by name) over to
        this one; returns the active server. Only active-backup has one to carry."""
        return self.active

    @property
    def awaiting_checks(self) -> bool:
        """The choice waits for first check results: refresh() after each one,
        even one that changes no health (Pool.set_health)."""
        return False


def as_container(exclude: Iterable[ServerRuntime]) -> Container[ServerRuntime]:
    """`exclude` in a form `in` can test repeatedly.

    Callers pass a tuple, list or set in practice and those are used as they are;
    any other iterable (a generator) is consumed once into a tuple, since it could
    not be tested more than once. Balancers call this only when `exclude` is
    truthy, so the common empty-tuple case costs nothing.
    """
    if isinstance(exclude, tuple | list | set | frozenset):
        return exclude
    return tuple(exclude)
