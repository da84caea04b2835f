"""The Galera probe's kept monitor connection, against a real node, with a node
that dies in the order the kernel kills a process.

The race this file pins down is one the suite met on a busy machine: mariadbd
killed with -9, its client socket (a low, reused descriptor) closed before its
listening socket, and the probe's login in between accepted by the kernel and
then reset. That order cannot be produced on demand with a real mariadbd, so
`DyingRelay` stands in front of a real node and, when told to die, closes in
that order: the kept connections first, then it resets the next connection it
accepts, then it stops listening.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
from collections.abc import AsyncIterator

import pytest

from loadstone.checks.galera import GaleraProbe
from loadstone.config.model import CheckConfig
from tests.integration.galera.cluster import MONITOR_PASSWORD, MONITOR_USER, GaleraCluster
from tests.integration.galera.conftest import PASSWORD_ENV

pytestmark = [pytest.mark.integration, pytest.mark.slow]


class DyingRelay:
    """A TCP relay to one node that can die the way a killed process does."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.server: asyncio.Server | None = None
        self.port = 0
        self.dying = False
        self.reset = 0  # connections accepted and reset while dying
        self._clients: list[asyncio.StreamWriter] = []
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._accepted, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]

    def die(self) -> None:
        """Close every relayed connection (the client sees the end at once);
        keep listening until one more connection has been accepted and reset."""
        self.dying = True
        for writer in self._clients:
            writer.close()

    async def _accepted(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.dying:
            sock = writer.get_extra_info("socket")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            writer.transport.abort()  # RST, as for a connection queued on a closed listener
            self.reset += 1
            assert self.server is not None
            self.server.close()  # now the port refuses
            return
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        self._clients.append(writer)
        for src, dst in ((reader, up_writer), (up_reader, writer)):
            task = asyncio.get_running_loop().create_task(self._pipe(src, dst))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    @staticmethod
    async def _pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
        try:
            while data := await src.read(65536):
                dst.write(data)
                await dst.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            dst.close()

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
        for writer in self._clients:
            writer.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


@pytest.fixture
async def relay(cluster: GaleraCluster) -> AsyncIterator[DyingRelay]:
    relay = DyingRelay(cluster["db1"].port)
    await relay.start()
    yield relay
    await relay.stop()


def monitor_probe(port: int, monkeypatch: pytest.MonkeyPatch) -> tuple[GaleraProbe, asyncio.Event]:
    """A Galera probe of 127.0.0.1:port as the monitor user, and the event its
    watcher sets when the kept connection ends (the scheduler's wake())."""
    monkeypatch.setenv(PASSWORD_ENV, MONITOR_PASSWORD)
    config = CheckConfig(type="galera", user=MONITOR_USER, password_env=PASSWORD_ENV)
    probe = GaleraProbe(config, "127.0.0.1", port)
    woken = asyncio.Event()
    probe.wake = woken.set
    return probe, woken


async def test_login_dropped_by_a_dying_node_is_retried_until_refused(
    relay: DyingRelay, monkeypatch: pytest.MonkeyPatch
) -> None:
    probe, woken = monitor_probe(relay.port, monkeypatch)
    try:
        first = await probe.check()
        assert (first.ok, first.detail, probe.logins) == (True, "synced", 1)

        relay.die()
        async with asyncio.timeout(5):
            await woken.wait()  # the watcher saw the kept connection end
        verdict = await probe.check()
        # The login was accepted and reset once, then refused: a definitive
        # failure in this one check, not "connection reset" that waits for fall.
        assert relay.reset == 1
        assert (verdict.ok, verdict.detail, verdict.definitive) == (
            False,
            "connection refused",
            True,
        )
        assert probe.logins == 1
    finally:
        with contextlib.suppress(Exception):
            await probe.close()


async def test_login_after_the_node_ended_the_connection_is_not_retried_when_answered(
    cluster: GaleraCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The node ends the kept connection but stays up (KILL, wait_timeout): the
    # next check logs in again once and reports the node's state.
    probe, woken = monitor_probe(cluster["db1"].port, monkeypatch)
    try:
        assert (await probe.check()).ok
        ids = cluster["db1"].query(
            "SELECT ID FROM information_schema.PROCESSLIST WHERE USER = %s", (MONITOR_USER,)
        )
        assert len(ids) == 1
        cluster["db1"].query(f"KILL CONNECTION {int(ids[0][0])}")
        async with asyncio.timeout(5):
            await woken.wait()
        verdict = await probe.check()
        assert (verdict.ok, verdict.detail, probe.logins) == (True, "synced", 2)
    finally:
        await probe.close()
