"""The native HTTP path: which listeners it serves, the pure one for the others,
the start it refuses when its llhttp fails the self-test, and what only a native
run can show (server connections pooled in the engine)."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.integration.conftest import NATIVE_BUILT, listener_config
from tests.integration.harness import (
    LOADSTONE,
    Backend,
    Loadstone,
    free_port,
    port_open,
    wait_for,
)

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not NATIVE_BUILT, reason="the native data path is not built here"),
]

Backends = Callable[..., list[Backend]]
Start = Callable[..., Loadstone]

COOKIE = {"name": "SERVERID", "mode": "insert", "indirect": True, "nocache": True}


def two_listeners(servers: list[Backend], web_port: int, horizon_port: int) -> dict[str, Any]:
    """An OpenStack-API-like listener (native) and a horizon-like one with cookie
    persistence (pure)."""
    config = listener_config(
        servers,
        port=web_port,
        mode="http",
        forwardfor={"except": ["10.0.0.0/8"]},
        forwarded_proto="https",
        forwarded_port=True,
    )
    config["listeners"]["horizon"] = {
        "bind": [f"127.0.0.1:{horizon_port}"],
        "mode": "http",
        "cookie": COOKIE,
        "servers": [{"name": b.name, "address": b.address} for b in servers],
    }
    return config


def get(port: int, path: str = "/echo") -> tuple[int, bytes]:
    """One HTTP/1.1 request on a new connection; (status, body)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body


def echoed_headers(port: int) -> dict[str, str]:
    status, body = get(port)
    assert status == 200
    return {k.lower(): v for k, v in json.loads(body)["headers"]}


def test_each_listener_on_the_path_its_options_allow(backends: Backends, loadstone: Start) -> None:
    servers = backends(2)
    web, horizon = free_port(), free_port()
    ls = loadstone(two_listeners(servers, web, horizon))
    status = ls.status()["listeners"]
    assert status["web"]["data_path"] == "native"
    assert status["horizon"]["data_path"] == "pure"
    assert "cookie persistence" in status["horizon"]["data_path_reason"]
    assert "listener web: native HTTP path" in ls.stderr()
    assert "listener horizon: pure HTTP path (cookie persistence" in ls.stderr()
    # the native listener adds what the OpenStack API listeners need
    headers = echoed_headers(web)
    assert headers["x-forwarded-for"] == "127.0.0.1"
    assert headers["x-forwarded-proto"] == "https"
    assert headers["x-forwarded-port"] == str(web)
    assert get(horizon, "/")[0] == 200


def test_reload_moves_a_listener_between_paths(backends: Backends, loadstone: Start) -> None:
    servers = backends(2)
    port = free_port()
    config = listener_config(servers, port=port, mode="http", forwardfor=True)
    ls = loadstone(config)
    assert ls.status()["listeners"]["web"]["data_path"] == "native"

    def reload(new: dict[str, Any], generation: int) -> dict[str, Any]:
        ls.path.write_text(yaml.safe_dump(new))
        assert ls.proc is not None
        ls.proc.send_signal(signal.SIGHUP)
        wait_for(lambda: ls.status()["reload"]["generation"] == generation, what="the reload")
        assert ls.status()["reload"]["ok"]
        web: dict[str, Any] = ls.status()["listeners"]["web"]
        return web

    # a keep-alive client of the native path, connected before the reload
    with socket.create_connection(("127.0.0.1", port), timeout=10) as before:
        before.sendall(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
        assert before.recv(65536).startswith(b"HTTP/1.1 200")

        config["listeners"]["web"]["cookie"] = COOKIE
        web = reload(config, 1)
        assert (web["data_path"], "cookie" in web["data_path_reason"]) == ("pure", True)
        assert get(port, "/")[0] == 200
        # the connection accepted by the native path is still served by it
        before.sendall(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
        assert before.recv(65536).startswith(b"HTTP/1.1 200")

    del config["listeners"]["web"]["cookie"]
    assert reload(config, 2)["data_path"] == "native"
    assert get(port, "/")[0] == 200


def test_llhttp_that_fails_its_self_test_stops_the_start(
    backends: Backends, tmp_path: Path
) -> None:
    servers = backends(1)
    port = free_port()
    config = listener_config(servers, port=port, mode="http", forwardfor=True)
    path = tmp_path / "web.yaml"
    path.write_text(yaml.safe_dump(config))
    # A test-only switch makes the engine's self-test fail: the proxy must not
    # start (neither silently on the pure path), and say why in one line.
    result = subprocess.run(
        [str(LOADSTONE), "run", str(path)],
        capture_output=True,
        text=True,
        timeout=30,
        env={**os.environ, "LOADSTONE_TEST_LLHTTP_SELFTEST_FAIL": "1"},
    )
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, lines
    assert re.fullmatch(
        r"loadstone: native data path: llhttp \d+\.\d+\.\d+ failed the engine's self-test: "
        r"forced by LOADSTONE_TEST_LLHTTP_SELFTEST_FAIL \(a test setting\)",
        lines[0],
    ), lines
    assert not port_open("127.0.0.1", port)


def test_server_connections_pooled_by_the_engine(backends: Backends, loadstone: Start) -> None:
    servers = backends(1)
    config = listener_config(servers, mode="http")
    ls = loadstone(config)
    port = int(config["listeners"]["web"]["bind"][0].rsplit(":", 1)[1])
    for _ in range(5):  # one client connection per request
        assert get(port, "/")[0] == 200
    # records reach the control plane at the end of the worker's epoll round
    wait_for(
        lambda: ls.status()["listeners"]["web"]["http"]["requests_total"] == 5,
        what="5 requests counted",
    )
    web = ls.status()["listeners"]["web"]
    assert web["http"]["idle_server_connections"] == 1  # one connection, reused
    assert web["servers"]["s1"]["sessions_total"] == 5
    assert web["servers"]["s1"]["bytes_in"] > 0


def test_two_workers_serve_keep_alive_clients(backends: Backends, loadstone: Start) -> None:
    servers = backends(2)
    config = listener_config(servers, mode="http", forwardfor=True)
    config["global"]["workers"] = 2
    ls = loadstone(config)
    port = int(config["listeners"]["web"]["bind"][0].rsplit(":", 1)[1])
    seen: list[bytes] = []

    def client() -> None:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            for _ in range(25):
                s.sendall(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
                data = b""
                while not data.endswith(b"\n") or b"\r\n\r\n" not in data:
                    chunk = s.recv(65536)
                    assert chunk, "connection closed"
                    data += chunk
                assert data.startswith(b"HTTP/1.1 200")
                seen.append(data.rsplit(b"\r\n\r\n", 1)[1].strip())

    threads = [threading.Thread(target=client) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(seen) == 200 and set(seen) == {b"s1", b"s2"}
    # A worker hands its records over at the end of its epoll round, which may
    # come just after the client read the last response.
    wait_for(
        lambda: ls.status()["listeners"]["web"]["http"]["requests_total"] == 200,
        what="200 requests counted",
    )
    # the clients are gone: nothing is left counted in either worker
    wait_for(lambda: ls.status()["listeners"]["web"]["sessions"] == 0, what="no session left")


def access_line(ls: Loadstone) -> str:
    """The first access-log line of `ls` (either format)."""
    found: list[str] = []

    def logged() -> bool:
        found[:] = [
            line
            for line in ls.stdout_path.read_text().splitlines()
            if " http " in line or '"http"' in line
        ]
        return bool(found)

    wait_for(logged, what="an access-log line")
    return found[0]


@pytest.mark.parametrize("fmt", ["json", "text"])
def test_access_lines_the_engine_formats_match_the_pure_paths(
    backends: Backends, loadstone: Start, fmt: str
) -> None:
    servers = backends(1)
    target = '/echo?q="a\\b"&r=%41'  # a quote and a backslash: escaped in JSON
    lines = {}
    for path, env in (("native", {}), ("pure", {"LOADSTONE_HTTP_PATH": "pure"})):
        port = free_port()
        ls = loadstone(listener_config(servers, port=port, mode="http"), env=env, log_format=fmt)
        assert ls.status()["listeners"]["web"]["data_path"] == path
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            s.sendall(f"GET {target} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n".encode())
            while s.recv(65536):
                pass
        lines[path] = access_line(ls)
    if fmt == "json":
        native, pure = (json.loads(lines[p]) for p in ("native", "pure"))
        assert list(native) == list(pure)  # same keys in the same order
        varying = {"time", "client", "bytes_out", "t_request", "t_queue", "t_connect"}
        varying |= {"t_response", "t_total"}
        assert {k: v for k, v in native.items() if k not in varying} == {
            k: v for k, v in pure.items() if k not in varying
        }
        assert native["target"] == target and native["status"] == 200
        assert all(isinstance(native[k], float) for k in varying - {"client", "bytes_out"})
    else:
        shape = re.compile(
            r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z http 127\.0\.0\.1:\d+ (web/s1 200) "
            r"((?:-1|\d+\.\d{3})(?:/(?:-1|\d+\.\d{3})){4})ms in=(\d+) out=\d+ (\".*\" end=ok)"
        )
        native_m, pure_m = (shape.fullmatch(lines[p]) for p in ("native", "pure"))
        assert native_m and pure_m, lines
        assert native_m.group(1, 3, 4) == pure_m.group(1, 3, 4)
        assert native_m[4] == f'"GET {target}" end=ok'
