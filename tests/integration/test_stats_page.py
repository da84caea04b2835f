"""The /stats page in headless Chromium (Debian's chromium): it renders from the
status API by itself, shows a killed backend going down, its drain/ready
buttons change a server's state through the admin API with the token typed in
the page, and a screenshot of it is kept in test-artifacts/ for a person to
look at."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.integration.conftest import listener_config
from tests.integration.harness import ROOT, Backend, Loadstone, wait_for
from tests.integration.test_tcp_proxy import checked, proxy_port

pytestmark = pytest.mark.integration

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARTIFACTS = ROOT / "test-artifacts"


# The flags keep Chromium off the network (this machine has none) and let it
# run as root in a container.
HEADLESS = [
    CHROMIUM,
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def chromium(tmp: Path, url: str, *args: str) -> str:
    # Virtual time lets the page's own fetch and render finish before the DOM
    # is dumped.
    result = subprocess.run(
        [
            *HEADLESS,
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


class Browser:
    """Headless Chromium driven over its DevTools protocol (a WebSocket), so a
    test can type into the page and click its buttons as a person would."""

    def __init__(self, tmp: Path, url: str) -> None:
        self.profile = tmp / "chromium-devtools"
        self.proc = subprocess.Popen(
            [
                *HEADLESS,
                "--remote-debugging-address=127.0.0.1",
                "--remote-debugging-port=0",  # Chromium picks one, written to DevToolsActivePort
                f"--user-data-dir={self.profile}",
                url,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            # not under scripts/sanitize-tests' preloaded ASan runtime: Chromium
            # is the tool here, not what is tested
            env={k: v for k, v in os.environ.items() if k != "LD_PRELOAD"},
        )
        self.url = url
        self.ws: aiohttp.ClientWebSocketResponse | None = None
        self.session: aiohttp.ClientSession | None = None
        self.next_id = 0

    async def connect(self) -> None:
        port_file = self.profile / "DevToolsActivePort"

        def listening() -> bool:
            assert self.proc.poll() is None, f"Chromium exited {self.proc.returncode}"
            return port_file.exists() and port_file.read_text().strip() != ""

        wait_for(listening, timeout=30)
        port = int(port_file.read_text().split()[0])
        self.session = aiohttp.ClientSession()
        debugger = ""
        deadline = time.monotonic() + 30
        while not debugger and time.monotonic() < deadline:
            async with self.session.get(f"http://127.0.0.1:{port}/json/list") as response:
                pages = await response.json()
            debugger = next(
                (p["webSocketDebuggerUrl"] for p in pages if p.get("url", "").startswith(self.url)),
                "",
            )
            if not debugger:
                await asyncio.sleep(0.1)
        assert debugger, "Chromium did not open the page"
        self.ws = await self.session.ws_connect(debugger, max_msg_size=0)

    async def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression in the page (promises awaited)."""
        assert self.ws is not None
        self.next_id += 1
        await self.ws.send_json(
            {
                "id": self.next_id,
                "method": "Runtime.evaluate",
                "params": {"expression": expression, "awaitPromise": True, "returnByValue": True},
            }
        )
        while True:
            message = await self.ws.receive_json(timeout=30)
            if message.get("id") == self.next_id:
                result = message["result"]
                assert "exceptionDetails" not in result, result
                return result["result"].get("value")

    async def wait_until(self, expression: str, timeout: float = 15) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = await self.evaluate(expression)
            if value:
                return value
            await asyncio.sleep(0.1)
        raise AssertionError(f"the page never made this true: {expression}")

    async def close(self) -> None:
        if self.ws is not None:
            await self.ws.close()
        if self.session is not None:
            await self.session.close()
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)


ROW = "document.querySelector('tr[data-server=\"{server}\"]')"


def click(server: str, action: str) -> str:
    return ROW.format(server=server) + f".querySelector('button[data-action=\"{action}\"]').click()"


def test_stats_page_buttons_drain_and_ready_a_server_with_the_token(
    backends: Callable[..., list[Backend]], loadstone: Callable[..., Loadstone], tmp_path: Path
) -> None:
    servers = backends(2)
    token = tmp_path / "admin-token"
    token.write_text("page-token-123\n")
    config = listener_config(servers, mode="http", check=checked(interval="200ms"))
    config["global"]["admin"] = {"token_file": str(token)}
    ls = loadstone(config)
    ls.wait_all_up("web")
    port = proxy_port(ls)
    url = f"http://127.0.0.1:{ls.admin_port}/stats"

    async def drive() -> None:
        browser = Browser(tmp_path, url)
        try:
            await browser.connect()
            await browser.wait_until(ROW.format(server="s2") + " !== null")
            header = await browser.evaluate("document.querySelector('section h2').textContent")
            assert "queue 0/4096 maxconn" in header
            columns = await browser.evaluate(
                "[...document.querySelectorAll('th')].map(th => th.textContent)"
            )
            assert {"2xx/s", "4xx/s", "5xx/s", "admin"} <= set(columns)

            # 5xx answers show as a rate in the servers' 5xx column
            for _ in range(10):
                with pytest.raises(urllib.error.HTTPError, match="503"):
                    urllib.request.urlopen(f"http://127.0.0.1:{port}/status?code=503", timeout=5)
            await browser.wait_until(
                "[...document.querySelectorAll('td[data-class=\"5xx\"]')]"
                ".some(td => parseFloat(td.textContent) > 0)"
            )

            # a wrong token: refused, said on the page, the server unchanged
            await browser.evaluate("document.getElementById('token').value = 'wrong'")
            await browser.evaluate(click("s2", "drain"))
            error = await browser.wait_until(
                "!document.getElementById('error').hidden && "
                "document.getElementById('error').textContent"
            )
            assert "drain web/s2 refused: HTTP 403: wrong token" in error
            assert ls.server("web", "s2")["admin"] == "ready"

            # the right token: drain, seen by the admin API and on the page
            await browser.evaluate("document.getElementById('token').value = 'page-token-123'")
            await browser.evaluate(click("s2", "drain"))
            ls.wait_state("web", "s2", "drain")
            await browser.wait_until(ROW.format(server="s2") + ".dataset.state === 'drain'")
            assert await browser.evaluate(
                ROW.format(server="s2") + ".querySelector('button[data-action=\"drain\"]').disabled"
            )
            assert await browser.evaluate("document.getElementById('error').hidden")
            assert ls.server("web", "s1")["state"] == "up"

            await browser.evaluate(click("s2", "ready"))
            ls.wait_state("web", "s2", "up")
            await browser.wait_until(ROW.format(server="s2") + ".dataset.state === 'up'")
        finally:
            await browser.close()

    asyncio.run(drive())
