"""`loadstone run` as a subprocess in front of real backend processes (tcp mode)."""

from __future__ import annotations

import asyncio
import collections
import hashlib
import os
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.integration.conftest import listener_config
from tests.integration.harness import Backend, Loadstone, free_port, wait_for
from tests.peers.backend import pattern_bytes

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("datapath")]

Backends = Callable[..., list[Backend]]
Start = Callable[..., Loadstone]


def proxy_port(ls: Loadstone, listener: str = "web") -> int:
    return int(ls.config["listeners"][listener]["bind"][0].rsplit(":", 1)[1])


def http_get(port: int, path: str = "/", host: str = "127.0.0.1", timeout: float = 5) -> bytes:
    """One HTTP/1.0 request over a fresh connection; returns the body."""
    with socket.create_connection((host, port), timeout=timeout) as s:
        s.sendall(f"GET {path} HTTP/1.0\r\nHost: test\r\n\r\n".encode())
        chunks = []
        while chunk := s.recv(65536):
            chunks.append(chunk)
    response = b"".join(chunks)
    head, _, body = response.partition(b"\r\n\r\n")
    assert head.split(b" ", 2)[1] == b"200", head[:100]
    return body


def who(port: int) -> str:
    return http_get(port).decode().strip()


def checked(interval: str = "200ms", rise: int = 2, fall: int = 2, **kw: object) -> dict:
    return {
        "type": "http",
        "path": "/health",
        "interval": interval,
        "rise": rise,
        "fall": fall,
        "timeout": "300ms",
        **kw,
    }


# -- balancing ----------------------------------------------------------------------


def test_roundrobin_spreads_by_weight(
    backends: Backends, loadstone: Start, event_loop_name: str
) -> None:
    servers = backends(3)
    config = listener_config(servers, check=checked())
    config["listeners"]["web"]["servers"][2]["weight"] = 2
    ls = loadstone(config, loop=event_loop_name)
    ls.wait_all_up("web")
    port = proxy_port(ls)
    counts = collections.Counter(who(port) for _ in range(40))
    assert counts == {"s1": 10, "s2": 10, "s3": 20}
    st = ls.status()["listeners"]["web"]
    assert st["servers"]["s3"]["sessions_total"] == 20
    assert st["sessions_total"] == 40


def test_leastconn_and_source(backends: Backends, loadstone: Start) -> None:
    servers = backends(3)
    ls = loadstone(listener_config(servers, balance="source"))
    port = proxy_port(ls)
    # One client address: every connection lands on the same server.
    assert len({who(port) for _ in range(10)}) == 1
    ls2 = loadstone(listener_config(servers, balance="leastconn"))
    assert {who(proxy_port(ls2)) for _ in range(9)} == {"s1", "s2", "s3"}


def test_backup_only_when_all_primaries_down(backends: Backends, loadstone: Start) -> None:
    servers = backends(3)
    config = listener_config(servers, check=checked())
    config["listeners"]["web"]["servers"][2]["backup"] = True
    ls = loadstone(config)
    ls.wait_all_up("web")
    port = proxy_port(ls)
    assert {who(port) for _ in range(10)} == {"s1", "s2"}
    servers[0].kill()
    servers[1].kill()
    ls.wait_state("web", "s1", "down")
    ls.wait_state("web", "s2", "down")
    assert {who(port) for _ in range(5)} == {"s3"}


# -- health checks ------------------------------------------------------------------


def test_killed_backend_marked_down_in_time_and_back_after_rise(
    backends: Backends, loadstone: Start
) -> None:
    servers = backends(3)
    ls = loadstone(listener_config(servers, check=checked(interval="200ms", fall=2, rise=2)))
    ls.wait_all_up("web")
    port = proxy_port(ls)
    victim = servers[1]
    victim.kill()
    t0 = time.monotonic()
    ls.wait_state("web", victim.name, "down", timeout=5)
    took = time.monotonic() - t0
    # interval x fall + timeout, and a margin for a loaded 2-core machine
    assert took < 0.2 * 2 + 0.3 + 0.5, took
    assert ls.server("web", victim.name)["check"]["detail"] == "connection refused"
    seen = {who(port) for _ in range(30)}
    assert seen == {"s1", "s3"}

    revived = Backend(victim.name, victim.port).start()
    try:
        ls.wait_state("web", victim.name, "up", timeout=5)
        assert {who(port) for _ in range(9)} == {"s1", "s2", "s3"}
    finally:
        revived.stop()


def test_shutdown_sessions_when_marked_down(
    backends: Backends, loadstone: Start, tmp_path: Path
) -> None:
    fail = tmp_path / "fail"
    servers = backends(1, fail_file=str(fail))
    ls = loadstone(listener_config(servers, check=checked(), on_marked_down="shutdown-sessions"))
    ls.wait_all_up("web")
    with socket.create_connection(("127.0.0.1", proxy_port(ls)), timeout=5) as s:
        wait_for(lambda: ls.server("web", "s1")["sessions"] == 1)
        fail.touch()
        ls.wait_state("web", "s1", "down")
        assert s.recv(100) == b""  # the proxy closed the session
    wait_for(lambda: ls.server("web", "s1")["sessions"] == 0)
    wait_for(lambda: any("server marked down" in e["end"] for e in ls.session_logs()))


# -- relaying -----------------------------------------------------------------------


def test_half_close_passes_fin_and_keeps_other_direction(
    backends: Backends, loadstone: Start, event_loop_name: str
) -> None:
    servers = backends(1, mode="echo")
    ls = loadstone(listener_config(servers), loop=event_loop_name)
    payload = os.urandom(200_000)
    with socket.create_connection(("127.0.0.1", proxy_port(ls)), timeout=10) as s:
        s.sendall(payload)
        s.shutdown(socket.SHUT_WR)  # our FIN must reach the backend...
        received = b""
        while chunk := s.recv(65536):  # ...which then answers and closes
            received += chunk
    digest = hashlib.sha256(payload).hexdigest()
    assert received == payload + f"\nEOF {digest} s1\n".encode()


def test_100_mb_transfer_intact(backends: Backends, loadstone: Start) -> None:
    servers = backends(1, mode="echo")
    ls = loadstone(listener_config(servers))
    size = 100 * 1024 * 1024
    sent = hashlib.sha256()
    received = hashlib.sha256()
    total = 0
    with socket.create_connection(("127.0.0.1", proxy_port(ls)), timeout=30) as s:

        def writer() -> None:
            block = os.urandom(1 << 20)
            for i in range(size // len(block)):
                chunk = block[i % 7 :] + block[: i % 7]  # vary the content
                sent.update(chunk)
                s.sendall(chunk)
            s.shutdown(socket.SHUT_WR)

        thread = threading.Thread(target=writer)
        thread.start()
        tail = b""
        while chunk := s.recv(1 << 20):
            total += len(chunk)
            data = tail + chunk
            keep = max(0, len(data) - 100)  # the EOF line arrives at the very end
            received.update(data[:keep])
            tail = data[keep:]
        thread.join()
    echoed, _, line = tail.rpartition(b"\nEOF ")
    received.update(echoed)
    assert total - len(b"\nEOF " + line) == size
    assert received.hexdigest() == sent.hexdigest()
    assert line.split()[0].decode() == sent.hexdigest()
    logs = wait_for(lambda: [e for e in ls.session_logs() if e["server"] == "s1"])
    assert logs[-1]["bytes_in"] == size
    assert logs[-1]["bytes_out"] == total


def test_1000_concurrent_connections(
    backends: Backends, loadstone: Start, event_loop_name: str
) -> None:
    servers = backends(2, mode="echo")
    ls = loadstone(listener_config(servers), loop=event_loop_name)
    port = proxy_port(ls)

    async def one(i: int) -> bool:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        message = f"hello {i}\n".encode() * 10
        writer.write(message)
        writer.write_eof()
        data = await reader.read()
        writer.close()
        await writer.wait_closed()
        return data.startswith(message) and b"\nEOF " in data

    async def run() -> list[bool]:
        return await asyncio.gather(*(one(i) for i in range(1000)))

    results = asyncio.run(run())
    assert all(results)
    wait_for(lambda: ls.status()["listeners"]["web"]["sessions"] == 0)
    assert ls.status()["listeners"]["web"]["sessions_total"] == 1000


def test_slow_or_vanished_client_does_not_stall_others(
    backends: Backends, loadstone: Start
) -> None:
    servers = backends(1)
    ls = loadstone(listener_config(servers))
    port = proxy_port(ls)
    # A client that asks for 200 MB and never reads: flow control must hold the
    # backend back instead of buffering everything, and others must go on.
    stuck = socket.create_connection(("127.0.0.1", port))
    stuck.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    stuck.sendall(b"GET /download?size=209715200 HTTP/1.0\r\n\r\n")
    vanished = socket.create_connection(("127.0.0.1", port))
    vanished.sendall(b"GET /download?size=209715200 HTTP/1.0\r\n\r\n")
    vanished.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    vanished.close()  # RST mid-transfer
    try:
        t0 = time.monotonic()
        for _ in range(20):
            assert who(port) == "s1"
        assert time.monotonic() - t0 < 5
        status = ls.status()["listeners"]["web"]
        # The stuck download is held back: far less than 200 MB went out.
        assert status["bytes_out"] < 50 * 1024 * 1024
    finally:
        stuck.close()
    wait_for(lambda: ls.status()["listeners"]["web"]["sessions"] == 0)
    # Both big downloads ended as resets (closing with unread data sends a RST),
    # each logged once, with the stuck one held to a few megabytes.
    big = wait_for(
        lambda: (
            [e for e in ls.session_logs() if e["bytes_in"] == 41][1:]
            and [e for e in ls.session_logs() if e["bytes_in"] == 41]
        )
    )
    assert [e["end"] for e in big] == ["client-reset", "client-reset"]
    assert max(e["bytes_out"] for e in big) < 50 * 1024 * 1024


def test_download_matches_pattern(backends: Backends, loadstone: Start) -> None:
    servers = backends(2)
    ls = loadstone(listener_config(servers))
    body = http_get(proxy_port(ls), "/download?size=3000000")
    assert body == pattern_bytes(3_000_000)


# -- timeouts, retries, limits --------------------------------------------------------


def test_idle_client_times_out(backends: Backends, loadstone: Start) -> None:
    servers = backends(1, mode="echo")
    config = listener_config(servers)
    config["listeners"]["web"]["timeouts"] = {"client": "500ms", "server": "5s"}
    ls = loadstone(config)
    with socket.create_connection(("127.0.0.1", proxy_port(ls)), timeout=5) as s:
        t0 = time.monotonic()
        assert s.recv(10) == b""
        took = time.monotonic() - t0
    assert 0.4 < took < 3.0, took  # generous upper bound: a loaded CI machine
    wait_for(lambda: any(e["end"] == "client-timeout" for e in ls.session_logs()), timeout=3)


def test_connect_failure_redispatches(backends: Backends, loadstone: Start) -> None:
    servers = backends(1)
    dead = Backend("dead", free_port())  # never started: connection refused
    config = listener_config([dead, *servers])
    ls = loadstone(config)
    port = proxy_port(ls)
    assert [who(port) for _ in range(6)] == ["s1"] * 6
    assert ls.server("web", "dead")["connect_errors"] >= 3


def test_without_redispatch_retries_stay_on_the_failed_server(
    backends: Backends, loadstone: Start
) -> None:
    """HAProxy without `option redispatch` retries the server that refused: a
    session that round robin gives to the dead server fails after its retries."""
    servers = backends(1)
    dead = Backend("dead", free_port())
    ls = loadstone(listener_config([dead, *servers], retries=2, redispatch=False))
    failed = 0
    for _ in range(4):
        with socket.create_connection(("127.0.0.1", proxy_port(ls)), timeout=5) as s:
            s.sendall(b"GET / HTTP/1.0\r\nHost: test\r\n\r\n")
            try:
                answer = s.recv(65536)
            except ConnectionResetError:  # the request unread when the session ended
                answer = b""
        failed += answer == b""
    assert failed >= 1
    assert ls.server("web", "dead")["connect_errors"] == 3 * failed


def test_no_server_left_closes_client(loadstone: Start) -> None:
    dead = Backend("dead", free_port())
    ls = loadstone(listener_config([dead], retries=1))
    with socket.create_connection(("127.0.0.1", proxy_port(ls)), timeout=5) as s:
        assert s.recv(10) == b""
    wait_for(lambda: any(e["end"].startswith("connect-failed") for e in ls.session_logs()))


def test_maxconn_queues_until_a_slot_frees(backends: Backends, loadstone: Start) -> None:
    servers = backends(1, mode="echo")
    ls = loadstone(listener_config(servers, maxconn=2))
    port = proxy_port(ls)
    a = socket.create_connection(("127.0.0.1", port), timeout=5)
    b = socket.create_connection(("127.0.0.1", port), timeout=5)
    c = socket.create_connection(("127.0.0.1", port), timeout=5)
    for s in (a, b):
        s.sendall(b"x")
        assert s.recv(1) == b"x"
    wait_for(lambda: ls.status()["listeners"]["web"]["queued"] == 1)
    c.sendall(b"y")
    c.settimeout(0.3)
    with pytest.raises(TimeoutError):
        c.recv(1)  # queued: not relayed yet
    a.close()
    c.settimeout(5)
    assert c.recv(1) == b"y"
    b.close()
    c.close()


# -- observability --------------------------------------------------------------------


def test_session_log_and_metrics(backends: Backends, loadstone: Start) -> None:
    servers = backends(2)
    ls = loadstone(listener_config(servers, check=checked()))
    ls.wait_all_up("web")
    port = proxy_port(ls)
    for _ in range(4):
        who(port)
    logs = wait_for(lambda: [e for e in ls.session_logs() if e["event"] == "session"][:4] or None)
    entry = logs[0]
    assert entry["listener"] == "web"
    assert entry["server"] in ("s1", "s2")
    assert entry["bytes_in"] > 0 and entry["bytes_out"] > 0
    assert entry["end"] in ("client-close", "server-close")
    assert entry["client"].startswith("127.0.0.1:")
    metrics = ls.get("/metrics").decode()
    assert 'loadstone_server_up{listener="web",server="s1"} 1.0' in metrics
    assert 'loadstone_server_sessions_total{listener="web",server="s1"} 2.0' in metrics
    assert 'loadstone_server_bytes_total{direction="out",listener="web",server="s2"}' in metrics
    assert 'loadstone_server_check_success{listener="web",server="s2"} 1.0' in metrics
    status = ls.status()
    assert status["listeners"]["web"]["servers"]["s1"]["check"]["status"] == "ok"
    assert status["listeners"]["web"]["servers"]["s1"]["address"] == servers[0].address


def test_log_errors_and_none(backends: Backends, loadstone: Start) -> None:
    # `log: errors` (here from defaults) keeps a session that did not end by a
    # peer's close; `log: none` keeps nothing. Sessions are counted either way.
    servers = backends(1)
    config = listener_config(servers)
    config["defaults"]["log"] = "errors"
    dead = Backend("dead", free_port())  # never started: connection refused
    for name, log in (("quiet", "none"), ("failing", "errors")):
        config["listeners"][name] = {
            "bind": [f"127.0.0.1:{free_port()}"],
            "retries": 0,
            "log": log,
            "servers": [{"name": dead.name, "address": dead.address}],
        }
    ls = loadstone(config)
    for _ in range(3):
        assert who(proxy_port(ls)) == "s1"  # normal ends: not logged
    for name in ("quiet", "failing"):  # in this order: the last line written is failing's
        with socket.create_connection(("127.0.0.1", proxy_port(ls, name)), timeout=5) as s:
            assert s.recv(10) == b""
    entries = wait_for(lambda: ls.session_logs() or None)
    assert [(e["listener"], e["server"], e["end"]) for e in entries] == [
        ("failing", "-", "connect-failed (connection refused)")
    ]
    metrics = ls.get("/metrics").decode()
    assert 'loadstone_server_sessions_total{listener="web",server="s1"} 3.0' in metrics


def test_text_log_format(backends: Backends, loadstone: Start) -> None:
    servers = backends(1)
    ls = loadstone(listener_config(servers), log_format="text")
    who(proxy_port(ls))
    wait_for(lambda: " session 127.0.0.1:" in ls.stdout_path.read_text())
    line = ls.stdout_path.read_text().splitlines()[0]
    assert " web/s1 " in line and " end=" in line and " in=" in line


def test_sigterm_exits_zero(backends: Backends, loadstone: Start) -> None:
    servers = backends(1)
    ls = loadstone(listener_config(servers))
    assert ls.stop() == 0


def test_ipv6_listener_and_server(loadstone: Start) -> None:
    backend = Backend("v6", free_port("::1"), mode="echo", host="::1").start()
    try:
        port = free_port("::1")
        config = {
            "listeners": {
                "web": {
                    "bind": [f"[::1]:{port}"],
                    "servers": [{"name": "v6", "address": f"[::1]:{backend.port}"}],
                }
            }
        }
        ls = loadstone(config)
        with socket.create_connection(("::1", port), timeout=5) as s:
            s.sendall(b"over v6")
            s.shutdown(socket.SHUT_WR)
            data = b""
            while chunk := s.recv(4096):
                data += chunk
        assert data.startswith(b"over v6\nEOF ")
        wait_for(lambda: [e for e in ls.session_logs() if e["client"].startswith("[::1]:")])
    finally:
        backend.stop()
