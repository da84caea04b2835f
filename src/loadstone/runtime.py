"""The running proxy: builds pools, frontends, checks and the admin server from a
validated configuration, and owns their lifecycle and the process signals.

Start-up order matters: everything that can fail on bad input (names that do not
resolve, addresses already in use) is done before anything starts serving, so a
failed start leaves nothing bound and nothing half-running.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
import time
from dataclasses import dataclass, field

from loadstone.config.model import Config, ListenerConfig
from loadstone.datapath import TcpFrontend
from loadstone.listeners.binding import BindError, bind_listener
from loadstone.server import Pool
from loadstone.sessionlog import SessionLog

log = logging.getLogger("loadstone.runtime")


class StartError(Exception):
    """The proxy cannot start; the message is one line per problem."""


@dataclass
class ListenerRuntime:
    config: ListenerConfig
    pool: Pool
    frontend: TcpFrontend
    sockets: list[socket.socket] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.config.name


def resolve_servers(config: Config) -> dict[tuple[str, str], str]:
    """Resolve every server name once, at start-up, so a connection costs no lookup.

    Returns {(listener, server): ip}. An unresolvable name is a start-up error,
    as in HAProxy without `init-addr none`: a typo must not start a proxy that
    silently never reaches that server. Later failures are the checks' business.
    """
    resolved: dict[tuple[str, str], str] = {}
    problems = []
    for listener in config.listeners:
        for i, server in enumerate(listener.servers):
            host = server.address.host
            try:
                socket.inet_pton(socket.AF_INET6 if ":" in host else socket.AF_INET, host)
                continue  # already an address
            except OSError:
                pass
            try:
                info = socket.getaddrinfo(host, server.address.port, type=socket.SOCK_STREAM)
            except socket.gaierror as exc:
                problems.append(
                    f"listeners.{listener.name}.servers[{i}].address: "
                    f"cannot resolve {host!r}: {exc.strerror}"
                )
                continue
            resolved[(listener.name, server.name)] = str(info[0][4][0])
    if problems:
        raise StartError("\n".join(problems))
    return resolved


class Runtime:
    def __init__(self, config: Config, log_format: str | None = None) -> None:
        self.config = config
        self.sessionlog = SessionLog(
            log_format or config.global_.log_format  # type: ignore[arg-type]
        )
        self.listeners: dict[str, ListenerRuntime] = {}
        self.checks: object | None = None
        self.admin: object | None = None
        self.started_at = time.time()
        self.stopping = False
        self._stop_requested: asyncio.Event | None = None

    # -- lifecycle -----------------------------------------------------------------

    async def start(self) -> None:
        for listener in self.config.listeners:
            if listener.mode != "tcp":
                raise StartError(
                    f"listeners.{listener.name}.mode: mode {listener.mode!r} "
                    "is not available in this version (use tcp)"
                )
        resolved = resolve_servers(self.config)
        bound: dict[str, list[socket.socket]] = {}
        try:
            for listener in self.config.listeners:
                bound[listener.name] = bind_listener(listener)
        except BindError as exc:
            for socks in bound.values():
                for sock in socks:
                    sock.close()
            raise StartError(str(exc)) from None

        for listener in self.config.listeners:
            pool = Pool(listener)
            for server in pool.servers:
                server.connect_host = resolved.get(
                    (listener.name, server.name), server.address.host
                )
            frontend = TcpFrontend(listener, pool, self.sessionlog)
            self.listeners[listener.name] = ListenerRuntime(
                listener, pool, frontend, bound[listener.name]
            )

        from loadstone.checks.scheduler import CheckScheduler

        scheduler = CheckScheduler([lr.pool for lr in self.listeners.values()])
        self.checks = scheduler
        scheduler.start()

        if self.config.global_.admin.bind is not None:
            from loadstone.admin import AdminServer

            admin = AdminServer(self, self.config.global_.admin)
            try:
                await admin.start()
            except OSError as exc:
                for lr in self.listeners.values():
                    for sock in lr.sockets:
                        sock.close()
                await scheduler.stop()
                raise StartError(
                    f"global.admin.bind: cannot bind {self.config.global_.admin.bind}: "
                    f"{exc.strerror or exc}"
                ) from None
            self.admin = admin

        for lr in self.listeners.values():
            await lr.frontend.start(lr.sockets)
        for lr in self.listeners.values():
            log.info(
                "listener %s on %s (%s, %s, %d servers)",
                lr.name,
                ", ".join(str(a) for a in lr.config.bind),
                lr.config.mode,
                lr.config.balance,
                len(lr.pool.servers),
            )

    async def serve(self) -> None:
        """Run until SIGTERM/SIGINT, then stop gracefully."""
        loop = asyncio.get_running_loop()
        self._stop_requested = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.request_stop)
        loop.add_signal_handler(signal.SIGHUP, self._on_sighup)
        try:
            await self._stop_requested.wait()
        finally:
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                loop.remove_signal_handler(sig)
        await self.stop(self.config.global_.grace)

    def request_stop(self) -> None:
        if self._stop_requested is not None:
            self._stop_requested.set()

    def _on_sighup(self) -> None:
        log.warning("SIGHUP: configuration reload is not available in this version; ignored")

    async def stop(self, grace: float) -> None:
        """Stop accepting, let sessions finish for `grace` seconds, close the rest."""
        if self.stopping:
            return
        self.stopping = True
        frontends = [lr.frontend for lr in self.listeners.values()]
        for frontend in frontends:
            frontend.stop_accepting()
        remaining = sum(f.current_sessions for f in frontends)
        if remaining:
            log.info("stopping: waiting up to %.1fs for %d session(s)", grace, remaining)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(grace):
                    await asyncio.gather(*(f.wait_idle() for f in frontends))
        for frontend in frontends:
            frontend.shutdown_all("proxy stopping")
        if self.checks is not None:
            await self.checks.stop()  # type: ignore[attr-defined]
        if self.admin is not None:
            await self.admin.stop()  # type: ignore[attr-defined]
        self.sessionlog.flush()
        log.info("stopped")
