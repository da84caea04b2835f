"""Process-wide bounds on accepting: `global.maxconn` and the descriptor limit.

As in HAProxy, neither is met by accepting and closing: at `global.maxconn`
(client connections of every listener, both data paths together) and when
accept(2) fails for want of descriptors (EMFILE, ENFILE) or memory, the
process stops accepting and the clients wait in the kernel's backlog until a
connection ends or a retry finds room. The pure path's acceptors
(datapath.acceptor) pause and resume here; the native engine does the same in
its workers (engine/limits.c), told the bound and the pure path's count.

Before the descriptor limit is even reached, the connections are bounded as
HAProxy derives its maxconn from `ulimit -n`: a proxied session needs two
descriptors (client and server socket), and a reserve is kept for health
checks, logs, the admin API and a reload's new sockets. `fd_bound` is
(RLIMIT_NOFILE - the descriptors open outside sessions - FD_RESERVE) / 2,
taken at start and at each reload; the process pauses accepting at the smaller
of it and `global.maxconn`. Without it, the client accepted with the last
descriptor found none for its server socket and was refused, and the clients
waiting in the backlog went round accept-and-refuse.

`LIMIT` is the process's one instance: the status API and /metrics read it.
"""

from __future__ import annotations

import os
import resource
from typing import Any, Final, Protocol

FDS_PER_SESSION: Final = 2  # the client's socket and its server's
FD_RESERVE: Final = 32  # checks, log files, the admin API, a reload's new sockets


class NativeLimits(Protocol):
    """What of the native engine (relay.Engine) the bound needs."""

    def set_maxconn(self, maxconn: int, foreign: int) -> None: ...
    def set_foreign_conns(self, foreign: int) -> None: ...
    def set_bound_from_fds(self, from_fds: bool) -> None: ...
    def limit_stats(self) -> tuple[int, int, int]: ...


class Pausable(Protocol):
    def resume(self) -> None: ...


class ProcessLimit:
    def __init__(self) -> None:
        self.maxconn: int | None = None  # global.maxconn
        self.fd_bound: int | None = None  # sessions the descriptor limit leaves room for
        self.bound: int | None = None  # the smaller of the two: where accepting pauses
        self.pure_conns = 0  # admitted or queued client connections of the pure path
        self.accept_pauses = 0  # pure path: accept(2) found no descriptor
        self.maxconn_pauses = 0  # pure path: global.maxconn reached
        self.paused: set[Pausable] = set()
        self.native: NativeLimits | None = None

    def configure(self, maxconn: int | None) -> None:
        """Start and reload: the bound from global.maxconn (None: none) and the
        descriptor limit as it is now."""
        self.maxconn = maxconn
        self._derive_bound()
        self._resume_paused()

    def attach_native(self, engine: NativeLimits | None) -> None:
        self.native = engine
        # The engine raised the soft descriptor limit to the hard one: derive again.
        self._derive_bound()

    def _derive_bound(self) -> None:
        self.fd_bound = _fd_bound(self.connections)
        bounds = [b for b in (self.maxconn, self.fd_bound) if b is not None]
        self.bound = min(bounds) if bounds else None
        if self.native is not None:
            # The engine's workers pause at it too, counting the pure path's sessions.
            self.native.set_maxconn(self.bound or 0, self.pure_conns)
            self.native.set_bound_from_fds(self.bound is not None and not self.at_maxconn())

    def _native_stats(self) -> tuple[int, int, int]:
        return self.native.limit_stats() if self.native is not None else (0, 0, 0)

    @property
    def connections(self) -> int:
        return self.pure_conns + self._native_stats()[0]

    def full(self) -> bool:
        return self.bound is not None and self.connections >= self.bound

    def at_maxconn(self) -> bool:
        """Is `global.maxconn` the bound that is reached (not the descriptors')?"""
        return self.maxconn is not None and self.bound == self.maxconn

    def opened(self) -> None:
        self.pure_conns += 1
        if self.native is not None:
            self.native.set_foreign_conns(self.pure_conns)

    def closed(self) -> None:
        self.pure_conns -= 1
        if self.native is not None:
            self.native.set_foreign_conns(self.pure_conns)
        # A slot and a descriptor freed: paused acceptors look again.
        self._resume_paused()

    def paused_at(self, acceptor: Pausable, at_maxconn: bool) -> None:
        if at_maxconn:
            self.maxconn_pauses += 1
        else:
            self.accept_pauses += 1
        self.paused.add(acceptor)

    def _resume_paused(self) -> None:
        if self.paused:
            waiting = list(self.paused)
            self.paused.clear()
            for acceptor in waiting:
                acceptor.resume()

    def status(self) -> dict[str, Any]:
        native_conns, native_fd_pauses, native_maxconn_pauses = self._native_stats()
        return {
            "maxconn": self.maxconn,
            "fd_bound": self.fd_bound,
            "connections": self.pure_conns + native_conns,
            "accept_paused": {
                "fd_limit": self.accept_pauses + native_fd_pauses,
                "maxconn": self.maxconn_pauses + native_maxconn_pauses,
            },
            "open_files": _open_files(),
            "max_files": resource.getrlimit(resource.RLIMIT_NOFILE)[0],
        }


def _fd_bound(sessions: int) -> int | None:
    """Sessions the descriptor limit leaves room for, `sessions` being open now."""
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    open_now = _open_files()
    if soft == resource.RLIM_INFINITY or open_now < 0:
        return None
    outside_sessions = max(0, open_now - FDS_PER_SESSION * sessions)
    return max(1, (soft - outside_sessions - FD_RESERVE) // FDS_PER_SESSION)


def _open_files() -> int:
    try:
        return len(os.listdir("/proc/self/fd"))
    except OSError:  # no /proc (or no descriptor left to read it)
        return -1


LIMIT = ProcessLimit()
