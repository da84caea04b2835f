"""What TLS needs from files, loaded all at once for a configuration: `loadstone
check`, the start and every reload (SIGHUP) call `prepare`, which reads every
certificate, key and CA file the configuration names and either keeps all of it
or raises `TlsError` naming the YAML path and the file, changing nothing.

The frontends and the checks then take their contexts from here by listener
name (`termination`, `server_context`): a reload that reads the same
configuration again reloads the files, and a listener's existing `Termination`
gets the new certificates (`Termination.swap`) so that its session cache and
ticket keys carry over.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from dataclasses import dataclass, field

from loadstone.config.model import Config, ListenerConfig, ServerConfig, ServerTls
from loadstone.tls.certificates import Certificate, TlsError
from loadstone.tls.termination import Certificates, Termination, load_certificates
from loadstone.tls.upstream import client_context

log = logging.getLogger("loadstone.tls")


@dataclass
class _Loaded:
    certificates: dict[str, Certificates] = field(default_factory=dict)  # by listener
    clients: dict[tuple[str, str], ssl.SSLContext] = field(default_factory=dict)


_loaded = _Loaded()
_terminations: dict[str, Termination] = {}  # by listener name, kept across reloads


def server_tls(listener: ListenerConfig, server: ServerConfig) -> ServerTls | None:
    """The TLS settings of connections to `server`: its own, else the listener's."""
    return server.tls if server.tls is not None else listener.server_tls


def load(config: Config) -> tuple[_Loaded, list[str]]:
    """Read every file; return what was loaded and the expiry warnings."""
    loaded = _Loaded()
    warnings: list[str] = []
    for listener in config.listeners:
        where = f"listeners.{listener.name}"
        if listener.tls is not None:
            certs = load_certificates(listener.tls, listener.mode, f"{where}.tls")
            loaded.certificates[listener.name] = certs
            warnings += [w for c in certs.certificates if (w := c.expiry_problem())]
        for i, server in enumerate(listener.servers):
            settings = server_tls(listener, server)
            if settings is None:
                continue
            at = f"{where}.servers[{i}].tls" if server.tls is not None else f"{where}.server_tls"
            loaded.clients[(listener.name, server.name)] = client_context(settings, at)
    return loaded, warnings


def check(config: Config) -> list[str]:
    """`loadstone check`: the warnings; TlsError for a file that cannot be used."""
    return load(config)[1]


def prepare(config: Config) -> None:
    """Load every file for `config` and make it current (start); on TlsError
    nothing changes."""
    commit(*load(config))


def commit(loaded: _Loaded, warnings: list[str]) -> None:
    """Make what `load` read current (a reload, once nothing else can fail)."""
    global _loaded
    for line in warnings:
        log.warning("%s", line)
    _loaded = loaded
    for name in list(_terminations):
        if name not in loaded.certificates:
            del _terminations[name]
    for name, certs in loaded.certificates.items():
        existing = _terminations.get(name)
        if existing is not None:
            existing.swap(certs)


def termination(listener: ListenerConfig) -> Termination | None:
    """The listener's TLS termination (None without `tls`), made on first use and
    kept while its settings stay the same."""
    if listener.tls is None:
        return None
    certs = listener_certificates(listener)
    existing = _terminations.get(listener.name)
    if existing is not None and existing.config == listener.tls:
        existing.swap(certs)
    else:
        existing = Termination(listener.tls, listener.mode, certs, f"listeners.{listener.name}.tls")
        _terminations[listener.name] = existing
    # asyncio wants a positive bound; a timeout of 0 (none) keeps its own 30 s
    existing.close_timeout = listener.timeouts.client or None
    return existing


def listener_certificates(listener: ListenerConfig) -> Certificates:
    """The certificates of a listener with `tls`, as loaded (and checked) for the
    current configuration; loaded now for a frontend made directly, as tests do."""
    assert listener.tls is not None
    certs = _loaded.certificates.get(listener.name)
    if certs is None:
        certs = load_certificates(listener.tls, listener.mode, f"listeners.{listener.name}.tls")
        _loaded.certificates[listener.name] = certs
    return certs


def server_context(listener: ListenerConfig, server: ServerConfig) -> ssl.SSLContext | None:
    """The client context for connections (and TLS checks) to `server`, or None."""
    settings = server_tls(listener, server)
    if settings is None:
        return None
    key = (listener.name, server.name)
    ctx = _loaded.clients.get(key)
    if ctx is None:
        ctx = client_context(settings, f"listeners.{listener.name}.servers.{server.name}.tls")
        _loaded.clients[key] = ctx
    return ctx


async def watch_expiry(every: float = 86400.0) -> None:
    """Warn once a day of certificates in use that expire within 30 days (or have
    expired), for a process that runs longer than that without a reload; the
    start and every reload warn at once."""
    while True:
        await asyncio.sleep(every)
        for _listener, cert in certificates():
            problem = cert.expiry_problem()
            if problem is not None:
                log.warning("%s", problem)


def certificates() -> list[tuple[str, Certificate]]:
    """Every listener certificate in use, with its listener (status, metrics)."""
    return [(name, c) for name, certs in _loaded.certificates.items() for c in certs.certificates]


__all__ = [
    "TlsError",
    "certificates",
    "check",
    "commit",
    "listener_certificates",
    "load",
    "prepare",
    "server_context",
    "termination",
]
