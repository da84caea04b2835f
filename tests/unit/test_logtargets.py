"""Log destinations: their names, the syslog bytes, and the writer's promises
(never blocking, dropping and counting what does not fit, reopening a file)."""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import re
import socket
import struct
import termios
import time
from pathlib import Path

import pytest

from loadstone.logtargets import Destination, parse_destination
from loadstone.logtargets.sinks import FileSink, StreamSink, SyslogSink, connected_to_journal
from loadstone.logtargets.syslog import FACILITIES, SyslogFormatter, severity_of
from loadstone.sessionlog import SessionLog


def wait_until(condition: object, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.01)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("stdout", Destination("stdout")),
        ("stderr", Destination("stderr")),
        ("syslog", Destination("unix", path="/dev/log")),
        (
            "syslog:/run/systemd/journal/syslog",
            Destination("unix", path="/run/systemd/journal/syslog"),
        ),
        ("syslog+udp://127.0.0.1", Destination("udp", host="127.0.0.1", port=514)),
        ("syslog+tcp://[::1]:6514", Destination("tcp", host="::1", port=6514)),
        (
            "syslog+udp://logs.example.com:1514",
            Destination("udp", host="logs.example.com", port=1514),
        ),
        (
            "file:/var/log/loadstone/access.log",
            Destination("file", path="/var/log/loadstone/access.log"),
        ),
    ],
)
def test_destinations_parse_and_print_back(text: str, expected: Destination) -> None:
    assert parse_destination(text) == expected
    assert parse_destination(str(expected)) == expected


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("journald", "expected stdout, stderr, syslog"),
        ("file:access.log", "absolute path"),
        ("syslog:dev/log", "absolute socket path"),
        ("syslog+udp://127.0.0.1:99999", "port must be 1-65535"),
        ("syslog+tcp://", "expected syslog+udp://HOST"),
        ("syslog+tcp://host:514/path", "expected syslog+udp://HOST"),
    ],
)
def test_bad_destinations_say_what_is_expected(text: str, says: str) -> None:
    with pytest.raises(ValueError, match=re.escape(says)):
        parse_destination(text)


NOW = 1_765_055_793.25  # 2025-12-06T21:16:33.25Z


def test_rfc5424_message_and_octet_counting() -> None:
    fmt = SyslogFormatter("rfc5424", FACILITIES["local0"], "loadstone", "ctl1", 42, framed=False)
    message = fmt.message("session x", 6, "session", NOW)
    assert message == b"<134>1 2025-12-06T21:16:33.250000Z ctl1 loadstone 42 session - session x"
    framed = SyslogFormatter("rfc5424", 16, "loadstone", "ctl1", 42, framed=True)
    assert framed.message("session x", 6, "session", NOW) == b"%d %s" % (len(message), message)


def test_rfc3164_message_local_socket_has_no_hostname(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    try:
        fmt = SyslogFormatter("rfc3164", FACILITIES["daemon"], "lb", None, 7, framed=False)
        assert fmt.message("hello", 4, "event", NOW) == b"<28>Dec  6 21:16:33 lb[7]: hello"
        tcp = SyslogFormatter("rfc3164", FACILITIES["daemon"], "lb", "ctl1", 7, framed=True)
        assert tcp.message("hello", 4, "event", NOW) == b"<28>Dec  6 21:16:33 ctl1 lb[7]: hello\n"
    finally:
        monkeypatch.delenv("TZ")
        time.tzset()


def test_python_levels_map_to_syslog_severities() -> None:
    assert [severity_of(n) for n in (10, 20, 30, 40, 50)] == [7, 6, 4, 3, 3]


def test_file_sink_reopen_after_rename_loses_no_line(tmp_path: Path) -> None:
    path = tmp_path / "access.log"
    sink = FileSink(Destination("file", path=str(path)))
    for i in range(100):
        sink.write(f"line {i}")
    path.rename(tmp_path / "access.log.1")
    assert sink.reopen().result(5) is None
    for i in range(100, 200):
        sink.write(f"line {i}")
    sink.close()
    old = (tmp_path / "access.log.1").read_text().splitlines()
    new = path.read_text().splitlines()
    assert old + new == [f"line {i}" for i in range(200)]
    assert new[0] == "line 100"
    assert (sink.written, sink.dropped) == (200, 0)


def test_file_that_cannot_be_reopened_keeps_the_old_one(tmp_path: Path) -> None:
    path = tmp_path / "access.log"
    sink = FileSink(Destination("file", path=str(path)))
    sink.write("before")
    path.rename(tmp_path / "moved.log")
    path.mkdir()  # a directory cannot be opened for writing, even by root
    error = sink.reopen().result(5)
    assert error is not None and "cannot reopen" in error and "old file" in error
    sink.write("after")
    sink.close()
    assert (tmp_path / "moved.log").read_text() == "before\nafter\n"


def test_unreachable_tcp_syslog_drops_and_counts_without_blocking() -> None:
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]  # nothing listens here once closed
    fmt = SyslogFormatter("rfc5424", 16, "loadstone", "h", 1, framed=True)
    sink = SyslogSink(Destination("tcp", host="127.0.0.1", port=port), fmt, "session")
    started = time.monotonic()
    for i in range(1000):
        sink.write(f"line {i}")
    assert time.monotonic() - started < 0.5
    wait_until(lambda: sink.dropped == 1000)
    sink.close()
    assert sink.written == 0


def test_a_full_queue_drops_whole_writes_and_counts_their_lines() -> None:
    read_end, write_end = os.pipe()
    os.set_blocking(write_end, False)
    # A stream sink on a pipe nobody reads yet: the writer waits, the queue fills.
    sink = StreamSink(Destination("stdout"), capacity=1000, fd=write_end)
    chunk = "x" * 99
    for _ in range(2000):
        sink.write(chunk + "\n" + chunk)  # two lines, 199 characters
    assert sink.dropped > 0
    assert sink.dropped % 2 == 0
    drained = bytearray()
    os.set_blocking(read_end, False)

    def read_all() -> bool:
        """Take what the pipe holds; True once every line is written or dropped."""
        nonlocal drained
        with contextlib.suppress(BlockingIOError):
            while chunk := os.read(read_end, 1 << 16):
                drained += chunk
        return sink.written + sink.dropped == 4000

    wait_until(read_all)
    sink.close()
    read_all()
    os.close(read_end)
    os.close(write_end)
    assert drained.count(b"\n") == sink.written


def test_a_batch_larger_than_the_room_left_keeps_the_whole_lines_that_fit(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A native drain handed over while the destination stalls: the lines of the
    batch that fit the queue are kept whole, only the rest is dropped and
    reported (the whole batch was dropped before)."""
    read_end, write_end = os.pipe()
    fcntl.fcntl(write_end, fcntl.F_SETPIPE_SZ, 4096)
    assert fcntl.fcntl(write_end, fcntl.F_GETPIPE_SZ) == 4096
    os.set_blocking(write_end, False)
    lines = [f"session {i:04d} ".ljust(100, "x") for i in range(131)]
    first, batch, last = lines[:50], lines[50:130], lines[130]
    sink = StreamSink(Destination("stdout"), capacity=6000, fd=write_end)
    caplog.set_level(logging.WARNING, "loadstone.log")
    sink.write("\n".join(first))  # 5049 characters, more than the pipe holds

    def in_pipe() -> int:
        return struct.unpack("i", fcntl.ioctl(read_end, termios.FIONREAD, b"\0" * 4))[0]

    # The writer took `first` and waits for the reader in mid-write: the queue is
    # empty and the destination stalled.
    wait_until(lambda: in_pipe() == 4096)
    # The native path's batch, through SessionLog as tcp_native.drain_records
    # hands it: 8079 characters; 59 lines and their newlines fill 5958 of 6000.
    SessionLog("json", sink=sink).lines_formatted("\n".join(batch))
    sink.write(last)  # 42 characters of room left: dropped
    assert sink.dropped == 21 + 1
    expected = "".join(f"{line}\n" for line in first + batch[:59]).encode()
    received = bytearray()

    def read_all() -> bool:
        with contextlib.suppress(BlockingIOError):
            while chunk := os.read(read_end, 1 << 16):
                received.extend(chunk)
        return len(received) >= len(expected)

    os.set_blocking(read_end, False)
    wait_until(read_all)
    sink.close()
    read_all()
    os.close(read_end)
    os.close(write_end)
    assert bytes(received) == expected
    assert (sink.written, sink.dropped) == (50 + 59, 22)
    reports = [r.getMessage() for r in caplog.records if "dropped" in r.getMessage()]
    assert reports == [
        "log destination stdout: 22 line(s) dropped (22 in all): it could not take them"
    ]


def test_journal_stream_must_name_the_descriptor(monkeypatch: pytest.MonkeyPatch) -> None:
    read_end, write_end = os.pipe()
    st = os.fstat(write_end)
    monkeypatch.setenv("JOURNAL_STREAM", f"{st.st_dev}:{st.st_ino}")
    assert connected_to_journal(write_end)
    monkeypatch.setenv("JOURNAL_STREAM", f"{st.st_dev}:{st.st_ino + 1}")
    assert not connected_to_journal(write_end)
    os.close(read_end)
    os.close(write_end)


def test_stream_on_the_journal_prefixes_every_line_with_its_priority(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    read_end, write_end = os.pipe()
    st = os.fstat(write_end)
    monkeypatch.setenv("JOURNAL_STREAM", f"{st.st_dev}:{st.st_ino}")
    sink = StreamSink(Destination("stderr"), fd=write_end)
    sink.write("session a\nsession b")
    sink.write("server web/s1 is DOWN", 4)
    sink.close()
    assert os.read(read_end, 4096) == b"<6>session a\n<6>session b\n<4>server web/s1 is DOWN\n"
    assert (sink.written, sink.dropped) == (3, 0)
    os.close(read_end)
    os.close(write_end)
