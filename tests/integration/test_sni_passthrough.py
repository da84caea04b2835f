"""SNI passthrough: a tcp listener reads the ClientHello's server name and relays
the TLS untouched to the pool routed to it. The backends are nginx TLS servers,
each with its own certificate, so the certificate a client sees (curl verifying
it, openssl s_client printing it) proves which pool the connection reached.
Bad first flights (not TLS, truncated, slow, silent) end that connection only.
Every test runs on both data paths (the native engine reads the ClientHello in
its workers, engine/sni.c), with the same counts and log lines."""

from __future__ import annotations

import signal
import socket
import ssl
import time
from collections.abc import Callable
from typing import Any

import pytest
import yaml

from tests.integration import test_tls
from tests.integration.harness import Loadstone, free_port, wait_for
from tests.integration.test_tls import config, https_get, port_of, s_client
from tests.tlscerts import Ca

pytestmark = pytest.mark.integration

# The TLS suite's fixtures: a CA made at run time, nginx servers (over TLS with `tls=`).
ca = test_tls.ca
nginx = test_tls.nginx

Start = Callable[..., Loadstone]


def passthrough(ca: Ca, nginx: Callable[..., int], timeout: str = "5s") -> dict[str, Any]:
    """A listener with pools a (a.test, *.a.test) and b (b.test), and a default
    server; each backend is nginx with a certificate for its own names."""
    backend: dict[str, int] = {}
    for name, names in (("a", ["a.test", "*.a.test"]), ("b", ["b.test"]), ("d", ["d.test"])):
        issued = ca.issue(name, names)
        backend[name] = nginx(f"n{name}", tls=(issued.cert, issued.key))
    return config({
        "mode": "tcp",
        "sni_passthrough": {
            "inspect_timeout": timeout,
            "routes": [{"names": ["a.test", "*.a.test"], "pool": "a"},
                       {"names": "b.test", "pool": "b"}],
        },
        "pools": {
            "a": {"servers": [{"name": "na", "address": f"127.0.0.1:{backend['a']}"}]},
            "b": {"servers": [{"name": "nb", "address": f"127.0.0.1:{backend['b']}"}]},
        },
        "servers": [{"name": "nd", "address": f"127.0.0.1:{backend['d']}"}],
    })  # fmt: skip


def test_each_name_reaches_its_pool(
    ca: Ca, nginx: Callable[..., int], loadstone: Start, datapath: str
) -> None:
    ls = loadstone(passthrough(ca, nginx))
    port = port_of(ls)
    listener = ls.status()["listeners"]["web"]
    assert listener["data_path"] == datapath
    assert listener["data_path_reason"] is None

    # curl verifies the backend's own certificate: the TLS went through untouched.
    assert https_get(port, ca.path, "a.test") == (200, "na")
    assert https_get(port, ca.path, "x.a.test") == (200, "na")
    assert https_get(port, ca.path, "b.test") == (200, "nb")
    # A name no route has, and no SNI at all: the default pool's server.
    assert "Peer certificate: CN = d.test" in s_client(port, "-brief", "-servername", "other.test")
    assert "Peer certificate: CN = d.test" in s_client(port, "-brief", "-noservername")
    assert "Peer certificate: CN = b.test" in s_client(port, "-brief", "-servername", "B.TEST")

    sni = ls.status()["listeners"]["web"]["sni_passthrough"]
    assert sni["routed"] == {"a": 2, "b": 2, "default": 2}, sni
    assert sni["refused"] == {}
    assert sni["pools"] == {"a": ["na"], "b": ["nb"], "default": ["nd"]}
    logged = wait_for(
        lambda: [e for e in ls.session_logs() if e.get("server") == "nb"] or None,
        what="the session log lines",
    )
    assert logged[0]["tls"] == "TLSv1.3/passthrough/b.test", logged[0]

    # A reload sending b.test to pool a: new connections follow it, counters stay.
    ls.config["listeners"]["web"]["sni_passthrough"]["routes"][1]["pool"] = "a"
    ls.path.write_text(yaml.safe_dump(ls.config))
    assert ls.proc is not None
    ls.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: ls.status()["reload"]["generation"] == 1, what="the reload")
    assert "Peer certificate: CN = a.test" in s_client(port, "-brief", "-servername", "b.test")
    routed = ls.status()["listeners"]["web"]["sni_passthrough"]["routed"]
    assert routed == {"a": 3, "b": 2, "default": 2}, routed


def test_a_client_hello_in_several_records_and_reads_is_relayed_untouched(
    ca: Ca, nginx: Callable[..., int], loadstone: Start, datapath: str
) -> None:
    # The ClientHello re-cut into three records and sent in several writes: the
    # proxy reads it in pieces, routes it by its name, and nginx completes the
    # handshake on the bytes it relayed (any change would fail the Finished).
    ls = loadstone(passthrough(ca, nginx))
    port = port_of(ls)
    ctx = ssl.create_default_context(cafile=str(ca.path))
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = ctx.wrap_bio(incoming, outgoing, server_hostname="x.a.test")
    with pytest.raises(ssl.SSLWantReadError):
        tls.do_handshake()
    flight = outgoing.read()
    body = flight[5:]
    pieces = [body[:40], body[40:200], body[200:]]
    records = b"".join(flight[:3] + len(p).to_bytes(2, "big") + p for p in pieces)
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        for at in range(0, len(records), 150):
            sock.sendall(records[at : at + 150])
            time.sleep(0.05)  # the client's pace (separate reads), not a synchronisation
        while True:
            try:
                tls.do_handshake()
                break
            except ssl.SSLWantReadError:
                sock.sendall(outgoing.read())  # a TLS 1.2 client's flight, if any
                data = sock.recv(65536)
                assert data, "closed during the handshake"
                incoming.write(data)
        sock.sendall(outgoing.read())  # the client's last flight
        cert = tls.getpeercert()
    assert cert is not None and ("commonName", "a.test") in [n[0] for n in cert["subject"]]
    sni = ls.status()["listeners"]["web"]["sni_passthrough"]
    assert sni["routed"] == {"a": 1} and sni["refused"] == {}, sni


def test_a_retry_stays_in_the_routed_pool(
    ca: Ca, nginx: Callable[..., int], loadstone: Start, datapath: str
) -> None:
    # Pool a gets a server nothing listens on, first in round-robin order: a
    # connection sent there is retried on a server of the same pool (the
    # engine picks from the pool's own table), never on b's or the default's.
    cfg = passthrough(ca, nginx)
    pool_a = cfg["listeners"]["web"]["pools"]["a"]
    pool_a["servers"].insert(0, {"name": "dead", "address": f"127.0.0.1:{free_port()}"})
    ls = loadstone(cfg)
    port = port_of(ls)
    for _ in range(4):
        assert "Peer certificate: CN = a.test" in s_client(port, "-brief", "-servername", "a.test")
    sni = ls.status()["listeners"]["web"]["sni_passthrough"]
    assert sni["routed"] == {"a": 4} and sni["pools"]["a"] == ["dead", "na"], sni


def _drain(sock: socket.socket) -> float:
    """Read until loadstone closes the connection; return when that was."""
    sock.settimeout(10)
    try:
        while sock.recv(4096):
            pass
    except ConnectionResetError:
        pass
    return time.monotonic()


def test_bad_first_flights_end_at_once_or_at_the_inspect_timeout(
    ca: Ca, nginx: Callable[..., int], loadstone: Start, datapath: str
) -> None:
    ls = loadstone(passthrough(ca, nginx, timeout="700ms"))
    port = port_of(ls)
    assert ls.status()["listeners"]["web"]["data_path"] == datapath
    assert https_get(port, ca.path, "a.test") == (200, "na")
    baseline = ls.fd_count()
    hello = _client_hello("a.test")

    def connect(data: bytes) -> socket.socket:
        sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        if data:
            sock.sendall(data)
        return sock

    start = time.monotonic()
    at_once = [connect(b"GET / HTTP/1.1\r\nHost: a.test\r\n\r\n"), connect(b"\x00\xff" * 300)]
    at_timeout = [connect(hello[: len(hello) // 2]), connect(b"")]
    slow = connect(hello[:10])  # a client dripping its ClientHello, slower than the timeout
    # Everyone else is served meanwhile.
    assert https_get(port, ca.path, "b.test") == (200, "nb")
    for sock in at_once:
        assert _drain(sock) - start < 0.6
        sock.close()
    for offset in range(10, 40, 5):
        try:
            slow.sendall(hello[offset : offset + 5])
        except OSError:
            break  # already closed by loadstone: the point of the test
        time.sleep(0.1)  # the client's pace, not a synchronisation
    for sock in [*at_timeout, slow]:
        ended = _drain(sock) - start
        assert 0.6 <= ended < 5, ended
        sock.close()

    wait_for(lambda: ls.fd_count() <= baseline, timeout=10, what="fd count back to baseline")
    sni = ls.status()["listeners"]["web"]["sni_passthrough"]
    assert sni["refused"] == {
        "not TLS (plain text)": 1,
        "not TLS (record type)": 1,
        "sni-inspect-timeout": 3,
    }, sni

    def refused_ends() -> list[str] | None:  # the log is written through a buffer
        ends = sorted(e["end"] for e in ls.session_logs() if e.get("server") == "-")
        return ends if len(ends) >= 5 else None

    ends = wait_for(refused_ends, what="five session log lines")
    assert ends == [
        "sni-inspect-timeout",
        "sni-inspect-timeout",
        "sni-inspect-timeout",
        "sni-refused (not TLS (plain text))",
        "sni-refused (not TLS (record type))",
    ], ends


def test_an_sslv2_hello_an_oversized_one_and_a_truncated_one_with_a_fin(
    ca: Ca, nginx: Callable[..., int], loadstone: Start, datapath: str
) -> None:
    ls = loadstone(passthrough(ca, nginx, timeout="700ms"))
    port = port_of(ls)
    assert https_get(port, ca.path, "a.test") == (200, "na")
    baseline = ls.fd_count()
    hello = _client_hello("a.test")
    start = time.monotonic()
    sslv2 = socket.create_connection(("127.0.0.1", port), timeout=5)
    sslv2.sendall(b"\x80\x2e\x01\x00\x02" + bytes(43))
    oversized = socket.create_connection(("127.0.0.1", port), timeout=5)
    oversized.sendall(b"\x16\x03\x01\x00\x04\x01\x01\x00\x01")  # a 65,536 + 1 byte hello
    truncated = socket.create_connection(("127.0.0.1", port), timeout=5)
    truncated.sendall(hello[:100])
    truncated.shutdown(socket.SHUT_WR)  # its FIN: the session waits for the timeout all the same
    for sock in (sslv2, oversized):
        assert _drain(sock) - start < 0.6
        sock.close()
    ended = _drain(truncated) - start
    assert 0.6 <= ended < 5, ended
    truncated.close()
    wait_for(lambda: ls.fd_count() <= baseline, timeout=10, what="fd count back to baseline")
    sni = ls.status()["listeners"]["web"]["sni_passthrough"]
    assert sni["refused"] == {
        "SSLv2 hello": 1,
        "ClientHello too large": 1,
        "sni-inspect-timeout": 1,
    }, sni


def _client_hello(name: str) -> bytes:
    """The first flight of a real client (Python's ssl), for truncating."""
    ctx = ssl.create_default_context()
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = ctx.wrap_bio(incoming, outgoing, server_hostname=name)
    with pytest.raises(ssl.SSLWantReadError):
        obj.do_handshake()
    return outgoing.read()
