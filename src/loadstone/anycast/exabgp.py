"""The ExaBGP driver: route lines to the process ExaBGP runs.

ExaBGP's process API reads commands from the stdout of the processes its
configuration names (`process loadstone { run ...; encoder text; }`). That
process is the feed (loadstone.anycast.exabgp_feed): it connects to the unix
socket this driver listens on and copies the lines it receives to ExaBGP.

    announce route 198.51.100.10/32 next-hop self
    withdraw route 198.51.100.10/32 next-hop self

The feed keeps what it announced and withdraws all of it when loadstone's end
of the socket closes, which a kill -9 of loadstone does too: an instance whose
loadstone died stops attracting traffic without waiting for anyone.

No feed connected (ExaBGP not running, or not yet started its process) is a
DriverError: the manager keeps serving, reports it and tries again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import stat

from loadstone.anycast.driver import DriverError
from loadstone.config.model import AnycastVip

log = logging.getLogger("loadstone.anycast")


def route_line(prefix: str, announce: bool) -> bytes:
    return f"{'announce' if announce else 'withdraw'} route {prefix} next-hop self\n".encode()


class ExabgpDriver:
    name = "exabgp"

    def __init__(self, socket_path: str, timeout: float) -> None:
        self.socket_path = socket_path
        self.timeout = timeout
        self._server: asyncio.AbstractServer | None = None
        self._feed: asyncio.StreamWriter | None = None
        self._sent: dict[str, bool] = {}  # prefix -> what the connected feed was told
        self.feeds_connected = 0  # since start

    async def start(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            if stat.S_ISSOCK(os.lstat(self.socket_path).st_mode):
                os.unlink(self.socket_path)  # left by a loadstone that died
        self._server = await asyncio.start_unix_server(self._accepted, self.socket_path)

    async def _accepted(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._feed is not None:
            self._feed.close()  # a new ExaBGP process replaces the old one's feed
        self._feed = writer
        self._sent = {}
        self.feeds_connected += 1
        log.info("anycast: an ExaBGP feed connected")
        with contextlib.suppress(OSError):
            while await reader.read(4096):
                pass  # the feed sends nothing; this waits for its end
        if self._feed is writer:
            self._feed = None
            log.warning("anycast: the ExaBGP feed went away")
        writer.close()

    async def apply(self, vip: AnycastVip, announce: bool) -> None:
        feed = self._feed
        if feed is None:
            raise DriverError(f"no ExaBGP feed connected to {self.socket_path}")
        if self._sent.get(vip.prefix) is announce:
            return  # ExaBGP holds it; a repeated line would be sent to the routers again
        try:
            async with asyncio.timeout(self.timeout):
                feed.write(route_line(vip.prefix, announce))
                await feed.drain()
        except (TimeoutError, OSError) as exc:
            feed.close()
            self._feed = None
            raise DriverError(f"the ExaBGP feed did not take the line: {exc!r}") from None
        self._sent[vip.prefix] = announce

    async def close(self) -> None:
        if self._feed is not None:
            self._feed.close()
            self._feed = None
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
            with contextlib.suppress(OSError):
                os.unlink(self.socket_path)

    def status(self) -> dict[str, object]:
        return {
            "socket": self.socket_path,
            "feed_connected": self._feed is not None,
            "feeds_connected": self.feeds_connected,
        }
