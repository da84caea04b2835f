"""The native HTTP path's in-process pieces: the vendored llhttp and the engine's
self-test of it, and which listener configurations it may serve."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from loadstone.config import parse_config
from loadstone.config.model import ListenerConfig
from loadstone.http.rules import HeaderRules

relay = pytest.importorskip("loadstone._fastpath.relay", reason="native data path not built")
http_native = pytest.importorskip("loadstone.datapath.http_native")


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


VENDOR = Path(__file__).parents[2] / "src" / "_fastpath" / "vendor" / "llhttp"


def test_the_vendored_llhttp_passes_the_self_test() -> None:
    relay.init_llhttp()
    relay.init_llhttp()  # again: a no-op
    http_native.init_llhttp()


def test_the_built_llhttp_is_the_vendored_release() -> None:
    header = (VENDOR / "include" / "llhttp.h").read_text()
    version = ".".join(
        re.search(rf"#define LLHTTP_VERSION_{part} (\d+)", header)[1]  # type: ignore[index]
        for part in ("MAJOR", "MINOR", "PATCH")
    )
    assert version == relay.LLHTTP_VERSION
    assert f"# llhttp {version}, vendored" in (VENDOR / "README.md").read_text()
    assert "MIT License" in (VENDOR / "LICENSE-MIT").read_text()


def test_a_failed_self_test_says_why(monkeypatch: pytest.MonkeyPatch) -> None:
    # a test-only switch, read by the engine's self-test alone
    monkeypatch.setenv("LOADSTONE_TEST_LLHTTP_SELFTEST_FAIL", "1")
    with pytest.raises(RuntimeError) as failed:
        relay.init_llhttp()
    assert str(failed.value) == (
        f"llhttp {relay.LLHTTP_VERSION} failed the engine's self-test: "
        "forced by LOADSTONE_TEST_LLHTTP_SELFTEST_FAIL (a test setting)"
    )


@pytest.mark.parametrize(
    "extra",
    [
        "",
        "    forwardfor: true",
        "    forwardfor: {except: [127.0.0.0/8, '::1/128']}",
        "    forwarded_proto: https\n    forwarded_port: true",
        "    balance: source",
        "    balance: leastconn\n    timeouts: {tunnel: 1h, http_request: 5s}",
        "    request_headers: [{set: X-A, value: b}]",
        "    response_headers: [{delete: Server}, {set: Strict-Transport-Security, value: x}]",
        "    redirect: {scheme: https, code: 308}",
    ],
)
def test_what_the_openstack_api_listeners_use_is_native(extra: str) -> None:
    assert http_native.refusal(listener(extra)) is None


@pytest.mark.parametrize(
    ("extra", "why"),
    [
        ("    cookie: {name: SERVERID, mode: insert}", "cookie persistence"),
        ("    rewrite_location: https", "Location rewriting"),
    ],
)
def test_what_only_the_pure_path_implements_keeps_it(extra: str, why: str) -> None:
    refused = http_native.refusal(listener(extra))
    assert refused is not None and refused.startswith(why)


def test_the_environment_can_force_the_pure_path(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOADSTONE_HTTP_PATH", "pure")
    assert http_native.refusal(listener("")) == "LOADSTONE_HTTP_PATH=pure"


def _rules(field: str, rules: list[str]) -> str:
    return f"    {field}: [{', '.join(rules)}]"


@pytest.mark.parametrize(
    ("extra", "why"),
    [
        (
            _rules("request_headers", [f"{{add: X-{i}, value: v}}" for i in range(33)]),
            "request_headers has more than 32 rules",
        ),
        (
            _rules("response_headers", ["{delete: X-" + "n" * 62 + "}"]),
            "a response_headers name is longer than 63 bytes",
        ),
        (
            _rules("response_headers", [f"{{add: X-{i}, value: {'v' * 300}}}" for i in range(14)]),
            "response_headers add more than 4096 bytes of header lines",
        ),
    ],
)
def test_header_rules_beyond_the_engine_table_keep_the_pure_path(extra: str, why: str) -> None:
    assert http_native.refusal(listener(extra)) == why


def test_compiled_rules_do_what_the_pure_path_rules_do() -> None:
    """compile_rules' (names dropped, lines added) is HeaderRules.apply for any head."""
    config = listener(
        _rules(
            "response_headers",
            [
                "{add: X-A, value: '1'}",
                "{set: x-b, value: two}",
                "{add: X-C, value: c}",
                "{add: x-a, value: '2'}",
                "{delete: X-C}",
                "{set: X-D, value: d}",
                "{add: X-D, value: e}",
            ],
        )
    )
    drop, lines = http_native.compile_rules(config.response_headers)
    assert drop == (b"x-b", b"x-c", b"x-d")
    assert lines == b"X-A: 1\r\nx-b: two\r\nx-a: 2\r\nX-D: d\r\nX-D: e\r\n"
    for head in (
        [],
        [(b"X-B", b"old"), (b"Server", b"s"), (b"x-c", b"c"), (b"X-A", b"0")],
        [(b"x-d", b"1"), (b"X-D", b"2"), (b"Other", b"o")],
    ):
        pure = list(head)
        HeaderRules(config.response_headers).apply(pure)
        native = [h for h in head if h[0].lower() not in drop]
        added = [tuple(line.split(b": ", 1)) for line in lines.split(b"\r\n") if line]
        assert pure == native + added
