"""The running proxy: builds pools, frontends, checks and the admin server from a
validated configuration, and owns their lifecycle, the process signals and reload.

Start-up order matters: everything that can fail on bad input (names that do not
resolve, addresses already in use) is done before anything starts serving, so a
failed start leaves nothing bound and nothing half-running.

Reload (SIGHUP, or POST /api/v1/reload) follows the same rule: the new file is
validated, its names resolved and its new addresses bound before anything
changes; any failure leaves the running configuration untouched and is
reported in the status API. Then, per listener:
- listening sockets whose address stays are kept open (no refused connection);
- servers that stay (same name and address) keep their health, admin state,
  runtime weight, counters and sessions; an active-backup pool keeps its active
  server; new servers start unconfirmed with a check; removed servers take no
  new sessions and their open ones run to their end;
- established sessions are never touched.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
import time
from dataclasses import dataclass, field, replace
from typing import Any

from loadstone import systemd
from loadstone.admin import AdminBindError, AdminServer
from loadstone.anycast.manager import AnycastManager
from loadstone.checks.scheduler import CheckScheduler
from loadstone.config import ConfigError, load_config
from loadstone.config.model import Address, AnycastVip, Config, GlobalConfig, ListenerConfig
from loadstone.datapath import DataPathError, http_frontend, monitor, tcp_frontend
from loadstone.datapath import configure as configure_datapath
from loadstone.datapath import retune as retune_datapath
from loadstone.datapath.seam import Frontend
from loadstone.haproxy_socket.server import HaproxySocketError, HaproxySocketServer
from loadstone.listeners.binding import BindError, bind_address, set_defer_accept
from loadstone.logtargets.outputs import LogOutputs
from loadstone.peers.channel import PeerChannel
from loadstone.server import Pool
from loadstone.sessionlog import SessionLog
from loadstone.tls import material as tls_material
from loadstone.tls.certificates import TlsError

log = logging.getLogger("loadstone.runtime")


class StartError(Exception):
    """The proxy cannot start; the message is one line per problem."""


@dataclass
class ListenerRuntime:
    config: ListenerConfig
    pool: Pool
    frontend: Frontend  # one of the four: tcp|http x pure|native (datapath.seam)
    sockets: dict[Address, socket.socket] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.config.name


@dataclass
class ReloadReport:
    generation: int = 0  # configurations loaded since start; 0 = the first one
    time: float | None = None
    ok: bool = True
    errors: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "generation": self.generation,
            "time": self.time,
            "ok": self.ok,
            "errors": self.errors,
        }


def resolve_servers(config: Config) -> dict[tuple[str, str], str]:
    """Resolve every server name once, so a connection costs no lookup.

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


def read_token(path: str | None) -> str | None:
    if path is None:
        return None
    try:
        with open(systemd.credential_path(path)) as f:
            token = f.read().strip()
    except OSError as exc:
        raise StartError(f"global.admin.token_file: cannot read {path}: {exc.strerror}") from None
    if not token:
        raise StartError(f"global.admin.token_file: {path} is empty")
    return token


def read_peers_key(config: GlobalConfig) -> bytes | None:
    """The peers' shared key (global.peers.key_file), read before anything binds."""
    if config.peers is None:
        return None
    path = config.peers.key_file
    try:
        with open(systemd.credential_path(path), "rb") as f:
            key = f.read().strip()
    except OSError as exc:
        raise StartError(f"global.peers.key_file: cannot read {path}: {exc.strerror}") from None
    if len(key) < 16:
        raise StartError(f"global.peers.key_file: {path}: the key needs 16 bytes or more")
    return key


def _restart_only_changes(
    running: GlobalConfig, new: GlobalConfig
) -> list[tuple[str, object, object]]:
    """Global settings a reload cannot apply: the admin socket is bound once, and the
    native engine's worker threads and relay mode are fixed when it starts. Each is
    (YAML path, value kept, value asked for)."""
    restart_only = (
        ("global.admin.bind", running.admin.bind, new.admin.bind),
        ("global.admin.socket", running.admin.socket, new.admin.socket),
        (
            "global.admin.haproxy_socket",
            running.admin.haproxy_socket,
            new.admin.haproxy_socket,
        ),
        ("global.workers", running.workers, new.workers),
        ("global.splice", running.splice, new.splice),
        ("global.io_uring", running.io_uring, new.io_uring),
        ("global.log", running.log, new.log),
        ("global.peers", running.peers, new.peers),
        ("global.anycast", running.anycast, new.anycast),
    )
    return [change for change in restart_only if change[1] != change[2]]


def _keep_restart_only(running: GlobalConfig, config: Config) -> Config:
    """`config` with the running values of the restart-only settings, so that what
    the process reports (and the next reload compares with) is what it runs."""
    kept = replace(
        config.global_,
        admin=replace(
            config.global_.admin,
            bind=running.admin.bind,
            socket=running.admin.socket,
            haproxy_socket=running.admin.haproxy_socket,
        ),
        workers=running.workers,
        splice=running.splice,
        io_uring=running.io_uring,
        log=running.log,
        peers=running.peers,
        anycast=running.anycast,
    )
    return replace(config, global_=kept)


class Runtime:
    def __init__(
        self,
        config: Config,
        log_format: str | None = None,
        config_path: str | None = None,
        log_outputs: LogOutputs | None = None,
    ) -> None:
        self.config = config
        self.config_path = config_path
        self.log_outputs = log_outputs  # None: sessions to stdout, events as set up
        if log_outputs is not None:
            self.sessionlog = SessionLog(log_outputs.sessions_format, sink=log_outputs.sessions)
        else:
            self.sessionlog = SessionLog(
                log_format or config.global_.log_format  # type: ignore[arg-type]
            )
        self.listeners: dict[str, ListenerRuntime] = {}
        self.retired: list[Frontend] = []  # of removed listeners or switched paths, draining
        self.checks: CheckScheduler | None = None
        self.admin: AdminServer | None = None
        self.haproxy_socket: HaproxySocketServer | None = None
        self.admin_token: str | None = None
        self.reload_report = ReloadReport()
        self.started_at = time.time()
        self.stopping = False
        self.leaving = False  # SIGTERM came: health fails for global.stop_delay first
        self.vrrp: dict[str, Any] = {}  # keepalived's notify hook: {instance: {state, since}}
        self.peers: PeerChannel | None = None  # global.peers: writer agreement
        self.anycast: AnycastManager | None = None  # global.anycast: BGP announcements
        self._stop_requested: asyncio.Event | None = None
        self._reload_lock = asyncio.Lock()

    # -- building --------------------------------------------------------------------

    # -- mode dispatch: which frontend serves a listener ------------------------------

    @staticmethod
    def _check_modes(config: Config) -> None:
        for listener in config.listeners:
            if listener.mode not in ("tcp", "http"):
                raise StartError(
                    f"listeners.{listener.name}.mode: mode {listener.mode!r} "
                    "is not available in this version (use tcp or http)"
                )

    def _check_mode_changes(self, config: Config) -> None:
        """A running listener keeps its mode: its frontend holds the sockets."""
        for listener in config.listeners:
            running = self.listeners.get(listener.name)
            if running is not None and running.config.mode != listener.mode:
                raise StartError(
                    f"listeners.{listener.name}.mode: changing the mode of a running "
                    f"listener ({running.config.mode} -> {listener.mode}) needs a restart"
                )

    @staticmethod
    def _new_frontend(listener: ListenerConfig, pool: Pool, sessionlog: SessionLog) -> Frontend:
        if listener.mode == "http":
            cls, path, why = http_frontend(listener)
            log.info("listener %s: %s HTTP path%s", listener.name, path, f" ({why})" if why else "")
            frontend = cls(listener, pool, sessionlog)
            if why is not None:
                frontend.data_path_reason = why
            return frontend
        cls, path, why = tcp_frontend(listener)
        if why is not None:
            log.info("listener %s: %s tcp path (%s)", listener.name, path, why)
        frontend = cls(listener, pool, sessionlog)
        if why is not None:
            frontend.data_path_reason = why
        return frontend

    @staticmethod
    def _http_path_changes(lr: ListenerRuntime, listener: ListenerConfig) -> bool:
        """Does a reload move this listener to the other path (http: its features;
        tcp: TLS added or removed)?"""
        if listener.mode != "http":
            return tcp_frontend(listener)[1] != lr.frontend.data_path
        return http_frontend(listener)[1] != lr.frontend.data_path

    async def _switch_frontend(self, lr: ListenerRuntime, listener: ListenerConfig) -> None:
        """Serve a kept listener's sockets by a new frontend of the other HTTP path;
        the old one serves the connections it has (keep-alive ones included, as a
        reload keeps established connections) until they end. The listening
        sockets are duplicated first, so no connection waiting in the backlog is
        lost."""
        old = lr.frontend
        kept = {a: sock.dup() for a, sock in lr.sockets.items()}
        for sock in lr.sockets.values():
            old.unserve(sock)
        self.retired.append(old)
        lr.sockets = kept
        for server in lr.pool.servers:
            server.native = None  # counters: the new frontend's (native sets it again)
        lr.frontend = self._new_frontend(listener, lr.pool, self.sessionlog)
        await lr.frontend.start(list(kept.values()))

    def _bind_new(self, config: Config) -> dict[str, dict[Address, socket.socket]]:
        """Bind every address of `config` not already bound; all or nothing."""
        bound: dict[str, dict[Address, socket.socket]] = {}
        try:
            for listener in config.listeners:
                socks: dict[Address, socket.socket] = {}
                bound[listener.name] = socks
                running = self.listeners.get(listener.name)
                held = running.sockets if running is not None else {}
                for i, address in enumerate(listener.bind):
                    if address in held:
                        continue
                    try:
                        socks[address] = bind_address(address, listener)
                    except BindError as exc:
                        raise StartError(f"listeners.{listener.name}.bind[{i}]: {exc}") from None
        except StartError:
            for socks in bound.values():
                for sock in socks.values():
                    sock.close()
            raise
        return bound

    def _build_pools(self, config: Config, resolved: dict[tuple[str, str], str]) -> dict[str, Pool]:
        pools = {}
        for listener in config.listeners:
            old = self.listeners.get(listener.name)
            pool = Pool(listener, previous=old.pool if old is not None else None)
            for server in pool.servers:
                key = (listener.name, server.name)
                server.connect_host = resolved.get(key, server.address.host)
            pools[listener.name] = pool
        return pools

    # -- lifecycle -------------------------------------------------------------------

    async def start(self) -> None:
        self._check_modes(self.config)
        resolved = resolve_servers(self.config)
        self.admin_token = read_token(self.config.global_.admin.token_file)
        peers_key = read_peers_key(self.config.global_)
        bound = self._bind_new(self.config)
        try:
            tls_material.prepare(self.config)
            pools = self._build_pools(self.config, resolved)
            scheduler = CheckScheduler(pools.values())
            configure_datapath(self.config.global_)
        except (NotImplementedError, ValueError, DataPathError, TlsError) as exc:
            for socks in bound.values():
                for sock in socks.values():
                    sock.close()
            raise StartError(str(exc)) from None
        for listener in self.config.listeners:
            frontend = self._new_frontend(listener, pools[listener.name], self.sessionlog)
            self.listeners[listener.name] = ListenerRuntime(
                listener, pools[listener.name], frontend, bound[listener.name]
            )
        self.checks = scheduler
        scheduler.start()
        try:
            await self._start_peers(peers_key)
        except StartError:
            for lr in self.listeners.values():
                for sock in lr.sockets.values():
                    sock.close()
            await scheduler.stop()
            raise

        try:
            await self._start_admin()
        except (AdminBindError, HaproxySocketError) as exc:
            for lr in self.listeners.values():
                for sock in lr.sockets.values():
                    sock.close()
            await scheduler.stop()
            if self.admin is not None:
                await self.admin.stop()
            raise StartError(str(exc)) from None

        for lr in self.listeners.values():
            await lr.frontend.start(list(lr.sockets.values()))
            self._log_listener(lr)
        if self.config.global_.anycast is not None:
            # Last: a VIP is announced only once its listeners serve.
            self.anycast = AnycastManager(self.config.global_.anycast, self.vip_problems)
            await self.anycast.start()
        systemd.notify("READY=1", f"STATUS=serving {len(self.listeners)} listener(s)")

    async def _start_admin(self) -> None:
        """The admin server and HAProxy's runtime socket, those configured."""
        admin_config = self.config.global_.admin
        if admin_config.bind is not None or admin_config.socket is not None:
            admin = AdminServer(self, admin_config)
            await admin.start()
            self.admin = admin
        if admin_config.haproxy_socket is not None:
            haproxy_socket = HaproxySocketServer(self, admin_config.haproxy_socket)
            await haproxy_socket.start()
            self.haproxy_socket = haproxy_socket

    @staticmethod
    def _log_listener(lr: ListenerRuntime) -> None:
        log.info(
            "listener %s on %s (%s, %s, %d servers)",
            lr.name,
            ", ".join(str(a) for a in lr.config.bind),
            lr.config.mode,
            lr.config.balance,
            len(lr.pool.servers),
        )

    async def serve(self) -> None:
        """Run until SIGTERM/SIGINT, then stop gracefully. SIGHUP reloads,
        SIGUSR1 reopens the log files (logrotate's postrotate)."""
        loop = asyncio.get_running_loop()
        self._stop_requested = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.request_stop)
        loop.add_signal_handler(signal.SIGHUP, self._on_sighup)
        loop.add_signal_handler(signal.SIGUSR1, self._on_sigusr1)
        watchdog = systemd.start_watchdog(loop)
        expiry = loop.create_task(tls_material.watch_expiry())
        try:
            await self._stop_requested.wait()
        finally:
            expiry.cancel()
            if watchdog is not None:
                watchdog.cancel()
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR1):
                loop.remove_signal_handler(sig)
        await self.leave(self.config.global_.stop_delay)
        await self.stop(self.config.global_.grace)

    async def leave(self, delay: float) -> None:
        """The first step of a planned stop in an HA pair: keep serving while the
        health check fails, so keepalived moves the VIP to a peer before the
        drain closes anything (docs/high-availability.md). The wait is the
        configured time itself: nothing here can tell when the VIP has left.
        Anycast VIPs are withdrawn first (docs/anycast.md)."""
        if self.anycast is not None:
            await self.anycast.withdraw_all()
        if delay <= 0:
            return
        self.leaving = True
        monitor.ProcessState.leaving = True  # listeners' monitor paths answer down too
        log.info("stopping: failing the health check for %.1fs before draining", delay)
        # Keep-alive clients would go on sending to this host over their open
        # connections, and lose a request when the drain closes one: each
        # response now ends its connection, the next opens to the VIP's holder.
        for frontend in self.all_frontends():
            frontend.end_keep_alive()
        await asyncio.sleep(delay)

    async def _start_peers(self, key: bytes | None) -> None:
        peers = self.config.global_.peers
        if peers is None or key is None:
            return
        channel = PeerChannel(
            peers, key, lambda: {n: lr.pool for n, lr in self.listeners.items()}, self.holds_vip
        )
        try:
            await channel.start()
        except OSError as exc:
            raise StartError(
                f"global.peers.bind: cannot bind {peers.bind}: {exc.strerror}"
            ) from None
        self.peers = channel

    def vip_problems(self, vip: AnycastVip) -> list[str]:
        """Why this instance should not announce `vip` now (global.anycast);
        empty while it serves each of the VIP's listeners."""
        problems = []
        if self.stopping or self.leaving:
            problems.append("stopping")
        if not self.reload_report.ok:
            problems.append("last reload rejected")
        for name in vip.listeners:
            lr = self.listeners.get(name)
            if lr is None or not lr.sockets or any(s.fileno() < 0 for s in lr.sockets.values()):
                problems.append(f"listener {name}: not listening")
            elif not any(server.state == "up" for server in lr.pool.servers):
                problems.append(f"listener {name}: no server up")
        return problems

    def anycast_status(self) -> dict[str, Any] | None:
        return self.anycast.status() if self.anycast is not None else None

    def holds_vip(self) -> bool:
        return any(v["state"] == "MASTER" for v in self.vrrp.values())

    def peers_status(self) -> dict[str, Any] | None:
        return self.peers.status() if self.peers is not None else None

    def vrrp_transition(self, instance: str, state: str) -> None:
        log.info("vrrp: instance %s is %s on this host", instance, state)
        self.vrrp[instance] = {"state": state, "since": time.time()}
        if state == "MASTER" and self.peers is not None:
            self.peers.agree()  # taking the VIP: start with the peers' writer

    def health_problems(self) -> list[str]:
        """Why this instance should not hold the VIP now (`loadstone ctl health`,
        keepalived's vrrp_script); empty while it serves every listener and its
        last configuration load was accepted."""
        problems = []
        if self.stopping or self.leaving:
            problems.append("stopping")
        if not self.reload_report.ok:
            problems.append("last reload rejected: " + "; ".join(self.reload_report.errors))
        for lr in self.listeners.values():
            if not lr.sockets or any(sock.fileno() < 0 for sock in lr.sockets.values()):
                problems.append(f"listener {lr.name}: not listening")
        return problems

    def request_stop(self) -> None:
        if self._stop_requested is not None:
            self._stop_requested.set()

    def _on_sighup(self) -> None:
        task = asyncio.get_running_loop().create_task(self.reload())
        task.add_done_callback(lambda t: t.exception() if not t.cancelled() else None)

    def _on_sigusr1(self) -> None:
        task = asyncio.get_running_loop().create_task(self.reopen_logs())
        task.add_done_callback(lambda t: t.exception() if not t.cancelled() else None)

    async def reopen_logs(self) -> list[str]:
        """Reopen the log files; the errors of those that kept the old file."""
        if self.log_outputs is None:
            return []
        errors = await self.log_outputs.reopen()
        if not errors:
            log.info("log files reopened")
        return errors

    def log_status(self) -> dict[str, Any] | None:
        """Lines written and dropped per log destination."""
        return self.log_outputs.status() if self.log_outputs is not None else None

    # -- reload ----------------------------------------------------------------------

    async def reload(self) -> ReloadReport:
        """Load the configuration file again and apply it, or change nothing."""
        async with self._reload_lock:
            systemd.notify("RELOADING=1", systemd.monotonic_usec())
            try:
                report = await self._reload()
            finally:
                systemd.notify("READY=1")
            if self.log_outputs is not None:
                # What the reload logged (a rejection's reasons) is out before it
                # is answered: `systemctl reload` returns after the journal has it.
                await self.log_outputs.events_delivered(timeout=1.0)
            return report

    async def _reload(self) -> ReloadReport:
        report = ReloadReport(self.reload_report.generation, time.time())
        if self.config_path is None:
            return self._reload_failed(report, ["no configuration file to reload from"])
        try:
            config = load_config(self.config_path)
            self._check_modes(config)
            self._check_mode_changes(config)
            resolved = resolve_servers(config)
            token = read_token(config.global_.admin.token_file)
            tls_loaded = tls_material.load(config)  # every file, or the reload fails
        except ConfigError as err:
            return self._reload_failed(report, err.problems)
        except TlsError as err:
            return self._reload_failed(report, [str(err)])
        except StartError as err:
            return self._reload_failed(report, str(err).splitlines())
        for key, kept_value, new_value in _restart_only_changes(
            self.config.global_, config.global_
        ):
            log.warning(
                "reload: %s changes only at restart; keeping %s (not %s)",
                key,
                kept_value,
                new_value,
            )
        config = _keep_restart_only(self.config.global_, config)
        try:
            bound = self._bind_new(config)
        except StartError as err:
            return self._reload_failed(report, str(err).splitlines())
        try:
            pools = self._build_pools(config, resolved)
            scheduler = CheckScheduler(pools.values())
        except (NotImplementedError, ValueError) as exc:
            for socks in bound.values():
                for sock in socks.values():
                    sock.close()
            return self._reload_failed(report, [str(exc)])

        # Nothing can fail past this point: switch over.
        tls_material.commit(*tls_loaded)
        retune_datapath(config.global_)  # global.maxconn, global.poll_spin
        old_checks = self.checks
        old_listeners = self.listeners
        self.listeners = {}
        for listener in config.listeners:
            pool = pools[listener.name]
            kept = old_listeners.pop(listener.name, None)
            if kept is None:
                lr = ListenerRuntime(
                    listener,
                    pool,
                    self._new_frontend(listener, pool, self.sessionlog),
                    bound[listener.name],
                )
                await lr.frontend.start(list(lr.sockets.values()))
                self._log_listener(lr)
            else:
                lr = kept
                wanted = set(listener.bind)
                for address in [a for a in lr.sockets if a not in wanted]:
                    lr.frontend.unserve(lr.sockets.pop(address))
                lr.config = listener
                lr.pool = pool
                for sock in lr.sockets.values():
                    set_defer_accept(sock, listener)  # the kept sockets follow the reload
                if self._http_path_changes(lr, listener):
                    await self._switch_frontend(lr, listener)
                else:
                    lr.frontend.reconfigure(listener, pool)
                new = bound[listener.name]
                lr.sockets.update(new)
                if new:
                    await lr.frontend.start(list(new.values()))
            self.listeners[listener.name] = lr
        for gone in old_listeners.values():
            log.info("reload: listener %s removed; its sessions run to their end", gone.name)
            gone.frontend.stop_accepting()
            self.retired.append(gone.frontend)
        self.checks = scheduler
        if old_checks is not None:
            await old_checks.stop()
        scheduler.start()
        self.config = config
        self.admin_token = token
        report.generation += 1
        self.reload_report = report
        log.info(
            "reload: configuration generation %d applied (%d listeners)",
            report.generation,
            len(self.listeners),
        )
        return report

    def _reload_failed(self, report: ReloadReport, errors: list[str]) -> ReloadReport:
        report.ok = False
        report.errors = errors
        for line in errors:
            log.error("reload rejected: %s", line)
        log.error("reload rejected: the running configuration is unchanged")
        self.reload_report = report
        return report

    # -- stop ------------------------------------------------------------------------

    def all_frontends(self) -> list[Frontend]:
        return [lr.frontend for lr in self.listeners.values()] + self.retired

    async def stop(self, grace: float) -> None:
        """Stop accepting, let sessions finish for `grace` seconds, close the rest."""
        if self.stopping:
            return
        self.stopping = True
        systemd.notify("STOPPING=1")
        frontends = self.all_frontends()
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
            await self.checks.stop()
        if self.peers is not None:
            await self.peers.stop()
        if self.anycast is not None:
            await self.anycast.stop()
        if self.admin is not None:
            await self.admin.stop()
        if self.haproxy_socket is not None:
            await self.haproxy_socket.stop()
        self.sessionlog.flush()
        log.info("stopped")
