"""`loadstone ctl health`, keepalived's vrrp_script: exit 0 only while every
listener is served and the last reload was accepted, and failing from the
SIGTERM of a planned stop (global.stop_delay) while loadstone still serves."""

from __future__ import annotations

import signal
import socket
from collections.abc import Callable

import pytest

from tests.integration.conftest import listener_config
from tests.integration.harness import Backend, Loadstone, wait_for
from tests.integration.test_ctl import ctl, port_of

pytestmark = pytest.mark.integration

Backends = Callable[..., list[Backend]]
Start = Callable[..., Loadstone]


def test_health_follows_the_last_reload(backends: Backends, loadstone: Start) -> None:
    ls = loadstone(listener_config(backends(1)))
    assert ctl("health", config=ls.path).returncode == 0

    good = ls.path.read_text()
    ls.path.write_text("listeners: {web: {bind: [nowhere]}}\n")
    url = f"http://127.0.0.1:{ls.admin_port}"
    assert ctl("--url", url, "reload").returncode == 1
    # By URL: ctl cannot read its address from the broken file, keepalived's can't either.
    result = ctl("--url", url, "health")
    assert result.returncode == 1
    assert result.stderr.startswith("loadstone ctl: unhealthy: last reload rejected")

    ls.path.write_text(good)
    assert ctl("reload", config=ls.path).returncode == 0
    assert ctl("health", config=ls.path).returncode == 0


def test_health_fails_during_stop_delay_while_still_serving(
    backends: Backends, loadstone: Start
) -> None:
    config = listener_config(backends(1, mode="echo"))
    config["global"]["stop_delay"] = "30s"
    ls = loadstone(config)
    assert ctl("health", config=ls.path).returncode == 0
    assert ls.proc is not None
    ls.proc.send_signal(signal.SIGTERM)

    wait_for(lambda: ctl("health", config=ls.path).returncode == 1, what="health failing")
    assert "unhealthy: stopping" in ctl("health", config=ls.path).stderr
    # Still serving: the VIP has to move before anything is refused.
    with socket.create_connection(("127.0.0.1", port_of(ls, "web")), timeout=5) as conn:
        conn.sendall(b"ping")
        assert conn.recv(4) == b"ping"
    ls.proc.kill()  # not waiting the 30 s out


def test_health_of_an_absent_admin_server_fails() -> None:
    result = ctl("--url", "http://127.0.0.1:1", "health")
    assert result.returncode == 1
    assert "cannot read the health" in result.stderr
