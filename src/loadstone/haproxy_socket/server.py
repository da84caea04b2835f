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


def _owner_ids(user: str | None, group: str | None) -> tuple[int, int]:
    """(uid, gid) for os.chown, -1 where unchanged; KeyError(message) for an unknown name."""
    try:
        uid = -1 if user is None else pwd.getpwnam(user).pw_uid
    except KeyError:
        raise KeyError(f"user: no user named {user!r}") from None
    try:
        gid = -1 if group is None else grp.getgrnam(group).gr_gid
    except KeyError:
        raise KeyError(f"group: no group named {group!r}") from None
    return uid, gid


def _bind_unix(path: str) -> socket.socket:
    """A unix socket bound with no permission at all, so that nobody connects
    before it has its owner and mode (bind(2) applies the umask; set only
    around this synchronous call, as it is the process's)."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old_umask = os.umask(0o777)
    try:
        sock.bind(path)
    except OSError:
        sock.close()
        raise
    finally:
        os.umask(old_umask)
    return sock


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
                    sock = _bind_unix(path)
                    self.servers.append(await asyncio.start_unix_server(self._client, sock=sock))
                    os.chown(path, *_owner_ids(self.config.user, self.config.group))
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
