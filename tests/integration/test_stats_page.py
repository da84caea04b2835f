"""The /stats page in headless Chromium (Debian's chromium): it renders from the
status API by itself, shows a killed backend going down, and a screenshot of it
is kept in test-artifacts/ for a person to look at."""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.integration.conftest import listener_config
from tests.integration.harness import ROOT, Backend, Loadstone, wait_for
from tests.integration.test_tcp_proxy import checked

pytestmark = pytest.mark.integration

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARTIFACTS = ROOT / "test-artifacts"


def chromium(tmp: Path, url: str, *args: str) -> str:
    # The flags keep Chromium off the network (this machine has none) and
    # let it run as root in a container; virtual time lets the page's own
    # fetch and render finish before the DOM is dumped.
    result = subprocess.run(
        [
            CHROMIUM,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={tmp / 'chromium-profile'}",
            "--virtual-time-budget=4000",
            *args,
            url,
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


def server_states(dom: str) -> dict[str, str]:
    return dict(re.findall(r'data-server="([^"]+)" data-state="([^"]+)"', dom))


def test_stats_page_shows_a_server_going_down(
    backends: Callable[..., list[Backend]], loadstone: Callable[..., Loadstone], tmp_path: Path
) -> None:
    servers = backends(3)
    config = listener_config(servers, balance="active-backup", check=checked(interval="200ms"))
    ls = loadstone(config)
    ls.wait_all_up("web")
    url = f"http://127.0.0.1:{ls.admin_port}/stats"

    dom = chromium(tmp_path, url, "--dump-dom")
    assert server_states(dom) == {"s1": "up", "s2": "up", "s3": "up"}
    assert "★ writer" in dom  # the active server of an active-backup listener is marked

    servers[1].kill()
    ls.wait_state("web", "s2", "down")
    dom = chromium(tmp_path, url, "--dump-dom")
    assert server_states(dom) == {"s1": "up", "s2": "down", "s3": "up"}
    assert "connection refused" in dom

    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / "stats-page.png"
    shot.unlink(missing_ok=True)
    chromium(tmp_path, url, f"--screenshot={shot}", "--window-size=1400,600", "--hide-scrollbars")
    wait_for(shot.exists, timeout=5)
    assert shot.stat().st_size > 10_000  # a rendered page, not an empty image
