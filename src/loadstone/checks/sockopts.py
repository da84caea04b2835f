"""Socket options of monitor connections: a peer that went silent is noticed.

A host that vanishes sends no reset and no FIN. Without help the kernel keeps
such a connection for minutes: unacknowledged data is retransmitted for ~15
minutes (tcp_retries2) and an idle connection is never probed. A check
bounded by its timeout does not care, but a connection kept open between
checks (the Galera probe's) would sit "established" on a dead host until the
next check runs into it. So every monitor socket gets:

- TCP_USER_TIMEOUT = the check timeout: data (a query, a login) left
  unacknowledged that long aborts the connection with ETIMEDOUT;
- keepalive after 1 s idle, probed every second: an idle kept connection to a
  silent peer is probed too, and TCP_USER_TIMEOUT bounds the probing, so the
  idle watcher sees the error about one check timeout after the host went.

Options the platform lacks are skipped: this is an early warning, the check
timeout stays the bound.
"""

from __future__ import annotations

import contextlib
import socket
from typing import Any

KEEPALIVE_IDLE = 1  # seconds idle before the first keepalive probe
KEEPALIVE_INTERVAL = 1  # seconds between probes
KEEPALIVE_COUNT = 3  # unanswered probes before giving up (TCP_USER_TIMEOUT may cut sooner)


def watch_for_silence(sock: Any, timeout: float) -> None:
    """Set the options on a TCP socket (a socket.socket or asyncio's TransportSocket)."""
    if sock is None or sock.type != socket.SOCK_STREAM:
        return
    user_timeout = max(1, int(timeout * 1000))  # milliseconds
    options = [
        (socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1),
        (socket.IPPROTO_TCP, getattr(socket, "TCP_KEEPIDLE", None), KEEPALIVE_IDLE),
        (socket.IPPROTO_TCP, getattr(socket, "TCP_KEEPINTVL", None), KEEPALIVE_INTERVAL),
        (socket.IPPROTO_TCP, getattr(socket, "TCP_KEEPCNT", None), KEEPALIVE_COUNT),
        (socket.IPPROTO_TCP, getattr(socket, "TCP_USER_TIMEOUT", None), user_timeout),
    ]
    for level, option, value in options:
        if option is None:
            continue
        with contextlib.suppress(OSError):  # e.g. a Unix socket given by mistake
            sock.setsockopt(level, option, value)
