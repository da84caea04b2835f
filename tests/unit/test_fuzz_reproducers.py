"""Defects the fuzz harnesses (fuzz/) found, each as a test of the module at fault.

The input that found each one is also kept in the target's seed corpus
(fuzz/corpus/TARGET/crash-*), so every fuzz run starts by replaying it.
"""

from __future__ import annotations

import httptools
import pytest

from fuzz.targets_http import RequestStream, request_head
from loadstone.checks.amqp import MAX_ALARM_BODY, alarm_verdict
from loadstone.checks.dialogue import Verdict
from loadstone.http.response import close_head


def _first_response(data: bytes) -> tuple[int, bool]:
    """(status, keep-alive) of the first response httptools reads from `data`."""
    seen: list[tuple[int, bool]] = []

    class Callbacks:
        def on_headers_complete(self) -> None:
            seen.append((parser.get_status_code(), parser.should_keep_alive()))

    parser = httptools.HttpResponseParser(Callbacks())
    parser.feed_data(data)
    return seen[0]


def test_close_head_after_empty_lines_before_the_status_line() -> None:
    # fuzz target response_head. llhttp skips CRLFs before a status line (a
    # server that ends a body with one too many); close_head took the first
    # empty line for the end of the head and wrote "Connection: close" before
    # the status line, so the client got a malformed response.
    relayed = b"\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: keep-alive\r\n\r\nok"
    assert _first_response(relayed) == (200, True)
    assert _first_response(close_head(relayed)) == (200, False)
    assert close_head(relayed).endswith(b"\r\nConnection: close\r\n\r\nok")


def test_alarm_answer_nested_too_deep_for_the_json_decoder() -> None:
    # fuzz target amqp_alarms (seed crash-deep-nesting, written while reading
    # the module for the harness: libFuzzer's mutations rarely stack a thousand
    # brackets). A 503 body of nested arrays made json.loads raise
    # RecursionError out of the check instead of the documented "not JSON:
    # the status alone says there is an alarm".
    assert alarm_verdict(503, b"[" * MAX_ALARM_BODY) == Verdict(False, "resource alarm")


@pytest.mark.parametrize(
    ("fields", "body"),
    [
        (b"Content-Length: 5\r\nConnection: content-length\r\n", b"hello"),
        (
            b"Transfer-Encoding: chunked\r\nConnection: Transfer-Encoding\r\n",
            b"5\r\nhello\r\n0\r\n\r\n",
        ),
        (b"Content-Length: 5\r\nConnection: close, Host\r\n", b"hello"),
    ],
)
def test_connection_cannot_name_the_framing_fields_or_host(fields: bytes, body: bytes) -> None:
    # Hop-by-hop abuse (Nathan Davison, "Abusing HTTP hop-by-hop request
    # headers", 2019), found while writing the smuggling corpus and replayed by
    # fuzz target request_head (seeds crash-connection-*). The fields a client
    # names in Connection were all removed, Content-Length and
    # Transfer-Encoding included, while the body was still sent on: the server
    # read the body as the next request (smuggled), or got no Host.
    data = b"POST /echo HTTP/1.1\r\nHost: t\r\n" + fields + b"\r\n" + body
    request_head(data)  # the forwarded request parses back as one, with its body
    head = RequestStream().feed([data]).requests[0].head
    assert b"\r\nHost: t\r\n" in head
