"""The ExaBGP feed process against loadstone's ExaBGP driver, as ExaBGP runs it:
route lines on its stdout, acknowledgements on its stdin (ExaBGP itself is in
tests/integration/anycast/test_active_active.py, with a router)."""

from __future__ import annotations

import asyncio
import sys
import tempfile

import pytest

from loadstone.anycast.driver import DriverError
from loadstone.anycast.exabgp import ExabgpDriver
from loadstone.config.model import AnycastVip

WEB = AnycastVip("vip_web", "198.19.0.10/32", ("web",))
DB = AnycastVip("vip_db", "198.19.0.20/32", ("db",))


async def line(stream: asyncio.StreamReader) -> str:
    async with asyncio.timeout(10):
        return (await stream.readline()).decode().strip()


async def test_the_feed_passes_routes_and_withdraws_them_when_loadstone_goes() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = f"{tmp}/exabgp.sock"
        driver = ExabgpDriver(path, timeout=2.0)
        with pytest.raises(DriverError, match="no ExaBGP feed connected"):
            await driver.apply(WEB, True)
        feed = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "loadstone.anycast.exabgp_feed",
            path,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        assert feed.stdin is not None and feed.stdout is not None
        try:
            await driver.start()  # after the feed: it keeps trying until loadstone listens
            async with asyncio.timeout(10):
                while not driver.status()["feed_connected"]:
                    await asyncio.sleep(0.02)
            await driver.apply(WEB, True)
            await driver.apply(WEB, True)  # told once: ExaBGP would send it again
            await driver.apply(DB, False)
            feed.stdin.write(b"done\n")  # ExaBGP's acknowledgement, read and dropped
            assert await line(feed.stdout) == "announce route 198.19.0.10/32 next-hop self"
            assert await line(feed.stdout) == "withdraw route 198.19.0.20/32 next-hop self"
            await driver.close()  # loadstone gone: what it announced is withdrawn
            assert await line(feed.stdout) == "withdraw route 198.19.0.10/32 next-hop self"
            feed.stdin.close()  # ExaBGP gone: the feed exits
            async with asyncio.timeout(10):
                assert await feed.wait() == 0
        finally:
            if feed.returncode is None:
                feed.kill()
                await feed.wait()
            await driver.close()
