"""Failed TLS handshakes with servers: the reason labels both data paths count
under (from the log text they both write), and the bound on their number."""

from __future__ import annotations

import ssl

from loadstone.config.model import Address, ServerConfig
from loadstone.server_state import TLS_FAILURE_KINDS, ServerRuntime
from loadstone.tls.upstream import (
    HANDSHAKE_CLOSED,
    HANDSHAKE_TIMEOUT,
    failure_label,
    handshake_error_text,
)


def test_labels_from_the_log_text() -> None:
    # the pure path's text of an ssl exception, and the engine's (engine/connect.c)
    unknown = ssl.SSLError(1, "[SSL: WRONG_VERSION_NUMBER] wrong version number")
    unknown.reason = "WRONG_VERSION_NUMBER"
    assert failure_label(handshake_error_text(unknown)) == "wrong_version_number"
    assert failure_label("tls: wrong version number") == "wrong_version_number"
    verify = "tls: certificate verify failed: unable to get local issuer certificate"
    assert failure_label(verify) == "certificate_verify_failed"
    assert failure_label(HANDSHAKE_TIMEOUT) == "timeout"
    assert failure_label(HANDSHAKE_CLOSED) == "closed"
    # a failed connect that was no handshake: not counted as one
    assert failure_label("connection refused") is None
    assert failure_label("") is None
    assert len(failure_label("tls: " + "x " * 100) or "") < 48


def test_reasons_per_server_are_bounded() -> None:
    server = ServerRuntime(ServerConfig("s1", Address("127.0.0.1", 443)), 0, checked=False)
    server.tls_handshake_failed("timeout")
    server.tls_handshake_failed("timeout")
    assert server.tls_failures == {"timeout": 2}
    for i in range(3 * TLS_FAILURE_KINDS):
        server.tls_handshake_failed(f"reason_{i}")
    assert len(server.tls_failures) == TLS_FAILURE_KINDS
    assert server.tls_failures["timeout"] == 2
    assert sum(server.tls_failures.values()) == 2 + 3 * TLS_FAILURE_KINDS
    assert server.tls_failures["other"] == 3 * TLS_FAILURE_KINDS - (TLS_FAILURE_KINDS - 2)
