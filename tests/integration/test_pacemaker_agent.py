"""The Pacemaker resource agent (configs/pacemaker/loadstone) against a real
loadstone: resource-agents' own ocf-tester, then what the cluster relies on:
start serves traffic, monitor says 7 / 0 / 1 (stopped / healthy / a rejected
reload), reload takes a new file, validate-all refuses a bad one, stop ends
the process."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import yaml

from tests.integration.harness import LOADSTONE, ROOT, Backend, free_port, wait_for

pytestmark = pytest.mark.integration

AGENT = ROOT / "configs" / "pacemaker" / "loadstone"
OCF_TESTER = shutil.which("ocf-tester", path="/usr/sbin:/usr/bin")
SHELLFUNCS = Path("/usr/lib/ocf/lib/heartbeat/ocf-shellfuncs")

# OCF exit codes (ocf-shellfuncs)
SUCCESS, ERR_GENERIC, ERR_INSTALLED, ERR_CONFIGURED, NOT_RUNNING = 0, 1, 5, 6, 7


def _missing() -> str | None:
    if OCF_TESTER is None or not SHELLFUNCS.exists():
        return "resource-agents not installed"
    if shutil.which("xmllint") is None:
        return "xmllint (libxml2-utils) not installed"
    return None


@pytest.fixture
def place() -> Iterator[Path]:
    """A directory `nobody` can read: ocf-tester runs meta-data as nobody."""
    why = _missing()
    if why is not None:
        if os.environ.get("CI"):
            pytest.fail(f"Pacemaker agent test needs {why}")
        pytest.skip(f"{why} (scripts/test installs it)")
    path = Path(tempfile.mkdtemp(prefix="loadstone-ocf-"))
    path.chmod(0o755)
    shutil.copy(AGENT, path / "loadstone")
    yield path
    shutil.rmtree(path, ignore_errors=True)


def write_config(path: Path, listen: int, admin: int, server: str) -> None:
    config = {
        "global": {"admin": {"bind": f"127.0.0.1:{admin}"}, "grace": "1s"},
        "listeners": {
            "api": {
                "bind": [f"127.0.0.1:{listen}"],
                "mode": "tcp",
                "servers": [{"name": "s1", "address": server}],
            }
        },
    }
    path.write_text(yaml.safe_dump(config))
    path.chmod(0o644)


Agent = Callable[..., subprocess.CompletedProcess[str]]


def agent_runner(place: Path, config: Path) -> tuple[Agent, dict[str, str]]:
    params = {
        "binary": str(LOADSTONE),
        "config": str(config),
        "pidfile": str(place / "loadstone.pid"),
        "logfile": str(place / "loadstone.log"),
    }

    def run(action: str, **override: str) -> subprocess.CompletedProcess[str]:
        env = dict(os.environ, OCF_ROOT="/usr/lib/ocf", OCF_RESOURCE_INSTANCE="lstest")
        env.update({f"OCF_RESKEY_{k}": v for k, v in {**params, **override}.items()})
        return subprocess.run(
            [str(place / "loadstone"), action], env=env, capture_output=True, text=True, timeout=60
        )

    return run, params


def test_ocf_tester_passes(place: Path) -> None:
    config = place / "loadstone.yaml"
    write_config(config, free_port(), free_port(), f"127.0.0.1:{free_port()}")
    _, params = agent_runner(place, config)
    assert OCF_TESTER is not None
    argv = [OCF_TESTER, "-n", "lstest"]
    for key, value in params.items():
        argv += ["-o", f"{key}={value}"]
    done = subprocess.run(
        [*argv, str(place / "loadstone")], capture_output=True, text=True, timeout=180
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "passed all tests" in done.stdout


def test_the_actions_pacemaker_relies_on(place: Path, request: pytest.FixtureRequest) -> None:
    one = Backend("one", free_port(), "echo").start()
    request.addfinalizer(one.stop)
    two = Backend("two", free_port(), "echo").start()
    request.addfinalizer(two.stop)
    config = place / "loadstone.yaml"
    listen, admin = free_port(), free_port()
    write_config(config, listen, admin, one.address)
    agent, params = agent_runner(place, config)

    assert agent("monitor").returncode == NOT_RUNNING
    assert agent("validate-all").returncode == SUCCESS
    assert agent("validate-all", binary="/nonexistent/loadstone").returncode == ERR_INSTALLED
    bad = place / "bad.yaml"
    bad.write_text("listeners: {api: {bind: [nonsense]}}\n")
    refused = agent("validate-all", config=str(bad))
    assert refused.returncode == ERR_CONFIGURED, refused.stderr

    started = agent("start")
    assert started.returncode == SUCCESS, started.stderr
    pid = int(Path(params["pidfile"]).read_text())
    try:
        assert served_by(listen) == "one"  # start returns once it serves
        assert agent("monitor").returncode == SUCCESS

        write_config(config, listen, admin, two.address)
        assert agent("reload").returncode == SUCCESS
        wait_for(lambda: served_by(listen) == "two", what="the reloaded server")

        # A rejected reload keeps the running configuration, and the monitor
        # says so: Pacemaker recovers the resource (or the operator fixes it).
        config.write_text(config.read_text().replace("mode: tcp", "mode: nonsense"))
        assert agent("reload").returncode == ERR_GENERIC
        assert agent("monitor").returncode == ERR_GENERIC
        assert served_by(listen) == "two"
    finally:
        stopped = agent("stop")
    assert stopped.returncode == SUCCESS
    assert not Path(f"/proc/{pid}").exists()
    assert agent("monitor").returncode == NOT_RUNNING
    assert agent("stop").returncode == SUCCESS  # stopping a stopped resource


def served_by(port: int) -> str:
    """The echo backend's name, from its goodbye after our half-close."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(b"x")
        sock.shutdown(socket.SHUT_WR)
        data = b""
        while chunk := sock.recv(4096):
            data += chunk
    return data.decode().split()[-1]
