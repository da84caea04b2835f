"""The operator's actions on one server, shared by every way of asking for them:
the admin HTTP API (loadstone.admin) and HAProxy's runtime socket
(loadstone.haproxy_socket). Each checks its argument and goes through the pool's
`set_*`, the same path the checks use, so a change takes effect on the next
connection, whoever asked.
"""

from __future__ import annotations

from typing import Final

from loadstone.server import AdminState, Pool, ServerRuntime

ADMIN_STATES: Final[tuple[AdminState, ...]] = ("ready", "drain", "maint")
MAX_WEIGHT: Final = 256  # as HAProxy's


class ActionError(ValueError):
    """The argument of an action is not one it takes; the message says which are."""


def set_state(pool: Pool, server: ServerRuntime, state: object) -> None:
    """ready: takes new sessions; drain: keeps its sessions, takes no new ones;
    maint: takes none and its sessions are closed."""
    for admin in ADMIN_STATES:
        if state == admin:
            pool.set_admin(server, admin)
            return
    raise ActionError(f"state must be one of {', '.join(ADMIN_STATES)}, got {state!r}")


def set_weight(pool: Pool, server: ServerRuntime, weight: object) -> None:
    """The operator's weight, kept across reloads until the next restart."""
    if isinstance(weight, bool) or not isinstance(weight, int) or not 0 <= weight <= MAX_WEIGHT:
        raise ActionError(f"weight must be an integer 0-{MAX_WEIGHT}, got {weight!r}")
    pool.set_weight(server, weight)


def shutdown_sessions(server: ServerRuntime) -> int:
    """Close the server's sessions now; how many there were."""
    return server.shutdown_sessions("shut down by operator")
