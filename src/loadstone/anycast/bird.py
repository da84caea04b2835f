"""The BIRD 2 driver: enable or disable a protocol per VIP over BIRD's socket.

bird.conf holds, per VIP, a protocol that originates its route (a static
`route VIP/32 blackhole;` declared `disabled`, exported to the BGP sessions);
announcing is `enable "vip_web"`, withdrawing `disable "vip_web"`. BIRD keeps
everything else: sessions, BFD, timers, the routes' attributes.

One connection is kept open; any failure (no socket, BIRD not running, a
refusal, a malformed answer, no answer within the timeout) closes it and raises
DriverError, and the next apply() connects again. BIRD restarted forgets what
was enabled: the manager re-applies every decision each interval, which costs a
line on a local socket.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from loadstone.anycast import birdc
from loadstone.anycast.driver import DriverError
from loadstone.config.model import AnycastVip

log = logging.getLogger("loadstone.anycast")


class BirdDriver:
    name = "bird"

    def __init__(self, socket_path: str, timeout: float) -> None:
        self.socket_path = socket_path
        self.timeout = timeout
        self.version: str | None = None
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._parser = birdc.ReplyParser()

    async def _reply(self) -> birdc.Reply:
        assert self._reader is not None
        while (reply := self._parser.next_reply()) is None:
            data = await self._reader.read(65536)
            if not data:
                raise DriverError("BIRD closed the control socket")
            self._parser.feed(data)
        return reply

    async def _connect(self) -> None:
        try:
            self._reader, self._writer = await asyncio.open_unix_connection(self.socket_path)
        except OSError as exc:
            raise DriverError(f"cannot connect to {self.socket_path}: {exc.strerror}") from None
        self._parser = birdc.ReplyParser()
        self.version = birdc.check_greeting(await self._reply())
        log.info("anycast: connected to BIRD %s at %s", self.version, self.socket_path)

    async def apply(self, vip: AnycastVip, announce: bool) -> None:
        try:
            async with asyncio.timeout(self.timeout):
                if self._writer is None:
                    await self._connect()
                assert self._writer is not None
                protocol = vip.bird_protocol
                command = birdc.enable_command if announce else birdc.disable_command
                self._writer.write(command(protocol))
                await self._writer.drain()
                birdc.switch_outcome(await self._reply(), protocol, announce)
        except TimeoutError:
            await self.close()
            raise DriverError(f"no answer from BIRD within {self.timeout:g}s") from None
        except birdc.BirdProtocolError as exc:
            await self.close()
            raise DriverError(f"malformed answer from BIRD: {exc}") from None
        except birdc.CommandRefused as exc:
            # The connection is still in step; the refusal is a configuration
            # problem (no such protocol in bird.conf) the operator must see.
            raise DriverError(f"BIRD refused {vip.bird_protocol}: {exc}") from None
        except DriverError:
            await self.close()
            raise
        except OSError as exc:
            await self.close()
            raise DriverError(f"BIRD's socket: {exc.strerror or exc}") from None

    async def close(self) -> None:
        writer, self._writer, self._reader = self._writer, None, None
        if writer is not None:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()

    def status(self) -> dict[str, object]:
        return {"socket": self.socket_path, "version": self.version}
