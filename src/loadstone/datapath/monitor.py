"""`monitor` (HAProxy's `monitor-uri`): the proxy's own answer on one URI, up
while the listener can serve and down while it cannot, so that keepalived, a
container runtime or a load balancer in front stops sending traffic here.

Down means: the process is leaving (SIGTERM with global.stop_delay: the health
check fails first, docs/high-availability.md) or draining, or the listener
has servers and none of them is usable. A listener without servers (a
frontend with no backend, as kolla's `frontend status`) is up while it serves.
"""

from __future__ import annotations

from loadstone.config.model import Monitor
from loadstone.http import message
from loadstone.http.request_rules import Verdict
from loadstone.server import Pool


class ProcessState:
    """Set by the runtime when the planned stop begins (Runtime.leave)."""

    leaving = False


def verdict(monitor: Monitor, pool: Pool, stopping: bool) -> Verdict:
    """The answer to a request for `monitor.path` now."""
    down = (
        stopping
        or ProcessState.leaving
        or (bool(pool.servers) and not any(s.usable for s in pool.servers))
    )
    status = monitor.down_status if down else monitor.up_status
    return Verdict(status, message.answer(status), "monitor", quiet=True)
