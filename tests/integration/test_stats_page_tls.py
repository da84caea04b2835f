"""The /stats page shows each TLS listener's certificates with their expiry,
marking one that expires within 30 days and one that has expired (headless
Chromium, as tests/integration/test_stats_page.py)."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.integration import test_tls
from tests.integration.harness import Loadstone
from tests.integration.test_stats_page import chromium
from tests.integration.test_tls import config
from tests.tlscerts import Ca

pytestmark = pytest.mark.integration

# The TLS suite's fixtures: a CA made at run time, nginx servers.
ca = test_tls.ca
nginx = test_tls.nginx


def test_stats_page_shows_certificate_expiry(
    ca: Ca, nginx: Callable[..., int], loadstone: Callable[..., Loadstone], tmp_path: Path
) -> None:
    fine = ca.issue("fine", ["api.test"], days=400)
    soon = ca.issue("soon", ["soon.test"], days=10)
    expired = ca.issue("expired", ["old.test"], expired=True)
    backend = nginx("n1")
    ls = loadstone(config({
        "mode": "http",
        "tls": {"certificates": [str(fine.bundle), str(soon.bundle), str(expired.bundle)]},
        "servers": [{"name": "n1", "address": f"127.0.0.1:{backend}"}],
    }))  # fmt: skip
    dom = chromium(tmp_path, f"http://127.0.0.1:{ls.admin_port}/stats", "--dump-dom")
    rows = {
        file: (state, int(days))
        for file, state, days in re.findall(
            r'data-certificate="([^"]+)" data-cert-state="([^"]+)" data-days="(-?\d+)"', dom
        )
    }
    assert rows[str(fine.bundle)][0] == "ok" and rows[str(fine.bundle)][1] >= 398
    assert rows[str(soon.bundle)] in (("expiring", 9), ("expiring", 10))
    assert rows[str(expired.bundle)][0] == "expired"
    soon_date = time.strftime("%Y-%m-%d", time.gmtime(time.time() + 10 * 86400))
    assert f"expires {soon_date[:8]}" in dom  # the date itself, to the month
    assert "certificate CN=soon.test · soon.test · " in dom
