"""The driver's pure parts: error details, the probe registry, run_check, the
protocol feeding a dialogue (with a fake transport), and the sans-IO rule."""

from __future__ import annotations

import ast
import asyncio
import errno
from pathlib import Path

import pytest

import loadstone.checks
from loadstone.checks.dialogue import Dialogue, Verdict, printable
from loadstone.checks.driver import DialogueProbe, _DialogueProtocol, run_check
from loadstone.checks.http import HttpCheckDialogue
from loadstone.checks.probe import CheckFailed, Probe, describe_error
from loadstone.checks.registry import PROBES, make_probe
from loadstone.config.model import CheckConfig

CHECKS_DIR = Path(loadstone.checks.__file__).parent
SANS_IO = ["dialogue.py", "http.py", "state.py"]
IO_MODULES = {"asyncio", "socket", "selectors", "select", "ssl", "uvloop", "trio", "anyio"}


@pytest.mark.parametrize("name", SANS_IO)
def test_sans_io_modules_import_no_io(name: str) -> None:
    tree = ast.parse((CHECKS_DIR / name).read_text())
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module.split(".")[0])
    assert not imported & IO_MODULES, f"{name} imports {imported & IO_MODULES}"


# -- details ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("exc", "detail"),
    [
        (ConnectionRefusedError(errno.ECONNREFUSED, "Connection refused"), "connection refused"),
        (ConnectionResetError(errno.ECONNRESET, "Connection reset by peer"), "connection reset"),
        (BrokenPipeError(errno.EPIPE, "Broken pipe"), "broken pipe"),
        (OSError(errno.EHOSTUNREACH, "No route to host"), "no route to host"),
        (OSError(errno.ENETUNREACH, "Network is unreachable"), "network unreachable"),
        (TimeoutError(errno.ETIMEDOUT, "Connection timed out"), "connection timed out"),
        (OSError(errno.EMFILE, "Too many open files"), "too many open files"),
        (
            CheckFailed("cannot resolve db1: Name or service not known"),
            "cannot resolve db1: Name or service not known",
        ),
        (ValueError("boom"), "ValueError: boom"),
        (RuntimeError(), "RuntimeError"),
    ],
)
def test_describe_error(exc: BaseException, detail: str) -> None:
    assert describe_error(exc) == detail


def test_printable() -> None:
    assert printable(b"abc") == "abc"
    assert printable(b"a\r\n\x00\xff") == "a\\r\\n\\x00\xff"
    assert printable(b"x" * 70, limit=10) == "x" * 10 + "..."


# -- registry -----------------------------------------------------------------------


def test_registry_has_tcp_and_http() -> None:
    assert {"tcp", "http"} <= set(PROBES)
    assert isinstance(make_probe(CheckConfig(type="tcp"), "10.0.0.1", 3306), DialogueProbe)
    probe = make_probe(CheckConfig(type="http"), "10.0.0.1", 9200)
    assert isinstance(probe, DialogueProbe)
    assert probe.dialogue_factory is not None
    dialogue = probe.dialogue_factory()
    assert isinstance(dialogue, HttpCheckDialogue)
    assert b"\r\nHost: 10.0.0.1:9200\r\n" in dialogue.initial()


def test_http_host_header_brackets_ipv6() -> None:
    probe = make_probe(CheckConfig(type="http"), "fd00::11", 5000)
    assert isinstance(probe, DialogueProbe) and probe.dialogue_factory is not None
    assert b"\r\nHost: [fd00::11]:5000\r\n" in probe.dialogue_factory().initial()


@pytest.mark.parametrize("kind", ["galera", "amqp", "send-expect", "mysql"])
def test_unimplemented_type(kind: str) -> None:
    config = CheckConfig(type=kind)  # type: ignore[arg-type]
    # A registry without the type, whichever probes exist today.
    registry = {k: v for k, v in PROBES.items() if k != kind}
    with pytest.raises(NotImplementedError, match=f"check type '{kind}' is not implemented"):
        make_probe(config, "10.0.0.1", 3306, registry)


def test_bad_http_config_fails_at_construction() -> None:
    with pytest.raises(ValueError, match="request target"):
        make_probe(CheckConfig(type="http", path="/a b"), "10.0.0.1", 80)


def test_custom_registry() -> None:
    class Nothing(Probe):
        async def check(self) -> Verdict:
            return Verdict(True, "nothing")

    probe = make_probe(CheckConfig(type="galera"), "h", 1, {"galera": lambda c, h, p: Nothing()})
    assert isinstance(probe, Nothing)


# -- run_check ------------------------------------------------------------------------


class Scripted(Probe):
    def __init__(self, outcome: Verdict | BaseException | None) -> None:
        self.outcome = outcome  # None: hang

    async def check(self) -> Verdict:
        if self.outcome is None:
            await asyncio.Event().wait()
        if isinstance(self.outcome, BaseException):
            raise self.outcome
        assert self.outcome is not None
        return self.outcome


@pytest.mark.parametrize(
    ("outcome", "verdict"),
    [
        (Verdict(True, "fine"), Verdict(True, "fine")),
        (None, Verdict(False, "timeout")),
        (RuntimeError("bug"), Verdict(False, "RuntimeError: bug")),
        (CheckFailed("wsrep_ready=OFF"), Verdict(False, "wsrep_ready=OFF")),
        # The kernel's ETIMEDOUT is a TimeoutError too, but not our timeout.
        (TimeoutError(errno.ETIMEDOUT, "x"), Verdict(False, "connection timed out")),
    ],
)
async def test_run_check(outcome: Verdict | BaseException | None, verdict: Verdict) -> None:
    assert await run_check(Scripted(outcome), 0.02) == verdict


async def test_run_check_propagates_cancellation() -> None:
    task = asyncio.create_task(run_check(Scripted(None), 10.0))
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


# -- the protocol, over a fake transport --------------------------------------------------


class FakeTransport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.written = bytearray()

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.written += data


class PingPong(Dialogue):
    """Two steps: wait for a greeting, answer it, expect an OK."""

    def __init__(self) -> None:
        self.verdict: Verdict | None = None
        self.out = b""

    def initial(self) -> bytes:
        return b""

    def receive(self, data: bytes) -> None:
        if data == b"hello\n":
            self.out = b"ping\n"
        elif data == b"pong\n":
            self.verdict = Verdict(True, "pong")
        elif data == b"explode":
            raise ValueError("dialogue bug")

    def receive_eof(self) -> None:
        self.verdict = Verdict(False, "eof")

    def data_to_send(self) -> bytes:
        out, self.out = self.out, b""
        return out


async def make_protocol(
    dialogue: Dialogue, unsent: bytes = b""
) -> tuple[_DialogueProtocol, FakeTransport, asyncio.Future[Verdict]]:
    done: asyncio.Future[Verdict] = asyncio.get_running_loop().create_future()
    protocol = _DialogueProtocol(dialogue, done, unsent)
    transport = FakeTransport()
    protocol.connection_made(transport)
    return protocol, transport, done


async def test_protocol_writes_unsent_initial_bytes() -> None:
    _, transport, _ = await make_protocol(PingPong(), b"rest of request")
    assert transport.written == b"rest of request"


async def test_protocol_multi_step() -> None:
    protocol, transport, done = await make_protocol(PingPong())
    protocol.data_received(b"hello\n")
    assert transport.written == b"ping\n"
    assert not done.done()
    protocol.data_received(b"pong\n")
    assert done.result() == Verdict(True, "pong")


async def test_protocol_verdict_wins_over_reset() -> None:
    protocol, _, done = await make_protocol(HttpCheckDialogue(CheckConfig(type="http"), "h:1"))
    protocol.data_received(b"HTTP/1.1 503 Service Unavailable\r\n")
    protocol.connection_lost(ConnectionResetError(errno.ECONNRESET, "reset"))
    assert done.result() == Verdict(False, "HTTP 503 (expected 200)")


async def test_protocol_error_without_verdict() -> None:
    protocol, _, done = await make_protocol(PingPong())
    protocol.connection_lost(ConnectionResetError(errno.ECONNRESET, "reset"))
    assert done.result() == Verdict(False, "connection reset")


@pytest.mark.parametrize("how", ["eof_received", "connection_lost"])
async def test_protocol_clean_close(how: str) -> None:
    protocol, _, done = await make_protocol(PingPong())
    if how == "eof_received":
        assert protocol.eof_received() is False  # let the transport close
    else:
        protocol.connection_lost(None)
    assert done.result() == Verdict(False, "eof")


async def test_protocol_dialogue_exception_fails_the_check() -> None:
    protocol, _, done = await make_protocol(PingPong())
    protocol.data_received(b"explode")
    with pytest.raises(ValueError, match="dialogue bug"):
        done.result()


async def test_protocol_after_cancel_is_quiet() -> None:
    protocol, _, done = await make_protocol(PingPong())
    done.cancel()  # the check timed out
    protocol.data_received(b"hello\n")
    protocol.eof_received()
    protocol.connection_lost(None)
