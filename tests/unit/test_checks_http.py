"""The HTTP check dialogue, fed bytes: no sockets, no event loop."""

from __future__ import annotations

import pytest

from loadstone.checks.dialogue import Verdict
from loadstone.checks.http import MAX_HEAD, HttpCheckDialogue, build_request
from loadstone.config.model import CheckConfig

DEFAULT = CheckConfig(type="http")


def dialogue(config: CheckConfig = DEFAULT, host: str = "10.0.0.11:5000") -> HttpCheckDialogue:
    return HttpCheckDialogue(config, host)


def feed(*chunks: bytes, config: CheckConfig = DEFAULT, eof: bool = False) -> Verdict | None:
    d = dialogue(config)
    for chunk in chunks:
        d.receive(chunk)
    if eof:
        d.receive_eof()
    return d.verdict


# -- the request ----------------------------------------------------------------


def test_default_request() -> None:
    d = dialogue()
    assert d.initial() == (
        b"GET / HTTP/1.1\r\n"
        b"Host: 10.0.0.11:5000\r\n"
        b"User-Agent: loadstone-check\r\n"
        b"Connection: close\r\n"
        b"\r\n"
    )
    assert d.data_to_send() == b""
    assert d.verdict is None


def test_configured_request() -> None:
    # OSA's style: HEAD with its own User-Agent, plus a basic-auth header.
    config = CheckConfig(
        type="http",
        method="HEAD",
        path="/healthcheck?full=1",
        headers=(("user-agent", "osa-haproxy-healthcheck"), ("Authorization", "Basic Zm9v")),
    )
    assert build_request(config, "[::1]:15672") == (
        b"HEAD /healthcheck?full=1 HTTP/1.1\r\n"
        b"Host: [::1]:15672\r\n"
        b"user-agent: osa-haproxy-healthcheck\r\n"
        b"Connection: close\r\n"
        b"Authorization: Basic Zm9v\r\n"
        b"\r\n"
    )


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"method": "GET /x"}, "method"),
        ({"method": ""}, "method"),
        ({"path": "/a b"}, "request target"),
        ({"path": "/a\r\nX-Injected: 1"}, "request target"),
        ({"path": ""}, "request target"),
        ({"path": "/caf\u00e9"}, "ASCII"),
        ({"headers": (("X-A", "1\r\nX-Injected: 1"),)}, "control character"),
        ({"headers": (("X A", "1"),)}, "token"),
        ({"headers": (("X-A:", "1"),)}, "token"),
    ],
)
def test_rejects_request_injection(changes: dict[str, object], message: str) -> None:
    config = CheckConfig(type="http", **changes)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=message):
        dialogue(config)


# -- the status line ----------------------------------------------------------------


@pytest.mark.parametrize(
    "line",
    [
        b"HTTP/1.1 200 OK\r\n",
        b"HTTP/1.0 200 OK\r\n",
        b"HTTP/1.1 200 OK\n",  # bare LF (RFC 9112 section 2.2)
        b"HTTP/1.1 200\r\n",  # no SP, no reason
        b"HTTP/1.1 200 \r\n",  # SP, empty reason
        b"HTTP/1.1 200 Tr\xe8s bien\tok\r\n",  # obs-text and HTAB in the reason
    ],
)
def test_ok(line: bytes) -> None:
    assert feed(line + b"Content-Length: 0\r\n\r\n") == Verdict(True, "HTTP 200")


def test_status_line_split_across_chunks() -> None:
    d = dialogue()
    response = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
    end = response.index(b"\n")
    for i in range(end):
        d.receive(response[i : i + 1])
        assert d.verdict is None, f"verdict before the line end, after {i + 1} bytes"
    d.receive(response[end:])
    assert d.verdict == Verdict(True, "HTTP 200")


def test_cr_and_lf_in_separate_chunks() -> None:
    assert feed(b"HTTP/1.1 200 OK\r", b"\n") == Verdict(True, "HTTP 200")


def test_unexpected_status() -> None:
    response = b"HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\n\r\n"
    assert feed(response) == Verdict(False, "HTTP 503 (expected 200)")


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (b"200", Verdict(True, "HTTP 200")),
        (b"401", Verdict(True, "HTTP 401")),
        (b"503", Verdict(False, "HTTP 503 (expected 200 or 401)")),
    ],
)
def test_expected_list(status: bytes, expected: Verdict) -> None:
    config = CheckConfig(type="http", expect_status=(200, 401))
    assert feed(b"HTTP/1.1 " + status + b" Whatever\r\n", config=config) == expected


def test_expected_list_of_three() -> None:
    config = CheckConfig(type="http", expect_status=(200, 401, 405))
    assert feed(b"HTTP/1.1 404 Not Found\r\n", config=config) == Verdict(
        False, "HTTP 404 (expected 200, 401 or 405)"
    )


@pytest.mark.parametrize(
    ("data", "shown"),
    [
        (b"SSH-2.0-OpenSSH_9.6\r\n", "SSH-2.0-OpenSSH_9.6"),
        (b"HTTP/2 200\r\n", "HTTP/2 200"),
        (b"HTTP/2.0 200 OK\r\n", "HTTP/2.0 200 OK"),
        (b"HTTP/1.1 20 OK\r\n", "HTTP/1.1 20 OK"),
        (b"HTTP/1.1 2000 OK\r\n", "HTTP/1.1 2000 OK"),
        (b"HTTP/1.1 099 Low\r\n", "HTTP/1.1 099 Low"),
        (b"HTTP/1.1 600 High\r\n", "HTTP/1.1 600 High"),
        (b"http/1.1 200 OK\r\n", "http/1.1 200 OK"),  # HTTP-name is case-sensitive
        (b"HTTP/1.1  200 OK\r\n", "HTTP/1.1  200 OK"),
        (b"HTTP/1.1 200 OK\x00\r\n", "HTTP/1.1 200 OK\\x00"),  # NUL is not in reason-phrase
        (b"\r\nHTTP/1.1 200 OK\r\n", ""),  # no blank line before the status line
    ],
)
def test_bad_status_line(data: bytes, shown: str) -> None:
    assert feed(data) == Verdict(False, f"bad status line: {shown}")


def test_not_http_is_judged_without_a_line_end() -> None:
    # RabbitMQ answers a non-AMQP header with its own and closes; no "\n" ever comes.
    assert feed(b"AMQP\x00\x00\x09\x01") == Verdict(
        False, "bad status line: AMQP\\x00\\x00\\t\\x01"
    )


def test_mysql_greeting() -> None:
    # Protocol version 10 is a "\n" in the fifth byte of every MySQL greeting.
    assert feed(b"\x5b\x00\x00\x00\x0a11.4.2-MariaDB\x00") == Verdict(
        False, "bad status line: [\\x00\\x00\\x00"
    )


def test_prefix_of_http_name_waits() -> None:
    assert feed(b"HTT") is None
    assert feed(b"HTTP/1.1 20") is None


def test_long_garbage_detail_is_truncated() -> None:
    verdict = feed(b"x" * 500 + b"\n")
    assert verdict is not None
    assert verdict.detail == "bad status line: " + "x" * 60 + "..."


def test_eof_before_status_line() -> None:
    assert feed(eof=True) == Verdict(False, "connection closed before status line")
    assert feed(b"HTTP/1.1 20", eof=True) == Verdict(False, "connection closed before status line")


def test_eof_after_verdict_keeps_it() -> None:
    assert feed(b"HTTP/1.1 200 OK\r\n", eof=True) == Verdict(True, "HTTP 200")


def test_oversize_status_line() -> None:
    d = dialogue()
    d.receive(b"HTTP/1.1 200 ")
    for _ in range(MAX_HEAD // 1000 + 1):
        d.receive(b"x" * 1000)
    assert d.verdict == Verdict(False, f"status line longer than {MAX_HEAD} bytes")
    assert not d._buffer  # nothing kept once judged


def test_oversize_line_in_one_chunk() -> None:
    data = b"HTTP/1.1 200 " + b"x" * MAX_HEAD + b"\r\n"
    assert feed(data) == Verdict(False, f"status line longer than {MAX_HEAD} bytes")


def test_status_line_at_the_limit_is_accepted() -> None:
    line = b"HTTP/1.1 200 " + b"x" * (MAX_HEAD - 13)
    assert len(line) == MAX_HEAD
    assert feed(line + b"\n") == Verdict(True, "HTTP 200")


def test_data_after_verdict_is_ignored() -> None:
    d = dialogue()
    d.receive(b"HTTP/1.1 503 Service Unavailable\r\n")
    d.receive(b"HTTP/1.1 200 OK\r\n")
    assert d.verdict == Verdict(False, "HTTP 503 (expected 200)")


# -- interim (1xx) responses --------------------------------------------------------


def test_interim_response_is_skipped() -> None:
    response = (
        b"HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\n"
        b"HTTP/1.1 200 OK\r\n\r\n"
    )
    assert feed(response) == Verdict(True, "HTTP 200")


def test_interim_then_failure() -> None:
    assert feed(b"HTTP/1.1 100 Continue\r\n\r\n", b"HTTP/1.1 503 No\r\n") == Verdict(
        False, "HTTP 503 (expected 200)"
    )


def test_interim_head_counts_against_the_limit() -> None:
    d = dialogue()
    d.receive(b"HTTP/1.1 103 Early Hints\r\n")
    for _ in range(MAX_HEAD // 100 + 1):
        d.receive(b"Link: " + b"x" * 92 + b"\r\n")
    assert d.verdict == Verdict(False, f"status line longer than {MAX_HEAD} bytes")


def test_switching_protocols_is_final() -> None:
    assert feed(b"HTTP/1.1 101 Switching Protocols\r\n\r\n") == Verdict(
        False, "HTTP 101 (expected 200)"
    )
