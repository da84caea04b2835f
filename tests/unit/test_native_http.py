"""The native HTTP path's in-process pieces: loading llhttp from httptools with
the engine's self-test, and which listener configurations it may serve."""

from __future__ import annotations

import httptools.parser.parser as compiled
import pytest

from loadstone.config import parse_config
from loadstone.config.model import ListenerConfig

relay = pytest.importorskip("loadstone._fastpath.relay", reason="native data path not built")
native_http = pytest.importorskip("loadstone.datapath.native_http")


def listener(extra: str) -> ListenerConfig:
    text = f"""
listeners:
  api:
    bind: ["127.0.0.1:18080"]
    mode: http
    servers: [{{name: a, address: "127.0.0.1:18081"}}]
{extra}
"""
    return parse_config(text).listeners[0]


def test_llhttp_from_httptools_passes_the_self_test() -> None:
    relay.load_llhttp(compiled.__file__)
    assert native_http.llhttp_status() is None


def test_a_library_without_llhttp_is_refused() -> None:
    with pytest.raises(RuntimeError, match="llhttp_init not found"):
        relay.load_llhttp("libc.so.6")


def test_a_missing_library_is_refused() -> None:
    with pytest.raises(RuntimeError, match="dlopen"):
        relay.load_llhttp("/nonexistent/parser.so")


@pytest.mark.parametrize(
    "extra",
    [
        "",
        "    forwardfor: true",
        "    forwardfor: {except: [127.0.0.0/8, '::1/128']}",
        "    forwarded_proto: https\n    forwarded_port: true",
        "    balance: source",
        "    balance: leastconn\n    timeouts: {tunnel: 1h, http_request: 5s}",
    ],
)
def test_what_the_openstack_api_listeners_use_is_native(extra: str) -> None:
    assert native_http.refusal(listener(extra)) is None


@pytest.mark.parametrize(
    ("extra", "why"),
    [
        ("    cookie: {name: SERVERID, mode: insert}", "cookie persistence"),
        ("    request_headers: [{set: X-A, value: b}]", "request header rules"),
        ("    response_headers: [{delete: Server}]", "response header rules"),
        ("    rewrite_location: https", "Location rewriting"),
    ],
)
def test_what_only_the_pure_path_implements_keeps_it(extra: str, why: str) -> None:
    refused = native_http.refusal(listener(extra))
    assert refused is not None and refused.startswith(why)


def test_the_environment_can_force_the_pure_path(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOADSTONE_HTTP_PATH", "pure")
    assert native_http.refusal(listener("")) == "LOADSTONE_HTTP_PATH=pure"
