"""The directives part 2 of issue 14 added to loadstone, as the importer
translates them: PROXY protocol, http-request rules with their ACLs."""

from __future__ import annotations

import pytest

from loadstone.importers.haproxy.report import TranslationError
from tests.importer.test_translate import HTTP_DEFAULTS, TCP_DEFAULTS, imp, listener


def test_send_proxy_per_server() -> None:
    config, report = imp(
        TCP_DEFAULTS + "listen db\n  bind 198.18.0.10:3306\n"
        "  server a 198.18.0.11:3306 send-proxy-v2\n"
        "  server b 198.18.0.12:3306 send-proxy\n"
        "  server c 198.18.0.13:3306\n"
    )
    servers = listener(config, "db")["servers"]
    assert [s.get("send_proxy") for s in servers] == ["v2", "v1", None]
    assert report == []


def test_accept_proxy_trusts_everyone_and_says_so() -> None:
    config, report = imp(
        TCP_DEFAULTS + "listen db\n  bind :3306 accept-proxy\n  server a 198.18.0.11:3306\n"
    )
    assert listener(config, "db")["accept_proxy"] == {"trusted": ["0.0.0.0/0", "::/0"]}
    assert len(report) == 1 and "narrow accept_proxy.trusted" in report[0]


def test_http_request_rules_with_acls() -> None:
    config, report = imp(
        HTTP_DEFAULTS + "frontend api\n  bind :80\n"
        "  acl internal src 10.0.0.0/8 192.168.0.0/16\n"
        "  acl admin path_beg /admin\n"
        "  acl admin path_beg /internal\n"
        "  http-request deny if { path -i -m beg /server-status }\n"
        "  http-request redirect scheme https code 301 if { hdr(host) -i www.example.com }\n"
        "  http-request redirect location https://example.com/ if { path /old }\n"
        "  redirect prefix https://new.example.com if { hdr_dom(host) old.example.com }\n"
        "  http-request set-header X-Internal 1 if internal\n"
        "  http-request del-header X-Debug unless internal\n"
        "  http-request allow if internal !{ method POST }\n"
        "  http-request deny deny_status 404 if { path_reg ^/v[0-9]/private }"
        " !{ src 10.1.0.0/16 } !{ src 10.2.0.0/16 }\n"
        "  http-request deny if admin\n"
        "  default_backend app\n"
        "backend app\n  server a 198.18.0.11:8080\n"
    )
    rules = listener(config, "api")["request_rules"]
    assert rules == [
        {"deny": 403, "if": {"path_regex": "(?i)/server\\-status"}},
        {"redirect": {"scheme": "https", "code": 301}, "if": {"host": ["www.example.com"]}},
        {"redirect": {"location": "https://example.com/"}, "if": {"path_exact": "/old"}},
        {
            "redirect": {"prefix": "https://new.example.com"},
            "if": {"host": ["old.example.com", "*.old.example.com"]},
        },
        {
            "set_header": {"name": "X-Internal", "value": "1"},
            "if": {"src": ["10.0.0.0/8", "192.168.0.0/16"]},
        },
        {"del_header": "X-Debug", "unless": {"src": ["10.0.0.0/8", "192.168.0.0/16"]}},
        {
            "allow": True,
            "if": {"src": ["10.0.0.0/8", "192.168.0.0/16"]},
            "unless": {"method": ["POST"]},
        },
        {
            "deny": 404,
            "if": {"path_regex": "^/v[0-9]/private"},
            "unless": {"src": ["10.1.0.0/16", "10.2.0.0/16"]},
        },
        {"deny": 403, "if": {"path_regex": "(?:/admin|/internal)"}},
    ]
    assert report == []


@pytest.mark.parametrize(
    ("rule", "reason"),
    [
        ("http-request deny if { ssl_fc }", "(TLS)"),
        ("http-request deny deny_status 429 if { sc_http_req_rate(0) gt 5 }", "track-sc0 src"),
        ("http-request deny if { sc1_http_req_rate gt 5 }", "stick-table counters"),
        ("http-request deny if { path_beg /a } || { path_beg /b }", "'||'"),
        ("http-request deny if !{ src 10.0.0.0/8 } !{ path_beg /a }", "different kinds"),
        ("http-request deny if { hdr_beg(host) api }", "no loadstone condition"),
        ("http-request deny if nosuch", "no acl named"),
        ("http-request deny deny_status 418", "not one loadstone answers with"),
        ("http-request redirect scheme https drop-query", "other than code"),
        ("http-request deny hdr X-A b", "other than deny_status"),
        ("http-request tarpit", "not yet supported"),
    ],
)
def test_rules_not_translated_are_reported(rule: str, reason: str) -> None:
    config, report = imp(
        HTTP_DEFAULTS + f"listen api\n  bind :80\n  {rule}\n  server a 198.18.0.11:8080\n"
    )
    assert "request_rules" not in listener(config, "api")
    assert len(report) == 1 and reason in report[0], report


def test_http_request_rules_in_tcp_mode_have_no_effect() -> None:
    config, report = imp(
        TCP_DEFAULTS + "listen db\n  bind :3306\n  http-request deny\n  server a 198.18.0.11:3306\n"
    )
    assert "request_rules" not in listener(config, "db")
    assert len(report) == 1 and "HAProxy ignores them" in report[0]


def test_monitor_uri_frontend_without_backend() -> None:
    config, report = imp(HTTP_DEFAULTS + "frontend status\n  bind :61313\n  monitor-uri /\n")
    assert listener(config, "status")["monitor"] == "/"
    assert "servers" not in listener(config, "status")
    assert report == []


def test_tls_frontend_and_its_plain_redirect() -> None:
    config, report = imp(
        "global\n  ssl-default-bind-ciphers ECDH+AESGCM\n"
        "  ssl-default-bind-options ssl-min-ver TLSv1.3 no-tlsv10\n  crt-base /etc/ssl\n"
        + HTTP_DEFAULTS
        + "frontend plain\n  bind :80\n  redirect scheme https code 301 if !{ ssl_fc }\n"
        "frontend secure\n  bind :443 ssl crt site.pem crt /abs/other.pem alpn h2,http/1.1\n"
        "  http-request set-header X-Forwarded-Proto https if { ssl_fc }\n"
        "  default_backend app\n"
        "backend app\n  server a 198.18.0.11:8080\n"
    )
    assert listener(config, "plain")["redirect"] == {"scheme": "https", "code": 301}
    secure = listener(config, "secure")
    assert secure["bind"] == ["*:443"]
    assert secure["tls"] == {
        "certificates": ["/etc/ssl/site.pem", "/abs/other.pem"],
        "ciphers": "ECDH+AESGCM",
        "min_version": "TLSv1.3",
    }
    assert secure["forwarded_proto"] == "auto"
    assert [line.split(": ", 2)[1] for line in report] == [
        "ssl-default-bind-options ... no-tlsv10",
        "bind ... alpn h2,http/1.1",
    ]


def test_plain_and_tls_binds_in_one_frontend_are_reported() -> None:
    config, report = imp(
        HTTP_DEFAULTS + "listen web\n  bind :80\n  bind :443 ssl crt /a.pem\n"
        "  server a 198.18.0.11:8080\n"
    )
    assert listener(config, "web")["bind"] == ["*:80"] and "tls" not in listener(config, "web")
    assert len(report) == 1 and "split the frontend in two" in report[0]


def test_openstack_ansible_rate_limits() -> None:
    config, report = imp(
        HTTP_DEFAULTS + "listen horizon\n  bind :80\n"
        "  stick-table type ipv6 size 256k expire 10s store http_req_rate(10s),http_err_rate(20s)\n"
        "  http-request track-sc0 src\n"
        "  http-request deny deny_status 429 if { sc_http_req_rate(0) gt 20 } { path_beg /auth }"
        " !{ src 192.168.0.0/16 } !{ src 10.0.0.0/8 }\n"
        "  http-request deny deny_status 429 if { sc_http_err_rate(0) ge 5 }\n"
        "  server a 198.18.0.11:8080\n"
    )
    assert listener(config, "horizon")["request_rules"] == [
        {
            "deny": 429,
            "if": {"request_rate": {"above": 20, "per": "10s"}, "path_prefix": "/auth"},
            "unless": {"src": ["192.168.0.0/16", "10.0.0.0/8"]},
        },
        {"deny": 429, "if": {"error_rate": {"above": 4, "per": "20s"}}},
    ]
    assert report == []


def test_rate_without_tracking_is_reported() -> None:
    config, report = imp(
        HTTP_DEFAULTS + "listen web\n  bind :80\n"
        "  stick-table type ip size 1k store http_req_rate(10s)\n"
        "  http-request deny if { sc_http_req_rate(0) gt 1 }\n  server a 198.18.0.11:8080\n"
    )
    assert "request_rules" not in listener(config, "web")
    assert any("needs 'http-request track-sc0 src'" in line for line in report), report


def test_bind_transparent() -> None:
    config, _ = imp(
        TCP_DEFAULTS + "listen vip\n  bind 198.18.0.10:80 transparent\n  server a 198.18.0.11:80\n"
    )
    assert listener(config, "vip")["transparent"] is True


def test_server_tls() -> None:
    config, report = imp(
        HTTP_DEFAULTS + "listen api\n  bind :80\n  option httpchk GET /healthcheck\n"
        "  server a 198.18.0.11:443 ssl verify none check check-ssl\n"
        "  server b 198.18.0.12:443 ssl ca-file /etc/ca.pem sni str(api.internal) check check-ssl\n"
        "  server c 198.18.0.13:443 ssl ca-file /etc/ca.pem sni req.hdr(host) check check-ssl\n"
    )
    api = listener(config, "api")
    assert [s["tls"] for s in api["servers"]] == [
        {"verify": "none"},
        {"ca_file": "/etc/ca.pem", "sni": "api.internal"},
        {"ca_file": "/etc/ca.pem"},
    ]
    assert api["check"]["tls"] is True
    assert len(report) == 1 and "constant sni" in report[0]


def test_server_ssl_verified_without_ca_is_refused_as_haproxy_does() -> None:
    with pytest.raises(TranslationError, match="needs ca-file"):
        imp(TCP_DEFAULTS + "listen db\n  bind :80\n  server a 198.18.0.11:443 ssl\n")
