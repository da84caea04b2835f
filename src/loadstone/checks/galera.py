"""The `galera` probe: wsrep state read on one kept-open monitor connection per server.

Theory of operation
-------------------
A login costs several round trips and, done per check, fills the server's
connection log; a kept-open connection makes a check one query. So the probe
logs in once (`SET SESSION wsrep_sync_wait=0`, see galera_rules.py) and then
runs `STATUS_QUERY` at every check; `galera_rules.judge` decides.

The connection's life:

    none --check: login--> kept --check: query--> kept --> ...
                             |                      |
                             |  timeout / error ----+--> closed, none
                             +-- server closes it while idle --> closed, none, wake()

- A check that times out is cancelled by `run_check`; the connection is then
  closed, never reused: its stream may still carry the late answer, and a
  server that is slow to answer is better asked on a fresh connection
  (ProxySQL does the same).
- A kept connection that breaks under a query (the server restarted, or its
  wait_timeout closed us) is replaced within the same check by one new login,
  so a recycled connection is not reported as a failure, while a dead server
  is: the login is refused, a definitive failure.
- Between checks a watcher waits on the idle connection. A server never sends
  anything unasked, so any byte or end of stream means it is going away (kill
  -9 of mariadbd closes the socket at once): the watcher closes the
  connection and calls `wake()`, and the scheduler checks the server now
  instead of at the next interval. The check's login is refused and the node
  is out within milliseconds of its death.
- A dying server closes its sockets one by one, in descriptor order, and a
  client connection often has a lower descriptor than the listening socket
  (descriptors freed at start-up are reused). So the kept connection can end
  while the server still listens: a login in that gap is accepted by the
  kernel and then reset, "connection reset", a failure that is not
  definitive and would leave the node in for fall x interval. After a kept
  connection ended, a login dropped like that is tried again after a short
  pause (`RELOGIN_PAUSE`, at most `RELOGIN_ATTEMPTS` logins, within the
  check's timeout) until the server refuses it, answers it, or keeps
  dropping it.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import replace
from typing import Any

from loadstone.checks.credentials import read_password
from loadstone.checks.dialogue import Verdict
from loadstone.checks.galera_rules import (
    SESSION_SETUP,
    STATUS_QUERY,
    WsrepPolicy,
    WsrepStatus,
    judge,
)
from loadstone.checks.membership import parse_members
from loadstone.checks.mysql import (
    is_connection_lost,
    open_connection,
    verdict_for_error,
)
from loadstone.checks.probe import Probe
from loadstone.checks.sockopts import watch_for_silence
from loadstone.config.model import Address, CheckConfig

log = logging.getLogger("loadstone.checks")

# How long closing the monitor connection may take at stop (COM_QUIT is sent so
# the server does not count an aborted client).
CLOSE_TIMEOUT = 1.0

# Logins after a kept connection ended, while they are accepted and then
# dropped (the server is half-way through dying; see the module docstring).
RELOGIN_ATTEMPTS = 5
RELOGIN_PAUSE = 0.05


class GaleraProbe(Probe):
    def __init__(self, config: CheckConfig, host: str, port: int) -> None:
        if config.user is None:  # the loader requires it; a direct caller may not
            raise ValueError("check user: required for type galera")
        self.host = host
        self.port = port
        self.user = config.user
        self._password = read_password(config)  # never logged, never in repr()
        self.policy = WsrepPolicy.from_check(config)
        self._conn: Any = None  # the kept aiomysql connection, between checks only
        self._watch: asyncio.Task[None] | None = None
        self._ended = False  # the server ended the kept connection; its next login may race
        self.logins = 0  # logins made, for tests and debugging: a kept connection is reused

    # -- one check -------------------------------------------------------------------

    async def check(self) -> Verdict:
        conn = await self._take()
        try:
            if conn is not None:
                try:
                    rows = await self._read_status(conn)
                except Exception as exc:
                    if not is_connection_lost(exc):
                        raise
                    # Closed under us while idle (restart, wait_timeout) and not
                    # yet seen by the watcher: one fresh login decides.
                    log.debug("%r: kept connection lost (%s), logging in again", self, exc)
                    conn.close()
                    conn = None
                    self._ended = True
            if conn is None:
                ended, self._ended = self._ended, False
                conn = await (self._login_after_end() if ended else self._login())
                rows = await self._read_status(conn)
        except asyncio.CancelledError:
            # The check timed out (or the scheduler stops): a connection that
            # may still deliver a late answer is never reused.
            if conn is not None:
                conn.close()
            raise
        except Exception as exc:
            if conn is not None:
                conn.close()
            return verdict_for_error(exc)
        self._keep(conn)
        status = WsrepStatus.from_rows(rows)
        verdict = judge(status, self.policy)
        if verdict.ok:
            # An eligible node is in the Primary Component: its member list is
            # news about the others (a vanished host is in it no more).
            members = parse_members(status.incoming_addresses, status.cluster_size)
            verdict = replace(verdict, members=members)
        return verdict

    async def _login(self) -> Any:
        conn = await open_connection(self.host, self.port, self.user, self._password)
        self.logins += 1
        # A kept connection to a host that vanished errors out within the check
        # timeout, idle or not, and the watcher asks for a check (sockopts.py).
        watch_for_silence(conn._writer.get_extra_info("socket"), self.silence_timeout)
        try:
            async with conn.cursor() as cur:
                await cur.execute(SESSION_SETUP)
        except BaseException:
            conn.close()
            raise
        return conn

    async def _login_after_end(self) -> Any:
        """A login, tried again while the server accepts and drops it."""
        for attempt in range(1, RELOGIN_ATTEMPTS):
            try:
                return await self._login()
            except Exception as exc:
                if not _dropped(exc):
                    raise
                log.debug("%r: login %d dropped (%s), trying again", self, attempt, exc)
            await asyncio.sleep(RELOGIN_PAUSE)
        return await self._login()  # the last one: whatever it gives is the verdict

    @staticmethod
    async def _read_status(conn: Any) -> list[tuple[object, object]]:
        async with conn.cursor() as cur:
            await cur.execute(STATUS_QUERY)
            rows = await cur.fetchall()
        return list(rows)

    # -- the connection between checks -------------------------------------------------

    def _keep(self, conn: Any) -> None:
        self._conn = conn
        self._watch = asyncio.get_running_loop().create_task(
            self._watch_idle(conn), name=f"galera monitor {Address(self.host, self.port)}"
        )

    async def _take(self) -> Any:
        """The kept connection, with its watcher stopped; None if there is none."""
        conn, watch = self._conn, self._watch
        self._conn = self._watch = None
        if watch is not None and not watch.done():
            watch.cancel()
            # Wait until it has really stopped reading: the driver's next read
            # would fail while another read is pending on the same stream.
            try:
                await asyncio.wait([watch])
            except BaseException:
                if conn is not None:
                    conn.close()
                raise
        if conn is None or conn.closed:
            return None
        return conn

    async def _watch_idle(self, conn: Any) -> None:
        reader = conn._reader  # aiomysql's StreamReader; no public accessor
        if reader is None:
            return
        try:
            data = await reader.read(1)
        except (OSError, RuntimeError) as exc:
            why = f"error: {exc}"
        else:
            why = "closed by the server" if not data else "unexpected data from the server"
        if self._conn is not conn:
            return  # taken by a check meanwhile
        self._conn = None
        self._watch = None
        self._ended = True
        conn.close()
        log.info("%r: monitor connection %s; checking now", self, why)
        if self.wake is not None:
            self.wake()

    async def close(self) -> None:
        conn = await self._take()
        if conn is None:
            return
        try:
            async with asyncio.timeout(CLOSE_TIMEOUT):
                await conn.ensure_closed()  # COM_QUIT
        except Exception:
            conn.close()
        except asyncio.CancelledError:
            conn.close()
            raise

    def __repr__(self) -> str:
        # No password here: reprs end up in debug logs.
        return f"<GaleraProbe {Address(self.host, self.port)} user={self.user}>"


def _dropped(exc: BaseException) -> bool:
    """A login the server took and then dropped (reset, closed) rather than
    refused or answered: aiomysql reports it as error 2003 caused by the loss."""
    if verdict_for_error(exc).definitive:
        return False  # refused, access denied, ...: the server's answer
    return is_connection_lost(exc) or (
        exc.__cause__ is not None and is_connection_lost(exc.__cause__)
    )
