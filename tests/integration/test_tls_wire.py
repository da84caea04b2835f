"""TLS seen from the wire and the log: the http access log's TLS fields (JSON
and text), renegotiation refused by a listener while others are served, and
optional client certificates, each on both data paths."""

from __future__ import annotations

import os
import re
import socket
import ssl
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.integration import test_tls
from tests.integration.conftest import NATIVE_BUILT
from tests.integration.harness import Loadstone, wait_for
from tests.integration.test_tls import config, https_get, port_of
from tests.tlscerts import Ca

pytestmark = pytest.mark.integration

Start = Callable[..., Loadstone]
PURE = {"LOADSTONE_NO_EXTENSIONS": "1"}

# The TLS suite's fixtures: a CA made at run time, nginx servers.
ca = test_tls.ca
nginx = test_tls.nginx


def tls_listener(ca: Ca, nginx: Callable[..., int], mode: str) -> dict[str, object]:
    cert = ca.issue("server", ["api.test"])
    backend = nginx("n1")
    return config({
        "mode": mode,
        "tls": {"certificates": str(cert.bundle)},
        "servers": [{"name": "n1", "address": f"127.0.0.1:{backend}"}],
    })  # fmt: skip


def curl(port: int, ca_file: Path, *args: str) -> str:
    done = subprocess.run(
        ["curl", "-sS", "--cacert", str(ca_file), "--resolve", f"api.test:{port}:127.0.0.1",
         *args, f"https://api.test:{port}/"],
        capture_output=True, text=True, timeout=20,
        # curl hangs with the sanitizer runtime that scripts/sanitize-tests preloads
        env={k: v for k, v in os.environ.items() if k != "LD_PRELOAD"},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.mark.parametrize("path", ["native", "pure"])
def test_access_log_has_version_cipher_and_sni(
    ca: Ca, nginx: Callable[..., int], loadstone: Start, path: str
) -> None:
    """On both paths: the native one writes the same fields (relay.pyx _format_http)."""
    if path == "native" and not NATIVE_BUILT:
        pytest.skip("the native data path is not built here")
    env = PURE if path == "pure" else {}
    ls = loadstone(tls_listener(ca, nginx, "http"), env=env)
    assert ls.status()["listeners"]["web"]["data_path"] == path
    port = port_of(ls)
    curl(port, ca.path, "--tlsv1.3")
    line = wait_for(
        lambda: [e for e in ls.session_logs() if e.get("event") == "http"] or None,
        what="the access log line",
    )[0]
    assert re.fullmatch(r"TLSv1\.3/TLS_[A-Z0-9_]+/api\.test", line["tls"]), line
    assert line["status"] == 200

    text = loadstone(tls_listener(ca, nginx, "http"), env=env, log_format="text")
    curl(port_of(text), ca.path, "--tlsv1.2", "--tls-max", "1.2")
    logged = wait_for(
        lambda: [s for s in text.stdout_path.read_text().splitlines() if " http " in s] or None,
        what="the text access log line",
    )[0]
    assert re.search(r' "GET /" end=ok tls=TLSv1\.2/ECDHE-ECDSA-[A-Z0-9-]+/api\.test$', logged), (
        logged
    )


def test_renegotiation_is_refused_and_others_are_served(
    ca: Ca, nginx: Callable[..., int], loadstone: Start, datapath: str
) -> None:
    ls = loadstone(tls_listener(ca, nginx, "tcp"))
    assert ls.status()["listeners"]["web"]["data_path"] == datapath
    port = port_of(ls)
    assert https_get(port, ca.path, "api.test") == (200, "n1")
    baseline = ls.fd_count()
    # s_client renegotiates when a line "R" is read (TLS 1.2: 1.3 has no
    # renegotiation); the listener must refuse, and the connection end.
    client = subprocess.Popen(
        ["openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-servername", "api.test",
         "-tls1_2", "-CAfile", str(ca.path)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )  # fmt: skip
    assert client.stdin is not None and client.stdout is not None
    for line in client.stdout:
        if line.startswith(b"    Verify return code: 0"):
            break  # the first handshake is done
    client.stdin.write(b"R\n")
    client.stdin.flush()
    try:
        out, _ = client.communicate(timeout=10)  # it exits: the connection ended
    finally:
        if client.poll() is None:
            client.kill()
    text = out.decode(errors="replace")
    # The listener answers the new ClientHello with a no_renegotiation alert,
    # which ends the client's session.
    assert "RENEGOTIATING" in text
    assert "ssl3_read_bytes:no renegotiation" in text, text
    assert client.returncode == 1
    # Others are served, and nothing is left open.
    assert https_get(port, ca.path, "api.test") == (200, "n1")
    wait_for(lambda: ls.fd_count() <= baseline, timeout=10, what="fd count back to baseline")


def test_optional_client_certificate_admits_clients_with_and_without_one(
    ca: Ca, nginx: Callable[..., int], loadstone: Start, datapath: str
) -> None:
    """verify_client: optional (required refusing a client without one is
    test_tls.test_tcp_termination_with_client_certificates's)."""
    cert = ca.issue("server", ["api.test"])
    client = ca.issue("client", ["client.test"], client=True)
    stranger = Ca(ca.directory / "stranger", name="stranger CA").issue(
        "stranger", ["stranger.test"], client=True
    )
    backend = nginx("n1")
    ls = loadstone(config({
        "mode": "tcp",
        "tls": {"certificates": str(cert.bundle), "client_ca": str(ca.path),
                "verify_client": "optional"},
        "servers": [{"name": "n1", "address": f"127.0.0.1:{backend}"}],
    }))  # fmt: skip
    assert ls.status()["listeners"]["web"]["data_path"] == datapath

    def get(certificate: Path | None) -> bytes:
        ctx = ssl.create_default_context(cafile=str(ca.path))
        if certificate is not None:
            ctx.load_cert_chain(str(certificate))
        with socket.create_connection(("127.0.0.1", port_of(ls)), timeout=5) as raw:
            try:  # TLS 1.3: a refused certificate shows at the first read
                with ctx.wrap_socket(raw, server_hostname="api.test") as tls:
                    tls.sendall(b"GET / HTTP/1.0\r\n\r\n")
                    return tls.makefile("rb").read()
            except (ssl.SSLError, ConnectionError):
                return b""

    # No certificate, and one the CA signed: both served.
    assert get(None).endswith(b"n1 \n")
    assert get(client.bundle).endswith(b"n1 \n")
    # A certificate that does not verify is still refused: optional is not "none".
    assert get(stranger.bundle) == b""
    wait_for(
        lambda: sum(ls.status()["listeners"]["web"]["tls"]["failures"].values()) == 1,
        what="the stranger's handshake counted as failed",
    )
