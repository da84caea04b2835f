"""TLS termination on a listener (pure path): the SSL contexts, the SNI choice,
and the protocol that runs the handshake before the listener's own protocol
sees the connection, counting how handshakes end.

One context per certificate holds that certificate and the listener's settings;
a "front" context, made once per frontend, takes every ClientHello and its SNI
callback switches the connection to the context of the certificate whose names
match (the first certificate when none does, or no name was sent). The session
cache and the ticket keys are the front context's, so resumption keeps working
when a reload (SIGHUP) replaces the certificates: `Termination.swap` changes the
certificate contexts only, and new handshakes use them.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import ssl
import weakref
from asyncio.sslproto import AppProtocolState, SSLProtocol, SSLProtocolState
from dataclasses import dataclass, field
from typing import cast

from loadstone.config.model import ListenerTls, Mode
from loadstone.tls.certificates import (
    Certificate,
    TlsError,
    load_ca,
    load_certificate,
    load_into,
)

log = logging.getLogger("loadstone.tls")

_VERSIONS = {"TLSv1.2": ssl.TLSVersion.TLSv1_2, "TLSv1.3": ssl.TLSVersion.TLSv1_3}
_VERIFY = {"none": ssl.CERT_NONE, "optional": ssl.CERT_OPTIONAL, "required": ssl.CERT_REQUIRED}


def _context(config: ListenerTls, mode: Mode, where: str) -> ssl.SSLContext:
    """A server context with the listener's settings and no certificate."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = _VERSIONS[config.min_version]
    try:
        ctx.set_ciphers(config.ciphers)
    except ssl.SSLError:
        raise TlsError(
            f"{where}.ciphers: no cipher known to OpenSSL in {config.ciphers!r}"
        ) from None
    # No client-initiated renegotiation (a CPU-exhaustion vector); the server's
    # cipher order, as Mozilla's intermediate profile says.
    ctx.options |= ssl.OP_NO_RENEGOTIATION | ssl.OP_CIPHER_SERVER_PREFERENCE
    alpn = config.alpn or (("http/1.1",) if mode == "http" else ())
    if alpn:
        ctx.set_alpn_protocols(list(alpn))
    if config.client_ca is not None:
        load_ca(ctx, config.client_ca, f"{where}.client_ca")
    ctx.verify_mode = _VERIFY[config.verify_client]
    return ctx


@dataclass
class Certificates:
    """A listener's certificates, each with its context; the first is the default."""

    certificates: list[Certificate]
    contexts: list[ssl.SSLContext]

    def choose(self, server_name: str | None) -> tuple[ssl.SSLContext, Certificate]:
        if server_name:
            name = server_name.lower().rstrip(".")
            for cert, ctx in zip(self.certificates, self.contexts, strict=True):
                if cert.matches(name):
                    return ctx, cert
        return self.contexts[0], self.certificates[0]


def load_certificates(config: ListenerTls, mode: Mode, where: str) -> Certificates:
    """Read every certificate of a listener; TlsError on the first bad one."""
    certs: list[Certificate] = []
    contexts: list[ssl.SSLContext] = []
    for i, spec in enumerate(config.certificates):
        at = f"{where}.certificates[{i}]"
        cert = load_certificate(at, spec.cert, spec.key)
        ctx = _context(config, mode, where)
        load_into(ctx, cert)
        certs.append(cert)
        contexts.append(ctx)
    return Certificates(certs, contexts)


@dataclass
class HandshakeCounts:
    """A listener's TLS handshakes, for the status API and /metrics."""

    completed: int = 0
    resumed: int = 0
    failed: collections.Counter[str] = field(default_factory=collections.Counter)


def failure_reason(exc: BaseException | None) -> str:
    """A short, bounded label for why a handshake failed (a metrics label)."""
    if isinstance(exc, ssl.SSLError) and exc.reason:
        return exc.reason.lower()  # e.g. http_request, wrong_version_number, no_shared_cipher
    if isinstance(exc, ConnectionAbortedError):
        return "timeout"
    if exc is None or isinstance(exc, ConnectionError | EOFError):
        return "closed"
    return type(exc).__name__.lower()


class Termination:
    """A listener's TLS: the front context and the current certificates."""

    def __init__(self, config: ListenerTls, mode: Mode, certificates: Certificates, where: str):
        self.config = config
        # How long our close may wait for the client to take what is still
        # buffered, close_notify included (asyncio's ssl_shutdown_timeout, 30 s
        # by default): the listener's timeouts.client, as on the native path
        # (material.termination sets it, and again on every reload).
        self.close_timeout: float | None = None
        self.counts = HandshakeCounts()
        self.certificates = certificates
        self.front = _context(config, mode, where)
        # The front context needs a certificate of its own for OpenSSL to accept
        # it; the SNI callback always switches to the chosen one.
        load_into(self.front, certificates.certificates[0])
        self.front.sni_callback = self._choose

    def swap(self, certificates: Certificates) -> None:
        """New handshakes use these certificates (a reload); open connections run on."""
        self.certificates = certificates

    def _choose(self, sslobj: ssl.SSLObject, server_name: str | None, _: ssl.SSLContext) -> None:
        ctx, _cert = self.certificates.choose(server_name)
        sslobj.context = ctx
        if server_name:
            _server_names[sslobj] = server_name
        return None

    def protocol(
        self, loop: asyncio.AbstractEventLoop, app: asyncio.BaseProtocol
    ) -> asyncio.BaseProtocol:
        """Wrap a newly accepted connection's protocol: it sees the connection
        once the handshake has completed, and only then."""
        return _HandshakingProtocol(loop, app, self)


# The SNI each connection sent (the server side's SSLObject does not keep it).
_server_names: weakref.WeakKeyDictionary[ssl.SSLObject, str] = weakref.WeakKeyDictionary()


def session_fields(transport: asyncio.BaseTransport) -> str | None:
    """`version/cipher/sni` of a TLS client connection, for its log line; None
    for a plain one."""
    sslobj = transport.get_extra_info("ssl_object")
    if not isinstance(sslobj, ssl.SSLObject):
        return None
    cipher = sslobj.cipher()
    return (
        f"{sslobj.version() or '-'}/{cipher[0] if cipher else '-'}/{_server_names.get(sslobj, '-')}"
    )


class _HandshakingProtocol(SSLProtocol):
    """asyncio's TLS protocol, with every handshake's end counted and logged."""

    # asyncio allocates a read buffer of max_size (256 KiB) for every connection,
    # and touches it all: 8,000 idle TLS clients cost 140-290 KiB each, mostly
    # this. 32 KiB still takes two full TLS records per read.
    max_size = 32 * 1024

    def __init__(
        self, loop: asyncio.AbstractEventLoop, app: asyncio.BaseProtocol, owner: Termination
    ) -> None:
        super().__init__(
            loop,
            app,
            owner.front,
            None,  # type: ignore[arg-type]  # no waiter: nobody awaits a server handshake
            server_side=True,
            ssl_handshake_timeout=owner.config.handshake_timeout,  # type: ignore[arg-type]
            ssl_shutdown_timeout=owner.close_timeout,
        )
        self._owner = owner
        self._ended = False
        self._peer: object = None
        # The client's TCP half-close, not yet passed on: records before it are
        # still to be read (reading paused, or more than one read's buffer).
        self._eof_pending = False
        # The client's close_notify has been read (_call_eof_received): the end
        # of its data, as its FIN is; our side stays open until we close it.
        self._client_notified = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._peer = transport.get_extra_info("peername")
        super().connection_made(transport)

    def _failed(self, exc: BaseException | None) -> None:
        if self._ended:
            return
        self._ended = True
        reason = failure_reason(exc)
        self._owner.counts.failed[reason] += 1
        log.info("TLS handshake from %s failed: %s", _peer_text(self._peer), reason)

    def _on_handshake_complete(self, handshake_exc: BaseException | None) -> None:
        if handshake_exc is not None:
            self._failed(handshake_exc)
            # Send the alert OpenSSL wrote (protocol_version, handshake_failure...)
            # before asyncio drops the connection, so that the client learns why.
            self._process_outgoing()  # type: ignore[attr-defined]
        elif not self._ended:
            self._ended = True
            counts = self._owner.counts
            counts.completed += 1
            sslobj: ssl.SSLObject | None = getattr(self, "_sslobj", None)
            if sslobj is not None and sslobj.session_reused:
                counts.resumed += 1
        super()._on_handshake_complete(handshake_exc)

    def _check_handshake_timeout(self) -> None:
        if not self._ended:
            self._failed(ConnectionAbortedError("timeout"))
        super()._check_handshake_timeout()

    def _do_shutdown(self) -> None:
        # Our close (a response's end, a relay's, a stop): asyncio sends our
        # close_notify and then keeps the socket open until the client's comes,
        # for up to ssl_shutdown_timeout, a descriptor the limits do not
        # count held by a client that never answers. The native path, nginx and
        # HAProxy send theirs and close, which TLS allows (RFC 8446 6.1: the
        # initiator of a close need not wait for the answer); so does this.
        answered = True  # the client's close_notify is here (or its FIN was)
        try:
            if not self._eof_received:  # type: ignore[attr-defined]
                self._sslobj.unwrap()  # type: ignore[attr-defined]
        except (ssl.SSLWantReadError, ssl.SSLSyscallError):  # asyncio's SSLAgainErrors
            answered = False  # ours is written; the client's is not awaited
        except ssl.SSLError as exc:
            self._on_shutdown_complete(exc)  # type: ignore[attr-defined]
            return
        self._process_outgoing()  # type: ignore[attr-defined]
        if answered:
            self._call_eof_received()
        # The TCP close, after what is still buffered. asyncio's shutdown timer
        # (armed by _start_shutdown, cancelled by connection_lost) stays the
        # bound on a client that does not read it: the transport's close waits
        # for its buffer without one. So also when the client's close_notify
        # (or FIN) is here: asyncio's _on_shutdown_complete cancels it then,
        # and a client that sent one behind its requests (_call_eof_received)
        # and read none of their answers held the socket for good.
        if self._transport is not None:
            self._loop.call_soon(self._transport.close)

    def eof_received(self) -> bool:  # type: ignore[override]  # (typeshed: None)
        # The client's TCP half-close without a close_notify (a client that
        # shuts its side after its request, as some HTTP/1.0 ones do, and
        # reads on): asyncio takes it for the end of the TLS connection and
        # shuts ours down at once, before the answer is written and without
        # a close_notify. Passed on as the end of the client's data instead,
        # as over plain TCP: the application answers, and our close sends the
        # close_notify (_do_shutdown: the client's is not awaited). As the
        # native engine does (http_linger.c: client_eof). _eof_received stays
        # False: set, it would make _do_shutdown skip our close_notify.
        if self._client_notified and self._state is SSLProtocolState.WRAPPED:
            # Its FIN after its close_notify: the end of its data is known (or
            # pending, _eof_pending) already; ours waits for our close as well.
            return True
        if (
            self._state is not SSLProtocolState.WRAPPED
            or self._app_state != AppProtocolState.STATE_CON_MADE
        ):
            return bool(super().eof_received())
        self._eof_pending = True
        self._pass_eof_once_read()
        return True

    def _do_read(self) -> None:
        super()._do_read()  # type: ignore[misc]
        if self._eof_pending:  # reading resumed, or a further read's buffer
            self._pass_eof_once_read()

    def _pass_eof_once_read(self) -> None:
        # The end of the client's data comes after all of its data, as over
        # plain TCP (where a paused transport does not read the FIN either):
        # records still buffered when the FIN came are read into the
        # application first. A paused application gets them, and then the
        # end, when it resumes reading (_resume_reading: _do_read).
        while self._eof_pending:
            if (
                self._state is not SSLProtocolState.WRAPPED
                or self._app_state != AppProtocolState.STATE_CON_MADE
            ):
                self._eof_pending = False  # closed meanwhile: nothing to pass on
                return
            if self._app_reading_paused:  # type: ignore[attr-defined]
                return
            unread = self._unread()
            if unread:
                super()._do_read()  # type: ignore[misc]  # (not ours: no recursion)
                if self._unread() < unread:
                    continue
                # No progress: what is left is part of a record the FIN cut
                # short, which no read will complete, or bytes after the
                # client's close_notify, which no read takes.
            self._eof_pending = False
            self._pass_eof()

    def _unread(self) -> int:
        """Bytes the client sent that the application has not seen: records
        not yet decrypted, and decrypted bytes not yet read."""
        return int(self._incoming.pending) + int(self._sslobj.pending())  # type: ignore[attr-defined]

    def _pass_eof(self) -> None:
        self._app_state = AppProtocolState.STATE_EOF
        try:
            keep_open = self._app_protocol.eof_received()  # type: ignore[attr-defined]
        except Exception as exc:
            self._fatal_error(exc, "Error calling eof_received()")
            return
        app = self._app_transport
        if not keep_open and app is not None and not app.is_closing():
            # what a TCP transport does then: close (ours after the close_notify)
            app.close()

    def _call_eof_received(self) -> None:
        # The client's close_notify: asyncio's read (_do_read__copied and
        # _do_read__buffered, once the records before it are passed on) calls
        # this, then _start_shutdown. It closes a TLS connection there whatever
        # the protocol answers (and warns when the answer is "keep open"): the
        # responses to requests the client sent before it were never written.
        # A close_notify ends the client's data, not the connection (RFC 8446
        # 6.1: each side closes its own write side): passed on as its FIN is
        # (eof_received), and _start_shutdown waits for the application's
        # close, which sends our close_notify (_do_shutdown), as the native
        # engine does. OpenSSL answers every read after it with the same end,
        # hence the calls that come again: nothing more to pass on.
        if self._state is SSLProtocolState.WRAPPED:
            self._client_notified = True
            if self._app_state == AppProtocolState.STATE_CON_MADE and not self._eof_pending:
                # (reading paused: the end when it resumes, as after a FIN)
                self._eof_pending = True
                self._pass_eof_once_read()
            return
        # Our close under way (_do_flush reads, _do_shutdown): the application
        # is told, its answer does not matter any more.
        if self._app_state == AppProtocolState.STATE_CON_MADE:
            self._app_state = AppProtocolState.STATE_EOF
            try:
                self._app_protocol.eof_received()  # type: ignore[attr-defined]
            except Exception as exc:
                self._fatal_error(exc, "Error calling eof_received()")

    def _start_shutdown(self) -> None:
        app = self._app_transport
        if self._client_notified and app is not None and not app.is_closing():
            # asyncio's read, at the client's close_notify (_call_eof_received):
            # the application closes when it has answered (its transport's
            # close() marks it closing, then comes here).
            return
        super()._start_shutdown()

    def connection_lost(self, exc: BaseException | None) -> None:
        if not self._ended:
            self._failed(exc)
        super().connection_lost(exc)

    def close_notify(self) -> asyncio.Transport | None:
        """See the module's close_notify."""
        raw = cast(asyncio.Transport | None, self._transport)
        if (
            raw is None
            or self._state is not SSLProtocolState.WRAPPED  # type: ignore[has-type]
            or self._write_backlog
        ):
            return None
        try:
            self._sslobj.unwrap()  # type: ignore[attr-defined]
        except ssl.SSLWantReadError:
            pass  # ours is written; the client's is not here (nor awaited)
        except ssl.SSLError:
            # Records read but not decrypted yet (reading was paused) fail the
            # wait for the client's close_notify: ours is written all the same.
            pass
        # Even while asyncio holds its writes back (the client reads slowly):
        # the transport buffers them, and its FIN goes after them.
        data = self._outgoing.read()  # type: ignore[attr-defined]
        if data:
            raw.write(data)
        # Inert from now on: writes are dropped, close() and reads do nothing.
        self._state = SSLProtocolState.UNWRAPPED
        app = self._app_transport
        if app is not None:
            app._closed = True  # closed by us: no "unclosed transport" warning
        self._transport = None
        return raw


def close_notify(transport: asyncio.BaseTransport) -> asyncio.Transport | None:
    """Our side of a terminated TLS connection closed, for a lingering close
    (datapath/http_pure/linger.py): what the application wrote, then our
    close_notify, are handed to the TCP transport beneath, which is returned;
    the TLS layer is done with, and what the client still sends is the
    caller's to read raw (that transport's protocol is its to set). Not
    asyncio's own close: OpenSSL fails a read of application data after our
    close_notify (APPLICATION_DATA_AFTER_CLOSE_NOTIFY), and asyncio then
    aborts, resetting what the client still sends. None when `transport` is
    not a terminated connection past its handshake."""
    protocol = getattr(transport, "_ssl_protocol", None)
    if not isinstance(protocol, _HandshakingProtocol):
        return None
    return protocol.close_notify()


def _peer_text(peer: object) -> str:
    if isinstance(peer, tuple) and len(peer) >= 2:
        return f"{peer[0]}:{peer[1]}"
    return str(peer)
