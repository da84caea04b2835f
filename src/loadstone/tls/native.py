"""TLS termination on the native data path: what the C engine is given.

The engine's workers run the handshakes and the records with OpenSSL
(src/_fastpath/engine/tls.c); this module turns a listener's `tls` settings and
the certificates `loadstone.tls.material` already read and checked into the
engine's configuration (`configure`), reads its counters back in the shape the
pure path's status shows (`status`), and owns the session-ticket keys.

Ticket keys are made here, one set per process: every worker and every TLS
listener of the engine encrypts with the newest and decrypts with the few
before it, so a client resumes on whichever worker accepts it. A new key
comes every `TICKET_ROTATION` seconds; the engine outlives a reload (SIGHUP),
and so do its keys, so resumption keeps working across one.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import os

from loadstone._fastpath import relay
from loadstone.config.model import ListenerConfig, ServerConfig
from loadstone.tls import material, upstream
from loadstone.tls.certificates import read_pem

# OpenSSL's TLS1_2_VERSION and TLS1_3_VERSION
log = logging.getLogger("loadstone.tls")

_VERSIONS = {"TLSv1.2": 0x0303, "TLSv1.3": 0x0304}
_VERIFY = {"none": 0, "optional": 1, "required": 2}

TICKET_ROTATION = 3600.0  # seconds between new ticket keys
TICKET_KEYS_KEPT = 3  # the newest encrypts; tickets under the two before still resume
_TICKET_KEY_BYTES = 80  # name (16), AES-256 key (32), HMAC-SHA256 key (32)


def alpn_wire(protocols: tuple[str, ...]) -> bytes:
    """ALPN protocol names in the wire format (each prefixed by its length)."""
    return b"".join(bytes([len(p)]) + p.encode("ascii") for p in protocols)


def configure(
    engine: relay.Engine, lid: int, listener: ListenerConfig, loop: asyncio.AbstractEventLoop
) -> None:
    """Give listener `lid` the TLS of `listener` (or none): new handshakes use it,
    sessions already open keep theirs. Raises ValueError with OpenSSL's reason if
    the engine refuses the material (it was checked already, so this is rare)."""
    tls = listener.tls
    if tls is None:
        engine.clear_tls(lid)
        return
    certs = material.listener_certificates(listener)
    where = f"listeners.{listener.name}.tls"
    pems: list[tuple[bytes, bytes]] = []
    names: list[tuple[str, int]] = []
    for i, cert in enumerate(certs.certificates):
        chain = read_pem(cert.cert_path, cert.where, "certificate")
        same_file = cert.key_path == cert.cert_path
        key = chain if same_file else read_pem(cert.key_path, cert.where, "key")
        pems.append((chain, key))
        names += [(name, i) for name in cert.names]
    alpn = tls.alpn or (("http/1.1",) if listener.mode == "http" else ())
    try:
        engine.set_tls(
            lid,
            pems,
            names,
            alpn_wire(alpn),
            _VERSIONS[tls.min_version],
            tls.ciphers,
            tls.ciphersuites,
            tls.client_ca,
            _VERIFY[tls.verify_client],
            tls.handshake_timeout,
            listener.name,
        )
    except ValueError as exc:
        raise ValueError(f"{where}: {exc}") from None
    _tickets.install(engine, loop)


def configure_server(
    engine: relay.Engine, lid: int, slot: int, listener: ListenerConfig, server: ServerConfig
) -> None:
    """Give server `slot` of listener `lid` its TLS settings (or none): the
    engine's client context for them (engine/tls_upstream.c) from the settings
    `loadstone.tls.material` already checked, as the pure path's
    (`loadstone.tls.upstream.client_context`). Raises ValueError with OpenSSL's
    reason if the engine refuses them."""
    settings = material.server_tls(listener, server)
    if settings is None:
        engine.set_server_tls(lid, slot, None)
        return
    name = upstream.server_name(settings, server)
    try:
        ipaddress.ip_address(name or "")
        name_is_ip = True  # verified as an address, never sent as SNI
    except ValueError:
        name_is_ip = False
    client = None
    if settings.certificate is not None:
        where = f"listeners.{listener.name}.servers.{server.name}.tls"
        chain = read_pem(settings.certificate, where, "certificate")
        key_file = settings.key
        client = (chain, chain if key_file is None else read_pem(key_file, where, "key"))
    try:
        engine.set_server_tls(
            lid,
            slot,
            (
                settings.verify == "required",
                settings.ca_file,
                name,
                name_is_ip,
                alpn_wire(settings.alpn),
                client,
            ),
        )
    except ValueError as exc:
        raise ValueError(f"listeners.{listener.name}.servers.{server.name}.tls: {exc}") from None


def log_failure(client: str, reason: str) -> None:
    """A failed handshake's line, as loadstone.tls.termination writes it on the pure path."""
    log.info("TLS handshake from %s failed: %s", client, reason)


def status(engine: relay.Engine, lid: int, listener: ListenerConfig) -> dict[str, object]:
    """The listener's `tls` status, the pure path's shape (datapath.accept.tls_status)."""
    handshakes, resumed, failures = engine.tls_stats(lid)
    certs = material.listener_certificates(listener)
    return {
        "handshakes": handshakes,
        "resumed": resumed,
        "failures": failures,
        "certificates": [
            {
                "file": c.cert_path,
                "subject": c.subject,
                "names": list(c.names),
                "not_after": c.not_after,
            }
            for c in certs.certificates
        ],
    }


class _TicketKeys:
    """The process's session-ticket keys, newest first, and their rotation."""

    def __init__(self) -> None:
        self.keys: list[bytes] = []
        self.engine: relay.Engine | None = None
        self.timer: asyncio.TimerHandle | None = None

    def install(self, engine: relay.Engine, loop: asyncio.AbstractEventLoop) -> None:
        """Give `engine` the keys (once), and rotate them from `loop`."""
        if engine is self.engine:
            return
        self.engine = engine
        if not self.keys:
            self.keys = [os.urandom(_TICKET_KEY_BYTES)]
        engine.set_ticket_keys(b"".join(self.keys))
        if self.timer is not None:
            self.timer.cancel()  # a new engine (tests make several): its loop rotates
        self.timer = loop.call_later(TICKET_ROTATION, self.rotate, loop)

    def rotate(self, loop: asyncio.AbstractEventLoop) -> None:
        """A new key encrypts from now on; the oldest is dropped."""
        self.keys = [os.urandom(_TICKET_KEY_BYTES), *self.keys][:TICKET_KEYS_KEPT]
        engine = self.engine
        if engine is not None and not engine.closed:
            engine.set_ticket_keys(b"".join(self.keys))
        self.timer = loop.call_later(TICKET_ROTATION, self.rotate, loop)


_tickets = _TicketKeys()
