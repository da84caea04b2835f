"""One log line per finished session, to global.log.sessions (standard output
by default).

A listener's `log` says which: `all`, `errors` (only what did not end the
normal way, `logged` below) or `none`.

Lines are collected and written in batches (at most every FLUSH_INTERVAL, or at
BATCH_LINES lines or BATCH_CHARS characters): a proxy handling tens of thousands of short sessions a
second must not pay a write(2) per session. `flush()` is called on stop. With a
sink (loadstone.logtargets.sinks), a batch is handed to its writer thread and
the event loop never waits for the destination; without one (tests, tools) it is
written to `stream`.
"""

from __future__ import annotations

import asyncio
import sys
import time
from typing import TextIO

import orjson

from loadstone.config.model import LogFormat, SessionLogging
from loadstone.logtargets.sinks import Sink

FLUSH_INTERVAL = 0.25
BATCH_LINES = 512
# The native path hands over its lines joined, one text per drain of the engine
# (tcp_native.DRAIN_INTERVAL), so the count of entries says little: at 70k
# requests a second a quarter of a second of them was 5 million characters,
# more than a sink takes at once (sinks.DEFAULT_CAPACITY): what did not fit was
# dropped. Flushed by size too, a batch stays well under that.
BATCH_CHARS = 256 * 1024

# How a TCP session normally ends: one side closed its half, the other followed.
NORMAL_SESSION_ENDS = frozenset({"client-close", "server-close"})


def logged(mode: SessionLogging, end: str, status: int | None = None) -> bool:
    """Does a listener with `log: mode` log this TCP session (status None) or
    HTTP request? `errors` keeps what did not end normally: a TCP session not
    closed by a peer; a request that did not end `ok` or got a 5xx. The native
    engine applies the same rule (engine.c finish, http_exchange.c http_logged)."""
    if mode == "all":
        return True
    if mode == "none":
        return False
    if status is None:
        return end not in NORMAL_SESSION_ENDS
    return end != "ok" or status >= 500


class SessionLog:
    def __init__(
        self, fmt: LogFormat = "text", stream: TextIO | None = None, sink: Sink | None = None
    ) -> None:
        self.format = fmt
        self.stream = stream or sys.stdout
        self.sink = sink
        self.lines: list[str] = []
        self.chars = 0  # in self.lines
        self._flush_handle: asyncio.TimerHandle | None = None

    def session(
        self,
        *,
        client: str,
        listener: str,
        server: str,
        bytes_in: int,
        bytes_out: int,
        duration: float,
        end: str,
        tls: str | None = None,
    ) -> None:
        """One tcp session; `tls` is "version/cipher/sni" on a TLS listener, and
        "version/passthrough/sni" on one routing on SNI without terminating."""
        now = time.time()
        if self.format == "json":
            fields: dict[str, object] = {
                "time": now,
                "event": "session",
                "client": client,
                "listener": listener,
                "server": server,
                "bytes_in": bytes_in,
                "bytes_out": bytes_out,
                "duration": round(duration, 6),
                "end": end,
            }
            if tls is not None:
                fields["tls"] = tls
            line = orjson.dumps(fields).decode()
        else:
            stamp = _stamp(now)
            line = (
                f"{stamp} session {client} {listener}/{server} "
                f"in={bytes_in} out={bytes_out} duration={duration:.3f}s end={end}"
            )
            if tls is not None:
                line += f" tls={tls}"
        self._append(line)

    def request(
        self,
        client: str,
        listener: str,
        server: str,
        method: str,
        target: str,
        status: int,
        bytes_in: int,
        bytes_out: int,
        timings: tuple[float, float, float, float, float],
        end: str,
        tls: str | None = None,
    ) -> None:
        """One HTTP request (mode http), with HAProxy's httplog timings in seconds,
        -1 for a phase not reached: TR receive the request head, Tw wait in the
        queue, Tc connect to the server (0 on a reused connection), Tr wait for the
        response head after sending the request, Ta total from the first byte of
        the request to the last byte of the response. `tls` is "version/cipher/sni"
        on a TLS listener, as in `session`."""
        now = time.time()
        t_req, t_wait, t_conn, t_resp, t_all = timings
        if self.format == "json":
            fields: dict[str, object] = {
                "time": now,
                "event": "http",
                "client": client,
                "listener": listener,
                "server": server,
                "method": method,
                "target": target,
                "status": status,
                "bytes_in": bytes_in,
                "bytes_out": bytes_out,
                "t_request": t_req,
                "t_queue": t_wait,
                "t_connect": t_conn,
                "t_response": t_resp,
                "t_total": t_all,
                "end": end,
            }
            if tls is not None:
                fields["tls"] = tls
            line = orjson.dumps(fields).decode()
        else:
            stamp = _stamp(now)
            ms = "/".join("-1" if t < 0 else f"{t * 1000:.3f}" for t in timings)
            line = (
                f"{stamp} http {client} {listener}/{server} "
                f"{status} {ms}ms in={bytes_in} out={bytes_out} "
                f'"{method} {target}" end={end}'
            )
            if tls is not None:
                line += f" tls={tls}"
        self._append(line)

    def lines_formatted(self, text: str) -> None:
        """Session lines the native data path formatted itself (the same fields
        and format as `session`), joined by newlines."""
        self._append(text)

    def _append(self, line: str) -> None:
        """Queue a line (or lines joined); written at BATCH_LINES, BATCH_CHARS or
        after FLUSH_INTERVAL."""
        self.lines.append(line)
        self.chars += len(line)
        if len(self.lines) >= BATCH_LINES or self.chars >= BATCH_CHARS:
            self.flush()
        elif self._flush_handle is None:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                self.flush()
                return
            self._flush_handle = loop.call_later(FLUSH_INTERVAL, self.flush)

    def flush(self) -> None:
        if self._flush_handle is not None:
            self._flush_handle.cancel()
            self._flush_handle = None
        if not self.lines:
            return
        if self.sink is not None:
            self.sink.write("\n".join(self.lines))
        else:
            self.lines.append("")
            self.stream.write("\n".join(self.lines))
            self.stream.flush()
        self.lines.clear()
        self.chars = 0


def _stamp(now: float) -> str:
    """UTC with milliseconds, as ISO 8601: 2026-11-23T18:36:08.841Z."""
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now % 1 * 1000):03d}Z"
