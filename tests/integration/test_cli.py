"""The command line on bad input: exit codes, messages, nothing left bound."""

from __future__ import annotations

import json
import re
import signal
import socket
import subprocess
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import yaml

from tests.integration.conftest import listener_config
from tests.integration.harness import (
    LOADSTONE,
    ROOT,
    Backend,
    free_port,
    port_bindable,
    port_open,
    run_check,
    wait_for,
)
from tests.tlscerts import Ca

pytestmark = pytest.mark.integration


CERTS = "/etc/loadstone/certs/"


def run(path: Path, timeout: float = 20) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(LOADSTONE), "run", str(path)], capture_output=True, text=True, timeout=timeout
    )


@pytest.mark.parametrize("config", sorted((ROOT / "configs").glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_configs_pass_check(config: Path, tmp_path: Path) -> None:
    # An example with TLS names certificates under /etc/loadstone/certs, which
    # `check` reads: the test makes them, and checks a copy pointing at them.
    text = config.read_text()
    if CERTS in text:
        ca = Ca(tmp_path / "certs", name="ca")
        for stem in sorted(set(re.findall(re.escape(CERTS) + r"(\w+)\.\w+", text)) - {"ca"}):
            ca.issue(stem, [f"{stem}.example.com"])  # stem.pem (chain and key), .crt, .key
        config = tmp_path / config.name
        config.write_text(text.replace(CERTS, f"{tmp_path}/certs/"))
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


@contextmanager
def listening_port() -> Iterator[int]:
    """A loopback port with a socket listening on it: taken for anyone else."""
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        yield busy.getsockname()[1]


def test_address_in_use_is_one_clear_line(tmp_path: Path) -> None:
    with listening_port() as port:
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
    """Every metric the dashboard queries is one /metrics exports (docs/metrics.md,
    the reference test_metrics holds to what /metrics exports)."""
    import json
    import re

    dashboard = json.loads((ROOT / "configs" / "grafana-dashboard.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    # histograms are documented by their family name, queried by their _bucket series
    used = {re.sub(r"_bucket$", "", m) for e in exprs for m in re.findall(r"loadstone_[a-z_]+", e)}
    documented = set(
        re.findall(r"`(loadstone_[a-z_]+)", (ROOT / "docs" / "metrics.md").read_text())
    )
    assert used and used <= documented


def test_freebind_binds_an_address_not_on_this_host(tmp_path: Path) -> None:
    # 198.51.100.0/24 is TEST-NET-2: never on this host. Binding sends no traffic.
    vip = f"198.51.100.7:{free_port()}"
    config = listener_config([Backend("a", free_port())])
    config["listeners"]["web"]["bind"] = [vip]
    config["global"]["admin"] = {"bind": f"127.0.0.1:{free_port()}"}
    path = tmp_path / "vip.yaml"
    path.write_text(yaml.safe_dump(config))
    result = run(path)
    assert result.returncode == 1
    assert "address not available on this host (set freebind: true for a VIP)" in result.stderr

    config["listeners"]["web"]["freebind"] = True
    path.write_text(yaml.safe_dump(config))
    with subprocess.Popen(
        [str(LOADSTONE), "run", str(path)], stderr=subprocess.PIPE, text=True
    ) as proc:
        assert proc.stderr is not None
        for line in proc.stderr:
            if "listener web on" in line:
                break
        else:
            raise AssertionError("loadstone did not start")
        listening = subprocess.run(["ss", "-ltnH"], capture_output=True, text=True).stdout
        proc.terminate()
        assert proc.wait(10) == 0
    assert vip in listening


@contextmanager
def running_demo(errors: Path, port: int = 8080, admin: int = 6956) -> Iterator[None]:
    """`loadstone demo` on these ports, its banner read and every backend up;
    stopped with Ctrl-C (SIGINT) after the block, which must end it with 0."""
    args = ["--port", str(port), "--admin-port", str(admin)]
    if (port, admin) == (8080, 6956):
        args = []  # the defaults, as a first-time user runs it
    with (
        errors.open("w") as err,
        subprocess.Popen(
            [str(LOADSTONE), "demo", *args], stdout=subprocess.PIPE, stderr=err, text=True
        ) as proc,
    ):
        try:
            assert proc.stdout is not None
            banner = [proc.stdout.readline() for _ in range(4)]
            assert banner[0].startswith(f"proxy    http://127.0.0.1:{port}/"), errors.read_text()
            assert f"http://127.0.0.1:{admin}/api/v1/status" in banner[1]

            def all_up() -> bool:
                with urllib.request.urlopen(f"http://127.0.0.1:{admin}/api/v1/status") as r:
                    servers = json.loads(r.read())["listeners"]["demo"]["servers"]
                return all(s["state"] == "up" for s in servers.values())

            wait_for(all_up, timeout=10)
            yield
            proc.send_signal(signal.SIGINT)
            assert proc.wait(10) == 0
        finally:
            if proc.poll() is None:
                proc.kill()


def test_demo_serves_round_robin_and_stops_on_ctrl_c(tmp_path: Path) -> None:
    with running_demo(tmp_path / "demo.err"):
        seen = []
        for _ in range(4):
            with urllib.request.urlopen("http://127.0.0.1:8080/") as r:
                seen.append(r.read().decode().split()[2])
        assert sorted(seen) == ["web1", "web2", "web3", "web3"]  # web3 has weight 2


def test_demo_on_other_ports(tmp_path: Path) -> None:
    # The proxy's port and the three after it (the backends), all free.
    while True:
        port = free_port()
        if port < 65530 and all(port_bindable(port + i) for i in (1, 2, 3)):
            break
    with (
        running_demo(tmp_path / "demo.err", port, free_port()),
        urllib.request.urlopen(f"http://127.0.0.1:{port}/") as r,
    ):
        assert r.read().startswith(b"Hello from web")


def test_admin_port_in_use_is_one_clear_line(tmp_path: Path) -> None:
    with listening_port() as taken:
        config = listener_config([Backend("a", free_port())])
        config["global"]["admin"] = {"bind": f"127.0.0.1:{taken}"}
        path = tmp_path / "admin-in-use.yaml"
        path.write_text(yaml.safe_dump(config))
        result = run(path)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert [line for line in lines if line.startswith("loadstone:")] == [
        f"loadstone: global.admin.bind: cannot bind 127.0.0.1:{taken}: address already in use "
        "(set global.admin.bind to a free address, or null for no admin server)"
    ]
