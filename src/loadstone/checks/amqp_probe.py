"""AMQP checks, the I/O half: the header dialogue, a login through aiormq, alarms.

`level: header` runs the sans-IO AmqpHeaderDialogue (amqp.py) over a fresh
connection. `level: login` opens a whole connection as an OpenStack service
would (Start-Ok with PLAIN and the `connection.blocked` capability, Tune,
Open(vhost), Channel.Open) through aiormq, a maintained client, then closes it
cleanly (Connection.Close / Close-Ok), so the broker logs a normal close.

`alarms: true` then asks the node's management API for its local alarms
(/api/health/checks/local-alarms), with the same user. Why this and not a
publish probe that watches for Connection.Blocked:
- an alarm on one node blocks the publishers of the whole cluster, and a
  blocked probe connection cannot tell which node is short of memory; the
  local check names the node in trouble, so only that one is taken out and
  clients move to the healthy nodes, while consumers (which alarms do not
  block, and which drain the queues that caused the alarm) keep a way in;
- RabbitMQ stops reading a blocked connection, so the probe could not close it
  cleanly: every check during an alarm would leave a connection behind on a
  node that is already short of memory;
- it tells a memory alarm from a disk alarm, and publishes nothing.
The price: the management plugin must listen (`management_port`, 15672 by
default, as in kolla-ansible) and the user needs a management tag
(`monitoring` is enough). When the API cannot be asked the check fails: it
cannot vouch for a broker it was told to judge by its alarms.
"""

from __future__ import annotations

import asyncio
import base64
import logging
from typing import Literal

import aiohttp
import aiormq
import pamqp.frame
from aiormq.connection import FrameReceiver
from pamqp import commands as spec
from pamqp.base import Frame
from pamqp.frame import FrameTypes
from yarl import URL

from loadstone.checks.amqp import (
    LOCAL_ALARMS_PATH,
    MAX_ALARM_BODY,
    AmqpHeaderDialogue,
    alarm_verdict,
    describe_broker,
)
from loadstone.checks.credentials import read_password
from loadstone.checks.dialogue import Verdict, printable
from loadstone.checks.driver import DialogueProbe
from loadstone.checks.probe import CheckFailed, Probe, describe_error
from loadstone.config.model import CheckConfig

log = logging.getLogger("loadstone.checks")

# aiormq logs every failed connect at error level and every broker-side close as
# "Unexpected connection close": here those are check results, which the
# scheduler reports itself, once per state change.
logging.getLogger("aiormq").setLevel(logging.CRITICAL)

CONNECTION_NAME = "loadstone check"  # shown by rabbitmqctl list_connections / the UI


def basic_auth(user: str, password: str) -> str:
    """RFC 7617 credentials, UTF-8 encoded (RabbitMQ decodes them so)."""
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode("ascii")


def close_detail(code: int | None, text: str | None, vhost: str) -> str:
    """A broker's Connection.Close during the login as a short detail."""
    text = text or ""
    if code == 403:  # ACCESS_REFUSED: bad user or password (authentication_failure_close)
        return "access refused"
    if code == 530 and "not found" in text:  # NOT_ALLOWED - vhost x not found
        return f"vhost not found ({vhost})"
    if code == 530:  # NOT_ALLOWED - access to vhost 'x' refused for user 'y'
        return f"access refused to vhost {vhost}"
    return f"broker closed the connection: {code} {printable(text.encode())}"


class _BrokerClosed(Exception):
    """The broker answered a login step with Connection.Close."""

    def __init__(self, code: int | None, text: str | None) -> None:
        super().__init__(code, text)
        self.code = code
        self.text = text


class _ProbeConnection(aiormq.Connection):
    """aiormq's connection, telling why the broker refused the login.

    aiormq checks a reply against the expected methods before it looks for a
    Connection.Close, so a refused vhost surfaces as "Expected one of
    ['Connection.OpenOk'], got <Connection.Close object>", without the reply
    code and text that say what is wrong. This is aiormq's own `_rpc` (the
    request/response step of the handshake) with the Close looked at first.
    tests/unit/test_checks_amqp.py pins the aiormq signature it relies on."""

    @staticmethod
    async def _rpc(
        request: Frame,
        writer: asyncio.StreamWriter,
        frame_receiver: FrameReceiver,
        wait_response: bool = True,
    ) -> FrameTypes | None:
        writer.write(pamqp.frame.marshal(request, 0))
        await writer.drain()
        if not wait_response:
            return None
        _, _, frame = await frame_receiver.get_frame()
        if isinstance(frame, spec.Connection.Close):
            raise _BrokerClosed(frame.reply_code, frame.reply_text)
        if request.synchronous and frame.name not in request.valid_responses:
            raise aiormq.exceptions.InvalidFrameError(
                f"expected one of {request.valid_responses}, got {frame.name}"
            )
        return frame


def describe_login_error(exc: BaseException, vhost: str) -> tuple[str, bool]:
    """(detail, clear): clear when the detail says all (credentials, vhost,
    connect errors); otherwise the header dialogue may tell more."""
    if isinstance(exc, _BrokerClosed):
        return close_detail(exc.code, exc.text, vhost), True
    if isinstance(exc, aiormq.exceptions.ProbableAuthenticationError):
        return "access refused", True
    if isinstance(exc, aiormq.exceptions.ConnectionClosed) and exc.args:
        code = exc.args[0] if isinstance(exc.args[0], int) else None
        text = exc.args[1] if len(exc.args) > 1 and isinstance(exc.args[1], str) else None
        return close_detail(code, text, vhost), True
    if isinstance(exc, OSError) and exc.errno is not None:
        # aiormq re-raises connect errors as AMQPConnectionError(errno, message).
        return describe_error(exc), True
    if isinstance(exc, aiormq.exceptions.IncompatibleProtocolError):
        return "connection closed before Connection.Start", False
    if isinstance(exc, aiormq.exceptions.AMQPConnectionError):
        cause = exc.__cause__
        if isinstance(cause, OSError) and cause.errno is not None:
            return describe_error(cause), True
        return "connection closed by the broker", False
    if isinstance(exc, aiormq.exceptions.AMQPError):
        return f"{type(exc).__name__}: {printable(str(exc).encode())}", False
    return describe_error(exc), False


class AmqpProbe(Probe):
    """Checks one broker; keeps only the HTTP session of the alarm checks."""

    def __init__(self, config: CheckConfig, host: str, port: int) -> None:
        self.config = config
        self.host = host
        self.port = port
        self.header = DialogueProbe(host, port, AmqpHeaderDialogue)
        self.password = read_password(config) if config.user is not None else ""
        self.phase: Literal["header", "login", "alarms"] = "header"
        self.session: aiohttp.ClientSession | None = None
        self.alarms_url = URL.build(
            scheme="http", host=host, port=config.management_port, path=LOCAL_ALARMS_PATH
        )

    async def check(self) -> Verdict:
        if self.config.level == "login":
            self.phase = "login"
            verdict = await self._login()
        else:
            self.phase = "header"
            verdict = await self.header.check()
        if not verdict.ok or not self.config.alarms:
            return verdict
        self.phase = "alarms"
        alarms = await self._alarms()
        return verdict if alarms.ok else alarms

    def timed_out(self) -> Verdict:
        if self.phase == "header":
            return self.header.timed_out()
        if self.phase == "alarms":
            return Verdict(False, "timeout (management API)")
        return Verdict(False, "timeout")

    async def close(self) -> None:
        if self.session is not None:
            await self.session.close()
            self.session = None

    # -- login -------------------------------------------------------------------

    async def _login(self) -> Verdict:
        assert self.config.user is not None  # the loader requires it for login
        url = URL.build(
            scheme="amqp",
            user=self.config.user,
            password=self.password,
            host=self.host,
            port=self.port,
        )
        connection = _ProbeConnection(url, client_properties={"connection_name": CONNECTION_NAME})
        # The vhost straight to aiormq: in a URL path a vhost such as "/" or
        # "a/b" would need quoting that aiormq and yarl do not agree on.
        connection.vhost = self.config.vhost
        try:
            await connection.connect()
            await connection.channel(publisher_confirms=False)
        except asyncio.CancelledError:
            await self._abandon(connection)
            raise
        except Exception as exc:
            await self._abandon(connection)
            detail, clear = describe_login_error(exc, self.config.vhost)
            if not clear:
                # Something that is not a broker refusing us: a broker that does
                # not speak 0-9-1, or no broker at all. The header dialogue
                # names it ("not AMQP (got 'HTTP/1.1 400 ...')").
                self.phase = "header"
                header = await self.header.check()
                self.phase = "login"
                if not header.ok:
                    return header
            raise CheckFailed(detail) from exc
        try:
            await connection.close()  # Connection.Close, then the broker's Close-Ok
        except Exception as exc:
            raise CheckFailed(f"unclean close: {describe_error(exc)}") from exc
        properties = getattr(connection, "server_properties", None)
        broker = describe_broker(properties if isinstance(properties, dict) else {})
        detail = f"login ok, vhost {self.config.vhost}"
        return Verdict(True, f"{detail} ({broker})" if broker else detail)

    async def _abandon(self, connection: aiormq.Connection) -> None:
        """Close what a failed or cancelled login left open, without waiting on
        the broker (it may be the reason we gave up)."""
        try:
            async with asyncio.timeout(1.0):
                await connection.close()
        except Exception:  # our own timeout included; a cancellation goes on
            log.debug("closing an abandoned AMQP check connection failed", exc_info=True)

    # -- alarms ------------------------------------------------------------------

    async def _alarms(self) -> Verdict:
        if self.session is None:
            # No keep-alive: one request per interval does not need a pooled
            # connection, and the management listener keeps none open for us.
            self.session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(force_close=True),
                headers={"Authorization": basic_auth(self.config.user or "", self.password)},
            )
        try:
            async with self.session.get(self.alarms_url, allow_redirects=False) as response:
                body = await response.content.read(MAX_ALARM_BODY)
                return alarm_verdict(response.status, body)
        except aiohttp.ClientConnectorError as exc:
            return Verdict(False, f"management API: {describe_error(exc.os_error)}")
        except (aiohttp.ClientError, OSError) as exc:
            return Verdict(False, f"management API: {describe_error(exc)}")
