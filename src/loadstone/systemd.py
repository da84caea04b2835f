"""What loadstone takes from systemd, without libsystemd.

sd_notify(3): a datagram to $NOTIFY_SOCKET. With `Type=notify` systemd waits
for READY=1 before it calls the service started, shows RELOADING=1 / STOPPING=1
in `systemctl status`, and (for `Type=notify-reload`) expects MONOTONIC_USEC
with RELOADING=1. Outside systemd NOTIFY_SOCKET is unset and every call is a
no-op.

The watchdog (sd_watchdog_enabled(3)): with `WatchdogSec=` systemd sets
$WATCHDOG_USEC and restarts the service when no WATCHDOG=1 arrives within that
time. The pings are sent from a timer of the event loop, so a loop stuck in a
busy callback stops them and gets restarted, while a busy but turning one does
not.

Credentials (systemd.exec(5), `LoadCredential=`): systemd copies a root-only
file into $CREDENTIALS_DIRECTORY, readable by the service's (dynamic) user.
A path written `credential:NAME` (token_file, password_file) names that copy.
"""

from __future__ import annotations

import asyncio
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


def watchdog_interval() -> float | None:
    """Seconds between two WATCHDOG=1 pings, or None when systemd expects none:
    half the timeout, as sd_watchdog_enabled(3) advises."""
    usec = os.environ.get("WATCHDOG_USEC", "")
    pid = os.environ.get("WATCHDOG_PID")
    if pid is not None and pid != str(os.getpid()):
        return None  # meant for another process (e.g. a parent that exec'd us)
    try:
        timeout = int(usec)
    except ValueError:
        return None
    return timeout / 2_000_000 if timeout > 0 else None


class Watchdog:
    """WATCHDOG=1 every `interval` seconds, from the event loop's own timer."""

    def __init__(self, loop: asyncio.AbstractEventLoop, interval: float) -> None:
        self.loop = loop
        self.interval = interval
        self._handle = loop.call_soon(self._ping)

    def _ping(self) -> None:
        notify("WATCHDOG=1")
        self._handle = self.loop.call_later(self.interval, self._ping)

    def cancel(self) -> None:
        self._handle.cancel()


def start_watchdog(loop: asyncio.AbstractEventLoop) -> Watchdog | None:
    interval = watchdog_interval()
    return Watchdog(loop, interval) if interval is not None else None


CREDENTIAL_PREFIX = "credential:"


def credential_path(path: str) -> str:
    """`path`, or for `credential:NAME` the file systemd's LoadCredential=NAME
    placed in $CREDENTIALS_DIRECTORY. OSError (ENOENT) when that is not set, so
    callers report it as they report an unreadable file."""
    if not path.startswith(CREDENTIAL_PREFIX):
        return path
    name = path.removeprefix(CREDENTIAL_PREFIX)
    directory = os.environ.get("CREDENTIALS_DIRECTORY")
    if not directory:
        raise FileNotFoundError(
            2, f"$CREDENTIALS_DIRECTORY is not set (no LoadCredential={name}:... in the unit?)"
        )
    return os.path.join(directory, name)
