"""The native data path's pieces that can be tested in-process: the build's
hash against hashlib, the engine's life cycle, and the `splice` option."""

from __future__ import annotations

import contextlib
import hashlib
import http.server
import io
import json
import os
import random
import re
import select
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from loadstone import datapath
from loadstone.config import ConfigError, parse_config
from loadstone.sessionlog import SessionLog, logged
from tests.unit.test_uring import io_uring_allowed

relay = pytest.importorskip("loadstone._fastpath.relay", reason="native data path not built")
native = pytest.importorskip("loadstone.datapath.tcp_native")

BASE = """
listeners:
  web:
    bind: ["127.0.0.1:18080"]
    servers: [{name: a, address: "127.0.0.1:18081"}]
"""


@pytest.mark.parametrize(
    "key", [b"", b"127.0.0.1", b"::1", b"2001:db8::17", b"x" * 127, b"y" * 128, b"z" * 300]
)
def test_blake2b64_matches_hashlib(key: bytes) -> None:
    expected = int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "big")
    assert relay.blake2b64(key) == expected


def test_engine_starts_and_stops_without_leaking_descriptors() -> None:
    before = len(os.listdir("/proc/self/fd"))
    engine = relay.Engine(2, "auto")
    lid = engine.new_listener()
    slot = engine.new_slot(lid)
    engine.publish(lid, "roundrobin", [(slot, 1, -1, "127.0.0.1", 9)])
    assert engine.listener_stats(lid) == (0, 0, 0, 0, 0, 0)
    assert engine.server_stats(lid, slot) == (0, 0, 0, 0)
    assert engine.shutdown(lid, -1, 0) == 0
    assert engine.take_records() == ({}, [])
    engine.close()
    assert engine.closed
    assert len(os.listdir("/proc/self/fd")) == before


def test_engine_takes_io_uring_where_the_kernel_allows_it_and_never_when_off() -> None:
    before = len(os.listdir("/proc/self/fd"))
    engine = relay.Engine(2, "auto")
    try:
        assert engine.io_uring_workers == (2 if io_uring_allowed() else 0)
    finally:
        engine.close()
    engine = relay.Engine(2, "auto", io_uring="off")
    try:
        assert engine.io_uring_workers == 0
    finally:
        engine.close()
    assert len(os.listdir("/proc/self/fd")) == before  # the rings' descriptors too


def test_engine_rejects_bad_input() -> None:
    with pytest.raises(ValueError):
        relay.Engine(1, "sometimes")
    with pytest.raises(ValueError):
        relay.Engine(1, io_uring="on")
    with pytest.raises(OSError):
        relay.Engine(0)
    engine = relay.Engine(1)
    try:
        lid = engine.new_listener()
        with pytest.raises(OSError):  # a slot that was never made
            engine.publish(lid, "roundrobin", [(5, 1, -1, "127.0.0.1", 9)])
        slot = engine.new_slot(lid)
        with pytest.raises(ValueError):
            engine.publish(lid, "roundrobin", [(slot, 1, -1, "not-an-ip", 9)])
    finally:
        engine.close()


@pytest.mark.parametrize(
    ("text", "expected"),
    [("", "auto"), ("splice: auto", "auto"), ("splice: on", "on"), ("splice: off", "off")],
)
def test_splice_option(text: str, expected: str) -> None:
    config = parse_config(f"global:\n  {text or 'workers: 1'}\n{BASE}")
    assert config.global_.splice == expected


def test_splice_option_rejects_other_words() -> None:
    with pytest.raises(ConfigError) as err:
        parse_config(f"global:\n  splice: always\n{BASE}")
    assert err.value.problems[0].startswith("global.splice: must be one of auto, on, off")


@pytest.mark.parametrize(
    ("text", "expected"), [("", "auto"), ("io_uring: auto", "auto"), ("io_uring: off", "off")]
)
def test_io_uring_option(text: str, expected: str) -> None:
    config = parse_config(f"global:\n  {text or 'workers: 1'}\n{BASE}")
    assert config.global_.io_uring == expected


@pytest.mark.parametrize("word", ["on", "always", "1"])
def test_io_uring_option_rejects_other_words(word: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_config(f"global:\n  io_uring: {word}\n{BASE}")
    assert err.value.problems[0].startswith("global.io_uring: must be one of auto, off")


def test_datapath_choice_reports_the_build() -> None:
    if datapath.NO_EXTENSIONS:
        assert datapath.IMPLEMENTATION == "pure"
    else:
        assert datapath.IMPLEMENTATION == "native"
        assert datapath.BUILD in ("release", "debug")


def _one_session(engine: object, front: socket.socket, backend: socket.socket) -> int:
    """Relay one short session (4 bytes up, 5 down, the client closes first);
    returns the client's port."""
    client = socket.create_connection(front.getsockname()[:2], timeout=5)
    peer, _ = backend.accept()
    with client, peer:
        peer.settimeout(5)
        client.sendall(b"ping")
        assert peer.recv(16) == b"ping"
        peer.sendall(b"pong!")
        assert client.recv(16) == b"pong!"
        port: int = client.getsockname()[1]
        client.shutdown(socket.SHUT_WR)
        assert peer.recv(16) == b""  # the client's end reached the server
    return port


def _relaying(
    engine: Any, front: socket.socket, server_port: int, log_mode: int = 0
) -> tuple[int, int]:
    """A listener of `engine` accepting on `front`, relaying to one server (no
    retries); returns (listener id, server slot)."""
    lid = engine.new_listener()
    engine.configure(
        lid, maxconn=10, retries=0, redispatch=False, connect=2.0, idle=5.0,
        idle_is_client=True, queue=1.0, log_mode=log_mode,
    )  # fmt: skip
    slot = engine.new_slot(lid)
    engine.publish(lid, "roundrobin", [(slot, 1, -1, "127.0.0.1", server_port)])
    engine.add_socket(lid, front.fileno())
    return lid, slot


@contextlib.contextmanager
def _one_listener() -> Iterator[tuple[Any, socket.socket, socket.socket, int]]:
    """An engine relaying from a front socket to a backend one: (engine, front,
    backend, listener id); all closed at the end."""
    backend = socket.create_server(("127.0.0.1", 0))
    front = socket.create_server(("127.0.0.1", 0))
    front.setblocking(False)
    engine = relay.Engine(1, "auto")
    try:
        lid, _ = _relaying(engine, front, backend.getsockname()[1])
        yield engine, front, backend, lid
    finally:
        engine.close()
        front.close()
        backend.close()


@pytest.mark.parametrize("fmt", ["json", "text"])
def test_session_lines_formatted_natively_match_the_session_log(fmt: str) -> None:
    with _one_listener() as (engine, front, backend, lid):
        port = _one_session(engine, front, backend)
        lines: dict[int, str] = {}
        while not lines:  # each wait ends with a record queued (or times out)
            assert select.select([engine.record_fd()], [], [], 5)[0], "no record"
            lines, others = engine.take_records({lid: (fmt == "json", b"web", [b"a"])})
            assert others == []
        native_line = lines[lid]

    stream = io.StringIO()
    log = SessionLog(fmt, stream)  # type: ignore[arg-type]
    if fmt == "json":
        fields = json.loads(native_line)
        duration = fields["duration"]
    else:
        match = re.fullmatch(
            r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z (session .* duration=(\d+\.\d{3})s .*)",
            native_line,
        )
        assert match, native_line
        duration = float(match[2])
    log.session(
        client=f"127.0.0.1:{port}", listener="web", server="a", bytes_in=4, bytes_out=5,
        duration=duration, end="client-close",
    )  # fmt: skip
    log.flush()
    python_line = stream.getvalue().rstrip("\n")
    if fmt == "json":
        expected = json.loads(python_line)
        assert list(fields) == list(expected)  # same keys, same order
        assert abs(fields.pop("time") - expected.pop("time")) < 60
        assert fields == expected
    else:
        assert match is not None
        assert match[1] == python_line.split(" ", 1)[1]


def test_each_take_of_records_has_only_its_own_batch_of_lines() -> None:
    """take_records keeps its line buffers from call to call: a batch's lines
    are that batch's alone, and a take with no records gives no lines."""
    with _one_listener() as (engine, front, backend, lid):
        names = {lid: (True, b"web", [b"a"])}
        for _ in range(3):
            port = _one_session(engine, front, backend)
            lines: dict[int, str] = {}
            while not lines:
                assert select.select([engine.record_fd()], [], [], 5)[0], "no record"
                lines = engine.take_records(names)[0]
            assert [json.loads(line)["client"] for line in lines[lid].split("\n")] == [
                f"127.0.0.1:{port}"
            ]
        assert engine.take_records(names)[0] == {}


@pytest.mark.parametrize(("log", "mode"), [("all", 0), ("errors", 1), ("none", 2)])
def test_log_mode_decides_which_sessions_make_a_record(log: str, mode: int) -> None:
    # A session closed by its peers is the normal end: with `log: errors` or
    # `none` the engine makes no record of it (no line, no wake-up of Python);
    # one whose server refuses is an error, kept by `errors`.
    backend = socket.create_server(("127.0.0.1", 0))
    dead = socket.create_server(("127.0.0.1", 0))
    dead_port = dead.getsockname()[1]
    dead.close()  # nobody listens there now: connection refused
    front = socket.create_server(("127.0.0.1", 0))
    front.setblocking(False)
    engine = relay.Engine(1, "auto")
    try:
        assert native.LOG_MODES[log] == mode
        lid, slot = _relaying(engine, front, backend.getsockname()[1], mode)

        def ended() -> list[int]:
            """Why the sessions recorded since the last call ended."""
            deadline = time.monotonic() + 5
            while engine.listener_stats(lid)[0]:  # until the session has ended
                assert time.monotonic() < deadline, "session still open"
                select.select([engine.record_fd()], [], [], 0.01)
            # A synchronous command is a barrier: the worker has flushed its
            # records when it returns (here it closes nothing).
            assert engine.shutdown(lid, slot, 0) == 0
            return [r[3] for r in engine.take_records()[1] if r[0] == relay.REC_SESSION]

        _one_session(engine, front, backend)
        assert ended() == ([relay.END_WORDS.index("client-close")] if log == "all" else [])

        engine.publish(lid, "roundrobin", [(slot, 1, -1, "127.0.0.1", dead_port)])
        with socket.create_connection(front.getsockname()[:2], timeout=5) as client:
            assert client.recv(16) == b""  # refused behind the proxy: closed
        assert ended() == ([] if log == "none" else [relay.END_CONNECT_FAILED])
    finally:
        engine.close()
        front.close()
        backend.close()


@pytest.mark.parametrize(
    ("mode", "end", "status", "expected"),
    [
        ("all", "client-close", None, True),
        ("none", "connect-failed (connection refused)", None, False),
        ("errors", "client-close", None, False),
        ("errors", "server-close", None, False),
        ("errors", "client-reset", None, True),
        ("errors", "client-timeout", None, True),
        ("errors", "ok", 200, False),
        ("errors", "ok", 404, False),
        ("errors", "ok", 503, True),
        ("errors", "server-timeout", 504, True),
        ("errors", "client-close", 200, True),
    ],
)
def test_which_sessions_and_requests_a_listener_logs(
    mode: str, end: str, status: int | None, expected: bool
) -> None:
    assert logged(mode, end, status) is expected  # type: ignore[arg-type]


def test_access_log_decimals_are_printfs() -> None:
    """The engine's log lines write their seconds and milliseconds without
    printf's float conversion (relay._fixed): the same text as "%.*f" for
    every value but an exact binary tie, which never comes from a clock."""
    rng = random.Random(13)
    values = [0.0, 1.0, 0.5e-6, 9.9999995, 123.0004, 1.7e9 + 0.123456, 999999.9999996]
    values += [rng.uniform(0, 10) for _ in range(3000)]
    values += [rng.uniform(0, 2e9) for _ in range(2000)]
    values += [rng.expovariate(1000) for _ in range(2000)]
    for value in values:
        for digits in (3, 6):
            scaled = value * 10**digits
            if abs(scaled - int(scaled) - 0.5) < 1e-3:
                continue  # a tie to the last digit's precision: either way is right
            assert relay.fixed_decimal(value, digits) == f"{value:.{digits}f}".encode(), value
    # negative (-1: a phase never reached), huge and not-a-number: printf's own text
    for value in (-1.0, -0.25, 5e13, float("nan"), float("inf")):
        assert relay.fixed_decimal(value, 6) == f"{value:.6f}".encode()


def test_the_one_decimal_writer_on_its_edges() -> None:
    """relay._put_decimal writes every integer and fixed-point number of the
    native log lines (bytes, status, seconds): Python's text at the ends of
    every width, of the 64-bit ranges and of every point position."""

    def python(n: int, point: int) -> bytes:
        if not point:
            return str(n).encode()
        whole, frac = divmod(n, 10**point)
        return f"{whole}.{frac:0{point}d}".encode()

    rng = random.Random(23)
    values = [0, 1, 9, 10, 11, 99, 100, 101, 2**63 - 1, 2**63, 2**64 - 1]
    values += [10**k + d for k in range(1, 20) for d in (-1, 0, 1)]
    values += [rng.randrange(10 ** rng.randrange(1, 21)) for _ in range(2000)]
    for point in range(21):
        for n in values:
            if n < 2**64:
                assert relay.decimal_text(n, point) == python(n, point), (n, point)
    for v in (-1, -9, -10, -99, -100, -12345, -(2**63) + 1, -(2**63)):  # _put_int's sign
        assert relay.decimal_text(v) == str(v).encode()
    # no point at all for "%.0f", as printf
    assert [relay.fixed_decimal(v, 0) for v in (0.0, 0.4, 12.6, 1e11)] == [
        b"0",
        b"0",
        b"13",
        b"100000000000",
    ]


def test_json_seconds_is_the_text_of_printf_rounding_to_the_microsecond() -> None:
    """The log lines' durations are written from whole microseconds rather than by
    snprintf("%.6f") (glibc's multi-precision float printing was most of the control
    thread's time per logged request): the same text, trailing zeros dropped."""

    def printf(t: float) -> str:
        text = "%.6f" % t  # noqa: UP031 - printf's own rounding is the reference
        while len(text) > 1 and text[-1] == "0" and text[-2] != ".":
            text = text[:-1]
        return text

    rng = random.Random(19)
    values = [0.0, 1e-7, 4.9e-7, 5e-7, 5.1e-7, 1e-6, 0.1, 0.25, 0.5, 0.999_999_5, 1.0, 2.5e-6,
              123.456_5, 3600.000_001, 86_400.0, 1e9, 9e9, -1.0, -0.000_001_5]  # fmt: skip
    values += [rng.uniform(0, 1) for _ in range(20_000)]
    values += [rng.uniform(0, 0.01) for _ in range(20_000)]
    values += [rng.expovariate(1 / 30) for _ in range(20_000)]
    values += [round(rng.uniform(0, 100), 7) for _ in range(20_000)]  # near the halves
    mismatched = [t for t in values if relay.json_seconds(t) != printf(t)]
    assert mismatched == [], mismatched[:10]


class _StatusByPath(http.server.BaseHTTPRequestHandler):
    """A real HTTP/1.1 server's answer: /fail is a 500, anything else a 200."""

    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        code = 500 if self.path == "/fail" else 200
        self.send_response(code)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, format: str, *args: Any) -> None:  # quiet: the test reads no log
        pass


def _http_listener(engine: Any, front: socket.socket, server_port: int, log_mode: int) -> int:
    lid, _ = _relaying(engine, front, server_port, log_mode)
    engine.configure_http(
        lid, request=5.0, keep_alive=5.0, client=5.0, server=5.0, tunnel=5.0,
        max_head_size=16384, max_headers=100, forwarded_port=False, forwardfor="",
        proto_line="", except_nets=[],
    )  # fmt: skip
    return lid


def _get(port: int, path: str) -> int:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n".encode())
        answer = b""
        while chunk := s.recv(4096):
            answer += chunk
    return int(answer.split()[1])


@pytest.mark.parametrize(("log_mode", "logged"), [(0, 5), (1, 2), (2, 0)])
def test_http_requests_reach_the_control_plane_only_where_the_log_wants_lines(
    log_mode: int, logged: int
) -> None:
    """An HTTP request makes a record for the control plane only if the
    listener's `log` wants its line (`errors`: the 500s; `none`: no record, no
    wake-up of the control thread); the workers count every request all the
    same (what the status API and the metrics show)."""
    relay.init_llhttp()
    backend = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _StatusByPath)
    threading.Thread(target=backend.serve_forever, daemon=True).start()
    fronts = [socket.create_server(("127.0.0.1", 0)) for _ in range(2)]
    engine = relay.Engine(1, "auto")
    try:
        for front in fronts:
            front.setblocking(False)
        server_port = backend.server_address[1]
        lid = _http_listener(engine, fronts[0], server_port, log_mode)
        witness = _http_listener(engine, fronts[1], server_port, 0)  # log: all
        port, witness_port = (front.getsockname()[1] for front in fronts)
        paths = ["/", "/fail", "/", "/fail", "/"]
        assert [_get(port, p) for p in paths] == [200, 500, 200, 500, 200]
        # The one worker ends requests in order and hands over a pass's records
        # together: once the witness's record is here, every earlier one is too.
        assert _get(witness_port, "/") == 200
        records: list[tuple[Any, ...]] = []
        deadline = time.monotonic() + 5
        while not any(r[1] == witness for r in records):
            assert time.monotonic() < deadline, "the witness's record never came"
            select.select([engine.record_fd()], [], [], 0.5)
            records += engine.take_records()[1]
        mine = [r for r in records if r[1] == lid]
        assert all(r[0] == relay.REC_HTTP for r in mine)
        assert len(mine) == logged
        assert all(r[9] == 500 for r in mine) or log_mode == 0
        codes = engine.listener_metrics(lid)[2]
        assert sum(codes) == len(paths)
        assert codes[relay.metric_codes().index(200)] == 3
        assert codes[relay.metric_codes().index(500)] == 2
    finally:
        engine.close()
        for front in fronts:
            front.close()
        backend.shutdown()
        backend.server_close()
