"""What the admin server reads of the running proxy: a typed view of the runtime.

The runtime builds the admin server and hands itself over; the admin server
reads the runtime's live objects on each request. Were admin.py to import
runtime.py for the types of what it reads, the two would import each other.
So this module names exactly what admin.py reads, and loadstone.runtime's
Runtime, ListenerRuntime and ReloadReport satisfy it by their shape (mypy checks
that where the runtime passes itself to AdminServer). The imports run one way:
runtime -> admin -> runtime_view.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

from loadstone.config.model import ListenerConfig
from loadstone.datapath.seam import Frontend
from loadstone.server import Pool


class ListenerView(Protocol):
    """One running listener: its configuration, its pool and its frontend."""

    @property
    def config(self) -> ListenerConfig: ...

    @property
    def pool(self) -> Pool: ...

    @property
    def frontend(self) -> Frontend: ...


class ReloadState(Protocol):
    """The outcome of the last configuration load (the start counts as one)."""

    @property
    def ok(self) -> bool: ...

    @property
    def generation(self) -> int: ...

    def as_dict(self) -> dict[str, Any]: ...


class RuntimeView(Protocol):
    """The running proxy, as the status API, the metrics and the write API see it."""

    @property
    def listeners(self) -> Mapping[str, ListenerView]: ...

    @property
    def started_at(self) -> float: ...  # time.time() of the start

    @property
    def admin_token(self) -> str | None: ...  # the bearer token writes need, if any

    @property
    def reload_report(self) -> ReloadState: ...

    async def reload(self) -> ReloadState:
        """Load the configuration file again and apply it, or change nothing."""
        ...

    async def reopen_logs(self) -> list[str]:
        """Reopen the log files; the errors of those that kept the old file."""
        ...

    def log_status(self) -> dict[str, Any] | None:
        """Lines written and dropped per log destination (None: not tracked)."""
        ...

    def health_problems(self) -> list[str]:
        """Why this instance should not hold the VIP now; empty while healthy."""
        ...

    def vrrp_transition(self, instance: str, state: str) -> None:
        """keepalived's notify hook: this host's VRRP instance entered `state`."""
        ...

    @property
    def vrrp(self) -> dict[str, Any]: ...  # {instance: {"state", "since"}} as notified

    def peers_status(self) -> dict[str, Any] | None:
        """global.peers: each peer up or down, its writers, datagrams refused."""
        ...

    def anycast_status(self) -> dict[str, Any] | None:
        """global.anycast: each VIP's decision and announced state, the driver's health."""
        ...
