"""TLS: termination (SNI, ALPN, versions, client certificates), re-encryption to
nginx with verification, TLS checks, redirect to https, reload of certificates
under load, bad input on the wire. Real clients: curl, openssl s_client, Python's
ssl. Certificates are made at run time (tests.tlscerts)."""

from __future__ import annotations

import contextlib
import json
import os
import select
import shutil
import signal
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.integration.conftest import NATIVE_BUILT
from tests.integration.harness import (
    LOADSTONE,
    Backend,
    Loadstone,
    free_port,
    port_open,
    start_nginx,
    wait_for,
)
from tests.tlscerts import Ca

pytestmark = pytest.mark.integration

Start = Callable[..., Loadstone]


@pytest.fixture
def ca(tmp_path: Path) -> Ca:
    return Ca(tmp_path / "pki")


@pytest.fixture
def nginx(tmp_path: Path) -> Iterator[Callable[..., int]]:
    """nginx answering "<name> <X-Forwarded-Proto>"; over TLS with `tls=(cert, key)`;
    `listen` options (proxy_protocol) and server directives (`extra`) added.
    /peer says what the connection brought: SNI, ALPN, client certificate, PROXY
    header's address."""
    if shutil.which("nginx") is None:
        pytest.skip("nginx is not installed (apt-get install nginx-light)")
    procs: list[subprocess.Popen[bytes]] = []

    def start(
        name: str, tls: tuple[Path, Path] | None = None, listen_options: str = "", extra: str = ""
    ) -> int:
        port = free_port()
        listen = f"127.0.0.1:{port}" + (" ssl" if tls else "") + f" {listen_options}"
        certs = f"ssl_certificate {tls[0]}; ssl_certificate_key {tls[1]};" if tls else ""
        peer = "sni=$ssl_server_name alpn=$ssl_alpn_protocol client=$ssl_client_s_dn"
        server = f"""
    server {{
        listen {listen};
        {certs}
        {extra}
        location / {{ return 200 "{name} $http_x_forwarded_proto\\n"; }}
        location /reused {{ return 200 "reused=$ssl_session_reused\\n"; }}
        location /peer {{ return 200 "{peer} proxy=$proxy_protocol_addr\\n"; }}
    }}
"""
        procs.append(start_nginx(tmp_path / f"nginx-{name}", server))
        wait_for(lambda: port_open("127.0.0.1", port), what=f"nginx {name}")
        return port

    yield start
    for proc in procs:
        proc.terminate()
        proc.wait(10)


def config(listener: dict[str, Any]) -> dict[str, Any]:
    listener.setdefault("bind", [f"127.0.0.1:{free_port()}"])
    return {
        "global": {"grace": "2s"},
        "defaults": {"timeouts": {"connect": "1s", "check": "1s"}},
        "listeners": {"web": listener},
    }


def port_of(ls: Loadstone) -> int:
    return int(ls.config["listeners"]["web"]["bind"][0].rsplit(":", 1)[1])


def s_client(port: int, *args: str) -> str:
    done = subprocess.run(
        ["openssl", "s_client", "-connect", f"127.0.0.1:{port}", *args],
        input=b"",
        capture_output=True,
        timeout=20,
    )
    return done.stdout.decode(errors="replace") + done.stderr.decode(errors="replace")


def tls_connect(port: int, ctx: ssl.SSLContext, name: str) -> ssl.SSLSocket:
    return ctx.wrap_socket(
        socket.create_connection(("127.0.0.1", port), timeout=5), server_hostname=name
    )


def https_get(port: int, ca_file: Path, name: str, path: str = "/") -> tuple[int, str]:
    out = subprocess.run(
        ["curl", "-sS", "--cacert", str(ca_file), "--resolve", f"{name}:{port}:127.0.0.1",
         "-w", "\n%{http_code}", f"https://{name}:{port}{path}"],
        capture_output=True, text=True, timeout=20,
        # curl hangs with the sanitizer runtime that scripts/sanitize-tests preloads
        env={k: v for k, v in os.environ.items() if k != "LD_PRELOAD"},
    )  # fmt: skip
    body, _, code = out.stdout.rpartition("\n")
    return int(code or 0), body.strip()


def test_sni_alpn_versions_and_forwarded_proto(
    ca: Ca, nginx: Callable[..., int], loadstone: Start, datapath: str
) -> None:
    ecdsa = ca.issue("ecdsa", ["api.test", "*.apps.test"])
    rsa = ca.issue("rsa", ["rsa.test"], kind="rsa")
    backend = nginx("n1")
    ls = loadstone(config({
        "mode": "http",
        "forwarded_proto": "auto",
        "tls": {"certificates": [str(ecdsa.bundle), {"cert": str(rsa.cert), "key": str(rsa.key)}]},
        "servers": [{"name": "n1", "address": f"127.0.0.1:{backend}"}],
    }))  # fmt: skip
    port = port_of(ls)
    # Terminated in the C workers on the native path (loadstone.tls.native).
    assert ls.status()["listeners"]["web"]["data_path"] == datapath

    # curl, verifying: the certificate chosen by SNI (exact, wildcard, RSA), and
    # the server sees X-Forwarded-Proto: https.
    assert https_get(port, ca.path, "api.test") == (200, "n1 https")
    assert https_get(port, ca.path, "x.apps.test") == (200, "n1 https")
    assert https_get(port, ca.path, "rsa.test") == (200, "n1 https")

    # The access log names the protocol, the cipher and the SNI of each request.
    def access_log_tls() -> list[str] | None:
        fields = [e.get("tls", "") for e in ls.session_logs() if e.get("event") == "http"]
        return fields if len(fields) >= 3 else None

    tls_fields = wait_for(access_log_tls, what="three access log lines")
    assert [f.rsplit("/", 1)[-1] for f in tls_fields] == ["api.test", "x.apps.test", "rsa.test"]
    assert all(f.startswith("TLSv1.3/TLS_") for f in tls_fields), tls_fields
    # A name no certificate has, and no name at all: the first certificate.
    assert "Peer certificate: CN = api.test" in s_client(
        port, "-brief", "-servername", "other.test"
    )
    assert "Peer certificate: CN = api.test" in s_client(port, "-brief", "-noservername")
    assert "Peer certificate: CN = rsa.test" in s_client(port, "-brief", "-servername", "rsa.test")
    # ALPN: http/1.1 in mode http; h2 is not offered.
    assert "ALPN protocol: http/1.1" in s_client(port, "-alpn", "h2,http/1.1")
    assert "No ALPN negotiated" in s_client(port, "-alpn", "h2")
    # TLS 1.2 and 1.3 accepted, 1.1 refused; a TLS 1.2 cipher outside the list refused.
    assert "Protocol version: TLSv1.2" in s_client(port, "-brief", "-tls1_2")
    assert "Protocol version: TLSv1.3" in s_client(port, "-brief", "-tls1_3")
    refused_version = s_client(port, "-tls1_1", "-cipher", "DEFAULT@SECLEVEL=0")
    assert "alert protocol version" in refused_version
    assert "alert handshake failure" in s_client(port, "-tls1_2", "-cipher", "AES128-SHA")

    # Resumption: the session cache (TLS 1.2, -reconnect resumes five times).
    assert s_client(port, "-tls1_2", "-reconnect").count("Reused, TLSv1.2") == 5

    # a resumed handshake ends on the client's Finished: the server counts it
    # a moment after the client is done
    wait_for(lambda: ls.status()["listeners"]["web"]["tls"]["resumed"] >= 5, what="5 resumed")
    tls = ls.status()["listeners"]["web"]["tls"]
    assert tls["handshakes"] >= 10
    assert tls["resumed"] >= 5
    assert tls["failures"].get("unsupported_protocol", 0) >= 1
    assert tls["failures"].get("no_shared_cipher", 0) >= 1
    assert [c["names"] for c in tls["certificates"]] == [["api.test", "*.apps.test"], ["rsa.test"]]
    metrics = ls.get("/metrics").decode()
    assert "loadstone_tls_certificate_expiry_timestamp_seconds{" in metrics
    assert 'loadstone_tls_handshake_failures_total{listener="web",reason="no_shared_cipher"}' in (
        metrics
    )


def test_tcp_termination_with_client_certificates(
    ca: Ca, nginx: Callable[..., int], loadstone: Start, datapath: str
) -> None:
    server = ca.issue("server", ["db.test"])
    client = ca.issue("client", ["client.test"], client=True, kind="rsa")
    backend = nginx("n1")
    ls = loadstone(config({
        "mode": "tcp",
        "tls": {"certificates": str(server.bundle), "client_ca": str(ca.path),
                "verify_client": "required", "alpn": ["x-test"]},
        "servers": [{"name": "n1", "address": f"127.0.0.1:{backend}"}],
    }))  # fmt: skip
    assert ls.status()["listeners"]["web"]["data_path"] == datapath
    port = port_of(ls)
    ctx = ssl.create_default_context(cafile=str(ca.path))
    ctx.set_alpn_protocols(["x-test"])
    # Without a client certificate: refused (TLS 1.3 reports it at the first read).
    try:
        with tls_connect(port, ctx, "db.test") as tls:
            tls.sendall(b"GET / HTTP/1.0\r\n\r\n")
            refused = tls.recv(100)
    except (ssl.SSLError, ConnectionError):
        refused = b""
    assert refused == b""
    ctx.load_cert_chain(str(client.cert), str(client.key))
    with tls_connect(port, ctx, "db.test") as tls:
        assert tls.selected_alpn_protocol() == "x-test"
        tls.sendall(b"GET / HTTP/1.0\r\n\r\n")
        reply = b""
        while chunk := tls.recv(4096):
            reply += chunk
    assert reply.startswith(b"HTTP/1.1 200") and reply.endswith(b"n1 \n")
    # The session's log line names the protocol, the cipher and the SNI.
    logged = wait_for(
        lambda: [e["tls"] for e in ls.session_logs() if e.get("server") == "n1"] or None,
        what="the session log line",
    )
    assert logged[0].startswith("TLSv1.3/TLS_") and logged[0].endswith("/db.test"), logged


@pytest.mark.parametrize("mode", ["http", "tcp"])
def test_reencryption_to_nginx_verifies_and_checks_over_tls(
    ca: Ca, tmp_path: Path, nginx: Callable[..., int], loadstone: Start, datapath: str, mode: str
) -> None:
    good = ca.issue("backend", ["backend.test", "127.0.0.1"], kind="rsa")
    backend = nginx("tls1", tls=(good.cert, good.key))
    other_ca = Ca(tmp_path / "other", name="other CA")

    def listener(ca_file: Path, **extra: Any) -> dict[str, Any]:
        return {
            "mode": mode,
            "check": {"type": "http" if mode == "http" else "tcp", "tls": True,
                      "interval": "200ms"},
            "server_tls": {"verify": "required", "ca_file": str(ca_file), "sni": "backend.test"},
            "servers": [{"name": "tls1", "address": f"127.0.0.1:{backend}"}],
            **extra,
        }  # fmt: skip

    def get(port: int) -> bytes:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            try:
                return s.makefile("rb").read()
            except ConnectionResetError:  # a tcp listener whose server was not reached
                return b""

    ls = loadstone(config(listener(ca.path)))
    # Re-encrypted in the C workers on the native path (engine/tls_upstream.c);
    # a plain tcp listener's status names no data path: the process's does.
    if mode == "http":
        assert ls.status()["listeners"]["web"]["data_path"] == datapath
    assert f'data_path="{datapath}"' in ls.get("/metrics").decode()
    ls.wait_all_up("web")
    port = port_of(ls)
    reply = get(port)
    assert reply.startswith(b"HTTP/1.1 200") and reply.endswith(b"tls1 \n")
    baseline = ls.fd_count()
    for _ in range(20):  # pooled (http) or one connection each (tcp): no descriptor kept
        assert get(port).endswith(b"tls1 \n")
    wait_for(lambda: ls.fd_count() <= baseline, timeout=10, what="fd count back to baseline")
    if mode == "tcp" and datapath == "native":
        # a connection of its own per client: the engine offers the session the
        # server gave the one before (nginx says whether it resumed it)
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            s.sendall(b"GET /reused HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            assert s.makefile("rb").read().endswith(b"reused=r\n")

    # A CA that did not sign the server's certificate: the check fails...
    wrong = loadstone(config(listener(other_ca.path)))
    wrong.wait_state("web", "tls1", "down")
    check = wrong.server("web", "tls1")["check"]
    assert "certificate verify failed" in str(check), check
    # ...and so does a connection (no check to mark the server down first):
    # the client gets 503 (http) or is closed (tcp), the failed connects are
    # retried and logged with the reason, and no descriptor stays behind.
    unchecked = listener(other_ca.path, retries=1)
    del unchecked["check"]
    wrong = loadstone(config(unchecked))
    base = wrong.fd_count()
    reply = get(port_of(wrong))
    if mode == "http":
        assert reply.startswith(b"HTTP/1.1 503")
    else:
        assert reply == b""  # closed (or reset: get() returns b"" then too)
    lines = wait_for(
        lambda: [x for x in wrong.stderr().splitlines() if "connect to tls1 (127.0.0.1:" in x],
        what="the failed connects' lines",
    )
    assert "failed: tls: certificate verify failed: " in lines[0], lines
    # Both handshakes are counted for the server with their reason (status, /metrics).
    wait_for(
        lambda: (
            wrong.server("web", "tls1")["tls_handshake_failures"]
            == {"certificate_verify_failed": 2}
        ),
        what="the failed handshakes counted",
    )
    assert (
        'loadstone_server_tls_handshake_failures_total{listener="web",'
        'reason="certificate_verify_failed",server="tls1"} 2.0'
    ) in wrong.get("/metrics").decode()
    wait_for(lambda: wrong.fd_count() <= base, timeout=10, what="fd count back to baseline")


def test_redirect_to_https(nginx: Callable[..., int], loadstone: Start, datapath: str) -> None:
    backend = nginx("n1")
    ls = loadstone(config({
        "mode": "http",
        "redirect": "https",
        "servers": [{"name": "n1", "address": f"127.0.0.1:{backend}"}],
    }))  # fmt: skip
    with socket.create_connection(("127.0.0.1", port_of(ls)), timeout=5) as s:
        s.sendall(b"GET /v3/auth?x=1 HTTP/1.1\r\nHost: api.test:5000\r\n\r\n")
        reply = s.makefile("rb").read()
    assert reply.startswith(b"HTTP/1.1 301 ")
    assert b"location: https://api.test:5000/v3/auth?x=1\r\n" in reply
    assert ls.status()["listeners"]["web"]["data_path"] == datapath


def test_hsts_response_header_rule_on_a_tls_listener(
    ca: Ca, nginx: Callable[..., int], loadstone: Start, datapath: str
) -> None:
    """HSTS through `response_headers` on a TLS listener, served by the data
    path asked for (the native one terminates TLS and applies the rule in C)."""
    cert = ca.issue("server", ["api.test"])
    backend = nginx("n1", extra="add_header X-From-Nginx yes;")
    hsts = "max-age=63072000; includeSubDomains"
    ls = loadstone(config({
        "mode": "http",
        "tls": {"certificates": str(cert.bundle)},
        "response_headers": [{"set": "Strict-Transport-Security", "value": hsts},
                             {"delete": "Server"}],
        "servers": [{"name": "n1", "address": f"127.0.0.1:{backend}"}],
    }))  # fmt: skip
    listener = ls.status()["listeners"]["web"]
    assert listener["data_path"] == datapath
    if datapath == "native":
        assert listener["data_path_reason"] is None
    ctx = ssl.create_default_context(cafile=str(ca.path))
    with tls_connect(port_of(ls), ctx, "api.test") as s:
        for _ in range(2):  # two responses on one kept connection
            s.sendall(b"GET / HTTP/1.1\r\nHost: api.test\r\n\r\n")
            data = b""
            while b"\r\n\r\n" not in data:
                chunk = s.recv(65536)
                assert chunk, "closed before the head"
                data += chunk
            head = data.split(b"\r\n\r\n", 1)[0].decode("latin-1").lower()
            assert head.startswith("http/1.1 200 ")
            assert f"\r\nstrict-transport-security: {hsts}".lower() in head
            assert "\r\nx-from-nginx: yes" in head and "\r\nserver:" not in head
            length = int(head.split("content-length: ")[1].split("\r\n")[0])
            body = data.split(b"\r\n\r\n", 1)[1]
            while len(body) < length:
                body += s.recv(65536)


def test_bad_input_ends_one_connection_and_leaks_nothing(
    ca: Ca, nginx: Callable[..., int], loadstone: Start, datapath: str
) -> None:
    cert = ca.issue("server", ["api.test"])
    backend = nginx("n1")
    ls = loadstone(config({
        "mode": "http",
        "tls": {"certificates": str(cert.bundle), "handshake_timeout": "500ms"},
        "servers": [{"name": "n1", "address": f"127.0.0.1:{backend}"}],
    }))  # fmt: skip
    port = port_of(ls)
    assert https_get(port, ca.path, "api.test")[0] == 200
    baseline = ls.fd_count()
    hello = _client_hello()
    sent = [
        b"GET / HTTP/1.1\r\nHost: api.test\r\n\r\n",  # plain HTTP to the TLS port
        b"\x00\xff" * 300,  # garbage
        hello[: len(hello) // 2],  # a truncated ClientHello, then silence
        b"",  # a client that connects and never says anything
    ]
    socks = []
    for data in sent:
        s = socket.create_connection(("127.0.0.1", port), timeout=5)
        if data:
            s.sendall(data)
        socks.append(s)
    # Everyone else is still served meanwhile.
    assert https_get(port, ca.path, "api.test")[0] == 200
    # Each bad connection is closed by loadstone (the silent ones by the handshake timeout).
    for s in socks:
        s.settimeout(5)
        try:
            while s.recv(4096):
                pass
        except ConnectionResetError:
            pass
        s.close()
    wait_for(lambda: ls.fd_count() <= baseline, timeout=10, what="fd count back to baseline")
    failures = ls.status()["listeners"]["web"]["tls"]["failures"]
    assert failures.get("http_request") == 1, failures
    assert failures.get("timeout") == 2, failures
    assert sum(failures.values()) == 4, failures
    # ...and logged with the client and the reason.
    wait_for(
        lambda: ls.stderr().count("TLS handshake from 127.0.0.1:") == 4,
        what="a line per failed handshake",
    )
    assert "failed: http_request" in ls.stderr()


def _client_hello() -> bytes:
    """The first flight of a real client (Python's ssl), for truncating."""
    ctx = ssl.create_default_context()
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = ctx.wrap_bio(incoming, outgoing, server_hostname="api.test")
    with pytest.raises(ssl.SSLWantReadError):
        obj.do_handshake()
    return outgoing.read()


def test_reload_swaps_certificate_under_load_and_refuses_a_bad_one(
    ca: Ca, tmp_path: Path, nginx: Callable[..., int], loadstone: Start, datapath: str
) -> None:
    first = ca.issue("first", ["api.test"])
    second = ca.issue("second", ["api.test"], kind="rsa")
    live = tmp_path / "live.pem"
    shutil.copy(first.bundle, live)
    backend = nginx("n1")
    ls = loadstone(config({
        "mode": "http",
        "tls": {"certificates": str(live)},
        "servers": [{"name": "n1", "address": f"127.0.0.1:{backend}"}],
    }))  # fmt: skip
    port = port_of(ls)
    ctx = ssl.create_default_context(cafile=str(ca.path))
    failures: list[str] = []
    keys_seen: set[str] = set()
    stop = threading.Event()

    def one_request() -> str:
        with tls_connect(port, ctx, "api.test") as tls:
            tls.sendall(b"GET / HTTP/1.1\r\nHost: api.test\r\nConnection: close\r\n\r\n")
            reply = tls.makefile("rb").read()
            if not reply.startswith(b"HTTP/1.1 200"):
                raise AssertionError(reply[:100])
            return str(tls.cipher()[0])

    def load() -> None:
        while not stop.is_set():
            try:
                keys_seen.add("ECDSA" if "ECDSA" in one_request() else "RSA-or-TLS13")
            except Exception as exc:  # every failure is a test failure
                failures.append(repr(exc))

    workers = [threading.Thread(target=load) for _ in range(4)]
    for w in workers:
        w.start()
    try:
        assert "CN=api.test" in ls.status()["listeners"]["web"]["tls"]["certificates"][0]["subject"]
        before = _served_key_type(port)
        assert before == "ecdsa"
        shutil.copy(second.bundle, live)
        assert ls.proc is not None
        ls.proc.send_signal(signal.SIGHUP)
        wait_for(lambda: _served_key_type(port) == "rsa", timeout=10, what="the new certificate")
        # A reload with a key that does not match: refused, the running one stays.
        live.write_bytes(second.cert.read_bytes() + first.key.read_bytes())
        generation = ls.status()["reload"]["generation"]
        ls.proc.send_signal(signal.SIGHUP)
        wait_for(lambda: ls.status()["reload"]["ok"] is False, timeout=10, what="reload rejected")
        assert ls.status()["reload"]["generation"] == generation
        assert "does not match" in str(ls.status()["reload"]["errors"])
        assert _served_key_type(port) == "rsa"
        time.sleep(0.3)  # let the load run on the kept certificate a little
    finally:
        stop.set()
        for w in workers:
            w.join(10)
    assert failures == []


def test_resumption_survives_a_reload_and_renegotiation_is_refused(
    ca: Ca, tmp_path: Path, nginx: Callable[..., int], loadstone: Start, datapath: str
) -> None:
    cert = ca.issue("server", ["api.test"])
    backend = nginx("n1")
    ls = loadstone(config({
        "mode": "tcp",
        "tls": {"certificates": str(cert.bundle)},
        "servers": [{"name": "n1", "address": f"127.0.0.1:{backend}"}],
    }))  # fmt: skip
    assert ls.status()["listeners"]["web"]["data_path"] == datapath
    port = port_of(ls)
    baseline = ls.fd_count()

    def client(*args: str, send: bytes = b"GET / HTTP/1.0\r\n\r\n") -> str:
        done = subprocess.run(
            ["openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-servername", "api.test",
             *args],
            input=send, capture_output=True, timeout=20,
        )  # fmt: skip
        return done.stdout.decode(errors="replace") + done.stderr.decode(errors="replace")

    # A session ticket from before a reload (SIGHUP) resumes after it: TLS 1.3
    # and TLS 1.2, whose tickets the same keys encrypt.
    sessions = {v: tmp_path / f"{v}.pem" for v in ("tls1_3", "tls1_2")}
    for version, path in sessions.items():
        # -ign_eof: read on until nginx closes (a TLS 1.3 ticket comes after the handshake)
        assert "New, TLSv1." in client(f"-{version}", "-ign_eof", "-sess_out", str(path))
    assert ls.proc is not None
    ls.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: ls.status()["reload"]["generation"] == 1, what="the reload")
    for version, path in sessions.items():
        assert "Reused, TLSv1." in client(f"-{version}", "-sess_in", str(path)), version
    wait_for(lambda: ls.status()["listeners"]["web"]["tls"]["resumed"] >= 2, what="2 resumed")

    # Renegotiation asked by the client ('R' to s_client, TLS 1.2): refused, and
    # that connection ends; the others are served.
    refused = client("-tls1_2", send=b"R\n")
    assert "RENEGOTIATING" in refused and "no renegotiation" in refused, refused[-400:]
    ctx = ssl.create_default_context(cafile=str(ca.path))
    with tls_connect(port, ctx, "api.test") as tls:
        tls.sendall(b"GET / HTTP/1.0\r\n\r\n")
        assert tls.makefile("rb").read().startswith(b"HTTP/1.1 200")
    wait_for(lambda: ls.fd_count() <= baseline, timeout=10, what="fd count back to baseline")


def test_bulk_bytes_both_ways_through_tls(
    ca: Ca, backends: Callable[..., list[Backend]], loadstone: Start, datapath: str
) -> None:
    """8 MB up and back through a TLS tcp listener to an echo server: records
    of every size, partial writes and a full socket on both sides."""
    cert = ca.issue("server", ["api.test"], kind="rsa")
    [echo] = backends(1, mode="echo")
    ls = loadstone(config({
        "mode": "tcp",
        "tls": {"certificates": str(cert.bundle)},
        "servers": [{"name": echo.name, "address": echo.address}],
    }))  # fmt: skip
    assert ls.status()["listeners"]["web"]["data_path"] == datapath
    data = os.urandom(8 * 1024 * 1024)
    ctx = ssl.create_default_context(cafile=str(ca.path))
    received = bytearray()
    sent = 0
    with tls_connect(port_of(ls), ctx, "api.test") as tls:
        # One thread, non-blocking (an SSL object must not be used by two at once).
        tls.setblocking(False)
        deadline = time.monotonic() + 30
        while len(received) < len(data) and time.monotonic() < deadline:
            select.select([tls], [tls] if sent < len(data) else [], [], 1)
            with contextlib.suppress(ssl.SSLWantWriteError, ssl.SSLWantReadError):
                if sent < len(data):
                    sent += tls.send(data[sent : sent + 65536])
            with contextlib.suppress(ssl.SSLWantReadError, ssl.SSLWantWriteError):
                while chunk := tls.recv(1 << 20):
                    received += chunk
    assert len(received) == len(data) and bytes(received) == data


def test_tls13_ciphersuites_and_min_version_apply_natively(
    ca: Ca, nginx: Callable[..., int], loadstone: Start
) -> None:
    """The native path sets the TLS 1.3 suites (Python's ssl, the pure path's,
    cannot): a suite outside the list is refused."""
    if not NATIVE_BUILT:
        pytest.skip("the native data path is not built here")
    cert = ca.issue("server", ["api.test"])
    backend = nginx("n1")
    ls = loadstone(config({
        "mode": "http",
        "tls": {"certificates": str(cert.bundle), "min_version": "TLSv1.3",
                "ciphersuites": "TLS_CHACHA20_POLY1305_SHA256"},
        "servers": [{"name": "n1", "address": f"127.0.0.1:{backend}"}],
    }))  # fmt: skip
    assert ls.status()["listeners"]["web"]["data_path"] == "native"
    port = port_of(ls)
    assert "Ciphersuite: TLS_CHACHA20_POLY1305_SHA256" in s_client(port, "-brief")
    other = s_client(port, "-brief", "-ciphersuites", "TLS_AES_128_GCM_SHA256")
    assert "alert handshake failure" in other
    assert "alert protocol version" in s_client(port, "-tls1_2")
    assert https_get(port, ca.path, "api.test") == (200, "n1")
    failures = ls.status()["listeners"]["web"]["tls"]["failures"]
    assert failures == {"no_shared_cipher": 1, "unsupported_protocol": 1}, failures


def _served_key_type(port: int) -> str:
    out = s_client(port, "-brief", "-servername", "api.test", "-tls1_3")
    return "ecdsa" if "Signature type: ECDSA" in out else "rsa"


def test_check_names_the_bad_file_and_warns_of_expiry(ca: Ca, tmp_path: Path) -> None:
    good = ca.issue("good", ["api.test"])
    other = ca.issue("other", ["api.test"])
    expired = ca.issue("expired", ["old.test"], expired=True)

    def check(tls: dict[str, Any], command: str = "check") -> subprocess.CompletedProcess[str]:
        path = tmp_path / "c.yaml"
        path.write_text(yaml.safe_dump(config({"mode": "http", "tls": tls,
                        "servers": [{"name": "a", "address": "127.0.0.1:1"}]})))  # fmt: skip
        return subprocess.run([str(LOADSTONE), command, str(path)], capture_output=True,
                              text=True, timeout=30)  # fmt: skip

    missing = check({"certificates": [str(tmp_path / "nope.pem")]})
    assert missing.returncode == 2
    assert "listeners.web.tls.certificates[0]" in missing.stderr and "nope.pem" in missing.stderr
    mismatch_spec = {"certificates": [{"cert": str(good.cert), "key": str(other.key)}]}
    for command in ("check", "run"):  # run refuses before binding anything
        mismatch = check(mismatch_spec, command)
        assert mismatch.returncode == 2 and "does not match" in mismatch.stderr
        assert "listeners.web.tls.certificates[0]" in mismatch.stderr
        assert str(other.key) in mismatch.stderr
    ciphers = check({"certificates": str(good.bundle), "ciphers": "NOT-A-CIPHER"})
    assert ciphers.returncode == 2 and "listeners.web.tls.ciphers" in ciphers.stderr
    version = check({"certificates": str(good.bundle), "min_version": "TLSv1.1"})
    assert version.returncode == 2 and "listeners.web.tls.min_version" in version.stderr
    old = check({"certificates": [str(good.bundle), str(expired.bundle)]})
    assert old.returncode == 0, old.stderr
    assert "warning: listeners.web.tls.certificates[1]" in old.stderr and "expired" in old.stderr


ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"


@pytest.mark.timeout(900)
def test_testssl_finds_nothing_high_or_critical(
    ca: Ca, nginx: Callable[..., int], loadstone: Start
) -> None:
    """testssl.sh (Debian) against a listener with the default settings, served
    by the native engine (the production path; the pure path's versions and
    ciphers are the s_client tests'); its output is kept in
    test-artifacts/testssl-default-listener.{txt,json}.

    Every check of its default run that rates a finding, and only those: -p
    protocols, -s cipher categories, -f forward secrecy, -P the server's
    picks, -S certificates and defaults, -h headers, -U every vulnerability
    (RC4, SWEET32, BEAST, ...). Left out: -e (each of its ~370 ciphers tried,
    listed only) and -c (client simulation, informational): ~40 % of the
    scan's time, neither ever rating anything HIGH or CRITICAL."""
    if shutil.which("testssl") is None:
        pytest.skip("testssl.sh is not installed (apt-get install testssl.sh)")
    rsa = ca.issue("rsa", ["api.test"], kind="rsa", crl_url="http://127.0.0.1/ca.crl")
    ecdsa = ca.issue("ecdsa", ["api.test"], crl_url="http://127.0.0.1/ca.crl")
    # HSTS from the server here (a listener's response_headers rule, served
    # natively too, is test_hsts_response_header_rule_on_a_tls_listener)
    backend = nginx("n1", extra='add_header Strict-Transport-Security "max-age=63072000" always;')
    ls = loadstone(config({
        "mode": "http",
        "tls": {"certificates": [str(ecdsa.bundle), str(rsa.bundle)]},
        "servers": [{"name": "n1", "address": f"127.0.0.1:{backend}"}],
    }))  # fmt: skip
    assert ls.status()["listeners"]["web"]["data_path"] == ("native" if NATIVE_BUILT else "pure")
    ARTIFACTS.mkdir(exist_ok=True)
    report = ARTIFACTS / "testssl-default-listener.json"
    report.unlink(missing_ok=True)
    text = subprocess.run(
        ["testssl", "--quiet", "--color", "0", "--warnings", "off", "--add-ca", str(ca.path),
         "-p", "-s", "-f", "-P", "-S", "-h", "-U",
         "--ip", "127.0.0.1", "--jsonfile", str(report), f"https://api.test:{port_of(ls)}"],
        capture_output=True, text=True, timeout=850,
    )  # fmt: skip
    (ARTIFACTS / "testssl-default-listener.txt").write_text(text.stdout + text.stderr)
    findings = json.loads(report.read_text())
    bad = [f for f in findings if f["severity"] in ("HIGH", "CRITICAL")]
    assert bad == [], bad
    assert any(f["id"] == "TLS1_3" and f["severity"] == "OK" for f in findings)
