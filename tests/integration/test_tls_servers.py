"""TLS to servers (re-encryption) seen from nginx, on both data paths: `verify:
none` to a certificate no CA signed that loadstone knows, the SNI, ALPN and
client certificate a server gets, the PROXY header in clear before the TLS
ClientHello (nginx `listen ... ssl proxy_protocol`), and failed handshakes
counted per server by reason (a server that speaks no TLS, one that never
answers the ClientHello). The verification failure itself is
test_tls.test_reencryption_to_nginx_verifies_and_checks_over_tls's."""

from __future__ import annotations

import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.integration import test_tls
from tests.integration.harness import Loadstone, free_port, wait_for
from tests.tlscerts import Ca

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("datapath")]

Start = Callable[..., Loadstone]

# The TLS suite's fixtures: a CA made at run time, nginx servers.
ca = test_tls.ca
nginx = test_tls.nginx

CLIENT_ADDRESS = "127.0.0.2"  # not loadstone's own: the PROXY header must carry it


def listeners(**by_name: dict[str, Any]) -> dict[str, Any]:
    for listener in by_name.values():
        listener["bind"] = [f"127.0.0.1:{free_port()}"]
    return {
        "global": {"grace": "1s"},
        "defaults": {"timeouts": {"connect": "1s"}},
        "listeners": by_name,
    }


def get(ls: Loadstone, listener: str, path: str = "/peer") -> bytes:
    """A request through `listener` from CLIENT_ADDRESS; what came back (b"":
    the connection was closed without an answer)."""
    port = int(ls.config["listeners"][listener]["bind"][0].rsplit(":", 1)[1])
    address = ("127.0.0.1", port)
    with socket.create_connection(address, timeout=5, source_address=(CLIENT_ADDRESS, 0)) as s:
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        try:
            return s.makefile("rb").read()
        except ConnectionResetError:
            return b""


def test_server_tls_settings_and_proxy_header_reach_nginx(
    ca: Ca, tmp_path: Path, nginx: Callable[..., int], loadstone: Start, datapath: str
) -> None:
    other_ca = Ca(tmp_path / "other", name="other CA")
    untrusted = other_ca.issue("untrusted", ["elsewhere.test"])
    served = ca.issue("backend", ["backend.test"], kind="rsa")
    client = ca.issue("client", ["client.test"], client=True)
    anyone = nginx("anyone", tls=(untrusted.cert, untrusted.key))
    mutual = nginx(
        "mutual",
        tls=(served.cert, served.key),
        extra=f"ssl_verify_client on; ssl_client_certificate {ca.path};",
    )
    proxied = nginx("proxied", tls=(served.cert, served.key), listen_options="proxy_protocol")
    verified = {"verify": "required", "ca_file": str(ca.path), "sni": "backend.test"}

    def server(name: str, port: int, **extra: Any) -> list[dict[str, Any]]:
        return [{"name": name, "address": f"127.0.0.1:{port}", **extra}]

    ls = loadstone(listeners(
        unverified=dict(mode="tcp", servers=server("anyone", anyone, tls={"verify": "none"})),
        mutual=dict(mode="http", servers=server("mutual", mutual, tls={
            **verified, "alpn": ["http/1.1"], "certificate": str(client.bundle)})),
        anonymous=dict(mode="http", servers=server("mutual", mutual, tls=verified)),
        proxy_http=dict(mode="http", send_proxy="v1",
                        servers=server("proxied", proxied, tls=verified)),
        proxy_tcp=dict(mode="tcp", send_proxy="v2",
                       servers=server("proxied", proxied, tls=verified)),
    ))  # fmt: skip
    if datapath == "native":  # re-encrypted in the engine's workers (engine/tls_upstream.c)
        assert ls.status()["listeners"]["mutual"]["data_path"] == "native"

    # verify: none takes a certificate no trusted CA signed (127.0.0.1: no SNI sent).
    reply = get(ls, "unverified")
    assert reply.startswith(b"HTTP/1.1 200") and reply.endswith(b"sni= alpn= client= proxy=\n")
    # The SNI and ALPN offered, and the client certificate nginx requires.
    reply = get(ls, "mutual")
    assert reply.startswith(b"HTTP/1.1 200"), reply
    assert reply.endswith(b"sni=backend.test alpn=http/1.1 client=CN=client.test proxy=\n")
    # (without it, nginx refuses the request)
    assert get(ls, "anonymous").startswith(b"HTTP/1.1 400")
    # The PROXY header before the ClientHello (v1 and v2): nginx reads the
    # client's address from it, then does its TLS handshake.
    for listener in ("proxy_http", "proxy_tcp"):
        reply = get(ls, listener)
        assert reply.startswith(b"HTTP/1.1 200"), (listener, reply)
        assert reply.endswith(f"sni=backend.test alpn= client= proxy={CLIENT_ADDRESS}\n".encode())
    for name in ("unverified", "mutual", "proxy_http", "proxy_tcp"):
        for doc in ls.status()["listeners"][name]["servers"].values():
            assert doc["tls_handshake_failures"] == {}, (name, doc)


def test_failed_handshakes_are_counted_by_reason(
    nginx: Callable[..., int], loadstone: Start
) -> None:
    plain = nginx("plain")  # answers a ClientHello with HTTP's 400
    # A server that takes the connection (the kernel completes it from the
    # backlog) and never answers the ClientHello.
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)
    tls = {"verify": "none"}
    with silent:
        silent_port = silent.getsockname()[1]
        ls = loadstone(listeners(
            plain=dict(mode="tcp", retries=0, servers=[
                {"name": "p", "address": f"127.0.0.1:{plain}", "tls": tls}]),
            silent=dict(mode="tcp", retries=0, timeouts={"connect": "300ms"}, servers=[
                {"name": "s", "address": f"127.0.0.1:{silent_port}", "tls": tls}]),
        ))  # fmt: skip
        baseline = ls.fd_count()
        assert get(ls, "plain") == b""
        assert get(ls, "silent") == b""
        wait_for(
            lambda: (
                ls.server("plain", "p")["tls_handshake_failures"] == {"wrong_version_number": 1}
                and ls.server("silent", "s")["tls_handshake_failures"] == {"timeout": 1}
            ),
            what="both failures counted",
        )
    metrics = ls.get("/metrics").decode()
    family = "loadstone_server_tls_handshake_failures_total"
    assert f'{family}{{listener="silent",reason="timeout",server="s"}} 1.0' in metrics
    assert f'{family}{{listener="plain",reason="wrong_version_number",server="p"}} 1.0' in metrics
    # Logged with the reason, as a failed connect.
    log = ls.stderr()
    assert "plain: connect to p (127.0.0.1:" in log and "failed: tls: wrong version number" in log
    assert "silent: connect to s (127.0.0.1:" in log and "failed: tls: handshake timeout" in log
    wait_for(lambda: ls.fd_count() <= baseline, timeout=10, what="fd count back to baseline")
