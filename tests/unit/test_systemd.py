"""What loadstone takes from systemd: the watchdog's interval and pings on a
notify socket, and credentials named `credential:NAME`."""

from __future__ import annotations

import asyncio
import os
import socket
from pathlib import Path

import pytest

from loadstone import systemd


def test_watchdog_interval_is_half_the_timeout_and_for_this_process_only(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    monkeypatch.delenv("WATCHDOG_USEC", raising=False)
    assert systemd.watchdog_interval() is None
    monkeypatch.setenv("WATCHDOG_USEC", "30000000")
    assert systemd.watchdog_interval() == 15.0
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    assert systemd.watchdog_interval() == 15.0
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid() + 1))
    assert systemd.watchdog_interval() is None
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    monkeypatch.setenv("WATCHDOG_USEC", "0")
    assert systemd.watchdog_interval() is None


def test_watchdog_pings_come_from_the_event_loop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "notify"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as manager:
        manager.bind(str(path))
        manager.settimeout(5)
        monkeypatch.setenv("NOTIFY_SOCKET", str(path))
        monkeypatch.setenv("WATCHDOG_USEC", "40000")  # a ping every 20 ms

        async def run_then_stall() -> None:
            watchdog = systemd.start_watchdog(asyncio.get_running_loop())
            assert watchdog is not None
            await asyncio.sleep(0.1)
            watchdog.cancel()

        asyncio.run(run_then_stall())
        pings = []
        manager.settimeout(0.5)
        try:
            while True:
                pings.append(manager.recv(64))
        except TimeoutError:
            pass
    assert len(pings) >= 3
    assert set(pings) == {b"WATCHDOG=1"}


def test_credential_paths_are_read_from_credentials_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert systemd.credential_path("/etc/loadstone/token") == "/etc/loadstone/token"
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path))
    assert systemd.credential_path("credential:admin-token") == str(tmp_path / "admin-token")
    monkeypatch.delenv("CREDENTIALS_DIRECTORY")
    with pytest.raises(FileNotFoundError, match="CREDENTIALS_DIRECTORY is not set"):
        systemd.credential_path("credential:admin-token")
