"""TLS to servers (re-encryption) and TLS health checks: one client context per
server TLS setting, with verification, SNI and ALPN; the words and labels of a
failed handshake with a server."""

from __future__ import annotations

import ssl

from loadstone.config.model import ServerConfig, ServerTls
from loadstone.tls.certificates import load_ca, load_certificate, load_into


def client_context(config: ServerTls, where: str) -> ssl.SSLContext:
    """A context for connections to servers; TlsError names a bad file."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if config.verify == "none":
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    elif config.ca_file is not None:
        load_ca(ctx, config.ca_file, f"{where}.ca_file")
    else:
        ctx.load_default_certs()
    if config.alpn:
        ctx.set_alpn_protocols(list(config.alpn))
    if config.certificate is not None:
        cert = load_certificate(f"{where}.certificate", config.certificate, config.key)
        load_into(ctx, cert)
    return ctx


def server_name(config: ServerTls, server: ServerConfig) -> str | None:
    """The SNI sent to (and the name verified of) `server`: `sni`, else its
    address when that is a name; an IP address is verified but not sent."""
    if config.sni is not None:
        return config.sni
    return server.address.host


def handshake_error_text(exc: ssl.SSLError) -> str:
    """A failed handshake with a server, as a log line or a check detail says it."""
    if isinstance(exc, ssl.SSLCertVerificationError) and exc.verify_message:
        return f"tls: certificate verify failed: {exc.verify_message}"
    return f"tls: {(exc.reason or str(exc)).lower().replace('_', ' ')}"


# What a failed connect's log line says when the TLS handshake did not finish
# in the connect timeout, or the server closed during it (the engine's words too:
# engine/connect.c, engine/tls_upstream.c).
HANDSHAKE_TIMEOUT = "tls: handshake timeout"
HANDSHAKE_CLOSED = "tls: closed"
_LABEL_MAX = 47  # as the engine's labels of a listener's failures (LS_TLS_REASON_MAX - 1)


def failure_label(why: str) -> str | None:
    """The reason label a failed handshake with a server is counted under
    (ServerRuntime.tls_failures), from its log text ("tls: ...", which both data
    paths write alike), or None when `why` is no TLS handshake's failure:
    certificate_verify_failed, timeout, closed, or OpenSSL's reason
    (wrong_version_number, tlsv1_alert_unknown_ca ...), as the listeners' own
    handshake failures are labelled (loadstone.tls.termination.failure_reason)."""
    if not why.startswith("tls: "):
        return None
    if why.startswith("tls: certificate verify failed"):
        return "certificate_verify_failed"
    if why == HANDSHAKE_TIMEOUT:
        return "timeout"
    if why == "tls: unexpected eof while reading":  # OpenSSL's words for "closed"
        return "closed"
    return why[len("tls: ") :].replace(" ", "_")[:_LABEL_MAX]


def check_context() -> ssl.SSLContext:
    """A TLS check of a server without `tls` settings: the service answers over
    TLS, whoever signed its certificate (HAProxy's check-ssl with verify none)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx
