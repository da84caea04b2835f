"""MySQL/MariaDB logins for health checks: credentials, connect, error details,
and the `mysql` liveness probe.

The MySQL protocol is spoken by aiomysql (a maintained asyncio driver over
PyMySQL's protocol code), not by hand. What is ours: where the password comes
from (and that it never reaches a log line, a repr or the status API), turning
driver errors into short stable details, and deciding which errors are
definitive (the server said no: refused, access denied) and which are not
(lost connection, too many connections: may pass).

The `mysql` probe logs in and quits with COM_QUIT (aiomysql's ensure_closed).
A check that drops the connection after the server's handshake, as a bare TCP
check or HAProxy's `option mysql-check` without a user does, counts as an
aborted connect on the server, and after max_connect_errors of them the server
blocks the proxy's address for every client (error 1129, "Host blocked").
"""

from __future__ import annotations

import errno
from typing import Any

import aiomysql
import pymysql

from loadstone.checks.credentials import read_password
from loadstone.checks.dialogue import Verdict
from loadstone.checks.probe import Probe, describe_error
from loadstone.config.model import Address, CheckConfig

# Client-side error codes (PyMySQL's CR): the driver could not reach or lost the server.
CR_CONN_HOST_ERROR = 2003
CR_SERVER_GONE_ERROR = 2006
CR_SERVER_LOST = 2013

# Server error codes (ER_*) that deserve a word of their own. True: definitive.
_SERVER_ERRORS: dict[int, tuple[str, bool]] = {
    1044: ("access denied", True),  # ER_DBACCESS_DENIED_ERROR
    1045: ("access denied", True),  # ER_ACCESS_DENIED_ERROR: wrong user or password
    1698: ("access denied", True),  # ER_ACCESS_DENIED_NO_PASSWORD_ERROR
    1129: ("host blocked", True),  # ER_HOST_IS_BLOCKED: max_connect_errors reached
    1130: ("host not allowed", True),  # ER_HOST_NOT_PRIVILEGED
    1040: ("too many connections", False),  # ER_CON_COUNT_ERROR: may free up
    1053: ("shutting down", True),  # ER_SERVER_SHUTDOWN
    1047: ("not ready", True),  # ER_UNKNOWN_COM_ERROR: "WSREP has not yet prepared node"
    1193: ("not a galera node", True),  # ER_UNKNOWN_SYSTEM_VARIABLE: no wsrep_sync_wait
    CR_SERVER_GONE_ERROR: ("connection lost", False),
    CR_SERVER_LOST: ("connection lost", False),
}

# Kernel answers that mean nobody can serve at that address right now.
_DEFINITIVE_ERRNOS = frozenset({errno.ECONNREFUSED, errno.EHOSTUNREACH, errno.ENETUNREACH})


def error_code(exc: BaseException) -> int | None:
    if isinstance(exc, pymysql.err.MySQLError) and exc.args and isinstance(exc.args[0], int):
        return exc.args[0]
    return None


def is_connection_lost(exc: BaseException) -> bool:
    """The connection broke under a query (server gone, killed, restarted)."""
    return error_code(exc) in (CR_SERVER_GONE_ERROR, CR_SERVER_LOST) or isinstance(
        exc, ConnectionError | EOFError
    )


def verdict_for_error(exc: BaseException) -> Verdict:
    """A failed verdict for an error raised while connecting or querying."""
    code = error_code(exc)
    if code == CR_CONN_HOST_ERROR and isinstance(exc.__cause__, OSError):
        exc = exc.__cause__  # "Can't connect to MySQL server": the errno says why
        code = None
    if code is not None:
        if code in _SERVER_ERRORS:
            detail, definitive = _SERVER_ERRORS[code]
            return Verdict(False, detail, definitive=definitive)
        return Verdict(False, f"mysql error {code}")
    if isinstance(exc, OSError):
        return Verdict(False, describe_error(exc), definitive=exc.errno in _DEFINITIVE_ERRNOS)
    return Verdict(False, describe_error(exc))


async def open_connection(host: str, port: int, user: str, password: str) -> Any:
    """A logged-in aiomysql connection (typed Any: aiomysql ships no types).

    Built from `aiomysql.Connection` rather than `aiomysql.connect` so that the
    socket is closed when the check's timeout cancels the login half-way:
    aiomysql cleans up after errors but not after a cancellation."""
    conn = aiomysql.Connection(
        host=host,
        port=port,
        user=user,
        password=password,
        # None: no SET AUTOCOMMIT round trip; the server default (on) is what a
        # monitor wants anyway.
        autocommit=None,
        program_name="loadstone",  # shows in the server's processlist attributes
    )
    try:
        await conn._connect()
    except BaseException:
        conn.close()
        raise
    return conn


class MysqlProbe(Probe):
    """Liveness: log in, then quit cleanly. A new connection per check."""

    def __init__(self, config: CheckConfig, host: str, port: int) -> None:
        if config.user is None:  # the loader requires it; a direct caller may not
            raise ValueError("check user: required for type mysql")
        self.host = host
        self.port = port
        self.user = config.user
        self._password = read_password(config)

    async def check(self) -> Verdict:
        try:
            conn = await open_connection(self.host, self.port, self.user, self._password)
        except Exception as exc:
            return verdict_for_error(exc)
        try:
            version = str(conn.get_server_info())
            await conn.ensure_closed()  # COM_QUIT: not an aborted connect
        except BaseException:
            conn.close()
            raise
        # MariaDB prefixes its version with "5.5.5-" for old replication clients.
        return Verdict(True, f"logged in ({version.removeprefix('5.5.5-').split('-', 1)[0]})")

    def __repr__(self) -> str:
        # No password here: reprs end up in debug logs.
        return f"<MysqlProbe {Address(self.host, self.port)} user={self.user}>"
