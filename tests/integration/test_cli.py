"""The command line on bad input: exit codes, messages, nothing left bound."""

from __future__ import annotations

import socket
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.integration.conftest import listener_config
from tests.integration.harness import LOADSTONE, ROOT, Backend, free_port, port_open, run_check

pytestmark = pytest.mark.integration


def run(path: Path, timeout: float = 20) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(LOADSTONE), "run", str(path)], capture_output=True, text=True, timeout=timeout
    )


@pytest.mark.parametrize("config", sorted((ROOT / "configs").glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_configs_pass_check(config: Path) -> None:
    result = run_check(config)
    assert result.returncode == 0, result.stderr
    assert "valid" in result.stdout


def test_invalid_config_exits_2_with_paths_and_binds_nothing(tmp_path: Path) -> None:
    port = free_port()
    config = listener_config([Backend("a", 99999)], port=port)
    config["listeners"]["web"]["balance"] = "random"
    config["listeners"]["web"]["bogus"] = 1
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(config))
    for result in (run_check(path), run(path)):
        assert result.returncode == 2
        lines = result.stderr.strip().splitlines()
        assert any(
            line.startswith("listeners.web.servers[0].address:") and "99999" in line
            for line in lines
        ), lines
        assert any(line.startswith("listeners.web.balance:") for line in lines), lines
        assert any(line.startswith("listeners.web.bogus:") for line in lines), lines
    assert not port_open("127.0.0.1", port)


def test_invalid_yaml_exits_2(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text("listeners: {web: [\n")
    result = run_check(path)
    assert result.returncode == 2
    assert result.stderr.strip()


def test_address_in_use_is_one_clear_line(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        other = free_port()
        config = listener_config([Backend("a", free_port())], port=port)
        config["listeners"]["second"] = {
            "bind": [f"127.0.0.1:{other}"],
            "servers": [{"name": "b", "address": "127.0.0.1:1"}],
        }
        config["global"]["admin"] = {"bind": f"127.0.0.1:{free_port()}"}
        path = tmp_path / "inuse.yaml"
        path.write_text(yaml.safe_dump(config))
        result = run(path)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert lines == [
        f"loadstone: listeners.web.bind[0]: cannot bind 127.0.0.1:{port}: address already in use"
    ], lines
    assert not port_open("127.0.0.1", other)


def test_unresolvable_server_name_is_one_clear_line(tmp_path: Path) -> None:
    config = listener_config([Backend("a", 80)])
    config["listeners"]["web"]["servers"][0]["address"] = "no-such-host.invalid:80"
    config["global"]["admin"] = {"bind": f"127.0.0.1:{free_port()}"}
    path = tmp_path / "unresolvable.yaml"
    path.write_text(yaml.safe_dump(config))
    result = run(path)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("loadstone: listeners.web.servers[0].address: cannot resolve")


def test_grafana_dashboard_uses_only_exported_metrics() -> None:
    """Every metric the dashboard queries is one /metrics exports (docs/operations.md)."""
    import json
    import re

    dashboard = json.loads((ROOT / "configs" / "grafana-dashboard.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    used = {m for e in exprs for m in re.findall(r"loadstone_[a-z_]+", e)}
    documented = set(
        re.findall(r"`(loadstone_[a-z_]+)", (ROOT / "docs" / "operations.md").read_text())
    )
    assert used and used <= documented
