"""Writing log lines without ever making the event loop wait.

Theory of operation
-------------------
Every destination is a `Sink` with its own writer thread. The event loop only
calls `Sink.write`, which appends the text to a queue bounded in characters and
returns: it never does I/O. The writer thread takes the whole queue at once and
delivers it (one write(2) for a stream or file, one sendall for TCP syslog, one
datagram per line for /dev/log and UDP). When the destination cannot keep up,
the queue fills and `write` queues the whole lines that fit and drops the
rest, counting them (`dropped`; a line is never cut): a stalled syslog server
or a full disk costs log lines, never proxy latency. A destination that fails
(a refused connect, a timed-out send, a closed pipe) drops the lines at hand
and is retried at most once a second.

A text handed to `write` may hold several lines joined by newlines (the native
data path formats a batch of session lines at once); message transports split
it, stream transports write it as is.

Reopening a file (logrotate's SIGUSR1, `loadstone ctl reopen-logs`) happens in
the writer thread, between two batches, so no line is lost or half-written: the
lines queued before the request go to the old file, later ones to the new one.
A file that cannot be reopened stays the one written, and the failure is logged.
"""

from __future__ import annotations

import logging
import os
import select
import socket
import threading
import time
from collections import deque
from concurrent.futures import Future
from typing import Final

from loadstone.logtargets import Destination
from loadstone.logtargets.syslog import INFO, SyslogFormatter

log = logging.getLogger("loadstone.log")

# Characters a sink may hold while its destination is slow: about 20 000
# session lines, a few seconds of a busy proxy.
DEFAULT_CAPACITY: Final = 4 * 1024 * 1024
# A failed destination is tried again after this long; lines meanwhile are dropped.
RETRY_INTERVAL: Final = 1.0
# How long the writer waits on a TCP connect or a send before giving up the batch.
NETWORK_TIMEOUT: Final = 2.0
# Dropped lines are reported as an event at most this often.
DROP_REPORT_INTERVAL: Final = 10.0
# A UDP datagram cannot carry more (RFC 768 over IPv4, less the headers).
MAX_DATAGRAM: Final = 65_507


class _Request:
    __slots__ = ("done", "reopen")

    def __init__(self, reopen: bool) -> None:
        self.reopen = reopen
        self.done: Future[str | None] = Future()


class Sink:
    """A destination with a writer thread; subclasses say how a batch is delivered."""

    def __init__(self, destination: Destination, capacity: int = DEFAULT_CAPACITY) -> None:
        self.destination = destination
        self.capacity = capacity
        # Lines dropped, counted by the thread that dropped them: the queue was
        # full (the caller's, under the lock) or the destination failed (the
        # writer's), so that neither count loses an increment to the other.
        self._dropped_full = 0
        self._dropped_failed = 0
        self.written = 0  # lines delivered (the writer's count)
        # Lines as (text, severity); a request (reopen, delivered) waits in the
        # line, so it takes effect after the lines written before it.
        self._queue: deque[tuple[str, int] | _Request] = deque()
        self._queued = 0  # characters in _queue
        self._cond = threading.Condition()
        self._closing = False
        self._dropped_reported = 0
        self._reported_at = 0.0
        self._thread = threading.Thread(target=self._run, name=f"log {destination}", daemon=True)
        self._thread.start()

    # -- called from the event loop ---------------------------------------------------

    def write(self, text: str, severity: int = INFO) -> None:
        """Queue `text` (one or more lines joined by newlines, no trailing one).
        Of a text longer than the room left, the whole lines that fit are queued
        and the rest dropped (a native drain is hundreds of lines: one more must
        not cost all of them)."""
        with self._cond:
            room = -1 if self._closing else self.capacity - self._queued
            if len(text) > room:
                # The last newline within the room ends the lines that fit.
                cut = text.rfind("\n", 0, max(room, 0) + 1)
                if cut <= 0:  # not even the first line (an empty one is not worth it)
                    self._dropped_full += text.count("\n") + 1
                    return
                self._dropped_full += text.count("\n", cut + 1) + 1
                text = text[:cut]
            self._queue.append((text, severity))
            self._queued += len(text)
            self._cond.notify()

    def reopen(self) -> Future[str | None]:
        """Ask the writer to reopen the destination; the future gives None, or
        the error that kept the old one."""
        return self._request(reopen=True)

    def delivered(self) -> Future[str | None]:
        """A future done once the lines written so far have been delivered
        (or dropped); its result is always None."""
        return self._request(reopen=False)

    def _request(self, reopen: bool) -> Future[str | None]:
        request = _Request(reopen)
        with self._cond:
            if self._closing:  # the writer is gone or going: nothing to wait for
                request.done.set_result(None)
            else:
                self._queue.append(request)
                self._cond.notify()
        return request.done

    def close(self, timeout: float = 5.0) -> None:
        """Deliver what is queued (for at most `timeout` seconds), then stop."""
        with self._cond:
            self._closing = True
            self._cond.notify()
        self._thread.join(timeout)

    @property
    def dropped(self) -> int:
        return self._dropped_full + self._dropped_failed

    def status(self) -> dict[str, object]:
        return {
            "destination": str(self.destination),
            "written": self.written,
            "dropped": self.dropped,
        }

    # -- the writer thread ------------------------------------------------------------

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._closing:
                    self._cond.wait()
                queue, self._queue, self._queued = self._queue, deque(), 0
                closing = self._closing
            if not queue and closing:
                self._release()
                return
            lines: list[tuple[str, int]] = []
            for item in queue:
                if isinstance(item, _Request):
                    self._deliver(lines)
                    lines = []
                    item.done.set_result(self._reopen_destination() if item.reopen else None)
                else:
                    lines.append(item)
            self._deliver(lines)
            self._report_drops()

    def _deliver(self, batch: list[tuple[str, int]]) -> None:
        if not batch:
            return
        try:
            self.deliver(batch)
        except Exception:  # a bug must not stop logging for good
            log.exception("log destination %s: writer failed", self.destination)
            self._drop(batch)

    def _drop(self, batch: list[tuple[str, int]]) -> None:
        self._dropped_failed += sum(text.count("\n") + 1 for text, _ in batch)

    def _report_drops(self) -> None:
        now = time.monotonic()
        if (
            self.dropped > self._dropped_reported
            and now - self._reported_at >= DROP_REPORT_INTERVAL
        ):
            log.warning(
                "log destination %s: %d line(s) dropped (%d in all): it could not take them",
                self.destination,
                self.dropped - self._dropped_reported,
                self.dropped,
            )
            self._dropped_reported = self.dropped
            self._reported_at = now

    def deliver(self, batch: list[tuple[str, int]]) -> None:
        raise NotImplementedError

    def _reopen_destination(self) -> str | None:
        return None  # only files have something to reopen

    def _release(self) -> None:
        pass


def write_all(fd: int, data: bytes) -> None:
    """write(2) all of `data`, waiting for a non-blocking descriptor to drain."""
    view = memoryview(data)
    while view:
        try:
            n = os.write(fd, view)
        except BlockingIOError:
            select.select([], [fd], [])
            continue
        view = view[n:]


class StreamSink(Sink):
    """stdout or stderr. Under systemd (JOURNAL_STREAM names this descriptor)
    each line starts with `<N>`, its syslog severity, which journald takes as
    the line's priority (sd-daemon(3)), so `journalctl -p warning` works."""

    def __init__(
        self, destination: Destination, capacity: int = DEFAULT_CAPACITY, fd: int | None = None
    ) -> None:
        self.fd = fd if fd is not None else 1 if destination.kind == "stdout" else 2
        self.journald = connected_to_journal(self.fd)
        super().__init__(destination, capacity)

    def deliver(self, batch: list[tuple[str, int]]) -> None:
        if self.journald:
            data = "".join(
                f"<{severity}>{line}\n" for text, severity in batch for line in text.split("\n")
            )
        else:
            data = _joined(batch)
        try:
            write_all(self.fd, data.encode("utf-8", "replace"))
        except OSError:
            self._drop(batch)
            return
        self.written += sum(text.count("\n") + 1 for text, _ in batch)


def _joined(batch: list[tuple[str, int]]) -> str:
    """The batch's texts, each ending in a newline: joined in one copy (a text
    is a whole drain of the native engine's lines, hundreds of KiB at a high
    session rate, and an f-string per text copied each once more)."""
    return "\n".join([*(text for text, _ in batch), ""])


def connected_to_journal(fd: int) -> bool:
    """Is `fd` the stream systemd connected to journald? ($JOURNAL_STREAM is
    "device:inode" of that stream; a redirected descriptor no longer matches.)"""
    value = os.environ.get("JOURNAL_STREAM", "")
    device, _, inode = value.partition(":")
    try:
        st = os.fstat(fd)
        return (st.st_dev, st.st_ino) == (int(device), int(inode))
    except (OSError, ValueError):
        return False


class FileSink(Sink):
    """A file opened for appending; reopened by path on request (logrotate)."""

    def __init__(self, destination: Destination, capacity: int = DEFAULT_CAPACITY) -> None:
        assert destination.path is not None
        self.path = destination.path
        self.fd = self._open()  # OSError here is a start-up error the caller reports
        super().__init__(destination, capacity)

    def _open(self) -> int:
        return os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o640)

    def deliver(self, batch: list[tuple[str, int]]) -> None:
        data = _joined(batch).encode("utf-8", "replace")
        try:
            write_all(self.fd, data)
        except OSError as exc:
            self._drop(batch)
            self._report_error(f"cannot write: {exc.strerror}")
            return
        self.written += sum(text.count("\n") + 1 for text, _ in batch)

    def _report_error(self, message: str) -> None:
        log.error("log destination %s: %s", self.destination, message)

    def _reopen_destination(self) -> str | None:
        try:
            fd = self._open()
        except OSError as exc:
            message = f"cannot reopen {self.path}: {exc.strerror}; still writing to the old file"
            self._report_error(message)
            return message
        old, self.fd = self.fd, fd
        os.close(old)
        return None

    def _release(self) -> None:
        os.close(self.fd)


class SyslogSink(Sink):
    """A syslog receiver: the local datagram socket, UDP or TCP."""

    def __init__(
        self,
        destination: Destination,
        formatter: SyslogFormatter,
        msgid: str,
        capacity: int = DEFAULT_CAPACITY,
    ) -> None:
        self.formatter = formatter
        self.msgid = msgid
        self.sock: socket.socket | None = None
        self._retry_at = 0.0
        super().__init__(destination, capacity)

    def _connect(self) -> socket.socket | None:
        """The connected socket, or None while the destination is failing."""
        if self.sock is not None:
            return self.sock
        if time.monotonic() < self._retry_at:
            return None
        d = self.destination
        try:
            if d.kind == "unix":
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
                sock.settimeout(NETWORK_TIMEOUT)
                try:
                    sock.connect(str(d.path))
                except OSError:
                    sock.close()
                    raise
            elif d.kind == "udp":
                family, kind, proto, _, address = socket.getaddrinfo(
                    d.host, d.port, type=socket.SOCK_DGRAM
                )[0]
                sock = socket.socket(family, kind | socket.SOCK_CLOEXEC, proto)
                sock.settimeout(NETWORK_TIMEOUT)
                sock.connect(address)
            else:
                sock = socket.create_connection((d.host, d.port), timeout=NETWORK_TIMEOUT)
        except OSError as exc:
            self._failed(f"cannot connect: {exc.strerror or exc}")
            return None
        self.sock = sock
        return sock

    def _failed(self, why: str) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None
        if self._retry_at == 0.0 or time.monotonic() - self._retry_at > DROP_REPORT_INTERVAL:
            log.warning(
                "log destination %s: %s; lines are dropped meanwhile", self.destination, why
            )
        self._retry_at = time.monotonic() + RETRY_INTERVAL

    def deliver(self, batch: list[tuple[str, int]]) -> None:
        sock = self._connect()
        if sock is None:
            self._drop(batch)
            return
        now = time.time()
        messages = [
            self.formatter.message(line, severity, self.msgid, now)
            for text, severity in batch
            for line in text.split("\n")
        ]
        if self.destination.kind == "tcp":
            try:
                sock.sendall(b"".join(messages))
            except OSError as exc:  # the receiver's framing is lost: start anew
                self._dropped_failed += len(messages)
                self._failed(f"cannot send: {exc.strerror or exc}")
                return
            self.written += len(messages)
            self._retry_at = 0.0
            return
        for i, message in enumerate(messages):
            try:
                sock.send(message[:MAX_DATAGRAM])
            except OSError as exc:
                # Refused (no daemon, ICMP port unreachable) or full: this
                # batch is lost; the next one tries again after RETRY_INTERVAL.
                self._dropped_failed += len(messages) - i
                self._failed(f"cannot send: {exc.strerror or exc}")
                return
            self.written += 1
        self._retry_at = 0.0

    def _release(self) -> None:
        if self.sock is not None:
            self.sock.close()
