"""AMQP checks: the header dialogue fed bytes, field tables, alarm answers, the
login's error details, and the probe against in-process fake servers."""

from __future__ import annotations

import ast
import asyncio
import inspect
import struct
from collections.abc import Iterator
from pathlib import Path

import aiormq
import pytest
from aiohttp import web

import loadstone.checks
from loadstone.checks.amqp import (
    MAX_START_PAYLOAD,
    PROTOCOL_HEADER,
    AmqpHeaderDialogue,
    alarm_verdict,
    describe_header,
    read_properties,
)
from loadstone.checks.amqp_probe import (
    AmqpProbe,
    _BrokerClosed,
    _ProbeConnection,
    close_detail,
    describe_login_error,
)
from loadstone.checks.credentials import read_password
from loadstone.checks.dialogue import Verdict
from loadstone.checks.driver import run_check
from loadstone.checks.registry import PROBES
from loadstone.config import ConfigError, parse_config
from loadstone.config.model import CheckConfig

# What RabbitMQ 3.10.8 (Debian 12) answers to the protocol header, as captured
# from a test node: Connection.Start with its capabilities, cluster_name,
# copyright, information, platform, product and version, then mechanisms
# "AMQPLAIN PLAIN" and locales "en_US".
RABBITMQ_3_10_START = bytes.fromhex(
    "010000000001ee000a000a0009000001c90c6361706162696c697469657346000000c7127075626c69736865"
    "725f636f6e6669726d7374011a65786368616e67655f65786368616e67655f62696e64696e677374010a6261"
    "7369632e6e61636b740116636f6e73756d65725f63616e63656c5f6e6f74696679740112636f6e6e65637469"
    "6f6e2e626c6f636b6564740113636f6e73756d65725f7072696f72697469657374011c61757468656e746963"
    "6174696f6e5f6661696c7572655f636c6f73657401107065725f636f6e73756d65725f716f7374010f646972"
    "6563745f7265706c795f746f74010c636c75737465725f6e616d6553000000076361703140766d09636f7079"
    "72696768745300000037436f707972696768742028632920323030372d3230323220564d776172652c20496e"
    "632e206f722069747320616666696c69617465732e0b696e666f726d6174696f6e53000000394c6963656e73"
    "656420756e64657220746865204d504c20322e302e20576562736974653a2068747470733a2f2f7261626269"
    "746d712e636f6d08706c6174666f726d530000001145726c616e672f4f54502032352e322e330770726f6475"
    "637453000000085261626269744d510776657273696f6e5300000006332e31302e380000000e414d51504c41"
    "494e20504c41494e00000005656e5f5553ce"
)


# -- building frames ----------------------------------------------------------------


def longstr(data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + data


def table(*fields: tuple[str, bytes, bytes]) -> bytes:
    """A field table from (name, type octet, encoded value) triples."""
    body = b"".join(bytes([len(n)]) + n.encode() + t + v for n, t, v in fields)
    return longstr(body)


def start_payload(
    major: int = 0,
    minor: int = 9,
    properties: bytes | None = None,
    mechanisms: bytes = b"PLAIN AMQPLAIN",
    locales: bytes = b"en_US",
) -> bytes:
    if properties is None:
        properties = table(
            ("product", b"S", longstr(b"FakeMQ")), ("version", b"S", longstr(b"1.2"))
        )
    return (
        struct.pack(">HHBB", 10, 10, major, minor)
        + properties
        + longstr(mechanisms)
        + longstr(locales)
    )


def frame(payload: bytes, kind: int = 1, channel: int = 0, end: int = 0xCE) -> bytes:
    return struct.pack(">BHI", kind, channel, len(payload)) + payload + bytes([end])


def run(chunks: list[bytes], eof: bool = False) -> Verdict | None:
    dialogue = AmqpHeaderDialogue()
    assert dialogue.initial() == b"AMQP\x00\x00\x09\x01"
    for chunk in chunks:
        dialogue.receive(chunk)
    if eof:
        dialogue.receive_eof()
    return dialogue.verdict


def split(data: bytes) -> list[bytes]:
    return [data[i : i + 1] for i in range(len(data))]


# -- sans-IO ------------------------------------------------------------------------


def test_amqp_dialogue_module_imports_no_io() -> None:
    path = Path(loadstone.checks.__file__).parent / "amqp.py"
    imported = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            imported |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module.split(".")[0])
    assert not imported & {"asyncio", "socket", "selectors", "ssl", "uvloop", "aiormq", "aiohttp"}


# -- the header dialogue: good answers ----------------------------------------------


def test_real_rabbitmq_start() -> None:
    assert run([RABBITMQ_3_10_START]) == Verdict(True, "AMQP 0-9-1 (RabbitMQ 3.10.8)")


def test_real_rabbitmq_start_byte_by_byte() -> None:
    dialogue = AmqpHeaderDialogue()
    for byte in split(RABBITMQ_3_10_START)[:-1]:
        dialogue.receive(byte)
        assert dialogue.verdict is None  # nothing is judged before the frame end
    dialogue.receive(RABBITMQ_3_10_START[-1:])
    assert dialogue.verdict == Verdict(True, "AMQP 0-9-1 (RabbitMQ 3.10.8)")


def test_start_without_product_or_version() -> None:
    assert run([frame(start_payload(properties=table()))]) == Verdict(True, "AMQP 0-9-1")


def test_product_only() -> None:
    props = table(("product", b"S", longstr(b"FakeMQ")))
    assert run([frame(start_payload(properties=props))]) == Verdict(True, "AMQP 0-9-1 (FakeMQ)")


def test_bytes_after_the_frame_do_not_matter() -> None:
    assert run([frame(start_payload()) + b"\x08\x00\x00"]) == Verdict(
        True, "AMQP 0-9-1 (FakeMQ 1.2)"
    )


def test_data_after_verdict_is_ignored() -> None:
    dialogue = AmqpHeaderDialogue()
    dialogue.receive(frame(start_payload()))
    dialogue.receive(b"garbage")
    dialogue.receive_eof()
    assert dialogue.verdict == Verdict(True, "AMQP 0-9-1 (FakeMQ 1.2)")


# -- the header dialogue: failures ----------------------------------------------------


@pytest.mark.parametrize(
    ("data", "detail"),
    [
        pytest.param(
            b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n",
            "not AMQP (got 'HTTP/1.1 400 Bad Request\\r\\nContent-Length...')",
            id="http-server",
        ),
        pytest.param(
            frame(b"", kind=8),
            "expected Connection.Start, got a heartbeat frame on channel 0 "
            "('\\x08\\x00\\x00\\x00\\x00\\x00\\x00')",
            id="heartbeat-first",
        ),
        pytest.param(
            frame(start_payload(), kind=2),
            "expected Connection.Start, got a content header frame on channel 0 "
            "('\\x02\\x00\\x00\\x00\\x00\\x00H')",
            id="content-header",
        ),
        pytest.param(
            frame(start_payload(), channel=1),
            "expected Connection.Start, got a method frame on channel 1 "
            "('\\x01\\x00\\x01\\x00\\x00\\x00H')",
            id="channel-1",
        ),
        pytest.param(
            struct.pack(">BHI", 1, 0, MAX_START_PAYLOAD + 1),
            f"oversize frame: {MAX_START_PAYLOAD + 1} bytes (limit {MAX_START_PAYLOAD})",
            id="oversize",
        ),
        pytest.param(
            b"\x01\x00\x00\xff\xff\xff\xff",
            f"oversize frame: 4294967295 bytes (limit {MAX_START_PAYLOAD})",
            id="oversize-4g",
        ),
        pytest.param(
            frame(start_payload(), end=0x00),
            "bad frame end 0x00 (expected 0xce)",
            id="bad-frame-end",
        ),
        pytest.param(frame(b"\x00"), "malformed method frame (1 bytes)", id="short-method"),
        pytest.param(
            frame(struct.pack(">HH", 10, 30) + b"\x00" * 8),
            "expected Connection.Start (10, 10), got method 10, 30",
            id="tune-first",
        ),
        pytest.param(
            frame(struct.pack(">HHH", 10, 50, 320) + b"\x13CONNECTION_FORCED x" + b"\x00" * 4),
            "broker closed the connection: 320 CONNECTION_FORCED x",
            id="connection-close",
        ),
        pytest.param(
            frame(struct.pack(">HH", 10, 10)),
            "malformed Connection.Start: no version",
            id="no-version",
        ),
        pytest.param(
            frame(start_payload(major=8, minor=0)),
            "broker speaks AMQP 8-0 (expected 0-9)",
            id="amqp-0-8",
        ),
        pytest.param(
            frame(struct.pack(">HHBB", 10, 10, 0, 9) + struct.pack(">I", 100) + b"x" * 10),
            "malformed Connection.Start: server-properties longer than the frame",
            id="table-overflow",
        ),
        pytest.param(
            frame(struct.pack(">HHBB", 10, 10, 0, 9) + table() + longstr(b"PLAIN")),
            "malformed Connection.Start: no locales",
            id="no-locales",
        ),
        pytest.param(
            frame(struct.pack(">HHBB", 10, 10, 0, 9) + table()),
            "malformed Connection.Start: no mechanisms",
            id="no-mechanisms",
        ),
        pytest.param(
            b"AMQP\x00\x00\x09\x01",
            "broker refused AMQP 0-9-1 (it offers AMQP 0-9-1)",
            id="own-header-back",
        ),
        pytest.param(
            b"AMQP\x01\x01\x00\x0a",
            "broker refused AMQP 0-9-1 (it offers AMQP 0-10)",
            id="header-0-10",
        ),
        pytest.param(
            b"AMQP\x00\x01\x00\x00",
            "broker refused AMQP 0-9-1 (it offers AMQP 1.0.0 (protocol id 0))",
            id="header-1-0",
        ),
    ],
)
def test_failures(data: bytes, detail: str) -> None:
    assert run([data]) == Verdict(False, detail)
    # The same bytes one at a time end in the same verdict.
    assert run(split(data), eof=True) == Verdict(False, detail)


@pytest.mark.parametrize(
    ("data", "detail"),
    [
        pytest.param(
            b"SSH-2.0-OpenSSH_9.2\r\n", "not AMQP (got 'SSH-2.0-OpenSSH_9.2\\r\\n')", id="ssh"
        ),
        pytest.param(
            b"-ERR unknown command\r\n", "not AMQP (got '-ERR unknown command\\r\\n')", id="redis"
        ),
        pytest.param(b"\x00\x00\x00\x00", "not AMQP (got '\\x00\\x00\\x00\\x00')", id="zeros"),
        pytest.param(b"AMQx", "not AMQP (got 'AMQx')", id="almost-header"),
    ],
)
def test_short_foreign_answer_is_judged_at_eof_or_timeout(data: bytes, detail: str) -> None:
    # Fewer bytes than a detail shows: the verdict waits for more, the end of the
    # stream or the timeout, so that it does not depend on how reads split.
    assert run(split(data)) is None
    assert run([data], eof=True) == Verdict(False, detail)
    dialogue = AmqpHeaderDialogue()
    dialogue.receive(data)
    dialogue.receive_timeout()
    assert dialogue.verdict == Verdict(False, detail)


def test_timeout_with_nothing_or_part_of_a_frame() -> None:
    for data in (b"", RABBITMQ_3_10_START[:50], b"AMQ"):
        dialogue = AmqpHeaderDialogue()
        dialogue.receive(data)
        dialogue.receive_timeout()
        assert dialogue.verdict == Verdict(False, "timeout")


@pytest.mark.parametrize(
    ("data", "detail"),
    [
        (b"", "connection closed before Connection.Start"),
        (b"\x01\x00", "truncated frame header (2 of 7 bytes)"),
        (
            RABBITMQ_3_10_START[:100],
            f"truncated Connection.Start (100 of {len(RABBITMQ_3_10_START)} bytes)",
        ),
        (
            RABBITMQ_3_10_START[:-1],
            f"truncated Connection.Start (501 of {len(RABBITMQ_3_10_START)} bytes)",
        ),
        (b"AMQ", "truncated protocol header (got 'AMQ')"),
    ],
)
def test_truncated(data: bytes, detail: str) -> None:
    assert run([data]) is None  # waiting for the rest
    assert run([data], eof=True) == Verdict(False, detail)


def test_protocol_header_waits_for_all_eight_bytes() -> None:
    dialogue = AmqpHeaderDialogue()
    dialogue.receive(b"AMQP\x00\x00")
    assert dialogue.verdict is None
    dialogue.receive(b"\x09\x01")
    assert dialogue.verdict == Verdict(False, "broker refused AMQP 0-9-1 (it offers AMQP 0-9-1)")


def test_describe_header_of_garbage() -> None:
    assert describe_header(b"XYZ") == "'XYZ'"
    assert describe_header(b"AMQP\x03\x01\x00\x00") == "AMQP 1.0.0 (protocol id 3)"


# -- field tables -------------------------------------------------------------------------


def test_read_properties_steps_over_every_rabbitmq_type() -> None:
    body = table(
        ("bool", b"t", b"\x01"),
        ("i8", b"b", b"\xff"),
        ("u8", b"B", b"\x01"),
        ("i16", b"s", b"\x00\x01"),
        ("u16", b"u", b"\x00\x01"),
        ("i32", b"I", b"\x00\x00\x00\x01"),
        ("i64", b"l", b"\x00" * 8),
        ("float", b"f", b"\x00" * 4),
        ("double", b"d", b"\x00" * 8),
        ("decimal", b"D", b"\x02\x00\x00\x00\x01"),
        ("time", b"T", b"\x00" * 8),
        ("void", b"V", b""),
        ("nested", b"F", table(("product", b"S", longstr(b"inner")))),
        ("array", b"A", longstr(b"S" + longstr(b"x"))),
        ("bytes", b"x", longstr(b"\x00\x01")),
        ("product", b"S", longstr(b"Broker")),
    )[4:]
    assert read_properties(body) == {"bytes": b"\x00\x01", "product": b"Broker"}


def test_read_properties_stops_at_an_unknown_type() -> None:
    body = table(
        ("product", b"S", longstr(b"Broker")),
        ("odd", b"?", b"\x00"),
        ("version", b"S", longstr(b"1")),
    )
    assert read_properties(body[4:]) == {"product": b"Broker"}


def test_read_properties_of_a_truncated_table() -> None:
    body = table(("product", b"S", longstr(b"Broker")))[4:]
    assert read_properties(body[:-3]) == {}
    assert read_properties(b"\x07product") == {}


def test_unknown_property_type_still_passes_the_check() -> None:
    props = table(("odd", b"?", b"\x00"), ("product", b"S", longstr(b"Broker")))
    assert run([frame(start_payload(properties=props))]) == Verdict(True, "AMQP 0-9-1")


# -- alarms -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "body", "verdict"),
    [
        (200, b'{"status":"ok"}', Verdict(True, "no alarm")),
        (
            503,
            b'{"alarms":[{"node":"rabbit@ctl1","resource":"memory"}],'
            b'"reason":"There are alarms in effect on the node","status":"failed"}',
            Verdict(False, "memory alarm"),
        ),
        (
            503,
            b'{"alarms":[{"node":"rabbit@ctl1","resource":"disk space"}],"status":"failed"}',
            Verdict(False, "disk alarm"),
        ),
        (
            503,
            b'{"alarms":[{"node":"n","resource":"disk space"},{"node":"n","resource":"memory"}]}',
            Verdict(False, "memory and disk alarms"),
        ),
        (
            503,
            b'{"alarms":[{"node":"n","resource":"file_descriptors"}]}',
            Verdict(False, "resource alarm"),
        ),
        (503, b"<html>busy</html>", Verdict(False, "resource alarm")),
        (503, b'{"alarms": "many"}', Verdict(False, "resource alarm")),
        (503, b"[1, 2]", Verdict(False, "resource alarm")),
        (
            401,
            b'{"error":"not_authorized"}',
            Verdict(False, "management API: access refused (HTTP 401)"),
        ),
        (404, b"", Verdict(False, "management API: no local-alarms check (RabbitMQ < 3.8.10?)")),
        (500, b"", Verdict(False, "management API: HTTP 500")),
    ],
)
def test_alarm_verdict(status: int, body: bytes, verdict: Verdict) -> None:
    assert alarm_verdict(status, body) == verdict


# -- login details and the aiormq hook ---------------------------------------------------


@pytest.mark.parametrize(
    ("code", "text", "detail"),
    [
        (
            403,
            "ACCESS_REFUSED - Login was refused using authentication mechanism PLAIN",
            "access refused",
        ),
        (530, "NOT_ALLOWED - vhost nope not found", "vhost not found (nope)"),
        (
            530,
            "NOT_ALLOWED - access to vhost 'nope' refused for user 'monitor'",
            "access refused to vhost nope",
        ),
        (
            320,
            "CONNECTION_FORCED - shutdown",
            "broker closed the connection: 320 CONNECTION_FORCED - shutdown",
        ),
        (None, None, "broker closed the connection: None "),
    ],
)
def test_close_detail(code: int | None, text: str | None, detail: str) -> None:
    assert close_detail(code, text, "nope") == detail


@pytest.mark.parametrize(
    ("exc", "detail", "clear"),
    [
        (_BrokerClosed(530, "NOT_ALLOWED - vhost v not found"), "vhost not found (v)", True),
        (aiormq.exceptions.ProbableAuthenticationError("ACCESS_REFUSED"), "access refused", True),
        (
            aiormq.exceptions.ConnectionNotAllowed(530, "NOT_ALLOWED - vhost v not found"),
            "vhost not found (v)",
            True,
        ),
        (
            aiormq.exceptions.AMQPConnectionError(111, "Connect call failed"),
            "connection refused",
            True,
        ),
        (ConnectionRefusedError(111, "refused"), "connection refused", True),
        (
            aiormq.exceptions.IncompatibleProtocolError(),
            "connection closed before Connection.Start",
            False,
        ),
        (
            aiormq.exceptions.AMQPConnectionError("Server connection unexpectedly closed"),
            "connection closed by the broker",
            False,
        ),
        (aiormq.exceptions.InvalidFrameError("bad"), "InvalidFrameError: bad", False),
        (ValueError("x"), "ValueError: x", False),
    ],
)
def test_describe_login_error(exc: BaseException, detail: str, clear: bool) -> None:
    assert describe_login_error(exc, "v") == (detail, clear)


def test_connect_error_cause_is_described() -> None:
    exc = aiormq.exceptions.AMQPConnectionError("Server connection reset")
    exc.__cause__ = ConnectionResetError(104, "Connection reset by peer")
    assert describe_login_error(exc, "/") == ("connection reset", True)


def test_aiormq_rpc_hook_still_matches() -> None:
    """_ProbeConnection replaces aiormq's private `_rpc`; an aiormq release that
    renames or reshapes it must fail here, not silently lose the vhost detail."""
    original = inspect.getattr_static(aiormq.Connection, "_rpc")
    assert isinstance(original, staticmethod)
    assert list(inspect.signature(original.__func__).parameters) == list(
        inspect.signature(_ProbeConnection._rpc).parameters
    )
    source = inspect.getsource(aiormq.Connection.connect)
    assert "self._rpc(" in source


# -- passwords -------------------------------------------------------------------------


def test_read_password(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LS_PW", "from-env")
    assert read_password(CheckConfig(type="amqp", user="u", password_env="LS_PW")) == "from-env"
    path = tmp_path / "pw"
    path.write_text("from-file\n")
    assert read_password(CheckConfig(type="amqp", user="u", password_file=str(path))) == "from-file"
    path.write_text("with-crlf\r\n")
    assert read_password(CheckConfig(type="amqp", user="u", password_file=str(path))) == "with-crlf"
    assert read_password(CheckConfig(type="amqp", user="u")) == ""
    monkeypatch.delenv("LS_PW")
    with pytest.raises(ValueError, match="LS_PW is not set"):
        read_password(CheckConfig(type="amqp", user="u", password_env="LS_PW"))
    with pytest.raises(ValueError, match=r"cannot read .*/missing"):
        read_password(CheckConfig(type="amqp", user="u", password_file=str(tmp_path / "missing")))


# -- configuration ----------------------------------------------------------------------


def amqp_doc(**check: object) -> str:
    items = ", ".join(f"{k}: {v}" for k, v in {"type": "amqp", **check}.items())
    return (
        "listeners:\n  mq:\n    bind: ['127.0.0.1:5672']\n"
        f"    check: {{{items}}}\n"
        "    servers: [{name: a, address: '10.0.0.1:5672'}]\n"
    )


def test_management_port_and_alarms_keys() -> None:
    check = (
        parse_config(amqp_doc(alarms="true", user="monitor", management_port=15673))
        .listeners[0]
        .check
    )
    assert check is not None and check.alarms and check.management_port == 15673
    default = parse_config(amqp_doc()).listeners[0].check
    assert default is not None and default.management_port == 15672


@pytest.mark.parametrize(
    ("check", "problem"),
    [
        ({"alarms": "true"}, "listeners.mq.check.user: required for type amqp with alarms: true"),
        ({"management_port": 0}, "listeners.mq.check.management_port: must be 1-65535, got 0"),
    ],
)
def test_alarm_configuration_errors(check: dict[str, object], problem: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(amqp_doc(**check))
    assert problem in info.value.problems


def test_management_port_only_for_amqp() -> None:
    text = amqp_doc().replace("type: amqp", "type: tcp, management_port: 1")
    with pytest.raises(ConfigError, match="only valid for type amqp"):
        parse_config(text)


# -- the probe against fake servers ----------------------------------------------------------


class FakeBroker:
    """A loopback TCP server answering the protocol header with canned bytes."""

    def __init__(self, answer: bytes, close: bool = True) -> None:
        self.answer = answer
        self.close = close
        self.received = bytearray()
        self.server: asyncio.Server | None = None
        self.handlers: list[tuple[asyncio.Task[None], asyncio.StreamWriter]] = []

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self.handlers.append((task, writer))
        try:
            self.received += await reader.readexactly(len(PROTOCOL_HEADER))
            writer.write(self.answer)
            await writer.drain()
            if not self.close:
                await reader.read()  # hold the connection until the client goes
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    async def __aenter__(self) -> int:
        self.server = await asyncio.start_server(self.handle, "127.0.0.1", 0)
        return int(self.server.sockets[0].getsockname()[1])

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()
        for _, writer in self.handlers:
            writer.close()  # ends a held connection's read
        await asyncio.gather(*(task for task, _ in self.handlers), return_exceptions=True)
        await self.server.wait_closed()


@pytest.fixture
def management() -> Iterator[dict[str, object]]:
    """What the fake management API answers: {'status': int, 'body': bytes}."""
    yield {"status": 200, "body": b'{"status":"ok"}', "auth": None}


async def start_management(answer: dict[str, object]) -> tuple[web.AppRunner, int]:
    async def local_alarms(request: web.Request) -> web.Response:
        answer["auth"] = request.headers.get("Authorization")
        return web.Response(status=int(answer["status"]), body=answer["body"])  # type: ignore[call-overload]

    app = web.Application()
    app.router.add_get("/api/health/checks/local-alarms", local_alarms)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    return runner, int(port)


async def test_header_probe_ok() -> None:
    fake = FakeBroker(RABBITMQ_3_10_START)
    async with fake as port:
        probe = PROBES["amqp"](CheckConfig(type="amqp"), "127.0.0.1", port)
        assert await run_check(probe, 2.0) == Verdict(True, "AMQP 0-9-1 (RabbitMQ 3.10.8)")
        await probe.close()
    assert bytes(fake.received) == PROTOCOL_HEADER


async def test_header_probe_silent_server_times_out() -> None:
    async with FakeBroker(b"", close=False) as port:
        probe = AmqpProbe(CheckConfig(type="amqp"), "127.0.0.1", port)
        assert await run_check(probe, 0.2) == Verdict(False, "timeout")


async def test_alarms_checked_after_the_header(management: dict[str, object]) -> None:
    runner, mport = await start_management(management)
    config = CheckConfig(type="amqp", user="monitor", alarms=True, management_port=mport)
    try:
        async with FakeBroker(RABBITMQ_3_10_START) as port:
            probe = AmqpProbe(config, "127.0.0.1", port)
            try:
                assert await run_check(probe, 2.0) == Verdict(True, "AMQP 0-9-1 (RabbitMQ 3.10.8)")
                assert management["auth"] == "Basic bW9uaXRvcjo="  # monitor, empty password
                management["status"] = 503
                management["body"] = b'{"alarms":[{"node":"n","resource":"memory"}]}'
                assert await run_check(probe, 2.0) == Verdict(False, "memory alarm")
            finally:
                await probe.close()
    finally:
        await runner.cleanup()


async def test_alarms_without_management_api() -> None:
    async with FakeBroker(RABBITMQ_3_10_START) as port:
        closed = FakeBroker(b"")
        async with closed as mport:
            pass  # a port nobody listens on any more
        config = CheckConfig(type="amqp", user="monitor", alarms=True, management_port=mport)
        probe = AmqpProbe(config, "127.0.0.1", port)
        try:
            verdict = await run_check(probe, 2.0)
        finally:
            await probe.close()
    assert verdict == Verdict(False, "management API: connection refused")


async def test_alarm_phase_timeout_is_named() -> None:
    release = asyncio.Event()

    async def hang(request: web.Request) -> web.Response:
        await release.wait()  # a wedged management API, until the test ends
        return web.Response(status=200)

    app = web.Application()
    app.router.add_get("/api/health/checks/local-alarms", hang)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    config = CheckConfig(type="amqp", user="m", alarms=True, management_port=runner.addresses[0][1])
    try:
        async with FakeBroker(RABBITMQ_3_10_START) as port:
            probe = AmqpProbe(config, "127.0.0.1", port)
            try:
                assert await run_check(probe, 0.3) == Verdict(False, "timeout (management API)")
            finally:
                await probe.close()
    finally:
        release.set()
        await runner.cleanup()


async def test_login_on_a_non_amqp_server_is_diagnosed() -> None:
    http = b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    async with FakeBroker(http) as port:
        probe = AmqpProbe(CheckConfig(type="amqp", level="login", user="u"), "127.0.0.1", port)
        verdict = await run_check(probe, 2.0)
    assert verdict.ok is False
    assert verdict.detail.startswith("not AMQP (got 'HTTP/1.1 400 Bad Request"), verdict


async def test_login_connection_refused() -> None:
    async with FakeBroker(b"") as port:
        pass
    probe = AmqpProbe(CheckConfig(type="amqp", level="login", user="u"), "127.0.0.1", port)
    assert await run_check(probe, 2.0) == Verdict(False, "connection refused")


def test_probe_reads_its_password_once_at_build(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LS_PW", "secret")
    config = CheckConfig(type="amqp", level="login", user="u", password_env="LS_PW")
    probe = AmqpProbe(config, "127.0.0.1", 5672)
    monkeypatch.delenv("LS_PW")
    assert probe.password == "secret"
    with pytest.raises(ValueError, match="LS_PW"):
        AmqpProbe(config, "127.0.0.1", 5672)
