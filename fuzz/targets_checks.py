"""Targets for the health-check dialogues of loadstone.checks.

Documented errors: none. A dialogue turns whatever a server sends into a
verdict (dialogue.py's contract), and must reach the same verdict whether
the bytes arrive in one read or many. The MySQL greeting is parsed by
aiomysql, not by loadstone: what loadstone owns is that whatever the driver
raises on a bad greeting becomes a failed verdict (mysql.verdict_for_error).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Coroutine
from typing import Any

import aiomysql
from pymysql.protocol import MysqlPacket

from fuzz.source import Source
from loadstone.checks.amqp import (
    PROTOCOL_HEADER,
    AmqpHeaderDialogue,
    alarm_verdict,
    describe_close,
    describe_header,
    read_properties,
)
from loadstone.checks.dialogue import Dialogue, Verdict
from loadstone.checks.galera_rules import WsrepPolicy, WsrepStatus, judge
from loadstone.checks.http import HttpCheckDialogue
from loadstone.checks.mysql import verdict_for_error
from loadstone.checks.sendexpect import MAX_WINDOW, SendExpectDialogue, compile_steps
from loadstone.config.model import CheckConfig, SendExpectStep


def converse(dialogue: Dialogue, pieces: list[bytes], end: str) -> tuple[Verdict, bytes]:
    """Run a dialogue as the driver does (dialogue.py's contract); `end` is how
    the server stops when no verdict came: "eof" or "timeout"."""
    sent = dialogue.initial()
    for piece in pieces:
        if dialogue.verdict is not None:
            break
        dialogue.receive(piece)
        sent += dialogue.data_to_send()
    if dialogue.verdict is None:
        if end == "eof":
            dialogue.receive_eof()
        else:
            dialogue.receive_timeout()
    sent += dialogue.data_to_send()
    assert dialogue.verdict is not None, "no verdict at the end of the stream"
    return dialogue.verdict, sent


def same_whole_and_split(make: Callable[[], Dialogue], data: bytes) -> Verdict:
    source = Source(data)
    end = "eof" if source.flag() else "timeout"
    whole = converse(make(), [data], end)
    split = converse(make(), source.pieces(), end)
    assert whole == split, (whole, split)
    return whole[0]


def amqp_header(data: bytes) -> None:
    """The header check's verdict does not depend on how reads split the answer."""
    assert AmqpHeaderDialogue().initial() == PROTOCOL_HEADER
    same_whole_and_split(AmqpHeaderDialogue, data)
    read_properties(data)
    describe_close(data)
    describe_header(data[:8])


def amqp_alarms(data: bytes) -> None:
    """Any answer of the management API is judged."""
    status = (200, 401, 403, 404, 500, 503)[Source(data).choice(6)]
    verdict = alarm_verdict(status, data)
    assert verdict.ok == (status == 200)


HTTP_CHECK = CheckConfig(type="http", path="/health", expect_status=(200, 204))


def http_check(data: bytes) -> None:
    """The HTTP check's verdict does not depend on how reads split the answer.

    Its detail may: a peer that is not HTTP is judged on its first read,
    before a line end (tests/unit/test_checks_http.py pins that), and the
    detail shows what that read held."""
    source = Source(data)
    end = "eof" if source.flag() else "timeout"
    whole, sent = converse(HttpCheckDialogue(HTTP_CHECK, "h"), [data], end)
    split, sent_split = converse(HttpCheckDialogue(HTTP_CHECK, "h"), source.pieces(), end)
    assert (whole.ok, whole.definitive, sent) == (split.ok, split.definitive, sent_split)
    if whole.ok:
        assert whole == split and whole.detail in ("HTTP 200", "HTTP 204"), whole


# Scripts with literal expects only: a regular expression may match more or
# less of a window depending on where a read ended (/a+/ over "aa" or "a"),
# which is how HAProxy's tcp-check behaves too, so those only must not fail.
_LITERAL = compile_steps(
    (
        SendExpectStep("send", b"PING\r\n"),
        SendExpectStep("expect", b"+PONG"),
        SendExpectStep("send", b"INFO replication\r\n"),
        SendExpectStep("expect", b"role:master"),
        SendExpectStep("send", b"QUIT\r\n"),
    )
)
_REGEX = compile_steps(
    (
        SendExpectStep("send", b"stats\r\n"),
        SendExpectStep("expect", regex=r"STAT (uptime|pid) \d+"),
        SendExpectStep("expect", regex=r"^END\r$|\x00+"),
    )
)


def send_expect(data: bytes) -> None:
    """A literal script reaches the same verdict and sends the same bytes
    however the answer is split; a regex script always reaches a verdict."""
    if len(data) <= MAX_WINDOW:
        same_whole_and_split(lambda: SendExpectDialogue(_LITERAL), data)
    source = Source(data)
    converse(SendExpectDialogue(_REGEX), source.pieces(), "eof")


def _run_at_once(coroutine: Coroutine[Any, Any, None]) -> None:
    """Drive a coroutine that never waits (its reads are patched) to its end."""
    try:
        coroutine.send(None)
    except StopIteration:
        return
    raise AssertionError("the greeting parser waited for I/O")


class _Clock:
    """All of an event loop that parsing a greeting uses (no loop runs here)."""

    time = staticmethod(time.monotonic)


def mysql_greeting(data: bytes) -> None:
    """Whatever aiomysql makes of a server greeting, the check ends in a
    verdict: a parsed greeting, or a failed verdict naming the error."""
    conn = aiomysql.Connection(host="127.0.0.1", user="monitor", loop=_Clock())

    async def packet() -> MysqlPacket:
        return MysqlPacket(data, conn._encoding)

    conn._read_packet = packet
    try:
        _run_at_once(conn._get_server_information())
    except Exception as exc:
        verdict = verdict_for_error(exc)
        assert not verdict.ok and verdict.detail
    else:
        assert isinstance(conn.get_server_info(), str)


_GALERA_NAMES = (
    "WSREP_LOCAL_STATE",
    "WSREP_CLUSTER_STATUS",
    "WSREP_READY",
    "WSREP_CONNECTED",
    "WSREP_LOCAL_RECV_QUEUE",
    "READ_ONLY",
    "WSREP_DESYNC",
    "WSREP_REJECT_QUERIES",
    "WSREP_SST_DONOR_REJECTS_QUERIES",
    "WSREP_SST_METHOD",
)


def galera_status(data: bytes) -> None:
    """Any rows a server returns are judged; an eligible node is Primary and synced
    (or a donor allowed to serve)."""
    source = Source(data)
    rows: list[tuple[object, object]] = []
    for line in data.split(b"\n"):
        name, _, value = line.partition(b"=")
        known = _GALERA_NAMES[source.choice(len(_GALERA_NAMES))]
        rows.append((known if source.flag() else name, value if source.flag() else None))
    status = WsrepStatus.from_rows(rows)
    policy = WsrepPolicy(
        available_when_donor=source.flag(),
        available_when_readonly=source.flag(),
        max_recv_queue=source.choice(10) if source.flag() else None,
    )
    verdict = judge(status, policy)
    if verdict.ok:
        assert status.cluster_status is not None
        assert status.cluster_status.strip().lower() == "primary"
        assert verdict.detail in ("synced", "donor")
