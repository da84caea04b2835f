"""The shipped systemd unit and what loadstone does under it: the sandbox scored
by `systemd-analyze security`, the watchdog pinged on a notify socket, the
reload that fails when the file is rejected, credentials from
$CREDENTIALS_DIRECTORY."""

from __future__ import annotations

import configparser
import os
import re
import shutil
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from tests.integration.conftest import listener_config
from tests.integration.harness import LOADSTONE, ROOT, Backend, Loadstone

pytestmark = pytest.mark.integration

Backends = Callable[..., list[Backend]]
Start = Callable[..., Loadstone]

UNIT = ROOT / "configs" / "systemd" / "loadstone.service"
SYSTEMD_ANALYZE = shutil.which("systemd-analyze") or "/usr/bin/systemd-analyze"


def unit_settings() -> dict[str, list[str]]:
    """[Service] settings of the unit, each with all its values in order."""
    settings: dict[str, list[str]] = {}
    section = None
    for raw in UNIT.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line
            continue
        if section == "[Service]":
            key, _, value = line.partition("=")
            settings.setdefault(key, []).append(value)
    return settings


def test_unit_scores_at_most_2_5_in_systemd_analyze_security(tmp_path: Path) -> None:
    # --offline reads the file as written, no running systemd needed.
    copy = tmp_path / "loadstone.service"
    copy.write_text(UNIT.read_text())
    result = subprocess.run(
        [SYSTEMD_ANALYZE, "security", "--offline=true", str(copy)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    score = re.search(r"Overall exposure level for loadstone\.service: ([0-9.]+)", result.stdout)
    assert score is not None, result.stdout + result.stderr
    assert float(score.group(1)) <= 2.5, result.stdout
    # systemd reads every line: no unknown or misspelt setting.
    assert "Unknown" not in result.stderr and "Failed" not in result.stderr, result.stderr


def test_unit_keeps_what_the_data_path_needs_and_reloads_synchronously() -> None:
    settings = unit_settings()
    allowed = settings["SystemCallFilter"][0].split()
    assert {"io_uring_setup", "io_uring_enter", "splice"} <= set(allowed)
    assert settings["RestrictAddressFamilies"] == ["AF_INET AF_INET6 AF_UNIX"]
    assert settings["ExecReload"] == ["/usr/local/bin/loadstone ctl reload"]
    assert settings["WatchdogSec"] == ["30s"]
    assert settings["Type"] == ["notify"]
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.read_string(UNIT.read_text())  # well-formed sections


def test_watchdog_pings_arrive_on_the_notify_socket(
    tmp_path: Path, backends: Backends, loadstone: Start
) -> None:
    path = str(tmp_path / "notify.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as manager:
        manager.bind(path)
        manager.settimeout(15)
        # 300 ms as systemd would set it: a ping every 150 ms.
        ls = loadstone(
            listener_config(backends(1)), env={"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "300000"}
        )
        pings = []
        t0 = time.monotonic()
        while len(pings) < 5:
            message = manager.recv(4096)
            if message == b"WATCHDOG=1":
                pings.append(time.monotonic())
        # five pings in ~0.6 s: every half period, not one per timeout
        assert pings[-1] - t0 < 3.0
        assert ls.stop() == 0
        # none after the stop
        manager.settimeout(0.5)
        with pytest.raises(TimeoutError):
            while manager.recv(4096) != b"WATCHDOG=1":
                pass
    os.unlink(path)


def ctl_reload(config: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """ExecReload as systemd runs it: $LOADSTONE_CONFIG from the unit, no -c."""
    return subprocess.run(
        [str(LOADSTONE), "ctl", "reload"],
        capture_output=True,
        text=True,
        timeout=30,
        env={**os.environ, "LOADSTONE_CONFIG": str(config), **(env or {})},
    )


def test_exec_reload_fails_when_the_file_is_rejected(backends: Backends, loadstone: Start) -> None:
    ls = loadstone(listener_config(backends(1)))
    result = ctl_reload(ls.path)
    assert result.returncode == 0, result.stderr
    assert "configuration generation 1" in result.stdout
    good = ls.path.read_text()
    # A file that does not validate: ctl reads it too, and says why.
    ls.path.write_text(good.replace("roundrobin", "no-such-algorithm"))
    result = ctl_reload(ls.path)
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1, result.stderr
    assert "listeners.web.balance" in result.stderr
    # A file that validates but does not apply: the proxy rejects it.
    config = yaml.safe_load(good)
    config["listeners"]["web"]["servers"][0]["address"] = "no-such-host.invalid:80"
    ls.path.write_text(yaml.safe_dump(config))
    result = ctl_reload(ls.path)
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1, result.stderr
    assert "HTTP 422" in result.stderr and "cannot resolve 'no-such-host.invalid'" in result.stderr
    assert ls.status()["reload"]["generation"] == 1
    ls.path.write_text(good)
    assert ctl_reload(ls.path).returncode == 0


def test_token_from_credentials_directory(
    tmp_path: Path, backends: Backends, loadstone: Start
) -> None:
    credentials = tmp_path / "credentials"
    credentials.mkdir()
    (credentials / "admin-token").write_text("from-systemd\n")
    config = listener_config(backends(1))
    config["global"]["admin"] = {"token_file": "credential:admin-token"}
    env = {"CREDENTIALS_DIRECTORY": str(credentials)}
    ls = loadstone(config, env=env)
    assert ctl_reload(ls.path, env).returncode == 0
    outside = ctl_reload(ls.path, {"CREDENTIALS_DIRECTORY": ""})
    assert outside.returncode == 1
    assert outside.stderr.strip().splitlines() == [
        "loadstone ctl: cannot read token file credential:admin-token: "
        "$CREDENTIALS_DIRECTORY is not set (no LoadCredential=admin-token:... in the unit?)"
    ]
    # Without the credential the service does not start, and says why.
    path = tmp_path / "no-credential.yaml"
    path.write_text(yaml.safe_dump(config))
    result = subprocess.run(
        [str(LOADSTONE), "run", str(path)],
        capture_output=True,
        text=True,
        timeout=30,
        env={k: v for k, v in os.environ.items() if k != "CREDENTIALS_DIRECTORY"},
    )
    assert result.returncode == 1
    assert "global.admin.token_file: cannot read credential:admin-token" in result.stderr
