"""HAProxy semantics in the translation: inheritance, defaults, patterns, the report."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from loadstone.config import parse_config
from loadstone.importers.haproxy import keywords
from loadstone.importers.haproxy.files import to_yaml
from loadstone.importers.haproxy.keywords import Kind
from loadstone.importers.haproxy.parser import parse_files
from loadstone.importers.haproxy.proxy import HANDLERS, format_duration, parse_haproxy_time
from loadstone.importers.haproxy.report import TranslationError
from loadstone.importers.haproxy.translate import GaleraCheck, translate


def imp(
    text: str, galera: GaleraCheck = "http", maps: dict[str, str] | None = None
) -> tuple[dict[str, Any], list[str]]:
    sections = parse_files([("h.cfg", text)], {})
    result = translate(sections, galera, lambda name: (maps or {}).get(name))
    parse_config(to_yaml(result.config, [Path("h.cfg")]))  # always valid for loadstone
    return result.config, [str(line) for line in result.report]


def listener(config: dict[str, Any], name: str) -> dict[str, Any]:
    out: dict[str, Any] = config["listeners"][name]
    return out


# Timeouts set, so that the report holds only what a test is about.
TCP_DEFAULTS = "defaults\n  timeout connect 1s\n  timeout client 1s\n  timeout server 1s\n"
HTTP_DEFAULTS = TCP_DEFAULTS.replace("defaults\n", "defaults\n  mode http\n")

GALERA_CLUSTERCHECK = """
defaults
  timeout connect 10s
  timeout client 90m
  timeout server 90m
listen galera
  bind 198.18.0.10:3306
  option httpchk
  server db1 198.18.0.11:3306 check port 9200 inter 1s on-marked-down shutdown-sessions
  server db2 198.18.0.12:3306 check port 9200 inter 1s on-marked-down shutdown-sessions backup
  server db3 198.18.0.13:3306 check port 9200 inter 1s on-marked-down shutdown-sessions backup
"""


def test_time_format() -> None:
    assert parse_haproxy_time("5000") == 5000
    assert parse_haproxy_time("90m") == 5_400_000
    assert parse_haproxy_time("1.5s") == 1500
    assert parse_haproxy_time("5 s") is None
    assert [format_duration(ms) for ms in (2000, 90_000, 5_400_000, 250, 0.5)] == [
        "2s",
        "90s",
        "90m",
        "250ms",
        "500us",
    ]


def test_defaults_are_inherited_and_haproxy_defaults_fill_the_rest() -> None:
    config, report = imp(
        """
defaults
  mode http
  timeout connect 5000
  timeout client 1m
  timeout server 2m
listen api
  bind :8080
  option httpchk GET /healthcheck
  server a 198.18.0.11:80 check
  server b 198.18.0.12:80
"""
    )
    api = listener(config, "api")
    assert api["mode"] == "http"
    assert api["balance"] == "roundrobin"
    assert api["bind"] == ["*:8080"]
    # timeout check = inter; queue = connect; http-request = client; keep-alive = http-request
    assert api["timeouts"] == {
        "connect": "5s",
        "client": "1m",
        "server": "2m",
        "check": "2s",
        "queue": "5s",
        "tunnel": "2m",
        "http_request": "1m",
        "http_keep_alive": "1m",
    }
    assert api["check"]["interval"] == "2s"
    assert (api["check"]["rise"], api["check"]["fall"]) == (2, 3)
    assert api["check"]["expect_status"][:2] == [200, 201]  # HAProxy: any 2xx/3xx
    assert api["servers"] == [
        {"name": "a", "address": "198.18.0.11:80"},
        {"name": "b", "address": "198.18.0.12:80", "check": False},
    ]
    assert report == []


def test_a_later_defaults_section_applies_only_to_what_follows() -> None:
    config, _ = imp(
        TCP_DEFAULTS
        + """
  balance leastconn
listen one
  bind :1
  server a 198.18.0.11:1
defaults
  timeout connect 1s
  timeout client 1s
  timeout server 1s
listen two
  bind :2
  server a 198.18.0.11:2
"""
    )
    assert listener(config, "one")["balance"] == "leastconn"
    assert listener(config, "two")["balance"] == "roundrobin"


def test_frontend_and_backend_pair_into_one_listener() -> None:
    config, report = imp(
        """
defaults
  mode http
  timeout connect 10s
  timeout client 1m
  timeout server 1m
frontend keystone_front
  bind 198.18.0.10:5000 transparent
  option forwardfor except 127.0.0.0/8
  http-request del-header X-Forwarded-Proto
  timeout client 2m
  default_backend keystone_back
backend keystone_back
  balance leastconn
  timeout server 10m
  http-response set-header Strict-Transport-Security "max-age=63072000"
  server ctl1 198.18.0.11:5000 check
backend unused
  server x 198.18.0.11:1
"""
    )
    ks = listener(config, "keystone_front")
    assert ks["freebind"] is True
    assert ks["balance"] == "leastconn"
    assert (ks["timeouts"]["client"], ks["timeouts"]["server"]) == ("2m", "10m")
    assert ks["forwardfor"] == {"except": ["127.0.0.0/8"]}
    assert ks["request_headers"] == [{"delete": "X-Forwarded-Proto"}]
    assert ks["response_headers"] == [
        {"set": "Strict-Transport-Security", "value": "max-age=63072000"}
    ]
    assert report == [
        "h.cfg:18: backend unused: no frontend uses this backend, so HAProxy sends it no traffic"
    ]


def test_galera_single_writer_keeps_the_http_check_by_default() -> None:
    config, report = imp(GALERA_CLUSTERCHECK)
    galera = listener(config, "galera")
    assert galera["balance"] == "active-backup"
    assert galera["on_marked_down"] == "shutdown-sessions"
    assert galera["check"] == {
        "type": "http",
        "method": "OPTIONS",
        "path": "/",
        "expect_status": [*range(200, 207), *range(300, 309)],
        "interval": "1s",
        "rise": 2,
        "fall": 3,
        "port": 9200,
    }
    assert [s.get("backup", False) for s in galera["servers"]] == [False, True, True]
    assert any("single-writer Galera pattern" in line for line in report)
    assert any("no failback" in line for line in report)


def test_galera_single_writer_native_check() -> None:
    config, _ = imp(GALERA_CLUSTERCHECK, galera="native")
    check = listener(config, "galera")["check"]
    assert check == {
        "type": "galera",
        "user": "monitor",
        "password_env": "GALERA_MONITOR_PASSWORD",
        "interval": "1s",
        "rise": 2,
        "fall": 3,
    }


def test_galera_all_backups_with_stick_on_dst_and_mysql_check() -> None:
    text = (
        TCP_DEFAULTS
        + """
listen mysql
  bind 198.18.0.10:3306
  option mysql-check user haproxy_check
  stick-table type ip size 1000
  stick on dst
  server db1 198.18.0.11:3306 backup check
  server db2 198.18.0.12:3306 backup check
"""
    )
    config, report = imp(text)
    mysql = listener(config, "mysql")
    assert mysql["balance"] == "active-backup"
    assert mysql["check"]["type"] == "mysql"
    assert mysql["check"]["user"] == "haproxy_check"
    assert not any("no failback" in line for line in report)
    assert not any("stick" in line for line in report)
    config, _ = imp(text, galera="native")
    assert listener(config, "mysql")["check"]["user"] == "haproxy_check"


def test_two_active_servers_are_not_the_galera_pattern() -> None:
    config, _ = imp(GALERA_CLUSTERCHECK.replace(" backup\n", "\n", 1))
    assert listener(config, "galera")["balance"] == "roundrobin"


REMOVED = """
global
  nbproc 4
defaults
  mode http
  contimeout 5000
  clitimeout 50000
  srvtimeout 50000
  option forceclose
  option http-tunnel
listen web
  bind :80
  reqadd X-Forwarded-Proto:\\ https
  rspirep ^Location:\\ http://(.*) Location:\\ https://\\1
  rsprep ^Set-Cookie:\\ (.*) Set-Cookie:\\ \\1;\\ Secure
  reqidel ^X-Forwarded-For:.*
  server a 198.18.0.11:80
"""


def test_removed_keywords_are_translated_where_an_equivalent_exists() -> None:
    config, report = imp(REMOVED)
    assert config["global"]["workers"] == 4
    web = listener(config, "web")
    assert web["timeouts"]["connect"] == "5s"
    assert web["timeouts"]["client"] == "50s"
    assert web["request_headers"] == [
        {"add": "X-Forwarded-Proto", "value": "https"},
        {"delete": "X-Forwarded-For"},
    ]
    assert web["rewrite_location"] == "https"
    assert report == [
        "h.cfg:3: nbproc 4: removed from HAProxy 2.5; translated as global.workers",
        "h.cfg:6: contimeout 5000: removed from HAProxy 2.1; translated as timeout connect",
        "h.cfg:7: clitimeout 50000: removed from HAProxy 2.1; translated as timeout client",
        "h.cfg:8: srvtimeout 50000: removed from HAProxy 2.1; translated as timeout server",
        "h.cfg:9: option forceclose: removed from HAProxy; it became option httpclose; loadstone"
        " keeps connections alive instead",
        "h.cfg:10: option http-tunnel: removed from HAProxy; HAProxy 2.1 processes every request,"
        " as loadstone does; nothing to translate",
        "h.cfg:13: reqadd 'X-Forwarded-Proto: https': removed from HAProxy 2.1; translated as"
        " http-request add-header",
        "h.cfg:14: rspirep '^Location: http://(.*)' 'Location: https://\\1': removed from"
        " HAProxy 2.1; translated as rewrite_location",
        "h.cfg:15: rsprep '^Set-Cookie: (.*)' 'Set-Cookie: \\1; Secure': removed from"
        " HAProxy 2.1 (http-response replace-header); only the Location http:// -> https://"
        " rewrite has a loadstone equivalent",
        "h.cfg:16: reqidel ^X-Forwarded-For:.*: removed from HAProxy 2.1; translated as a"
        " del-header rule",
    ]


def test_strict_blocking_kinds() -> None:
    assert not Kind.NO_EFFECT.blocks_strict and not Kind.NOT_NEEDED.blocks_strict
    assert Kind.REMOVED.blocks_strict and Kind.NOT_YET.blocks_strict and Kind.TLS.blocks_strict


def test_map_dom_and_map_reg_become_routes() -> None:
    text = (
        HTTP_DEFAULTS
        + """
frontend ext
  bind :80
  use_backend %[req.hdr(host),lower,map_dom(/etc/haproxy/hosts.map,web_back)]
frontend base
  bind :81
  use_backend %[path,map_reg(/etc/haproxy/paths.map)]
  default_backend web_back
backend web_back
  server w 198.18.0.11:80
backend api_back
  server a 198.18.0.12:5000
"""
    )
    maps = {
        "/etc/haproxy/hosts.map": "# hosts\napi.example.com api_back\nwww.example.com web_back\n",
        "/etc/haproxy/paths.map": "^/api/ api_back\n/static web_back\n",
    }
    config, _ = imp(text, maps=maps)
    ext = listener(config, "ext")
    assert ext["servers"] == [{"name": "w", "address": "198.18.0.11:80"}]
    assert ext["pools"] == {
        "api_back": {
            "balance": "roundrobin",
            "servers": [{"name": "api_back.a", "address": "198.18.0.12:5000"}],
        }
    }
    assert ext["routes"] == [
        {"host": ["api.example.com", "*.api.example.com"], "pool": "api_back"},
        {"host": ["www.example.com", "*.www.example.com"], "pool": "default"},
    ]
    assert listener(config, "base")["routes"] == [
        {"path_regex": "^/api/", "pool": "api_back"},
        {"path_regex": ".*/static", "pool": "default"},
    ]


def test_use_backend_with_a_path_acl_becomes_a_route() -> None:
    config, _ = imp(
        HTTP_DEFAULTS
        + """
frontend f
  bind :80
  acl is_image path_beg /image/ /v2/images
  use_backend images if is_image
  default_backend web
backend web
  server w 198.18.0.11:80
backend images
  server g 198.18.0.12:9292
"""
    )
    assert listener(config, "f")["routes"] == [
        {"path_prefix": "/image/", "pool": "images"},
        {"path_prefix": "/v2/images", "pool": "images"},
    ]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("backend b\n  server s\n", "h.cfg:2: server without an address"),
        ("listen l\n  bind :1\n  server s 198.18.0.1:99999\n", "h.cfg:3: server s: cannot use"),
        ("listne foo\n  bind :1\n", "h.cfg:1: unknown keyword 'listne' out of section"),
        ("global\nlistne foo\n", "h.cfg:2: unknown section or keyword 'listne'"),
        ("frontend f\n  bind :1\n  default_backend nope\n", "h.cfg:3: no backend named 'nope'"),
        ("defaults\n  server s 1.2.3.4:5\n", "h.cfg:2: 'server' is not allowed in a defaults"),
        ("listen l\n  bind :1\n  timeout client soon\n", "h.cfg:3: 'timeout client soon'"),
    ],
)
def test_files_haproxy_refuses_are_errors_with_file_and_line(text: str, message: str) -> None:
    from loadstone.importers.haproxy.parser import ParseError

    with pytest.raises((TranslationError, ParseError)) as err:
        imp(text)
    assert str(err.value).startswith(message)


def test_unknown_indented_keywords_and_options_are_reported_not_dropped() -> None:
    _, report = imp(
        "listen l\n  bind :1 frobnicate\n  frobnicate 3\n  timeout connect 1s\n"
        "  timeout client 1s\n  timeout server 1s\n  server s 198.18.0.1:2 wobble\n"
    )
    assert report == [
        "h.cfg:2: bind ... frobnicate: unknown bind option",
        "h.cfg:3: frobnicate 3: unknown keyword (HAProxy would refuse it)",
        "h.cfg:7: server ... wobble: unknown server option",
    ]


def test_every_translated_keyword_has_a_handler_and_back() -> None:
    translated = {k for k, e in keywords.PROXY_KEYWORDS.items() if e.kind is Kind.TRANSLATED}
    assert translated == set(HANDLERS)


def test_option_forwardfor_without_arguments_on_either_side() -> None:
    text = (
        HTTP_DEFAULTS
        + """
frontend f
  bind :80
  {fe}
  default_backend b
backend b
  {be}
  server s 198.18.0.11:80
"""
    )
    for fe, be in (("option forwardfor", ""), ("", "option forwardfor")):
        config, _ = imp(text.format(fe=fe, be=be))
        assert listener(config, "f")["forwardfor"] is True


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("server s 198.18.0.1:2 weight heavy", "h.cfg:7: 'weight heavy': expects an integer"),
        ("server s 198.18.0.1:2 check inter 0", "h.cfg:7: 'inter 0': expects a time"),
        ("server s 198.18.0.1:2 check port 70000", "h.cfg:7: 'port 70000': expects an integer"),
    ],
)
def test_bad_server_option_values_are_errors(line: str, message: str) -> None:
    with pytest.raises(TranslationError, match=f"^{message}"):
        imp(TCP_DEFAULTS + f"listen l\n  bind :1\n  {line}\n")


def test_no_forms_only_where_translated() -> None:
    config, report = imp(
        TCP_DEFAULTS + "  option redispatch\nlisten l\n  bind :1\n  no option redispatch\n"
        "  no option httpchk\n  server s 198.18.0.1:2\n"
    )
    assert listener(config, "l")["redispatch"] is False
    assert report == ["h.cfg:9: no option httpchk: the 'no' form of this keyword is not translated"]


def test_conditional_use_backend_in_tcp_mode_is_reported() -> None:
    _, report = imp(
        TCP_DEFAULTS + "frontend f\n  bind :1\n  acl net dst 10.0.0.0/8\n"
        "  use_backend other if net\n  default_backend main\n"
        "backend main\n  server a 198.18.0.1:1\nbackend other\n  server b 198.18.0.2:1\n"
    )
    assert report == [
        "h.cfg:7: acl net dst 10.0.0.0/8: only used by rules reported on their own lines (or by"
        " none)",
        "h.cfg:8: use_backend other if net: loadstone routes http requests only; in tcp mode every"
        " connection goes to the default backend",
    ]


def test_bind_defer_accept_becomes_defer_accept() -> None:
    config, report = imp(
        HTTP_DEFAULTS + "listen api\n  bind 198.18.0.10:8774 defer-accept\n"
        "  server a 198.18.0.11:8774\n"
        "listen plain\n  bind 198.18.0.10:8775\n  server a 198.18.0.11:8775\n"
    )
    assert listener(config, "api")["defer_accept"] is True
    assert "defer_accept" not in listener(config, "plain")
    assert "freebind" not in listener(config, "api")  # a translated option of its own
    assert report == []
