"""The native engine's TLS pieces in-process (loadstone.tls.native, engine/tls.c):
the material it refuses, the ALPN wire format, and ticket keys that rotate
while a ticket made under an older key still resumes. The client is Python's
ssl on loopback; no server is published, so each session ends after its
handshake (no-server), which is all these tests need."""

from __future__ import annotations

import asyncio
import socket
import ssl
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.tlscerts import Ca, Issued

relay = pytest.importorskip("loadstone._fastpath.relay", reason="native data path not built")
tls_native = pytest.importorskip("loadstone.tls.native")

SUITES = "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256"


@pytest.fixture
def engine() -> Iterator[relay.Engine]:
    made = relay.Engine(2, "auto")
    yield made
    made.close()


@pytest.fixture
def issued(tmp_path: Path) -> tuple[Ca, Issued]:
    ca = Ca(tmp_path / "pki")
    return ca, ca.issue("server", ["api.test"])


def set_tls(engine: relay.Engine, lid: int, cert: Issued, **changes: object) -> None:
    args: dict[str, object] = {
        "certificates": [(cert.bundle.read_bytes(), cert.bundle.read_bytes())],
        "names": [("api.test", 0)],
        "alpn": b"",
        "min_version": 0x0303,
        "ciphers": SUITES,
        "ciphersuites": None,
        "client_ca": None,
        "verify_client": 0,
        "handshake_timeout": 5.0,
        "session_context": "web",
    }
    args.update(changes)
    engine.set_tls(lid, **args)  # type: ignore[arg-type]


def test_alpn_wire_format() -> None:
    assert tls_native.alpn_wire(("h2", "http/1.1")) == b"\x02h2\x08http/1.1"
    assert tls_native.alpn_wire(()) == b""


def test_engine_refuses_bad_material_with_openssl_reason(
    engine: relay.Engine, issued: tuple[Ca, Issued], tmp_path: Path
) -> None:
    ca, cert = issued
    other = ca.issue("other", ["other.test"])
    lid = engine.new_listener()
    with pytest.raises(ValueError, match="private key"):
        set_tls(engine, lid, cert, certificates=[(cert.cert.read_bytes(), other.key.read_bytes())])
    with pytest.raises(ValueError, match="certificate"):
        set_tls(engine, lid, cert, certificates=[(b"not a pem", cert.key.read_bytes())])
    with pytest.raises(ValueError, match="ciphersuites"):
        set_tls(engine, lid, cert, ciphersuites="TLS_NOT_A_SUITE")
    with pytest.raises(ValueError, match="ciphers"):
        set_tls(engine, lid, cert, ciphers="NOT-A-CIPHER")
    with pytest.raises(ValueError, match="client_ca"):
        set_tls(engine, lid, cert, client_ca=str(tmp_path / "missing.pem"))
    with pytest.raises(ValueError, match="SNI"):
        set_tls(engine, lid, cert, names=[("api.test", 3)])
    with pytest.raises(ValueError, match="80 bytes"):
        engine.set_ticket_keys(b"short")
    assert engine.tls_stats(lid) == (0, 0, {})
    set_tls(engine, lid, cert)  # good material after bad is taken


def test_a_ticket_resumes_after_its_key_is_rotated_out_of_first_place(
    engine: relay.Engine, issued: tuple[Ca, Issued]
) -> None:
    ca, cert = issued
    lid = engine.new_listener()
    set_tls(engine, lid, cert)
    loop = asyncio.new_event_loop()
    keys = tls_native._TicketKeys()
    keys.install(engine, loop)
    listening = socket.create_server(("127.0.0.1", 0))
    listening.setblocking(False)  # the workers accept until EAGAIN
    engine.add_socket(lid, listening.fileno())
    port = listening.getsockname()[1]
    client = ssl.create_default_context(cafile=str(ca.path))
    client.maximum_version = ssl.TLSVersion.TLSv1_2  # the session is known at once

    def handshake(session: ssl.SSLSession | None = None) -> ssl.SSLSocket:
        raw = socket.create_connection(("127.0.0.1", port), timeout=5)
        return client.wrap_socket(raw, server_hostname="api.test", session=session)

    try:
        with handshake() as first:
            session = first.session
        keys.rotate(loop)
        keys.rotate(loop)
        assert len(keys.keys) == tls_native.TICKET_KEYS_KEPT
        with handshake(session) as again:
            assert again.session_reused  # decrypted by the third key
        keys.rotate(loop)  # now the key is gone: a full handshake
        with handshake(session) as fresh:
            assert not fresh.session_reused
        # the worker counts a handshake just after writing its Finished, so
        # the client may be done a moment before the count is
        deadline = time.monotonic() + 5
        while engine.tls_stats(lid)[0] < 3 and time.monotonic() < deadline:
            time.sleep(0.001)
        assert engine.tls_stats(lid) == (3, 1, {})
    finally:
        engine.remove_socket(lid, listening.fileno())
        listening.close()
        assert keys.timer is not None
        keys.timer.cancel()
        loop.close()
