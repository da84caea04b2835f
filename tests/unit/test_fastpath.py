"""The native data path's pieces that can be tested in-process: the build's
hash against hashlib, the engine's life cycle, and the `splice` option."""

from __future__ import annotations

import hashlib
import os

import pytest

from loadstone import datapath
from loadstone.config import ConfigError, parse_config

relay = pytest.importorskip("loadstone._fastpath.relay", reason="native data path not built")

BASE = """
listeners:
  web:
    bind: ["127.0.0.1:18080"]
    servers: [{name: a, address: "127.0.0.1:18081"}]
"""


@pytest.mark.parametrize(
    "key", [b"", b"127.0.0.1", b"::1", b"2001:db8::17", b"x" * 127, b"y" * 128, b"z" * 300]
)
def test_blake2b64_matches_hashlib(key: bytes) -> None:
    expected = int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "big")
    assert relay.blake2b64(key) == expected


def test_engine_starts_and_stops_without_leaking_descriptors() -> None:
    before = len(os.listdir("/proc/self/fd"))
    engine = relay.Engine(2, "auto")
    lid = engine.new_listener()
    slot = engine.new_slot(lid)
    engine.publish(lid, "roundrobin", [(slot, 1, -1, "127.0.0.1", 9)])
    assert engine.listener_stats(lid) == (0, 0, 0, 0, 0, 0)
    assert engine.server_stats(lid, slot) == (0, 0, 0, 0)
    assert engine.shutdown(lid, -1, 0) == 0
    assert engine.take_records() == []
    engine.close()
    assert engine.closed
    assert len(os.listdir("/proc/self/fd")) == before


def test_engine_rejects_bad_input() -> None:
    with pytest.raises(ValueError):
        relay.Engine(1, "sometimes")
    with pytest.raises(OSError):
        relay.Engine(0)
    engine = relay.Engine(1)
    try:
        lid = engine.new_listener()
        with pytest.raises(OSError):  # a slot that was never made
            engine.publish(lid, "roundrobin", [(5, 1, -1, "127.0.0.1", 9)])
        slot = engine.new_slot(lid)
        with pytest.raises(ValueError):
            engine.publish(lid, "roundrobin", [(slot, 1, -1, "not-an-ip", 9)])
    finally:
        engine.close()


@pytest.mark.parametrize(
    ("text", "expected"),
    [("", "auto"), ("splice: auto", "auto"), ("splice: on", "on"), ("splice: off", "off")],
)
def test_splice_option(text: str, expected: str) -> None:
    config = parse_config(f"global:\n  {text or 'workers: 1'}\n{BASE}")
    assert config.global_.splice == expected


def test_splice_option_rejects_other_words() -> None:
    with pytest.raises(ConfigError) as err:
        parse_config(f"global:\n  splice: always\n{BASE}")
    assert err.value.problems[0].startswith("global.splice: must be one of auto, on, off")


def test_datapath_choice_reports_the_build() -> None:
    if datapath.NO_EXTENSIONS:
        assert datapath.IMPLEMENTATION == "pure"
    else:
        assert datapath.IMPLEMENTATION == "native"
        assert datapath.BUILD in ("release", "debug")
