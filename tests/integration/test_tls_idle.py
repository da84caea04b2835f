"""Idle TLS connections on the native path: OpenSSL releases a connection's
read and write buffers while it waits (SSL_MODE_RELEASE_BUFFERS), which is
what keeps an idle client at about 16 KB (benchmarks/tls_compare.py `idle`).
Connections left idle past that point still serve requests and hand out
sessions that resume, and their memory stays far below what kept buffers
would hold (two 17 KB record buffers each)."""

from __future__ import annotations

import socket
import ssl
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.integration import test_tls
from tests.integration.conftest import NATIVE_BUILT
from tests.integration.harness import Loadstone, wait_for
from tests.integration.test_tls import port_of
from tests.integration.test_tls_wire import tls_listener
from tests.tlscerts import Ca

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not NATIVE_BUILT, reason="the native data path is not built here"),
]

Start = Callable[..., Loadstone]

# The TLS suite's fixtures: a CA made at run time, nginx servers.
ca = test_tls.ca
nginx = test_tls.nginx

IDLE_CLIENTS = 300
# bytes of RSS per idle client: about 16 KB measured; kept buffers add 34 KB
MOST_PER_CLIENT = 32 * 1024


def rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def get(tls: ssl.SSLSocket) -> bytes:
    tls.sendall(b"GET / HTTP/1.1\r\nHost: api.test\r\n\r\n")
    answer = b""
    while b"\r\n\r\n" not in answer or not answer.endswith(b"\n"):
        chunk = tls.recv(4096)
        assert chunk, answer
        answer += chunk
    return answer


def test_idle_clients_hold_little_and_still_serve_and_resume(
    ca: Ca, nginx: Callable[..., int], loadstone: Start
) -> None:
    listener = tls_listener(ca, nginx, "http")
    # the connection's X-Forwarded lines, made at accept and sent with every request
    listener["listeners"]["web"].update(forwardfor=True, forwarded_proto="auto")
    ls = loadstone(listener)
    assert ls.status()["listeners"]["web"]["data_path"] == "native"
    assert ls.proc is not None
    port = port_of(ls)
    ctx = ssl.create_default_context(cafile=str(ca.path))
    before = rss(ls.proc.pid)
    held: list[ssl.SSLSocket] = []
    try:
        for _ in range(IDLE_CLIENTS):
            raw = socket.create_connection(("127.0.0.1", port), timeout=10)
            held.append(ctx.wrap_socket(raw, server_hostname="api.test"))
        wait_for(
            lambda: ls.status()["listeners"]["web"]["tls"]["handshakes"] >= IDLE_CLIENTS,
            what="every handshake counted",
        )
        grown = rss(ls.proc.pid) - before
        assert grown < IDLE_CLIENTS * MOST_PER_CLIENT, grown / IDLE_CLIENTS
        # after the wait: each still answers, the first and last twice
        for tls in held:
            assert get(tls).startswith(b"HTTP/1.1 200")
        for tls in (held[0], held[-1]):
            assert get(tls).endswith(b"n1 https\n")
        # and its session (a TLS 1.3 ticket, read with the answer) resumes
        session = held[-1].session
        assert session is not None
        raw = socket.create_connection(("127.0.0.1", port), timeout=10)
        with ctx.wrap_socket(raw, server_hostname="api.test", session=session) as again:
            assert again.session_reused
            assert get(again).endswith(b"n1 https\n")
        wait_for(lambda: ls.status()["listeners"]["web"]["tls"]["resumed"] >= 1, what="resumed")
    finally:
        for tls in held:
            tls.close()
