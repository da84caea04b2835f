"""The asyncio server of HAProxy's runtime socket: a unix socket (and/or a TCP
address), one `cli.Session` per connection.

A client that sends no complete line within `timeout` is disconnected, as by
HAProxy's `stats timeout` (10s by default): a stuck script must not hold a
connection forever.
"""

from __future__ import annotations

import asyncio
import contextlib
import grp
import os
import pwd
import socket

from loadstone.admin import remove_stale_socket
from loadstone.config.model import HaproxySocket
from loadstone.haproxy_socket.cli import Session
from loadstone.runtime_view import RuntimeView

READ_SIZE = 4096


class HaproxySocketError(Exception):
    """The socket cannot be served; the message starts with the YAML path."""


def _user_id(name: str | None) -> int:
    """-1 (unchanged) for None; KeyError with a message for an unknown user."""
    if name is None:
        return -1
    try:
        return pwd.getpwnam(name).pw_uid
    except KeyError:
        raise KeyError(f"user: no user named {name!r}") from None


def _group_id(name: str | None) -> int:
    if name is None:
        return -1
    try:
        return grp.getgrnam(name).gr_gid
    except KeyError:
        raise KeyError(f"group: no group named {name!r}") from None


class HaproxySocketServer:
    def __init__(self, runtime: RuntimeView, config: HaproxySocket) -> None:
        self.runtime = runtime
        self.config = config
        self.servers: list[asyncio.Server] = []
        self.clients: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        path, bind = self.config.path, self.config.bind
        try:
            if path is not None:
                try:
                    remove_stale_socket(path)
                    # Created with no access at all, then given `mode`: nobody can
                    # connect in between with the umask's permissions.
                    old_umask = os.umask(0o777)
                    try:
                        server = await asyncio.start_unix_server(self._client, path)
                    finally:
                        os.umask(old_umask)
                    self.servers.append(server)
                    os.chown(path, _user_id(self.config.user), _group_id(self.config.group))
                    os.chmod(path, int(self.config.mode, 8))
                except KeyError as exc:
                    raise HaproxySocketError(
                        f"global.admin.haproxy_socket: {exc.args[0]}"
                    ) from None
                except OSError as exc:
                    raise HaproxySocketError(
                        f"global.admin.haproxy_socket.path: cannot bind {path}: "
                        f"{(os.strerror(exc.errno) if exc.errno else str(exc)).lower()}"
                    ) from None
            if bind is not None:
                try:
                    server = await asyncio.start_server(self._client, bind.host, bind.port)
                except OSError as exc:
                    raise HaproxySocketError(
                        f"global.admin.haproxy_socket.bind: cannot bind {bind}: "
                        f"{(os.strerror(exc.errno) if exc.errno else str(exc)).lower()}"
                    ) from None
                self.servers.append(server)
        except HaproxySocketError:
            await self.stop()
            raise

    async def stop(self) -> None:
        for server in self.servers:
            server.close()
        for task in list(self.clients):
            task.cancel()
        for server in self.servers:
            with contextlib.suppress(Exception):
                await server.wait_closed()
        self.servers.clear()
        if self.config.path is not None:
            with contextlib.suppress(OSError):
                os.unlink(self.config.path)

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self.clients.add(task)
        session = Session(
            self.runtime,
            self.config.level,
            pid=os.getpid(),
            node=socket.gethostname(),
            timeout=self.config.timeout,
        )
        try:
            while not session.closed:
                try:
                    async with asyncio.timeout(session.timeout):
                        data = await reader.read(READ_SIZE)
                except TimeoutError:
                    break  # HAProxy closes an idle CLI connection without a word
                out = session.receive(data) if data else session.end_of_input()
                if out:
                    writer.write(out)
                    await writer.drain()
                if not data:
                    break
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            self.clients.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()
