"""What the running kernel offers the data path, found by trying each feature
once (`loadstone version -v`): a kernel or a seccomp filter (systemd's
SystemCallFilter) may refuse what the headers promise.

Each probe returns "yes", or "no" and why; none leaves a descriptor open.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable

IP_FREEBIND = getattr(socket, "IP_FREEBIND", 15)  # linux/in.h


def _errno_text(exc: OSError) -> str:
    return os.strerror(exc.errno) if exc.errno else str(exc)


def _probe(attempt: Callable[[], None]) -> str:
    try:
        attempt()
    except OSError as exc:
        return f"no ({_errno_text(exc)})"
    except AttributeError:
        return "no (not in this Python)"
    return "yes"


def _splice() -> None:
    """One byte through splice(2), pipe to pipe (the native relay's splice mode)."""
    r1, w1 = os.pipe()
    r2, w2 = os.pipe()
    try:
        os.write(w1, b"x")
        if os.splice(r1, w2, 1) != 1:
            raise OSError(0, "moved nothing")
    finally:
        for fd in (r1, w1, r2, w2):
            os.close(fd)


def _sockopt(
    level: int, option: int, value: int, kind: int = socket.SOCK_STREAM
) -> Callable[[], None]:
    def attempt() -> None:
        with socket.socket(socket.AF_INET, kind) as sock:
            sock.setsockopt(level, option, value)

    return attempt


def _tcp_user_timeout() -> None:
    _sockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, 10_000)()


def _reuseport() -> None:
    _sockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)()


def kernel_features() -> dict[str, str]:
    """name -> "yes" | "no (why)", in the order `version -v` prints them (io_uring,
    which needs the native engine to try, is loadstone.buildinfo's)."""
    return {
        "splice": _probe(_splice),
        "SO_REUSEPORT": _probe(_reuseport),
        "TCP_USER_TIMEOUT": _probe(_tcp_user_timeout),
        "IP_FREEBIND": _probe(_sockopt(socket.SOL_IP, IP_FREEBIND, 1)),
    }
