"""One log line per finished session, on standard output.

Lines are collected and written in batches (at most every FLUSH_INTERVAL, or at
BATCH_LINES lines): a proxy handling tens of thousands of short sessions a
second must not pay a write(2) per session. `flush()` is called on stop.
"""

from __future__ import annotations

import asyncio
import sys
import time
from typing import TextIO

import orjson

from loadstone.config.model import LogFormat

FLUSH_INTERVAL = 0.25
BATCH_LINES = 512


class SessionLog:
    def __init__(self, fmt: LogFormat = "text", stream: TextIO | None = None) -> None:
        self.format = fmt
        self.stream = stream or sys.stdout
        self.lines: list[str] = []
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
    ) -> None:
        now = time.time()
        if self.format == "json":
            line = orjson.dumps(
                {
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
            ).decode()
        else:
            stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now))
            line = (
                f"{stamp}.{int(now % 1 * 1000):03d}Z session {client} {listener}/{server} "
                f"in={bytes_in} out={bytes_out} duration={duration:.3f}s end={end}"
            )
        self.lines.append(line)
        if len(self.lines) >= BATCH_LINES:
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
        if self.lines:
            self.lines.append("")
            self.stream.write("\n".join(self.lines))
            self.stream.flush()
            self.lines.clear()
