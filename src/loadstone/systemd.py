"""sd_notify(3) without libsystemd: a datagram to $NOTIFY_SOCKET.

With `Type=notify` systemd waits for READY=1 before it calls the service
started, shows RELOADING=1 / STOPPING=1 in `systemctl status`, and (for
`Type=notify-reload`) expects MONOTONIC_USEC with RELOADING=1. Outside systemd
NOTIFY_SOCKET is unset and every call is a no-op.
"""

from __future__ import annotations

import os
import socket
import time


def monotonic_usec() -> str:
    return f"MONOTONIC_USEC={time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000}"


def notify(*fields: str) -> bool:
    """Send `fields` (e.g. "READY=1") to the service manager; False if none."""
    path = os.environ.get("NOTIFY_SOCKET")
    if not path:
        return False
    if path.startswith("@"):  # abstract namespace
        path = "\0" + path[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.connect(path)
            sock.sendall("\n".join(fields).encode())
    except OSError:
        return False
    return True
