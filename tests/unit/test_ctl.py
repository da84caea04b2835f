"""ctl's choices that need no server: which configuration it reads, which
servers a node is."""

from __future__ import annotations

from pathlib import Path

import pytest

from loadstone import ctl


def test_config_from_option_then_environment_then_etc(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    etc = tmp_path / "loadstone.yaml"
    monkeypatch.setattr(ctl, "DEFAULT_CONFIG", str(etc))
    monkeypatch.delenv("LOADSTONE_CONFIG", raising=False)
    assert ctl.config_path(None) is None  # nothing there: the default URL
    etc.write_text("")
    assert ctl.config_path(None) == str(etc)
    monkeypatch.setenv("LOADSTONE_CONFIG", "/srv/lb.yaml")
    assert ctl.config_path(None) == "/srv/lb.yaml"
    assert ctl.config_path("given.yaml") == "given.yaml"


STATUS = {
    "listeners": {
        "keystone": {
            "servers": {
                "ctl1": {"address": "10.0.0.11:5000"},
                "ctl2": {"address": "10.0.0.12:5000"},
            }
        },
        "galera": {
            "servers": {
                "db-a": {"address": "10.0.0.11:3306"},
                "db-b": {"address": "[fd00::12]:3306"},
            }
        },
    }
}


def test_a_node_is_every_server_of_that_name_or_host() -> None:
    assert ctl.node_servers(STATUS, "ctl1") == [("keystone", "ctl1")]
    assert ctl.node_servers(STATUS, "10.0.0.11") == [("keystone", "ctl1"), ("galera", "db-a")]
    assert ctl.node_servers(STATUS, "fd00::12") == [("galera", "db-b")]
    with pytest.raises(ctl.CtlError, match="known servers: ctl1, ctl2, db-a, db-b"):
        ctl.node_servers(STATUS, "ctl3")
