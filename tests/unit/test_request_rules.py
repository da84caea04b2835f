"""Request rules (loadstone.http.request_rules), fed parsed heads: the order of
the walk, each action and each condition, and the configuration's refusals."""

from __future__ import annotations

import pytest

from loadstone.config.loader import ConfigError, parse_config
from loadstone.http.request_rules import RequestRules, Verdict

Headers = list[tuple[bytes, bytes]]


def rules(yaml_rules: str) -> RequestRules:
    config = parse_config(
        "listeners:\n  web:\n    bind: 127.0.0.1:8080\n    mode: http\n"
        '    servers: [{name: a, address: "127.0.0.1:1"}]\n'
        f"    request_rules: {yaml_rules}\n"
    )
    return RequestRules(config.listeners[0].request_rules)


def run(
    compiled: RequestRules,
    target: bytes = b"/",
    method: bytes = b"GET",
    host: bytes = b"api.example.com:5000",
    src: str = "10.0.0.1",
    dst: str = "198.18.0.10",
    headers: Headers | None = None,
) -> tuple[Verdict | None, Headers]:
    head = [(b"Host", host), *(headers or [])]
    return compiled.run(method, target, head, src, dst), head


def test_allow_list_then_deny() -> None:
    compiled = rules("[{allow: true, if: {src: [10.0.0.0/8, '::1']}}, {deny: 403}]")
    assert run(compiled, src="10.1.2.3")[0] is None
    assert run(compiled, src="::1")[0] is None
    assert run(compiled, src="::ffff:10.0.0.9")[0] is None  # a dual-stack socket's IPv4 client
    verdict = run(compiled, src="192.0.2.1")[0]
    assert verdict is not None and verdict.status == 403 and verdict.end == "denied"
    assert verdict.data.startswith(b"HTTP/1.1 403 Forbidden\r\n")


def test_conditions() -> None:
    compiled = rules(
        "[{deny: 404, if: {path_prefix: /admin}},"
        " {deny: 405, if: {method: [DELETE, PUT]}},"
        " {deny: 410, if: {host: '*.internal'}},"
        " {deny: 429, if: {path_regex: '/v[0-9]+/slow'}},"
        " {deny: 503, if: {dst: 198.18.0.99}},"
        " {deny: 401, unless: {path_exact: /public}}]"
    )
    status = lambda **kw: (run(compiled, **kw)[0] or Verdict(0, b"", "")).status  # noqa: E731
    assert status(target=b"/admin/users") == 404
    assert status(target=b"/public", method=b"PUT") == 405
    assert status(target=b"/public", host=b"db.internal") == 410
    assert status(target=b"/v2/slow?x=1") == 429
    assert status(target=b"/public", dst="198.18.0.99") == 503
    assert status(target=b"/public") == 0  # no rule applies: sent on
    assert status(target=b"/private") == 401


def test_header_rules_edit_and_go_on() -> None:
    compiled = rules(
        "[{set_header: {name: X-Forwarded-Proto, value: https}},"
        " {del_header: X-Debug},"
        " {set_header: {name: X-Admin, value: '1'}, if: {path_prefix: /admin}}]"
    )
    verdict, head = run(
        compiled, headers=[(b"x-forwarded-proto", b"http"), (b"X-Debug", b"1"), (b"A", b"b")]
    )
    assert verdict is None
    assert head == [
        (b"Host", b"api.example.com:5000"),
        (b"A", b"b"),
        (b"X-Forwarded-Proto", b"https"),
    ]
    assert (b"X-Admin", b"1") in run(compiled, target=b"/admin")[1]


def test_redirects() -> None:
    compiled = rules(
        "[{redirect: {scheme: https, code: 301}, if: {path_prefix: /s}},"
        " {redirect: {location: 'https://example.com/moved'}, if: {path_prefix: /m}},"
        " {redirect: {prefix: 'https://new.example.com/'}}]"
    )
    verdict = run(compiled, target=b"/s?q=1")[0]
    assert verdict is not None and verdict.status == 301
    assert b"location: https://api.example.com:5000/s?q=1\r\n" in verdict.data
    verdict = run(compiled, target=b"/m")[0]
    assert verdict is not None and verdict.status == 302
    assert b"location: https://example.com/moved\r\n" in verdict.data
    verdict = run(compiled, target=b"/x/y?z")[0]
    assert verdict is not None and b"location: https://new.example.com/x/y?z\r\n" in verdict.data


def test_if_and_unless_together() -> None:
    # HAProxy: deny ... if { path_beg /auth } !{ src 10.0.0.0/8 } !{ src 192.168.0.0/16 }
    compiled = rules(
        "[{deny: 429, if: {path_prefix: /auth}, unless: {src: [10.0.0.0/8, 192.168.0.0/16]}}]"
    )
    assert run(compiled, target=b"/auth/tokens", src="192.0.2.1")[0] is not None
    assert run(compiled, target=b"/auth/tokens", src="10.2.3.4")[0] is None
    assert run(compiled, target=b"/other", src="192.0.2.1")[0] is None


def test_first_terminal_rule_wins() -> None:
    compiled = rules("[{allow: true, if: {path_prefix: /ok}}, {deny: 403}, {deny: 404}]")
    assert run(compiled, target=b"/ok")[0] is None
    verdict = run(compiled, target=b"/no")[0]
    assert verdict is not None and verdict.status == 403


@pytest.mark.parametrize(
    ("yaml_rules", "message"),
    [
        ("[{deny: 403, allow: true}]", "listeners.web.request_rules[0]: a rule needs exactly one"),
        ("[{if: {src: 10.0.0.0/8}}]", "listeners.web.request_rules[0]: a rule needs exactly one"),
        ("[{deny: 999}]", "listeners.web.request_rules[0].deny: must be one of"),
        ("[{deny: 403, if: {}}]", "listeners.web.request_rules[0].if: a condition needs"),
        (
            "[{deny: 403, if: {src: bad}}]",
            "listeners.web.request_rules[0].if.src: invalid network",
        ),
        ("[{deny: 403, if: {path_regex: '('}}]", "listeners.web.request_rules[0].if.path_regex"),
        (
            "[{deny: 403, if: {path_prefix: /a, path_exact: /b}}]",
            "listeners.web.request_rules[0].if.path_exact",
        ),
        ("[{redirect: {code: 301}}]", "listeners.web.request_rules[0].redirect: a redirect needs"),
        (
            "[{del_header: Content-Length}]",
            "listeners.web.request_rules[0].del_header: Content-Length",
        ),
        (
            "[{set_header: {name: Host, value: x}}]",
            "listeners.web.request_rules[0].set_header: Host",
        ),
        ("[{allow: false}]", "listeners.web.request_rules[0].allow"),
        ("[{deny: 403, if: {method: FETCH}}]", "listeners.web.request_rules[0].if.method"),
    ],
)
def test_refused_with_path(yaml_rules: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        rules(yaml_rules)
    assert any(p.startswith(message) for p in caught.value.problems), caught.value.problems


def test_tcp_listener_may_not_have_rules() -> None:
    with pytest.raises(ConfigError, match=r"listeners.web.request_rules"):
        parse_config(
            "listeners:\n  web:\n    bind: 127.0.0.1:8080\n"
            '    servers: [{name: a, address: "127.0.0.1:1"}]\n'
            "    request_rules: [{deny: 403}]\n"
        )
