"""The I/O half of health checks: resolve, connect, drive a dialogue, time out.

`run_check` runs one check of any probe (loadstone.checks.probe) bounded by the
check timeout; `DialogueProbe` is the probe that connects for each check and
runs a sans-IO dialogue over the connection (tcp, http, send-expect, and the
AMQP header). Which probe checks which check type is the registry's business
(loadstone.checks.registry); this module knows no check type.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
import ssl
from collections.abc import Callable
from typing import Any, cast

from loadstone.checks.dialogue import Dialogue, Verdict
from loadstone.checks.probe import CheckFailed, Probe, describe_error
from loadstone.checks.sockopts import watch_for_silence
from loadstone.config.model import Address
from loadstone.tls.upstream import handshake_error_text

log = logging.getLogger("loadstone.checks")

SockAddr = tuple[Any, ...]  # what socket.connect takes for AF_INET / AF_INET6


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


async def connect(host: str, port: int, silence_timeout: float | None = None) -> socket.socket:
    """A connected non-blocking socket, trying each resolved address in order.

    `silence_timeout`: the socket notices a silent peer after that long (sockopts.py).

    The first address's error is the one reported: it is the one the operator
    expects to be used."""
    loop = asyncio.get_running_loop()
    first_error: OSError | None = None
    for family, sockaddr in await resolve(host, port):
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setblocking(False)
            if silence_timeout is not None:
                watch_for_silence(sock, silence_timeout)
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
        # check.tls: the context and the name sent and verified (loadstone.tls)
        self.tls: ssl.SSLContext | None = None
        self.tls_name: str | None = None

    async def check(self) -> Verdict:
        self.dialogue = None
        try:
            sock = await connect(self.host, self.port, self.silence_timeout)
        except OSError as exc:
            return Verdict(False, describe_error(exc))
        if self.dialogue_factory is None and self.tls is None:
            sock.close()
            return Verdict(True, "connected")
        self.dialogue = self.dialogue_factory() if self.dialogue_factory is not None else None
        try:
            return await self._converse(sock, self.dialogue)
        except ssl.SSLError as exc:
            return Verdict(False, handshake_error_text(exc))

    def timed_out(self) -> Verdict:
        dialogue, self.dialogue = self.dialogue, None
        if dialogue is None or dialogue.verdict is not None:
            return Verdict(False, "timeout")  # still connecting, or judged too late
        dialogue.receive_timeout()
        return dialogue.verdict or Verdict(False, "timeout")

    async def _converse(self, sock: socket.socket, dialogue: Dialogue | None) -> Verdict:
        loop = asyncio.get_running_loop()
        done: asyncio.Future[Verdict] = loop.create_future()
        try:
            if dialogue is None:  # check.tls of a tcp check: the handshake alone
                transport, _ = await loop.create_connection(
                    asyncio.Protocol, sock=sock, ssl=self.tls, server_hostname=self.tls_name
                )
                done.set_result(Verdict(True, "tls handshake done"))
            elif self.tls is None:
                unsent = _send_now(sock, dialogue.initial())
                transport, _ = await loop.create_connection(
                    lambda: _DialogueProtocol(dialogue, done, unsent), sock=sock
                )
            else:  # check.tls: the dialogue over TLS (nothing can be sent before it)
                transport, _ = await loop.create_connection(
                    lambda: _DialogueProtocol(dialogue, done, dialogue.initial()),
                    sock=sock,
                    ssl=self.tls,
                    server_hostname=self.tls_name,
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
