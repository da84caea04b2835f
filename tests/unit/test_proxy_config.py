"""The PROXY protocol keys: parsed, inherited, refused with their YAML path, and
the data path they send a listener to."""

from __future__ import annotations

import pytest

from loadstone.config.loader import ConfigError, parse_config
from loadstone.datapath.native_gaps import refusal as native_refusal

BASE = """
defaults: {send_proxy: v1}
listeners:
  db:
    bind: "127.0.0.1:3306"
    accept_proxy: {trusted: [10.0.0.0/8, "::1"], timeout: 2s}
    servers:
      - {name: a, address: "127.0.0.1:1"}
      - {name: b, address: "127.0.0.1:2", send_proxy: v2}
      - {name: c, address: "127.0.0.1:3", send_proxy: off}
  plain:
    bind: "127.0.0.1:3307"
    send_proxy: null
    servers: [{name: a, address: "127.0.0.1:1"}]
"""


def test_parsed_and_inherited() -> None:
    db, plain = parse_config(BASE).listeners
    assert db.accept_proxy is not None
    assert db.accept_proxy.trusted == ("10.0.0.0/8", "::1/128")
    assert db.accept_proxy.timeout == 2.0
    assert [db.proxy_version(s) for s in db.servers] == ["v1", "v2", None]
    assert plain.proxy_version(plain.servers[0]) is None
    assert native_refusal(db) is None  # the PROXY protocol runs natively too
    assert native_refusal(plain) is None


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (("10.0.0.0/8", "10.0.0.300/8"), "listeners.db.accept_proxy.trusted[0]: invalid network"),
        (("send_proxy: v2}", "send_proxy: v3}"), "listeners.db.servers[1].send_proxy: must be one"),
        (("{send_proxy: v1}", "{send_proxy: 2}"), "defaults.send_proxy: must be one of v1, v2"),
        (('{trusted: [10.0.0.0/8, "::1"], ', "{"), "listeners.db.accept_proxy.trusted: required"),
        (("accept_proxy: {", "accept_proxy: {trustd: [], "), "listeners.db.accept_proxy.trustd"),
    ],
)
def test_refused_with_path(change: tuple[str, str], message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(BASE.replace(*change))
    assert any(p.startswith(message) for p in caught.value.problems), caught.value.problems
