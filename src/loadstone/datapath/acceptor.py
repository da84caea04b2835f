"""The pure path's accept loop on one listening socket.

asyncio's and uvloop's servers meet the descriptor limit badly: asyncio logs a
traceback and stops for a fixed second; uvloop (libuv) accepts and closes the
waiting clients with a reserve descriptor, and once that descriptor is lost
closes the listening socket for good. This loop pauses instead, as HAProxy
does: at `global.maxconn` or when accept(2) fails for want of descriptors it
stops watching the socket (the clients wait in the kernel's backlog, no
event is left to spin on) and looks again when a connection of the process
ends or after RETRY_AFTER (datapath.limits).
"""

from __future__ import annotations

import asyncio
import errno
import functools
import logging
import socket
from collections.abc import Callable

from loadstone.datapath.limits import LIMIT

log = logging.getLogger("loadstone")

RETRY_AFTER = 0.1  # seconds: a paused acceptor looks again this often
BATCH = 64  # accepts per readiness, as the native engine's LS_ACCEPT_BATCH
OUT_OF_RESOURCES = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})


class Acceptor:
    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        sock: socket.socket,
        protocol_factory: Callable[[], asyncio.BaseProtocol],
    ) -> None:
        self.loop = loop
        self.sock = sock
        self.fd = sock.fileno()
        self.protocol_factory = protocol_factory
        self.watching = False
        self.closed = False
        self.retry: asyncio.TimerHandle | None = None
        self.pausing = False  # in a pause (retries included)
        self.handshakes: set[asyncio.Task[object]] = set()  # transports being made
        sock.setblocking(False)

    def start(self) -> None:
        self.resume()

    def resume(self) -> None:
        if self.retry is not None:
            self.retry.cancel()
            self.retry = None
        if self.closed or self.watching:
            return
        self.loop.add_reader(self.fd, self._readable)
        self.watching = True

    def _pause(self, at_maxconn: bool) -> None:
        if self.watching:
            self.loop.remove_reader(self.fd)
            self.watching = False
        if not self.pausing:  # counted once per pause, not per retry
            self.pausing = True
            LIMIT.paused_at(self, at_maxconn)
        else:
            LIMIT.paused.add(self)
        if self.retry is None:
            self.retry = self.loop.call_later(RETRY_AFTER, self.resume)

    def _readable(self) -> None:
        for _ in range(BATCH):
            if LIMIT.full():
                self._pause(at_maxconn=LIMIT.at_maxconn())
                return
            try:
                conn, _ = self.sock.accept()
            except (BlockingIOError, InterruptedError):
                self._accepted_again()
                return
            except ConnectionAbortedError:
                continue
            except OSError as exc:
                if exc.errno in OUT_OF_RESOURCES:
                    self._pause(at_maxconn=False)
                else:
                    log.warning("accept on %s: %s", self.sock.getsockname(), exc)
                return
            self._accepted_again()
            conn.setblocking(False)
            task = self.loop.create_task(
                self.loop.connect_accepted_socket(self.protocol_factory, conn)
            )
            self.handshakes.add(task)
            task.add_done_callback(self._made)
            task.add_done_callback(functools.partial(_close_if_failed, conn))

    def _accepted_again(self) -> None:
        """Accepting works (or nothing waits): a later pause is a new one."""
        self.pausing = False

    def _made(self, task: asyncio.Task[object]) -> None:
        self.handshakes.discard(task)
        if not task.cancelled() and task.exception() is not None:
            # e.g. no descriptor left for the transport's internals: that client only
            log.debug("accepted connection failed: %s", task.exception())

    def close(self) -> None:
        """Stop accepting and close the socket."""
        self.closed = True
        if self.retry is not None:
            self.retry.cancel()
            self.retry = None
        LIMIT.paused.discard(self)
        if self.watching:
            self.loop.remove_reader(self.fd)
            self.watching = False
        self.sock.close()


def _close_if_failed(conn: socket.socket, task: asyncio.Task[object]) -> None:
    if task.cancelled() or task.exception() is not None:
        conn.close()
