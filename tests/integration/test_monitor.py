"""`monitor` (HAProxy's monitor-uri) on a running loadstone: up while a server
is, down when none is or when the planned stop begins; a listener without
servers (kolla's `frontend status`) answers it too."""

from __future__ import annotations

import signal
from collections.abc import Callable

import pytest

from tests.integration.harness import Backend, Loadstone, free_port, wait_for
from tests.integration.test_request_rules import get, http

pytestmark = pytest.mark.usefixtures("datapath")


def test_monitor_follows_the_servers_and_the_stop(
    backends: Callable[..., list[Backend]], loadstone: Callable[..., Loadstone]
) -> None:
    (web,) = backends(1)
    port, status_port = free_port(), free_port()
    ls = loadstone(
        {
            "global": {"stop_delay": "20s", "grace": "1s"},
            "listeners": {
                "api": {
                    "bind": [f"127.0.0.1:{port}"],
                    "mode": "http",
                    "monitor": {"path": "/healthz", "down_status": 503},
                    "check": {"type": "http", "interval": "200ms", "fall": 1, "rise": 1},
                    "servers": [{"name": web.name, "address": web.address}],
                },
                "status": {"bind": [f"127.0.0.1:{status_port}"], "mode": "http", "monitor": "/"},
            },
        }
    )
    ls.wait_all_up("api")
    status, _, body = http(port, get("/healthz"))
    assert status == 200 and b"200 OK" in body  # the proxy's answer, not the server's
    assert http(port, get("/"))[2] == f"{web.name}\n".encode()
    assert http(status_port, get("/"))[0] == 200
    assert http(status_port, get("/other"))[0] == 503  # no server: HAProxy's 503 too
    web.kill()
    ls.wait_state("api", web.name, "down")
    assert http(port, get("/healthz"))[0] == 503
    assert http(status_port, get("/"))[0] == 200
    # Monitor requests are not logged (keepalived polls every second).
    lines = [line for line in ls.session_logs() if line.get("target") in ("/healthz", "/")]
    assert all(line.get("end") != "monitor" for line in lines)
    # SIGTERM with stop_delay: the monitor answers down while the listener still serves.
    assert ls.proc is not None
    ls.proc.send_signal(signal.SIGTERM)
    wait_for(lambda: http(status_port, get("/"))[0] == 503, what="monitor down on SIGTERM")
    assert http(status_port, get("/other"))[0] == 503  # still served (no server: 503)
