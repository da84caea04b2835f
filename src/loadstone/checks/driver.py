"""The I/O half of health checks: resolve, connect, drive a dialogue, time out.

A `Probe` checks one server again and again (one instance per checked server).
Most probes connect for each check and run a sans-IO dialogue over the
connection (`DialogueProbe`: tcp, http); a probe may instead keep a connection
open between checks (the Galera probe keeps one MySQL session per server, so a
check costs one query and not a login that the server counts against
max_connect_errors). Probes are registered per check type in `PROBES`.

Timeouts are not the probe's business: `run_check` bounds a whole check
(resolution and connect included) with the check timeout and cancels the probe
when it expires, so a probe must leave itself reusable when cancelled (close
what it was using).

Failure details are short and stable, for operators reading the status API:
"connection refused", "timeout", "cannot resolve db1: Name or service not known".
"""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import logging
import socket
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from functools import partial
from typing import Any, cast

from loadstone.checks.dialogue import Dialogue, Verdict
from loadstone.checks.http import HttpCheckDialogue, build_request
from loadstone.checks.sendexpect import SendExpectDialogue, compile_steps
from loadstone.config.model import Address, CheckConfig

log = logging.getLogger("loadstone.checks")

SockAddr = tuple[Any, ...]  # what socket.connect takes for AF_INET / AF_INET6


class CheckFailed(Exception):
    """A probe's way to end a check with a failed verdict from deep inside."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class Probe(ABC):
    """Checks one server; `check` is never called concurrently on one probe."""

    # Set by the scheduler: call it to have the server checked now (rate-limited),
    # e.g. when a connection kept open between checks is closed by the server.
    wake: Callable[[], None] | None = None

    @abstractmethod
    async def check(self) -> Verdict:
        """One check. May raise (CheckFailed, OSError, ...): `run_check` turns
        exceptions into failed verdicts. May be cancelled at any await."""

    async def close(self) -> None:  # noqa: B027 - most probes hold nothing between checks
        """Release what the probe keeps between checks."""

    def timed_out(self) -> Verdict:
        """The verdict of a check the check timeout cut short, called after the
        cancellation: "timeout", or where the probe was stuck."""
        return Verdict(False, "timeout")


ProbeFactory = Callable[[CheckConfig, str, int], Probe]
"""Builds the probe of one server: (check config, host, port) -> Probe.

Raises ValueError when the configuration cannot make a valid probe."""


_ERRNO_DETAILS = {
    errno.ECONNREFUSED: "connection refused",
    errno.ECONNRESET: "connection reset",
    errno.ECONNABORTED: "connection aborted",
    errno.EPIPE: "broken pipe",
    errno.EHOSTUNREACH: "no route to host",
    errno.ENETUNREACH: "network unreachable",
    errno.EHOSTDOWN: "host is down",
    errno.ETIMEDOUT: "connection timed out",  # the kernel's, not our check timeout
    errno.EADDRNOTAVAIL: "address not available",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",  # a local firewall rule
}


def describe_error(exc: BaseException) -> str:
    """A short detail for an error raised while checking."""
    if isinstance(exc, CheckFailed):
        return exc.detail
    if isinstance(exc, OSError):
        if exc.errno in _ERRNO_DETAILS:
            return _ERRNO_DETAILS[exc.errno]
        if exc.strerror:
            return exc.strerror.lower()
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


async def run_check(probe: Probe, timeout: float) -> Verdict:
    """One check bounded by `timeout`; never raises except when cancelled."""
    deadline = asyncio.timeout(timeout)
    try:
        async with deadline:
            return await probe.check()
    except TimeoutError as exc:
        if deadline.expired():
            try:
                return probe.timed_out()
            except Exception:
                log.debug("probe %r failed to describe its timeout", probe, exc_info=True)
                return Verdict(False, "timeout")
        return Verdict(False, describe_error(exc))
    except Exception as exc:
        # A probe bug must not stop the server's checks; the detail shows it.
        log.debug("probe %r raised", probe, exc_info=True)
        return Verdict(False, describe_error(exc))


# -- resolution and connect --------------------------------------------------------


async def resolve(host: str, port: int) -> list[tuple[socket.AddressFamily, SockAddr]]:
    """(family, sockaddr) to try in order. Names are resolved at each check, so a
    server whose name does not resolve yet is down, not a start-up failure."""
    if "%" not in host:  # a scoped IPv6 literal needs getaddrinfo for its scope id
        try:
            literal = ipaddress.ip_address(host)
        except ValueError:
            pass
        else:
            # No thread hop for the common case: asyncio runs getaddrinfo in an
            # executor even for literals.
            family = socket.AF_INET6 if literal.version == 6 else socket.AF_INET
            return [(family, (host, port))]
    loop = asyncio.get_running_loop()
    try:
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise CheckFailed(f"cannot resolve {host}: {exc.strerror or exc}") from None
    if not infos:
        raise CheckFailed(f"cannot resolve {host}: no address")
    return [(family, sockaddr) for family, _, _, _, sockaddr in infos]


async def connect(host: str, port: int) -> socket.socket:
    """A connected non-blocking socket, trying each resolved address in order.

    The first address's error is the one reported: it is the one the operator
    expects to be used."""
    loop = asyncio.get_running_loop()
    first_error: OSError | None = None
    for family, sockaddr in await resolve(host, port):
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setblocking(False)
            await loop.sock_connect(sock, sockaddr)
        except OSError as exc:
            sock.close()
            first_error = first_error or exc
            continue
        except BaseException:
            sock.close()
            raise
        return sock
    assert first_error is not None  # resolve() returns at least one address
    raise first_error


# -- connect-per-check probes running a dialogue -----------------------------------


class _DialogueProtocol(asyncio.Protocol):
    """Feeds a dialogue from a transport; resolves `done` with the verdict."""

    def __init__(self, dialogue: Dialogue, done: asyncio.Future[Verdict], unsent: bytes) -> None:
        self.dialogue = dialogue
        self.done = done
        self.unsent = unsent  # the part of initial() the socket did not take
        self.transport: asyncio.WriteTransport | None = None
        self.timer: asyncio.TimerHandle | None = None  # the step timeout, see _arm_timer
        self.timer_step: int | None = None  # the step `timer` was started for

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports do not inherit from asyncio's classes: no isinstance.
        self.transport = cast(asyncio.WriteTransport, transport)
        if self.unsent:
            self.transport.write(self.unsent)
        if self.dialogue.verdict is None:
            self._arm_timer()
        elif not self.done.done():  # a script of sends only: judged once sent
            self.done.set_result(self.dialogue.verdict)

    def data_received(self, data: bytes) -> None:
        if not self.done.done():
            self._step(lambda: self._receive(data))

    def eof_received(self) -> bool:
        if not self.done.done():
            self._step(self._receive_eof)
        return False  # close the transport

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_timer()
        if self.done.done():
            return
        # A verdict already reached wins over the error that ended the connection:
        # clustercheck resets the connection after answering.
        if self.dialogue.verdict is not None:
            self.done.set_result(self.dialogue.verdict)
        elif exc is not None:
            self.done.set_result(Verdict(False, describe_error(exc)))
        else:
            self._step(self._receive_eof)

    def _receive(self, data: bytes) -> bytes:
        self.dialogue.receive(data)
        return self.dialogue.data_to_send()

    def _receive_eof(self) -> bytes:
        self.dialogue.receive_eof()
        if self.dialogue.verdict is None:  # a dialogue that broke its contract
            self.dialogue.verdict = Verdict(False, "connection closed")
        return b""

    def _receive_timeout(self) -> bytes:
        self.dialogue.receive_timeout()
        if self.dialogue.verdict is None:  # a dialogue that broke its contract
            self.dialogue.verdict = Verdict(False, "timeout")
        return b""

    def _arm_timer(self) -> None:
        """(Re)start the step timer when the dialogue entered another timed step."""
        wait = self.dialogue.step_timeout()
        step = None if wait is None else wait[0]
        if step == self.timer_step:
            return  # the same step is still waiting: its timer runs on
        self._cancel_timer()
        self.timer_step = step
        if wait is not None:
            self.timer = self.done.get_loop().call_later(wait[1], self._expire)

    def _cancel_timer(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def _expire(self) -> None:
        self.timer = None
        if not self.done.done():
            self._step(self._receive_timeout)

    def _step(self, step: Callable[[], bytes]) -> None:
        """Run one dialogue step; send what it produced unless it concluded.

        Callers make sure `done` is not done yet (a timed-out check cancels it)."""
        try:
            out = step()
        except Exception as exc:
            self._cancel_timer()
            self.done.set_exception(exc)  # run_check turns it into a failed verdict
            return
        if out and self.transport is not None:
            # A failed write ends in connection_lost(exc); bytes already read have
            # been fed to the dialogue by then. Bytes that come with a verdict (a
            # closing QUIT) are written too: on an idle socket they leave at once,
            # ahead of the close that follows; if they cannot, nothing that
            # matters is lost.
            self.transport.write(out)
        if self.dialogue.verdict is not None:
            self._cancel_timer()
            self.done.set_result(self.dialogue.verdict)
        else:
            self._arm_timer()


def _send_now(sock: socket.socket, data: bytes) -> bytes:
    """Send on the bare socket before a transport exists; return what is left.

    A transport whose write fails closes at once and never reads what the
    server had already sent. A server that answers at accept and resets the
    connection (clustercheck closing with our request unread) can make the
    request's write fail; sending here first, and ignoring the error, leaves the
    socket open so that the answer is still read and judged."""
    if not data:
        return b""
    try:
        sent = sock.send(data)
    except BlockingIOError:
        return data
    except OSError as exc:
        log.debug("check request not sent: %s", describe_error(exc))
        return b""
    return data[sent:]


class DialogueProbe(Probe):
    """Connects for each check; runs a new dialogue, or only connects when None."""

    def __init__(
        self, host: str, port: int, dialogue_factory: Callable[[], Dialogue] | None
    ) -> None:
        self.host = host
        self.port = port
        self.dialogue_factory = dialogue_factory
        self.dialogue: Dialogue | None = None  # the last check's, for timed_out()

    async def check(self) -> Verdict:
        self.dialogue = None
        try:
            sock = await connect(self.host, self.port)
        except OSError as exc:
            return Verdict(False, describe_error(exc))
        if self.dialogue_factory is None:
            sock.close()
            return Verdict(True, "connected")
        self.dialogue = self.dialogue_factory()
        return await self._converse(sock, self.dialogue)

    def timed_out(self) -> Verdict:
        dialogue, self.dialogue = self.dialogue, None
        if dialogue is None or dialogue.verdict is not None:
            return Verdict(False, "timeout")  # still connecting, or judged too late
        dialogue.receive_timeout()
        return dialogue.verdict or Verdict(False, "timeout")

    async def _converse(self, sock: socket.socket, dialogue: Dialogue) -> Verdict:
        loop = asyncio.get_running_loop()
        done: asyncio.Future[Verdict] = loop.create_future()
        try:
            unsent = _send_now(sock, dialogue.initial())
            transport, _ = await loop.create_connection(
                lambda: _DialogueProtocol(dialogue, done, unsent), sock=sock
            )
        except BaseException:
            sock.close()
            raise
        try:
            return await done
        finally:
            # No half-close courtesy: the verdict is known and the server was told
            # `Connection: close`; unread bytes are discarded.
            transport.abort()

    def __repr__(self) -> str:
        kind = "connect" if self.dialogue_factory is None else "dialogue"
        return f"<DialogueProbe {kind} {Address(self.host, self.port)}>"


# -- registry -------------------------------------------------------------------


def _tcp_probe(config: CheckConfig, host: str, port: int) -> Probe:
    return DialogueProbe(host, port, None)


def _http_probe(config: CheckConfig, host: str, port: int) -> Probe:
    host_header = config.host or str(Address(host, port))
    build_request(config, host_header)  # raise ValueError now, not at every check
    return DialogueProbe(host, port, partial(HttpCheckDialogue, config, host_header))


def _galera_probe(config: CheckConfig, host: str, port: int) -> Probe:
    # Imported here: aiomysql is loaded only by configurations that check MySQL.
    from loadstone.checks.galera import GaleraProbe

    return GaleraProbe(config, host, port)


def _mysql_probe(config: CheckConfig, host: str, port: int) -> Probe:
    from loadstone.checks.mysql import MysqlProbe

    return MysqlProbe(config, host, port)


def _amqp_probe(config: CheckConfig, host: str, port: int) -> Probe:
    # Imported here: it builds on this module, and aiormq is loaded only by
    # configurations that check AMQP.
    from loadstone.checks.amqp_probe import AmqpProbe

    return AmqpProbe(config, host, port)


def _send_expect_probe(config: CheckConfig, host: str, port: int) -> Probe:
    script = compile_steps(config.steps)  # once per server, not per check
    return DialogueProbe(host, port, partial(SendExpectDialogue, script))


PROBES: dict[str, ProbeFactory] = {
    "tcp": _tcp_probe,
    "http": _http_probe,
    "galera": _galera_probe,
    "mysql": _mysql_probe,
    "amqp": _amqp_probe,
    "send-expect": _send_expect_probe,
}


def make_probe(
    config: CheckConfig, host: str, port: int, registry: Mapping[str, ProbeFactory] = PROBES
) -> Probe:
    """The probe for one server. NotImplementedError for a type with no probe yet."""
    factory = registry.get(config.type)
    if factory is None:
        raise NotImplementedError(
            f"check type {config.type!r} is not implemented yet "
            f"(available: {', '.join(sorted(registry))})"
        )
    return factory(config, host, port)


async def run_probe(config: CheckConfig, host: str, port: int, timeout: float) -> Verdict:
    """One check with a throw-away probe (tools, tests; the scheduler keeps probes)."""
    probe = make_probe(config, host, port)
    try:
        return await run_check(probe, timeout)
    finally:
        await probe.close()
