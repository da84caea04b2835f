"""`loadstone ctl` against a live `loadstone run`: draining a whole node and
waiting for its sessions, watch mode, where it finds the configuration, and one
clear line for each way a command can fail."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.integration.conftest import listener_config
from tests.integration.harness import LOADSTONE, Backend, Loadstone, free_port, wait_for
from tests.integration.test_operations import echo_session

pytestmark = pytest.mark.integration

Backends = Callable[..., list[Backend]]
Start = Callable[..., Loadstone]


def two_listeners(servers: list[Backend]) -> dict[str, Any]:
    """web and db, each with the servers ctl1 and ctl2 (the same two hosts), as
    an OpenStack controller's HAProxy has one backend per service."""
    config = listener_config([])
    named = [{"name": f"ctl{i + 1}", "address": b.address} for i, b in enumerate(servers)]
    config["listeners"]["web"]["servers"] = named
    config["listeners"]["db"] = {"bind": [f"127.0.0.1:{free_port()}"], "servers": named}
    return config


def port_of(ls: Loadstone, listener: str) -> int:
    return int(ls.config["listeners"][listener]["bind"][0].rsplit(":", 1)[1])


def ctl(
    *args: str, config: Path | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    command = [str(LOADSTONE), "ctl", *(["-c", str(config)] if config else []), *args]
    return subprocess.run(
        command, capture_output=True, text=True, timeout=60, env={**os.environ, **(env or {})}
    )


def _sigint_as_at_a_terminal() -> None:
    # A job a non-interactive shell starts in the background (`cmd &`, as a CI
    # runner may) inherits SIGINT ignored, and Python then leaves it ignored:
    # Ctrl-C at a terminal is what --watch is stopped by.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def ctl_running(ls: Loadstone, *args: str) -> subprocess.Popen[str]:
    """ctl started against `ls`, not waited for; its output in pipes."""
    return subprocess.Popen(
        [str(LOADSTONE), "ctl", "-c", str(ls.path), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=_sigint_as_at_a_terminal,
    )


def one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 1, result
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("loadstone ctl: "), result.stderr
    return lines[0]


def test_drain_node_waits_until_its_sessions_end(backends: Backends, loadstone: Start) -> None:
    ls = loadstone(two_listeners(backends(2, mode="echo")))
    sessions = [echo_session(port_of(ls, name)) for name in ("web", "web", "db", "db")]
    wait_for(
        lambda: all(
            ls.server(name, server)["sessions"] == 1
            for name in ("web", "db")
            for server in ("ctl1", "ctl2")
        ),
        what="one session on each server",
    )
    with ctl_running(ls, "drain-node", "ctl1", "--wait") as proc:
        wait_for(
            lambda: (
                ls.server("web", "ctl1")["state"] == ls.server("db", "ctl1")["state"] == "drain"
            ),
            what="ctl1 draining in both listeners",
        )
        assert ls.server("web", "ctl2")["state"] == "up"
        # ctl1's sessions are still open: ctl keeps waiting.
        assert ls.server("web", "ctl1")["sessions"] == 1
        assert proc.poll() is None
        for s in sessions:
            s.close()
        out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    lines = out.splitlines()
    assert sorted(lines[:2]) == ["db/ctl1: drain", "web/ctl1: drain"]
    assert lines[2:] == ["drained: no session left"]

    result = ctl("ready-node", "ctl1", config=ls.path)
    assert result.returncode == 0, result.stderr
    assert ls.server("web", "ctl1")["state"] == ls.server("db", "ctl1")["state"] == "up"


def test_drain_node_wait_gives_up_after_its_timeout(backends: Backends, loadstone: Start) -> None:
    ls = loadstone(two_listeners(backends(1, mode="echo")))
    session = echo_session(port_of(ls, "db"))
    try:
        result = ctl("drain-node", "ctl1", "--wait", "--timeout", "1", config=ls.path)
        line = one_line_error(result)
        assert line == "loadstone ctl: timed out after 1s; sessions still open: db/ctl1 1"
        assert ls.server("db", "ctl1")["state"] == "drain"
    finally:
        session.close()


def test_status_watch_repeats_until_interrupted(backends: Backends, loadstone: Start) -> None:
    ls = loadstone(listener_config(backends(1)))
    with ctl_running(ls, "status", "--watch", "0.2") as proc:
        assert proc.stdout is not None
        frames = 0
        while frames < 3:
            line = proc.stdout.readline()
            assert line, "ctl status --watch ended"
            frames += line.startswith("\x1b[H\x1b[2J")
        proc.send_signal(signal.SIGINT)
        assert proc.wait(10) == 0


def test_ctl_finds_the_configuration_in_loadstone_config(
    backends: Backends, loadstone: Start
) -> None:
    ls = loadstone(listener_config(backends(1)))
    result = ctl("status", env={"LOADSTONE_CONFIG": str(ls.path)})
    assert result.returncode == 0, result.stderr
    assert "s1" in result.stdout
    result = ctl("drain", "web", "s1", env={"LOADSTONE_CONFIG": str(ls.path)})
    assert result.returncode == 0, result.stderr
    assert ls.server("web", "s1")["state"] == "drain"


def test_each_failure_is_one_clear_line(
    tmp_path: Path, backends: Backends, loadstone: Start
) -> None:
    token = tmp_path / "token"
    token.write_text("right\n")
    config = two_listeners(backends(2))
    config["global"]["admin"] = {"token_file": str(token)}
    ls = loadstone(config)

    wrong = tmp_path / "wrong-token"
    wrong.write_text("wrong\n")
    line = one_line_error(ctl("--token-file", str(wrong), "drain", "web", "ctl1", config=ls.path))
    assert "HTTP 403: wrong token" in line
    assert ls.server("web", "ctl1")["state"] == "up"

    line = one_line_error(ctl("drain", "web", "ctl9", config=ls.path))
    assert line == "loadstone ctl: no server 'ctl9' in listener web; known servers: ctl1, ctl2"
    line = one_line_error(ctl("drain", "www", "ctl1", config=ls.path))
    assert line == "loadstone ctl: no listener 'www'; known listeners: db, web"
    line = one_line_error(ctl("drain-node", "ctl9", config=ls.path))
    assert line == (
        "loadstone ctl: no server named or at 'ctl9' in any listener; known servers: ctl1, ctl2"
    )

    with socket.socket() as nobody:  # a port that is bound but never listens
        nobody.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{nobody.getsockname()[1]}"
        line = one_line_error(ctl("--url", url, "status"))
    assert line.startswith(f"loadstone ctl: cannot reach the admin server at {url}/api/v1/status")

    line = one_line_error(ctl("status", config=tmp_path / "missing.yaml"))
    assert "missing.yaml: cannot read" in line


def test_ctl_talks_over_the_admin_unix_socket(
    tmp_path: Path, backends: Backends, loadstone: Start
) -> None:
    path = tmp_path / "admin.sock"
    # A socket file left by a process that is gone does not stop the start.
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as stale:
        stale.bind(str(path))
    config = listener_config(backends(1))
    config["global"]["admin"] = {"socket": str(path)}
    ls = loadstone(config)
    # The file ctl reads names the socket and a TCP address nobody listens on:
    # ctl takes the socket.
    other = yaml.safe_load(ls.path.read_text())
    other["global"]["admin"]["bind"] = f"127.0.0.1:{free_port()}"
    other_path = tmp_path / "via-socket.yaml"
    other_path.write_text(yaml.safe_dump(other))
    result = ctl("drain", "web", "s1", config=other_path)
    assert result.returncode == 0, result.stderr
    assert ls.server("web", "s1")["state"] == "drain"

    # A second loadstone cannot take a socket the first one accepts on.
    second = tmp_path / "second.yaml"
    other["listeners"]["web"]["bind"] = [f"127.0.0.1:{free_port()}"]
    second.write_text(yaml.safe_dump(other))
    result = subprocess.run(
        [str(LOADSTONE), "run", str(second)], capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 1
    assert f"loadstone: global.admin.socket: cannot bind {path}: address already in use" in (
        result.stderr.splitlines()
    )
    assert ls.stop() == 0
    assert not path.exists()  # removed at stop
    line = one_line_error(ctl("status", config=other_path))
    assert line.startswith(f"loadstone ctl: cannot reach the admin server at unix:{path}/api/v1")
