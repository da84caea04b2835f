"""First available: fill servers in configuration order, as HAProxy's `balance first`.

The first server whose live sessions are below its `maxconn` takes the session;
the next one is used only once it is full. This keeps the number of busy servers
minimal (Redis master behind a role check, power-saving farms). A server without
`maxconn` is never full, so it takes everything from there on. `first` is not a
weighted algorithm: the weight does not matter.

When every candidate is full pick() returns None, as when there is none; the
caller tells the two apart through `candidates` (non-empty: wait for a slot).
Only `first` looks at maxconn here: the other algorithms leave the limit to the
data path.
"""

from __future__ import annotations

from collections.abc import Iterable

from loadstone.balance.base import Balancer, as_container
from loadstone.server_state import ServerRuntime


class First(Balancer):
    name = "first"

    def pick(
        self, client_ip: str | None, exclude: Iterable[ServerRuntime] = ()
    ) -> ServerRuntime | None:
        excluded = as_container(exclude) if exclude else ()
        # `candidates` is already in configuration order (base.refresh keeps it).
        for server in self.candidates:
            if excluded and server in excluded:
                continue
            maxconn = server.maxconn
            if maxconn is None or server.sessions < maxconn:
                return server
        # Only excluded servers have room (or none has): try again without the
        # exclusion, which gives an excluded server if it has a free slot (see
        # Balancer.pick) and None when all are full.
        return self.pick(client_ip) if excluded else None
