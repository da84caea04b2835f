"""`loadstone ctl health`, keepalived's vrrp_script: exit 0 only while every
listener is served and the last reload was accepted, and failing from the
SIGTERM of a planned stop (global.stop_delay) while loadstone still serves."""

from __future__ import annotations

import signal
import socket
import subprocess
import urllib.error
import urllib.request
from collections.abc import Callable

import pytest

from tests.integration.conftest import listener_config
from tests.integration.harness import LOADSTONE, Backend, Loadstone, wait_for
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


@pytest.mark.parametrize("end", ["SIGTERM", "SIGKILL"])
def test_a_held_health_check_fails_the_moment_loadstone_stops_or_dies(
    backends: Backends, loadstone: Start, end: str
) -> None:
    """--hold (keepalived notices a kill -9 at once, docs/high-availability.md):
    a healthy check that would last 30 s fails as soon as loadstone turns
    unhealthy (stop_delay) or its process dies (the body is cut short)."""
    config = listener_config(backends(1, mode="echo"))
    config["global"]["stop_delay"] = "30s"
    ls = loadstone(config)
    assert ls.proc is not None
    url = f"http://127.0.0.1:{ls.admin_port}"
    assert ctl("--url", url, "health", "--hold", "0.2").returncode == 0
    held = subprocess.Popen(
        [str(LOADSTONE), "ctl", "--url", url, "health", "--hold", "30"],
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        # The healthy head is written before the hold: wait for the connection.
        wait_for(lambda: _admin_connections(ls.admin_port) > 0, what="the held check connected")
        ls.proc.send_signal(getattr(signal, end))
        assert held.wait(10) == 1  # not 30 s
        assert "loadstone ctl:" in (held.stderr.read() if held.stderr else "")
    finally:
        held.kill()
        held.wait()
        if held.stderr is not None:
            held.stderr.close()
        ls.proc.kill()


def test_a_bad_hold_is_refused(backends: Backends, loadstone: Start) -> None:
    ls = loadstone(listener_config(backends(1)))
    url = f"http://127.0.0.1:{ls.admin_port}/api/v1/health?hold=forever"
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(url, timeout=5)
    assert refused.value.code == 400
    assert b"hold: seconds from 0 to 60" in refused.value.read()
    refused.value.close()


def _admin_connections(port: int) -> int:
    """Established connections to the admin port (ss(8))."""
    out = subprocess.run(
        ["ss", "-Htn", "state", "established", f"( sport = :{port} )"],
        capture_output=True,
        text=True,
    ).stdout
    return len(out.splitlines())
