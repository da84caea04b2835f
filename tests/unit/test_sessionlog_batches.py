"""SessionLog's batches stay small enough for a sink to take whole.

The native path hands over one text per drain of the engine, its lines joined.
Counted as one entry each, a quarter of a second of them at 70k requests a
second was more characters than a sink queues (sinks.DEFAULT_CAPACITY), and the
sink dropped the whole batch: a batch is now also flushed by its size.
"""

from __future__ import annotations

import asyncio
import io
import os
import tempfile

from loadstone import sessionlog
from loadstone.logtargets import Destination
from loadstone.logtargets.sinks import DEFAULT_CAPACITY, StreamSink
from loadstone.sessionlog import BATCH_CHARS, SessionLog


def test_joined_lines_are_flushed_by_size_not_only_by_time() -> None:
    async def run() -> tuple[str, str]:
        stream = io.StringIO()
        log = SessionLog("json", stream)
        log.lines_formatted("small")
        held = stream.getvalue()  # a small text waits for FLUSH_INTERVAL
        log.lines_formatted("x" * BATCH_CHARS)
        return held, stream.getvalue()

    held, written = asyncio.run(run())
    assert held == ""
    assert written == "small\n" + "x" * BATCH_CHARS + "\n"
    assert BATCH_CHARS * 8 <= DEFAULT_CAPACITY  # several batches fit a sink's queue


def test_a_second_of_native_lines_reaches_the_file_whole() -> None:
    """Through a real sink: 80 drains of 64 KiB of lines (5 MiB, more than a
    sink queues at once) within one FLUSH_INTERVAL all reach the file."""
    text = "\n".join(["y" * 255] * 256)  # 256 lines, 64 KiB
    with tempfile.TemporaryFile("w+") as out:
        sink = StreamSink(Destination("stdout"), fd=out.fileno())

        async def run() -> None:
            log = SessionLog("json", sink=sink)
            for _ in range(80):
                log.lines_formatted(text)
                await asyncio.sleep(0)  # the loop turns, as between two drains
                while sink._queued > DEFAULT_CAPACITY // 2:  # the writer thread catches up
                    await asyncio.sleep(0.001)
            log.flush()

        asyncio.run(run())
        sink.close()
        assert sink.dropped == 0
        out.seek(0, os.SEEK_SET)
        assert out.read().count("\n") == 80 * 256
    assert sessionlog.FLUSH_INTERVAL >= 0.1  # the time-based flush the test outpaces
