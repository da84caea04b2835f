"""The PROXY protocol against real peers: a MariaDB with `proxy_protocol_networks`
behind loadstone's `send_proxy` (and, side by side, behind HAProxy's
`send-proxy-v2`: the same answer), HAProxy's `send-proxy` in front of
loadstone's `accept_proxy`, and the connections accept_proxy refuses.

The clients connect from other loopback addresses than the proxies (127.0.0.5,
127.0.0.6...), so the address a server reports tells whose it is.
"""

from __future__ import annotations

import json
import socket
import ssl
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from loadstone.proxy_protocol import encode, parse
from tests.importer.sidebyside import HAPROXY, HAProxy
from tests.integration.harness import Backend, Loadstone, free_port, wait_for
from tests.peers import mariadb
from tests.peers.mariadb import MariaDB, who_am_i
from tests.tlscerts import Ca

pytestmark = pytest.mark.usefixtures("datapath")


@pytest.fixture(scope="module")
def db() -> Iterator[MariaDB]:
    missing = mariadb.missing_software()
    if missing:
        pytest.fail(missing)
    server = MariaDB(free_port(), proxy_networks="127.0.0.1/32").start()
    yield server
    server.stop()


def tcp_haproxy(tmp_path: Path, port: int, server_port: int, option: str) -> HAProxy:
    """HAProxy in mode tcp on `port` in front of 127.0.0.1:`server_port`, with a
    server `option` (send-proxy, send-proxy-v2)."""
    return HAProxy(
        tmp_path,
        "defaults\n    mode tcp\n    timeout connect 2s\n    timeout client 10s\n"
        "    timeout server 10s\n\n"
        f"listen front\n    bind 127.0.0.1:{port}\n"
        f"    server back 127.0.0.1:{server_port} {option}\n",
    )


def forwarded_for(response: bytes) -> str:
    """X-Forwarded-For as the echo backend saw it, from its JSON answer."""
    body = json.loads(response.split(b"\r\n\r\n", 1)[1])
    return dict((k.lower(), v) for k, v in body["headers"]).get("x-forwarded-for", "")


def _send_all_read_all(s: socket.socket, payload: bytes) -> bytes:
    """Send `payload` and the end of the stream, and read the whole answer."""
    s.sendall(payload)
    s.shutdown(socket.SHUT_WR)
    s.settimeout(5)
    answer = b""
    while chunk := s.recv(65536):
        answer += chunk
    return answer


def tcp_listener(port: int, server: str, **options: Any) -> dict[str, Any]:
    return {
        "bind": [f"127.0.0.1:{port}"],
        "mode": "tcp",
        "servers": [{"name": "db1", "address": server}],
        **options,
    }


def config(**listeners: dict[str, Any]) -> dict[str, Any]:
    return {
        "global": {"grace": "1s"},
        "defaults": {"timeouts": {"connect": "2s"}},
        "listeners": listeners,
    }


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_send_proxy_to_mariadb(
    db: MariaDB, loadstone: Callable[..., Loadstone], version: str
) -> None:
    port = free_port()
    ls = loadstone(config(db=tcp_listener(port, f"127.0.0.1:{db.port}", send_proxy=version)))
    user, host = who_am_i("127.0.0.1", port, "127.0.0.5")
    assert user == "app@127.0.0.5"
    assert host.startswith("127.0.0.5:")
    # send_proxy runs on either data path: no reason to fall back to the pure one.
    assert "data_path_reason" not in ls.status()["listeners"]["db"]


def test_send_proxy_v2_same_as_haproxy(
    db: MariaDB, loadstone: Callable[..., Loadstone], tmp_path: Path
) -> None:
    """The issue's MariaDB PROXY differential test: HAProxy's send-proxy-v2 and
    loadstone's send_proxy v2 to the same server, the same client address seen."""
    assert HAPROXY is not None
    ls_port, ha_port = free_port(), free_port()
    loadstone(config(db=tcp_listener(ls_port, f"127.0.0.1:{db.port}", send_proxy="v2")))
    haproxy = tcp_haproxy(tmp_path, ha_port, db.port, "send-proxy-v2")
    try:
        via_haproxy = wait_for(lambda: who_am_i("127.0.0.1", ha_port, "127.0.0.7"))
        via_loadstone = who_am_i("127.0.0.1", ls_port, "127.0.0.7")
    finally:
        haproxy.stop()
    assert via_haproxy[0] == via_loadstone[0] == "app@127.0.0.7"
    assert via_haproxy[1].split(":")[0] == via_loadstone[1].split(":")[0] == "127.0.0.7"


def test_server_off_overrides_listener(db: MariaDB, loadstone: Callable[..., Loadstone]) -> None:
    port = free_port()
    listener = tcp_listener(port, f"127.0.0.1:{db.port}", send_proxy="v2")
    listener["servers"][0]["send_proxy"] = "off"
    loadstone(config(db=listener))
    # No header: MariaDB sees loadstone's own address.
    assert who_am_i("127.0.0.1", port, "127.0.0.5")[0] == "app@127.0.0.1"


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_send_proxy_header_bytes_ipv6(
    backends: Callable[..., list[Backend]], loadstone: Callable[..., Loadstone], version: str
) -> None:
    """An echo server sends back the header it got: the one the pure path's
    encoder builds for the IPv6 client and the address it reached, then the data."""
    (echo,) = backends(1, mode="echo")
    port = free_port()
    listener = tcp_listener(port, echo.address, send_proxy=version)
    listener["bind"] = [f"[::1]:{port}"]
    loadstone(config(echo=listener))
    with socket.create_connection(("::1", port)) as s:
        client = s.getsockname()[:2]
        answer = _send_all_read_all(s, b"ping")
    expected = encode(version, (client[0], client[1]), ("::1", port))
    assert answer.startswith(expected + b"ping\nEOF "), answer
    parsed = parse(answer)
    assert parsed is not None and parsed[0].source == ("::1", client[1])


def test_http_send_proxy_one_header_per_connection(
    backends: Callable[..., list[Backend]],
    loadstone: Callable[..., Loadstone],
    tmp_path: Path,
    datapath: str,
) -> None:
    """mode http with send_proxy v2 into HAProxy's `accept-proxy` (mode http,
    forwardfor): each client's requests reach the server under its own address,
    two clients' requests never share a server connection (and its header)."""
    assert HAPROXY is not None
    (web,) = backends(1)
    ls_port, ha_port = free_port(), free_port()
    haproxy = HAProxy(
        tmp_path,
        "defaults\n    mode http\n    timeout connect 2s\n    timeout client 10s\n"
        "    timeout server 10s\n\n"
        f"listen front\n    bind 127.0.0.1:{ha_port} accept-proxy\n    option forwardfor\n"
        f"    server back {web.address}\n",
    )
    try:
        ls = loadstone(
            config(
                web={
                    "bind": [f"127.0.0.1:{ls_port}"],
                    "mode": "http",
                    "send_proxy": "v2",
                    "servers": [{"name": "haproxy", "address": f"127.0.0.1:{ha_port}"}],
                }
            )
        )
        assert ls.status()["listeners"]["web"]["data_path"] == datapath
        first = wait_for(lambda: _echo_xff(ls_port, "127.0.0.12"))
        second = _echo_xff(ls_port, "127.0.0.13")
        third = _echo_xff(ls_port, "127.0.0.12")
    finally:
        haproxy.stop()
    assert (first, second, third) == ("127.0.0.12", "127.0.0.13", "127.0.0.12")


def test_haproxy_send_proxy_into_accept_proxy(
    db: MariaDB, loadstone: Callable[..., Loadstone], tmp_path: Path
) -> None:
    """HAProxy (send-proxy, v1) -> loadstone (accept_proxy, send_proxy v2) -> MariaDB:
    the client address crosses both proxies."""
    assert HAPROXY is not None
    ls_port, ha_port = free_port(), free_port()
    ls = loadstone(
        config(
            db=tcp_listener(
                ls_port,
                f"127.0.0.1:{db.port}",
                send_proxy="v2",
                accept_proxy={"trusted": ["127.0.0.1/32"]},
            )
        )
    )
    haproxy = tcp_haproxy(tmp_path, ha_port, ls_port, "send-proxy")
    try:
        user, host = wait_for(lambda: who_am_i("127.0.0.1", ha_port, "127.0.0.8"))
    finally:
        haproxy.stop()
    assert user == "app@127.0.0.8"
    assert host.startswith("127.0.0.8:")
    # The session line (written as the session ends) names the original client.
    wait_for(
        lambda: any(line.get("client", "").startswith("127.0.0.8:") for line in ls.session_logs()),
        what="a session line naming 127.0.0.8",
    )


def _echo_xff(port: int, source: str = "127.0.0.1") -> str:
    with socket.create_connection(("127.0.0.1", port), source_address=(source, 0)) as s:
        s.sendall(b"GET /echo HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    return forwarded_for(data)


def test_http_accept_proxy_feeds_forwardfor(
    backends: Callable[..., list[Backend]], loadstone: Callable[..., Loadstone], tmp_path: Path
) -> None:
    assert HAPROXY is not None
    (web,) = backends(1)
    ls_port, ha_port = free_port(), free_port()
    loadstone(
        config(
            web={
                "bind": [f"127.0.0.1:{ls_port}"],
                "mode": "http",
                "forwardfor": True,
                "accept_proxy": {"trusted": ["127.0.0.0/8"]},
                "servers": [{"name": web.name, "address": web.address}],
            }
        )
    )
    haproxy = tcp_haproxy(tmp_path, ha_port, ls_port, "send-proxy-v2")
    try:
        xff = wait_for(lambda: _echo_xff(ha_port, "127.0.0.9"))
    finally:
        haproxy.stop()
    assert xff == "127.0.0.9"


def _closed_without_answer(port: int, payload: bytes, source: str = "127.0.0.1") -> bool:
    with socket.create_connection(("127.0.0.1", port), source_address=(source, 0)) as s:
        s.settimeout(5)
        s.sendall(payload)
        try:
            return s.recv(65536) == b""
        except ConnectionResetError:
            return True


def test_accept_proxy_refusals(
    backends: Callable[..., list[Backend]], loadstone: Callable[..., Loadstone]
) -> None:
    (echo,) = backends(1, mode="echo")
    trusted_port, untrusted_port = free_port(), free_port()
    servers = [{"name": echo.name, "address": echo.address}]
    ls = loadstone(
        config(
            trusted={
                "bind": [f"127.0.0.1:{trusted_port}"],
                "servers": servers,
                "accept_proxy": {"trusted": ["127.0.0.1/32"], "timeout": "300ms"},
            },
            untrusted={
                "bind": [f"127.0.0.1:{untrusted_port}"],
                "servers": servers,
                "accept_proxy": {"trusted": ["198.18.0.0/15"]},
            },
        )
    )
    fds = ls.fd_count()
    # From a trusted source: a malformed header, one cut short, one too slow.
    assert _closed_without_answer(trusted_port, b"PROXY TCP4 1.2.3.4 nonsense\r\nhello")
    assert _closed_without_answer(trusted_port, b"GET / HTTP/1.1\r\n\r\n")
    with socket.create_connection(("127.0.0.1", trusted_port)) as s:
        s.sendall(b"PROXY TCP4 10.1.2.3 ")  # and no more: the 300ms run out
        s.settimeout(5)
        assert s.recv(10) == b""
    with socket.create_connection(("127.0.0.1", trusted_port)) as s:
        s.sendall(b"\r\n\r\n\x00\r\nQUIT\n\x21\x11\x00\x0c")
        s.shutdown(socket.SHUT_WR)  # truncated: the addresses never come
        s.settimeout(5)
        assert s.recv(10) == b""
    # A valid header from a trusted source is relayed without its header.
    with socket.create_connection(("127.0.0.1", trusted_port)) as s:
        answer = _send_all_read_all(s, b"PROXY TCP4 10.1.2.3 127.0.0.1 4000 80\r\nping")
    assert answer.startswith(b"ping\nEOF ")
    # An untrusted source may not choose its address, but is served without one.
    assert _closed_without_answer(untrusted_port, b"PROXY TCP4 10.9.9.9 127.0.0.1 1 2\r\nx")
    with socket.create_connection(("127.0.0.1", untrusted_port)) as s:
        s.sendall(b"plain")
        s.shutdown(socket.SHUT_WR)
        s.settimeout(5)
        assert s.recv(5) == b"plain"

    def refused() -> dict[str, Any]:
        listeners = ls.status()["listeners"]
        return {
            "trusted": listeners["trusted"]["proxy_protocol"]["refused"],
            "untrusted": listeners["untrusted"]["proxy_protocol"]["refused"],
        }

    wait_for(lambda: refused()["trusted"].get("truncated"), what="counts")
    assert refused() == {
        "trusted": {"malformed": 2, "timeout": 1, "truncated": 1},
        "untrusted": {"untrusted": 1},
    }
    wait_for(
        lambda: any(line.get("client") == "10.1.2.3:4000" for line in ls.session_logs()),
        what="a session line naming the header's client",
    )
    wait_for(lambda: ls.fd_count() <= fds, what="no descriptor left open")


def test_accept_proxy_v2_ipv6_in_pieces_passed_on(
    backends: Callable[..., list[Backend]], loadstone: Callable[..., Loadstone]
) -> None:
    """A v2 header for IPv6 addresses arriving in three pieces is read whole,
    and the header sent on (v1) names its addresses, not the connection's."""
    (echo,) = backends(1, mode="echo")
    port = free_port()
    listener = tcp_listener(
        port, echo.address, send_proxy="v1", accept_proxy={"trusted": ["::1/128"]}
    )
    listener["bind"] = [f"[::1]:{port}"]
    loadstone(config(echo=listener))
    header = encode("v2", ("2001:db8::7", 4000), ("2001:db8::1", 443))
    with socket.create_connection(("::1", port)) as s:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        # The pieces are the scenario (a header split across segments), not a wait.
        for piece in (header[:10], header[10:20]):
            s.sendall(piece)
            time.sleep(0.05)
        answer = _send_all_read_all(s, header[20:] + b"ping")
    sent_on = encode("v1", ("2001:db8::7", 4000), ("2001:db8::1", 443))
    assert answer.startswith(sent_on + b"ping\nEOF "), answer


def test_accept_proxy_before_tls(
    backends: Callable[..., list[Backend]], loadstone: Callable[..., Loadstone], tmp_path: Path
) -> None:
    """HAProxy in tcp mode (TLS passed through, send-proxy-v2) in front of a
    loadstone TLS listener: the header comes before the handshake, as HAProxy's
    `bind ... accept-proxy ssl` reads it."""
    assert HAPROXY is not None
    ca = Ca(tmp_path / "ca")
    site = ca.issue("site", ["localhost"])
    (web,) = backends(1)
    ls_port, ha_port = free_port(), free_port()
    loadstone(
        config(
            web={
                "bind": [f"127.0.0.1:{ls_port}"],
                "mode": "http",
                "forwardfor": True,
                "tls": {"certificates": [str(site.bundle)]},
                "accept_proxy": {"trusted": ["127.0.0.1/32"]},
                "servers": [{"name": web.name, "address": web.address}],
            }
        )
    )
    haproxy = tcp_haproxy(tmp_path, ha_port, ls_port, "send-proxy-v2")
    context = ssl.create_default_context(cafile=str(ca.path))

    def xff() -> str:
        raw = socket.create_connection(("127.0.0.1", ha_port), source_address=("127.0.0.11", 0))
        with context.wrap_socket(raw, server_hostname="localhost") as s:
            s.settimeout(5)
            s.sendall(b"GET /echo HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
            data = b""
            while chunk := s.recv(65536):
                data += chunk
        return forwarded_for(data)

    try:
        assert wait_for(xff) == "127.0.0.11"
    finally:
        haproxy.stop()
