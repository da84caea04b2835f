"""send-expect: the script dialogue fed bytes, the presets against recorded server
answers, and the driver's step timers (a fake transport on a real loop)."""

from __future__ import annotations

import ast
import asyncio
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

import loadstone.checks
from loadstone.checks.dialogue import Verdict
from loadstone.checks.driver import DialogueProbe, _DialogueProtocol, run_check
from loadstone.checks.registry import PROBES
from loadstone.checks.sendexpect import MAX_WINDOW, SendExpectDialogue, Step, compile_steps
from loadstone.config import SEND_EXPECT_PRESETS, parse_config
from loadstone.config.model import CheckConfig, SendExpectStep

REDIS = compile_steps(SEND_EXPECT_PRESETS["redis-master"])
MEMCACHED = compile_steps(SEND_EXPECT_PRESETS["memcached"])

# Redis 7.0 answers, as a master and as a replica (INFO replication abridged).
MASTER_INFO = (
    b"$234\r\n# Replication\r\nrole:master\r\nconnected_slaves:1\r\n"
    b"slave0:ip=127.0.0.1,port=6380,state=online,offset=42,lag=0\r\n"
    b"master_failover_state:no-failover\r\nmaster_replid:4f1c\r\n"
    b"master_repl_offset:42\r\nrepl_backlog_active:1\r\n\r\n"
)
REPLICA_INFO = (
    b"$180\r\n# Replication\r\nrole:slave\r\nmaster_host:127.0.0.1\r\nmaster_port:6379\r\n"
    b"master_link_status:up\r\nslave_read_only:1\r\nconnected_slaves:0\r\n\r\n"
)


def steps(*raw: tuple[str, object]) -> tuple[Step, ...]:
    """compile_steps from (action, value) pairs: ("send", b"x"), ("expect", b"y"),
    ("regex", "z"), ("expect", (b"y", 0.5)) for a timed expect."""
    out = []
    for action, value in raw:
        if action == "send":
            assert isinstance(value, bytes)
            out.append(SendExpectStep("send", value))
        else:
            timeout = None
            if isinstance(value, tuple):
                value, timeout = value
            if action == "regex":
                assert isinstance(value, str)
                out.append(SendExpectStep("expect", regex=value, timeout=timeout))
            else:
                assert isinstance(value, bytes)
                out.append(SendExpectStep("expect", value, timeout=timeout))
    return compile_steps(out)


def split(data: bytes) -> Iterator[bytes]:
    return (data[i : i + 1] for i in range(len(data)))


def test_module_imports_no_io() -> None:
    path = Path(loadstone.checks.__file__).parent / "sendexpect.py"
    imported = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            imported |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module.split(".")[0])
    assert not imported & {"asyncio", "socket", "selectors", "ssl", "uvloop"}


# -- presets ------------------------------------------------------------------------


def test_redis_preset_content() -> None:
    # PING first (a server that is not Redis fails on step 2), then INFO and QUIT
    # together, then the role, then QUIT's +OK.
    assert [(s.send, s.needle, s.pattern and s.pattern.pattern) for s in REDIS] == [
        (b"PING\r\n", b"", None),
        (None, b"+PONG", None),
        (b"INFO replication\r\n", b"", None),
        (b"QUIT\r\n", b"", None),
        (None, b"", b"role:master"),
        (None, b"+OK", None),
    ]


def test_redis_master() -> None:
    dialogue = SendExpectDialogue(REDIS)
    assert dialogue.initial() == b"PING\r\n"
    dialogue.receive(b"+PONG\r\n")
    assert dialogue.verdict is None
    assert dialogue.data_to_send() == b"INFO replication\r\nQUIT\r\n"
    assert dialogue.data_to_send() == b""  # drained
    dialogue.receive(MASTER_INFO + b"+OK\r\n")
    assert dialogue.verdict == Verdict(True, "script passed (3 expects matched)")


def test_redis_master_byte_by_byte() -> None:
    dialogue = SendExpectDialogue(REDIS)
    sent = dialogue.initial()
    for byte in split(b"+PONG\r\n" + MASTER_INFO + b"+O"):
        dialogue.receive(byte)
        sent += dialogue.data_to_send()
    assert dialogue.verdict is None
    dialogue.receive(b"K")
    assert dialogue.verdict == Verdict(True, "script passed (3 expects matched)")
    assert sent == b"PING\r\nINFO replication\r\nQUIT\r\n"


def test_redis_replica_fails_on_the_close_that_follows_quit() -> None:
    dialogue = SendExpectDialogue(REDIS)
    dialogue.initial()
    dialogue.receive(b"+PONG\r\n")
    dialogue.receive(REPLICA_INFO + b"+OK\r\n")
    assert dialogue.verdict is None  # "+OK" must not be mistaken for anything
    dialogue.receive_eof()
    assert dialogue.verdict == Verdict(
        False,
        "step 5 (expect /role:master/): connection closed; "
        "got '\\r\\n$180\\r\\n# Replication\\r\\nrole:slave\\r\\nmaster_host:127.0.0.1\\r\\nma...'",
    )


def test_redis_requiring_a_password() -> None:
    dialogue = SendExpectDialogue(REDIS)
    dialogue.initial()
    dialogue.receive(b"-NOAUTH Authentication required.\r\n")
    dialogue.receive_timeout()
    assert dialogue.verdict == Verdict(
        False, "step 2 (expect '+PONG'): timeout; got '-NOAUTH Authentication required.\\r\\n'"
    )


def test_memcached() -> None:
    dialogue = SendExpectDialogue(MEMCACHED)
    assert dialogue.initial() == b"version\r\n"
    dialogue.receive(b"VERS")
    assert dialogue.verdict is None
    dialogue.receive(b"ION 1.6.18\r\n")
    assert dialogue.verdict == Verdict(True, "script passed (1 expect matched)")


def test_memcached_error() -> None:
    dialogue = SendExpectDialogue(MEMCACHED)
    dialogue.initial()
    dialogue.receive(b"ERROR\r\n")
    dialogue.receive_eof()
    assert dialogue.verdict == Verdict(
        False, "step 2 (expect 'VERSION '): connection closed; got 'ERROR\\r\\n'"
    )


# -- the window -----------------------------------------------------------------------


def test_pipelined_answers_in_one_read() -> None:
    script = steps(("send", b"A\n"), ("send", b"B\n"), ("expect", b"ok A"), ("expect", b"ok B"))
    dialogue = SendExpectDialogue(script)
    assert dialogue.initial() == b"A\nB\n"
    dialogue.receive(b"ok A\nok B\n")
    assert dialogue.verdict == Verdict(True, "script passed (2 expects matched)")


def test_a_match_consumes_the_window() -> None:
    # The second expect looks only after the first match: the "ok" before does not count.
    script = steps(("expect", b"ok"), ("send", b"next\n"), ("expect", b"ok"))
    dialogue = SendExpectDialogue(script)
    dialogue.receive(b"hello ok\n")
    assert dialogue.verdict is None
    assert dialogue.data_to_send() == b"next\n"
    dialogue.receive(b"fine, o")
    assert dialogue.verdict is None
    dialogue.receive(b"k")
    assert dialogue.verdict == Verdict(True, "script passed (2 expects matched)")


def test_regex_split_across_reads() -> None:
    script = steps(("send", b"STATUS\r\n"), ("regex", r"state=(up|ready)\b"))
    dialogue = SendExpectDialogue(script)
    for byte in split(b"id=1 state=rea"):
        dialogue.receive(byte)
    assert dialogue.verdict is None
    dialogue.receive(b"dy\n")
    assert dialogue.verdict == Verdict(True, "script passed (1 expect matched)")


def test_regex_over_non_utf8_bytes() -> None:
    dialogue = SendExpectDialogue(steps(("regex", r"\xff\x00OK")))
    dialogue.receive(b"\xfe\xff\x00OK")
    assert dialogue.verdict == Verdict(True, "script passed (1 expect matched)")


def test_hex_and_binary_details() -> None:
    # Shown as `printable` shows any bytes: Latin-1, control bytes escaped.
    dialogue = SendExpectDialogue(steps(("send", b"\x00\x01"), ("expect", b"\x01\xfe")))
    assert dialogue.initial() == b"\x00\x01"
    dialogue.receive(b"\x00\xad")
    dialogue.receive_eof()
    assert dialogue.verdict == Verdict(
        False, "step 2 (expect '\\x01\xfe'): connection closed; got '\\x00\\xad'"
    )


def test_window_limit() -> None:
    dialogue = SendExpectDialogue(steps(("expect", b"never")))
    dialogue.receive(b"x" * MAX_WINDOW)
    assert dialogue.verdict is None  # at the limit: still waiting
    dialogue.receive(b"y")
    assert dialogue.verdict == Verdict(
        False, f"step 1 (expect 'never'): no match in {MAX_WINDOW} bytes; got '{'x' * 60}...'"
    )


def test_match_in_an_oversize_read_still_counts() -> None:
    dialogue = SendExpectDialogue(steps(("expect", b"END")))
    dialogue.receive(b"x" * (2 * MAX_WINDOW) + b"END")
    assert dialogue.verdict == Verdict(True, "script passed (1 expect matched)")


def test_eof_with_nothing_read() -> None:
    dialogue = SendExpectDialogue(REDIS)
    dialogue.initial()
    dialogue.receive_eof()
    assert dialogue.verdict == Verdict(
        False, "step 2 (expect '+PONG'): connection closed; got nothing"
    )


def test_data_after_the_verdict_is_ignored() -> None:
    dialogue = SendExpectDialogue(MEMCACHED)
    dialogue.receive(b"VERSION 1\r\n")
    verdict = dialogue.verdict
    dialogue.receive(b"more")
    dialogue.receive_eof()
    dialogue.receive_timeout()
    assert dialogue.verdict == verdict and verdict is not None and verdict.ok


def test_long_expect_is_shortened_in_the_detail() -> None:
    dialogue = SendExpectDialogue(steps(("regex", "a" * 50)))
    dialogue.receive_eof()
    assert dialogue.verdict == Verdict(
        False, f"step 1 (expect /{'a' * 30}.../): connection closed; got nothing"
    )


# -- sends around the expects --------------------------------------------------------------


def test_sends_after_the_last_expect_come_with_the_verdict() -> None:
    dialogue = SendExpectDialogue(steps(("expect", b"220 "), ("send", b"QUIT\r\n")))
    assert dialogue.initial() == b""  # the server speaks first
    dialogue.receive(b"220 smtp ready\r\n")
    assert dialogue.verdict == Verdict(True, "script passed (1 expect matched)")
    assert dialogue.data_to_send() == b"QUIT\r\n"


def test_no_closing_send_after_a_failure() -> None:
    dialogue = SendExpectDialogue(steps(("expect", b"220 "), ("send", b"QUIT\r\n")))
    dialogue.receive_eof()
    assert dialogue.verdict is not None and not dialogue.verdict.ok
    assert dialogue.data_to_send() == b""


def test_script_of_sends_only_is_judged_at_once() -> None:
    dialogue = SendExpectDialogue(steps(("send", b"hello\n")))
    assert dialogue.verdict == Verdict(True, "script passed (0 expects matched)")
    assert dialogue.initial() == b"hello\n"


def test_compile_rejects_an_empty_script() -> None:
    with pytest.raises(ValueError, match="at least one step"):
        compile_steps(())
    with pytest.raises(ValueError, match="step 1: an expect needs bytes or a regex"):
        compile_steps((SendExpectStep("expect"),))


def test_configured_steps_compile() -> None:
    text = r"""
listeners:
  svc:
    bind: ["127.0.0.1:7000"]
    check:
      type: send-expect
      steps:
        - send: 'HELLO\r\n'
        - {expect_regex: '^\+OK (\d+)', timeout: 250ms}
        - send_hex: "51 55 49 54 0d 0a"
        - expect_hex: 2b4f4b
    servers: [{name: a, address: "10.0.0.1:7000"}]
"""
    check = parse_config(text).listeners[0].check
    assert check is not None
    script = compile_steps(check.steps)
    assert script[1].pattern == re.compile(rb"^\+OK (\d+)")
    assert script[1].timeout == 0.25
    assert script[3].needle == b"+OK"


# -- step timeouts ----------------------------------------------------------------------


def test_step_timeout_names_the_waiting_step() -> None:
    script = steps(
        ("send", b"a\n"),
        ("expect", (b"A", 0.5)),
        ("send", b"b\n"),
        ("expect", b"B"),
        ("expect", (b"C", 2.0)),
    )
    dialogue = SendExpectDialogue(script)
    assert dialogue.step_timeout() == (2, 0.5)
    dialogue.receive(b"A")
    assert dialogue.step_timeout() is None  # step 4 has no timeout of its own
    dialogue.receive(b"B")
    assert dialogue.step_timeout() == (5, 2.0)
    dialogue.receive_timeout()
    assert dialogue.verdict == Verdict(False, "step 5 (expect 'C'): timeout; got nothing")
    assert dialogue.step_timeout() is None


class FakeTransport:
    def __init__(self) -> None:
        self.written = bytearray()

    def write(self, data: bytes) -> None:
        self.written += data


async def converse(dialogue: SendExpectDialogue) -> tuple[_DialogueProtocol, FakeTransport]:
    done: asyncio.Future[Verdict] = asyncio.get_running_loop().create_future()
    protocol = _DialogueProtocol(dialogue, done, dialogue.initial())
    transport = FakeTransport()
    protocol.connection_made(transport)  # type: ignore[arg-type]
    return protocol, transport


async def test_driver_enforces_a_step_timeout() -> None:
    script = steps(("send", b"PING\r\n"), ("expect", (b"+PONG", 0.05)))
    protocol, transport = await converse(SendExpectDialogue(script))
    assert bytes(transport.written) == b"PING\r\n"
    protocol.data_received(b"+PO")
    async with asyncio.timeout(5):
        verdict = await protocol.done
    assert verdict == Verdict(False, "step 2 (expect '+PONG'): timeout; got '+PO'")
    assert protocol.timer is None


async def test_driver_restarts_the_timer_for_each_step() -> None:
    loop = asyncio.get_running_loop()
    script = steps(("expect", (b"one", 0.3)), ("send", b"x"), ("expect", (b"two", 0.3)))
    protocol, transport = await converse(SendExpectDialogue(script))
    first = protocol.timer
    assert first is not None and protocol.timer_step == 1
    protocol.data_received(b"o")  # same step: the timer runs on
    assert protocol.timer is first
    protocol.data_received(b"ne")
    assert first.cancelled()
    second = protocol.timer
    assert second is not None and protocol.timer_step == 3
    assert second.when() >= first.when()
    assert bytes(transport.written) == b"x"
    protocol.data_received(b"two")
    assert second.cancelled() and protocol.timer is None
    assert protocol.done.result() == Verdict(True, "script passed (2 expects matched)")
    assert loop.time() < second.when()  # judged before any timer fired


async def test_driver_writes_the_closing_send_with_the_verdict() -> None:
    protocol, transport = await converse(
        SendExpectDialogue(steps(("expect", b"hi"), ("send", b"bye")))
    )
    protocol.data_received(b"hi")
    assert protocol.done.result().ok
    assert bytes(transport.written) == b"bye"


async def test_driver_judges_a_send_only_script_once_connected() -> None:
    protocol, transport = await converse(SendExpectDialogue(steps(("send", b"ping"))))
    assert protocol.done.result() == Verdict(True, "script passed (0 expects matched)")
    assert bytes(transport.written) == b"ping"


async def test_no_timer_after_connection_lost() -> None:
    protocol, _ = await converse(SendExpectDialogue(steps(("expect", (b"x", 10.0)))))
    timer = protocol.timer
    assert timer is not None
    protocol.connection_lost(None)
    assert timer.cancelled()
    assert protocol.done.result() == Verdict(
        False, "step 1 (expect 'x'): connection closed; got nothing"
    )


# -- the probe over loopback: the check timeout still names the step --------------------------


class Server:
    """A loopback server that answers the first read with `answer`, then stays silent."""

    def __init__(self, answer: bytes) -> None:
        self.answer = answer
        self.server: asyncio.Server | None = None
        self.handlers: list[tuple[asyncio.Task[None], asyncio.StreamWriter]] = []

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self.handlers.append((task, writer))
        try:
            await reader.read(100)
            writer.write(self.answer)
            await writer.drain()
            await reader.read()  # silence until the client goes
        except ConnectionError:
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
            writer.close()
        await asyncio.gather(*(task for task, _ in self.handlers), return_exceptions=True)
        await self.server.wait_closed()


MEMCACHED_CHECK = CheckConfig(type="send-expect", steps=SEND_EXPECT_PRESETS["memcached"])


async def test_check_timeout_reports_the_step_and_what_came() -> None:
    async with Server(b"-ERR unknown command 'version'\r\n") as port:
        probe = PROBES["send-expect"](MEMCACHED_CHECK, "127.0.0.1", port)
        assert isinstance(probe, DialogueProbe)
        verdict = await run_check(probe, 0.2)
        assert verdict == Verdict(
            False, "step 2 (expect 'VERSION '): timeout; got '-ERR unknown command 'version'\\r\\n'"
        )
        assert probe.timed_out() == Verdict(False, "timeout")  # nothing left to describe


async def test_probe_passes_against_a_server() -> None:
    async with Server(b"VERSION 1.6.18\r\n") as port:
        verdict = await run_check(PROBES["send-expect"](MEMCACHED_CHECK, "127.0.0.1", port), 2.0)
    assert verdict == Verdict(True, "script passed (1 expect matched)")


def test_probe_rejects_an_unusable_script() -> None:
    with pytest.raises(ValueError, match="at least one step"):
        PROBES["send-expect"](CheckConfig(type="send-expect"), "127.0.0.1", 1)
