"""configs/anycast/: what docs/anycast.md ships passes each tool's own check."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from tests.integration.harness import LOADSTONE, ROOT

CONFIGS = ROOT / "configs" / "anycast"


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("*.yaml")), ids=lambda p: p.name)
def test_loadstone_check_passes(path: Path) -> None:
    result = subprocess.run([LOADSTONE, "check", path], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "valid" in result.stdout


@pytest.mark.parametrize("name", ["bird.conf", "router-bird.conf"])
def test_bird_parses_the_examples(name: str) -> None:
    # -p: parse the configuration and exit; nothing starts.
    result = subprocess.run(["bird", "-p", "-c", CONFIGS / name], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


@pytest.mark.skipif(shutil.which("exabgp") is None, reason="exabgp is not installed (scripts/test)")
def test_exabgp_validates_its_example() -> None:
    result = subprocess.run(
        ["exabgp", "--validate", CONFIGS / "exabgp.conf"], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_stop_hook_disables_the_protocols_bird_conf_declares() -> None:
    hook = (CONFIGS / "loadstone-anycast.conf").read_text()
    bird = (CONFIGS / "bird.conf").read_text()
    assert "disable '\"vip_*\"'" in hook
    assert "protocol static vip_api" in bird and "protocol static vip_db" in bird
