"""Configuration loading: every problem reported at its YAML path, and what valid files become."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import yaml

from loadstone.config import (
    SEND_EXPECT_PRESETS,
    ConfigError,
    DurationError,
    load_config,
    parse_config,
    parse_duration,
)
from loadstone.config.model import Address, CheckConfig, SendExpectStep, TcpKeepalive, Timeouts

ROOT = Path(__file__).resolve().parents[2]
DROP = object()  # in `doc(listener=...)`: remove this key from the base listener


def doc(*, listener: dict[str, Any] | None = None, **top: Any) -> str:
    """A small valid configuration (listener `web`) with keys replaced, as YAML text."""
    web: dict[str, Any] = {
        "bind": ["127.0.0.1:8080"],
        "servers": [{"name": "a", "address": "10.0.0.1:80"}],
    }
    for key, value in (listener or {}).items():
        if value is DROP:
            web.pop(key, None)
        else:
            web[key] = value
    document: dict[str, Any] = {"listeners": {"web": web}}
    document.update(top)
    return yaml.safe_dump(document, sort_keys=False)


def problems_of(text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(text)
    assert info.value.problems, "ConfigError without problems"
    return info.value.problems


def web_check(**check: Any) -> str:
    return doc(listener={"check": check})


def steps(*items: dict[str, Any]) -> str:
    return web_check(type="send-expect", steps=list(items))


WEB = "listeners.web"
CHECK = "listeners.web.check"
SERVER0 = "listeners.web.servers[0]"
OTHER = {"bind": ["127.0.0.1:8081"], "servers": [{"name": "b", "address": "10.0.0.2:80"}]}

BAD = [
    # --- document shape
    pytest.param("- a\n- b\n", "(top level)", "expected a mapping, got a list", id="root-list"),
    pytest.param("", "listeners", "required: at least one listener", id="empty-file"),
    pytest.param(
        doc(listener={}, listner={}),
        "listner",
        "unknown key (did you mean 'listeners'?)",
        id="top-unknown",
    ),
    pytest.param("listeners: {}\n", "listeners", "at least one listener", id="no-listener"),
    pytest.param("listeners: [a]\n", "listeners", "expected a mapping", id="listeners-list"),
    pytest.param(
        "listeners:\n  'bad name': {}\n",
        "listeners['bad name']",
        "invalid listener name",
        id="listener-name",
    ),
    pytest.param(
        "listeners:\n  80: {}\n",
        "listeners.80",
        "listener names must be strings, got an integer (80); quote it",
        id="listener-name-int",
    ),
    pytest.param(
        "listeners:\n  web: 5\n", WEB, "expected a mapping, got an integer (5)", id="listener-int"
    ),
    pytest.param(
        doc(listener={"servrs": []}),
        f"{WEB}.servrs",
        "unknown key (did you mean 'servers'?)",
        id="listener-unknown",
    ),
    pytest.param(
        "listeners:\n  web:\n    on: 1\n", f"{WEB}.true", "keys must be strings", id="yaml11-key"
    ),
    # --- bind
    pytest.param(doc(listener={"bind": DROP}), f"{WEB}.bind", "required", id="bind-missing"),
    pytest.param(doc(listener={"bind": []}), f"{WEB}.bind", "must not be empty", id="bind-empty"),
    pytest.param(
        doc(listener={"bind": 8080}),
        f"{WEB}.bind",
        'expected a list of "host:port" strings, got an integer',
        id="bind-int",
    ),
    pytest.param(
        doc(listener={"bind": ["0.0.0.0:70000"]}),
        f"{WEB}.bind[0]",
        "port must be 1-65535, got 70000",
        id="bind-port",
    ),
    pytest.param(
        doc(listener={"bind": ["::1:5000"]}),
        f"{WEB}.bind[0]",
        "an IPv6 address must be in brackets, e.g. [::1]:5000",
        id="bind-ipv6-brackets",
    ),
    pytest.param(
        doc(listener={"bind": ["[::g]:5000"]}),
        f"{WEB}.bind[0]",
        "invalid IPv6 address '::g'",
        id="bind-ipv6-bad",
    ),
    pytest.param(
        doc(listener={"bind": ["127.0.0.1:http"]}),
        f"{WEB}.bind[0]",
        "port must be an integer 1-65535, got 'http'",
        id="bind-port-name",
    ),
    pytest.param(
        doc(listener={"bind": ["127.0.0.1:8080", "127.0.0.1:8080"]}),
        f"{WEB}.bind[1]",
        "127.0.0.1:8080 is already bound by listeners.web.bind[0]",
        id="bind-dup-same-listener",
    ),
    pytest.param(
        doc(listener={}, listeners={"web": {**OTHER}, "api": {**OTHER, "bind": "127.0.0.1:8081"}}),
        "listeners.api.bind",
        "127.0.0.1:8081 is already bound by listeners.web.bind[0]",
        id="bind-dup-across",
    ),
    pytest.param(
        doc(
            listener={},
            listeners={"web": {**OTHER, "bind": "*:80"}, "api": {**OTHER, "bind": "10.1.1.1:80"}},
        ),
        "listeners.api.bind",
        "10.1.1.1:80 conflicts with *:80, bound by listeners.web.bind",
        id="bind-wildcard-conflict",
    ),
    pytest.param(
        doc(listener={"bind": ["127.0.0.1:6956"]}),
        f"{WEB}.bind[0]",
        "127.0.0.1:6956 is already bound by global.admin.bind",
        id="bind-admin-port",
    ),
    # --- listener scalars
    pytest.param(
        doc(listener={"mode": "udp"}),
        f"{WEB}.mode",
        "must be one of tcp, http; got 'udp'",
        id="mode",
    ),
    pytest.param(
        doc(listener={"balance": "round-robin"}),
        f"{WEB}.balance",
        "got 'round-robin' (did you mean 'roundrobin'?)",
        id="balance",
    ),
    pytest.param(
        doc(listener={"freebind": "yes"}),
        f"{WEB}.freebind",
        "expected a boolean (true or false), got a string ('yes')",
        id="freebind-str",
    ),
    pytest.param(
        doc(listener={"maxconn": 0}), f"{WEB}.maxconn", "must be at least 1, got 0", id="maxconn-0"
    ),
    pytest.param(
        doc(listener={"maxconn": True}),
        f"{WEB}.maxconn",
        "expected an integer, got a boolean (true)",
        id="maxconn-bool",
    ),
    pytest.param(
        doc(listener={"retries": 101}), f"{WEB}.retries", "must be 0-100, got 101", id="retries"
    ),
    pytest.param(
        doc(listener={"backlog": 1.5}),
        f"{WEB}.backlog",
        "expected an integer, got a number (1.5)",
        id="backlog-float",
    ),
    pytest.param(
        doc(listener={"on_marked_down": "shutdown"}),
        f"{WEB}.on_marked_down",
        "must be one of none, shutdown-sessions",
        id="on-marked-down",
    ),
    pytest.param(
        doc(listener={"log": "normal"}),
        f"{WEB}.log",
        "must be one of all, errors, none; got 'normal'",
        id="log",
    ),
    pytest.param(
        doc(listener={"tcp_keepalive": {"count": 0}}),
        f"{WEB}.tcp_keepalive.count",
        "must be 1-127, got 0",
        id="keepalive-count",
    ),
    pytest.param(
        doc(listener={"tcp_keepalive": {"idle": "500ms"}}),
        f"{WEB}.tcp_keepalive.idle",
        "must be a whole number of seconds from 1s to 32767s, got '500ms'",
        id="keepalive-subsecond",
    ),
    pytest.param(
        doc(listener={"tcp_keepalive": "on"}),
        f"{WEB}.tcp_keepalive",
        "expected a mapping",
        id="keepalive-str",
    ),
    # --- timeouts
    pytest.param(
        doc(listener={"timeouts": {"connect": "5 seconds"}}),
        f"{WEB}.timeouts.connect",
        "invalid duration '5 seconds'",
        id="timeout-syntax",
    ),
    pytest.param(
        doc(listener={"timeouts": {"client": 0}}),
        f"{WEB}.timeouts.client",
        "must be greater than zero",
        id="timeout-zero",
    ),
    pytest.param(
        doc(listener={"timeouts": {"conect": "5s"}}),
        f"{WEB}.timeouts.conect",
        "unknown key (did you mean 'connect'?)",
        id="timeout-unknown",
    ),
    pytest.param(
        doc(listener={"timeouts": {"server": "5M"}}),
        f"{WEB}.timeouts.server",
        "invalid duration '5M'",
        id="timeout-unit-case",
    ),
    # --- servers
    pytest.param(
        doc(listener={"servers": DROP}), f"{WEB}.servers", "required", id="servers-missing"
    ),
    pytest.param(
        doc(listener={"servers": []}), f"{WEB}.servers", "must not be empty", id="servers-empty"
    ),
    pytest.param(
        doc(listener={"servers": ["10.0.0.1:80"]}),
        SERVER0,
        "expected a mapping, got a string",
        id="server-str",
    ),
    pytest.param(
        doc(listener={"servers": [{"name": "a", "address": "10.0.0.1:99999"}]}),
        f"{SERVER0}.address",
        "port must be 1-65535, got 99999",
        id="server-port",
    ),
    pytest.param(
        doc(listener={"servers": [{"name": "a", "address": "db1"}]}),
        f"{SERVER0}.address",
        "the port is missing",
        id="server-no-port",
    ),
    pytest.param(
        doc(listener={"servers": [{"name": "a", "address": "10.0.0.256:80"}]}),
        f"{SERVER0}.address",
        "invalid IPv4 address '10.0.0.256'",
        id="server-ipv4",
    ),
    pytest.param(
        doc(listener={"servers": [{"name": "a", "address": "*:80"}]}),
        f"{SERVER0}.address",
        "a server address needs a host",
        id="server-wildcard",
    ),
    pytest.param(
        doc(listener={"servers": [{"name": "a", "address": 3306}]}),
        f"{SERVER0}.address",
        'expected a string "host:port"',
        id="server-address-int",
    ),
    pytest.param(
        doc(listener={"servers": [{"address": "10.0.0.1:80"}]}),
        f"{SERVER0}.name",
        "required",
        id="server-name-missing",
    ),
    pytest.param(
        doc(listener={"servers": [{"name": "a b", "address": "10.0.0.1:80"}]}),
        f"{SERVER0}.name",
        "invalid name 'a b'",
        id="server-name-charset",
    ),
    pytest.param(
        doc(
            listener={
                "servers": [
                    {"name": "a", "address": "10.0.0.1:80"},
                    {"name": "a", "address": "10.0.0.2:80"},
                ]
            }
        ),
        "listeners.web.servers[1].name",
        "duplicate server name 'a' (also servers[0])",
        id="server-name-dup",
    ),
    pytest.param(
        doc(listener={"servers": [{"name": "a", "address": "10.0.0.1:80", "weight": 257}]}),
        f"{SERVER0}.weight",
        "must be 0-256, got 257",
        id="server-weight",
    ),
    pytest.param(
        doc(listener={"servers": [{"name": "a", "address": "10.0.0.1:80", "backup": 1}]}),
        f"{SERVER0}.backup",
        "expected a boolean (true or false), got an integer (1)",
        id="server-backup-int",
    ),
    pytest.param(
        doc(listener={"servers": [{"name": "a", "address": "10.0.0.1:80", "wieght": 2}]}),
        f"{SERVER0}.wieght",
        "unknown key (did you mean 'weight'?)",
        id="server-unknown",
    ),
    # --- checks
    pytest.param(
        web_check(type="ping"),
        f"{CHECK}.type",
        "must be one of tcp, http, galera, amqp, send-expect, mysql; got 'ping'",
        id="check-type",
    ),
    pytest.param(
        web_check(path="/x"),
        f"{CHECK}.path",
        "only valid for type http (this check is type tcp)",
        id="check-path-on-tcp",
    ),
    pytest.param(
        web_check(type="galera", user="m", vhost="/"),
        f"{CHECK}.vhost",
        "only valid for type amqp",
        id="check-vhost-on-galera",
    ),
    pytest.param(
        web_check(type="send-expect", preset="memcached", user="x"),
        f"{CHECK}.user",
        "only valid for types http, galera, mysql, amqp",
        id="check-user-on-send-expect",
    ),
    pytest.param(
        web_check(type="http", path="healthcheck"),
        f"{CHECK}.path",
        "must start with '/'",
        id="check-path-slash",
    ),
    pytest.param(
        web_check(type="http", expect_status=700),
        f"{CHECK}.expect_status",
        "must be 100-599, got 700",
        id="check-status-range",
    ),
    pytest.param(
        web_check(type="http", expect_status=[200, "401"]),
        f"{CHECK}.expect_status[1]",
        "expected an integer, got a string ('401')",
        id="check-status-str",
    ),
    pytest.param(
        web_check(type="http", method="get"),
        f"{CHECK}.method",
        "HTTP methods are case-sensitive: write 'GET'",
        id="check-method-case",
    ),
    pytest.param(
        web_check(type="http", headers={"X-Count": 1}),
        f"{CHECK}.headers.X-Count",
        "expected a string (quote it in YAML), got an integer (1)",
        id="check-header-int",
    ),
    pytest.param(
        web_check(type="http", headers={"Bad Name": "x"}),
        f"{CHECK}.headers['Bad Name']",
        "invalid header name",
        id="check-header-name",
    ),
    pytest.param(web_check(rise=0), f"{CHECK}.rise", "must be at least 1, got 0", id="check-rise"),
    pytest.param(
        web_check(fall="3"),
        f"{CHECK}.fall",
        "expected an integer, got a string ('3')",
        id="check-fall-str",
    ),
    pytest.param(
        web_check(interval="fast"), f"{CHECK}.interval", "invalid duration", id="check-interval"
    ),
    pytest.param(web_check(port=0), f"{CHECK}.port", "must be 1-65535, got 0", id="check-port"),
    pytest.param(
        web_check(type="galera"),
        f"{CHECK}.user",
        "required for type galera",
        id="galera-user",
    ),
    pytest.param(
        web_check(type="mysql", password_env="X"),
        f"{CHECK}.user",
        "required for type mysql",
        id="mysql-user",
    ),
    pytest.param(
        web_check(type="amqp", level="login"),
        f"{CHECK}.user",
        "required for type amqp with level login",
        id="amqp-login-user",
    ),
    pytest.param(
        web_check(type="amqp", level="full"),
        f"{CHECK}.level",
        "must be one of header, login",
        id="amqp-level",
    ),
    pytest.param(
        web_check(type="galera", user="m", password_env="P", password_file="/etc/p"),
        f"{CHECK}.password_file",
        "cannot be used together with 'password_env'",
        id="password-both",
    ),
    pytest.param(
        web_check(type="http", password_env="P"),
        f"{CHECK}.password_env",
        "needs 'user'",
        id="password-no-user",
    ),
    pytest.param(
        web_check(type="galera", user="m", password_env="1X"),
        f"{CHECK}.password_env",
        "invalid environment variable name '1X'",
        id="password-env-name",
    ),
    pytest.param(
        web_check(type="galera", user="m", max_recv_queue=-1),
        f"{CHECK}.max_recv_queue",
        "must be at least 0, got -1",
        id="galera-recv-queue",
    ),
    pytest.param(
        web_check(type="send-expect"),
        f"{CHECK}.steps",
        "required for type send-expect (or a preset: memcached, redis-master)",
        id="send-expect-empty",
    ),
    pytest.param(
        web_check(type="send-expect", preset="redis"),
        f"{CHECK}.preset",
        "unknown preset 'redis'; known presets: memcached, redis-master",
        id="preset-unknown",
    ),
    pytest.param(
        web_check(type="send-expect", preset="memcached", steps=[{"send": "x"}]),
        f"{CHECK}.steps",
        "cannot be used together with 'preset'",
        id="preset-and-steps",
    ),
    pytest.param(steps(), f"{CHECK}.steps", "must not be empty", id="steps-empty"),
    pytest.param(
        steps({"send": "PING\\q"}),
        f"{CHECK}.steps[0].send",
        "unknown escape '\\q'",
        id="step-escape",
    ),
    pytest.param(
        steps({"send_hex": "50494g"}),
        f"{CHECK}.steps[0].send_hex",
        "invalid hex",
        id="step-hex",
    ),
    pytest.param(
        steps({"send": "x"}, {"expect_regex": "role:(master"}),
        f"{CHECK}.steps[1].expect_regex",
        "invalid regular expression",
        id="step-regex",
    ),
    pytest.param(
        steps({"send": "x", "timeout": "1s"}),
        f"{CHECK}.steps[0].timeout",
        "only valid on expect steps",
        id="step-send-timeout",
    ),
    pytest.param(
        steps({"send": "x", "expect": "y"}),
        f"{CHECK}.steps[0].expect",
        "cannot be combined with 'send' in one step",
        id="step-two-actions",
    ),
    pytest.param(
        steps({"timeout": "1s"}),
        f"{CHECK}.steps[0]",
        "a step needs one of send, send_hex, expect, expect_regex, expect_hex",
        id="step-no-action",
    ),
    pytest.param(
        doc(listener={"check": "http"}),
        CHECK,
        "expected a mapping, got a string ('http')",
        id="check-str",
    ),
    # --- global and defaults
    pytest.param(
        doc(**{"global": {"workers": 0}}), "global.workers", "must be 1-64, got 0", id="workers"
    ),
    pytest.param(
        doc(**{"global": {"grace": -1}}),
        "global.grace",
        "a duration must not be negative, got -1",
        id="grace-negative",
    ),
    pytest.param(
        doc(**{"global": {"log_format": "xml"}}),
        "global.log_format",
        "must be one of text, json; got 'xml'",
        id="log-format",
    ),
    pytest.param(
        doc(**{"global": {"admin": None}}),
        "global.admin",
        "to disable the admin server set admin.bind: null",
        id="admin-null",
    ),
    pytest.param(
        doc(**{"global": {"admin": {"bind": "localhost"}}}),
        "global.admin.bind",
        "the port is missing",
        id="admin-bind",
    ),
    pytest.param(
        doc(**{"global": {"admin": {"tokenfile": "/x"}}}),
        "global.admin.tokenfile",
        "unknown key (did you mean 'token_file'?)",
        id="admin-unknown",
    ),
    pytest.param(
        doc(defaults={"servers": []}), "defaults.servers", "unknown key", id="defaults-servers"
    ),
    pytest.param(
        doc(defaults={"check": {"intervall": "2s"}}),
        "defaults.check.intervall",
        "unknown key (did you mean 'interval'?)",
        id="defaults-check-unknown",
    ),
    pytest.param(
        doc(defaults={"timeouts": {"connect": True}}),
        "defaults.timeouts.connect",
        "expected a duration, got a boolean (true)",
        id="defaults-timeout-bool",
    ),
    pytest.param(
        doc(defaults={"balance": "random"}),
        "defaults.balance",
        "must be one of roundrobin, leastconn, source, first, active-backup",
        id="defaults-balance",
    ),
]


@pytest.mark.parametrize(("text", "path", "phrase"), BAD)
def test_bad_config_is_reported_at_its_path(text: str, path: str, phrase: str) -> None:
    problems = problems_of(text)
    matching = [p for p in problems if p.startswith(f"{path}: ") and phrase in p]
    assert matching, f"no problem '{path}: ...{phrase}...' in:\n" + "\n".join(problems)


def test_the_brief_example_line_is_exact() -> None:
    text = doc(
        listener={
            "servers": [
                {"name": "a", "address": "10.0.0.1:80"},
                {"name": "b", "address": "10.0.0.2:99999"},
            ]
        }
    )
    assert problems_of(text) == [
        "listeners.web.servers[1].address: port must be 1-65535, got 99999"
    ]


def test_a_key_given_twice_is_reported_at_its_path() -> None:
    text = """
listeners:
  web:
    bind: ["127.0.0.1:8080"]
    servers: [{name: a, address: "10.0.0.1:80"}]
  web:
    bind: ["127.0.0.1:8081"]
    balance: first
    balance: leastconn
    servers: [{name: b, address: "10.0.0.2:80", weight: 1, weight: 2}]
"""
    assert problems_of(text) == [
        "listeners.web: duplicate key (lines 3 and 6); YAML would keep only the last",
        "listeners.web.balance: duplicate key (lines 8 and 9); YAML would keep only the last",
        "listeners.web.servers[0].weight: duplicate key (lines 10 and 10); "
        "YAML would keep only the last",
    ]


def test_yaml_merge_keys_may_repeat_what_they_merge() -> None:
    text = """
x-common: &common {balance: first, servers: [{name: a, address: "10.0.0.1:80"}]}
listeners:
  web:
    <<: *common
    bind: ["127.0.0.1:8080"]
    balance: leastconn
"""
    problems = problems_of(text)
    assert not any("duplicate key" in p for p in problems), problems


def test_all_problems_are_reported_in_one_pass() -> None:
    text = """
global: {workers: 0, log_format: xml}
defaults:
  timeouts: {connect: soon}
listeners:
  web:
    bind: ["127.0.0.1:99999"]
    balance: random
    servrs: []
    servers:
      - {name: a, address: "10.0.0.1:80", weight: -1}
      - {name: a, address: "10.0.0.2"}
  db:
    bind: "127.0.0.1:3306"
    check: {type: galera, path: /}
    servers: [{name: db1, address: "10.0.0.1:3306"}]
"""
    with pytest.raises(ConfigError) as info:
        parse_config(text)
    err = info.value
    assert err.problems == [
        "global.workers: must be 1-64, got 0",
        "global.log_format: must be one of text, json; got 'xml'",
        "defaults.timeouts.connect: invalid duration 'soon': use a number of seconds or a number"
        " with a unit (us, ms, s, m, h, d), e.g. 250ms, 2s, 1m30s",
        "listeners.web.servrs: unknown key (did you mean 'servers'?)",
        "listeners.web.balance: must be one of roundrobin, leastconn, source, first,"
        " active-backup; got 'random'",
        "listeners.web.bind[0]: port must be 1-65535, got 99999",
        "listeners.web.servers[0].weight: must be 0-256, got -1",
        "listeners.web.servers[1].address: expected host:port, got '10.0.0.2'"
        " (the port is missing)",
        "listeners.web.servers[1].name: duplicate server name 'a' (also servers[0])",
        "listeners.db.check.path: only valid for type http (this check is type galera)",
        "listeners.db.check.user: required for type galera",
    ]
    assert str(err) == "\n".join(err.problems)


def test_invalid_yaml_is_one_problem_with_line_and_column() -> None:
    with pytest.raises(ConfigError) as info:
        parse_config("listeners:\n  web:\n    bind: [1, 2\n", source="lb.yaml")
    [problem] = info.value.problems
    assert problem.startswith("lb.yaml:4:1: invalid YAML: ")


def test_unquoted_wildcard_bind_gets_a_hint() -> None:
    [problem] = problems_of("listeners:\n  web:\n    bind: [*:5000]\n")
    assert problem.startswith("<string>:3:13: invalid YAML: ")
    assert 'quote values that start with "*"' in problem


def test_load_config_unreadable_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError) as info:
        load_config(missing)
    assert info.value.problems == [f"{missing}: cannot read: No such file or directory"]


def test_load_config_reads_a_file(tmp_path: Path) -> None:
    path = tmp_path / "lb.yaml"
    path.write_text(doc())
    config = load_config(path)
    assert config.source == str(path)
    assert [listener.name for listener in config.listeners] == ["web"]


# --------------------------------------------------------------------------
# Inheritance


INHERITANCE = """
defaults:
  timeouts: {connect: 2s, client: 90s, check: 500ms}
  check: {interval: 5s, rise: 3, fall: 4, path: /healthcheck, expect_status: [200, 401]}
  maxconn: 1000
  retries: 1
  redispatch: false
  balance: leastconn
  on_marked_down: shutdown-sessions
  tcp_keepalive: true
  log: errors
listeners:
  plain:
    bind: ["127.0.0.1:7001"]
    servers: [{name: a, address: "10.0.0.1:80"}]
  override:
    bind: ["127.0.0.1:7002"]
    timeouts: {client: 6h, tunnel: 1h}
    check: {type: http, rise: 1}
    maxconn: 20
    balance: source
    tcp_keepalive: {idle: 30s}
    servers: [{name: a, address: "10.0.0.1:80"}]
  tcpcheck:
    bind: ["127.0.0.1:7003"]
    check: {}
    tcp_keepalive: false
    log: none
    servers: [{name: a, address: "10.0.0.1:80"}]
  all_defaults:
    bind: ["127.0.0.1:7004"]
    check: true
    servers: [{name: a, address: "10.0.0.1:80"}]
"""


def test_defaults_are_inherited_and_overridden() -> None:
    plain, override, tcpcheck, all_defaults = parse_config(INHERITANCE).listeners

    assert plain.timeouts == Timeouts(connect=2.0, client=90.0, check=0.5)
    assert (plain.maxconn, plain.retries, plain.redispatch) == (1000, 1, False)
    assert plain.balance == "leastconn"
    assert plain.on_marked_down == "shutdown-sessions"
    assert plain.tcp_keepalive == TcpKeepalive()
    assert (plain.log, tcpcheck.log) == ("errors", "none")
    # No `check` key: never probed, even though defaults.check exists.
    assert plain.check is None

    # timeouts merge key by key over the defaults
    assert override.timeouts == Timeouts(connect=2.0, client=6 * 3600.0, check=0.5, tunnel=3600.0)
    assert (override.maxconn, override.balance, override.retries) == (20, "source", 1)
    assert override.tcp_keepalive == TcpKeepalive(idle=30.0)
    assert override.check == CheckConfig(
        type="http", interval=5.0, rise=1, fall=4, path="/healthcheck", expect_status=(200, 401)
    )

    # defaults' http-only keys are not inherited by a tcp check (and are no error)
    assert tcpcheck.check == CheckConfig(type="tcp", interval=5.0, rise=3, fall=4)
    assert tcpcheck.tcp_keepalive is None
    assert all_defaults.check == tcpcheck.check


def test_builtin_defaults_without_defaults_section() -> None:
    (listener,) = parse_config(doc()).listeners
    assert listener.timeouts == Timeouts()
    assert (listener.mode, listener.balance, listener.check) == ("tcp", "roundrobin", None)
    assert (listener.maxconn, listener.retries, listener.redispatch) == (4096, 3, True)
    assert listener.servers[0].weight == 1
    assert listener.servers[0].check is True
    config = parse_config(doc())
    assert config.global_.admin.bind == Address("127.0.0.1", 6956)
    assert config.global_.grace == 10.0


def test_listener_password_source_replaces_the_inherited_one() -> None:
    text = doc(
        defaults={"check": {"user": "monitor", "password_env": "MONITOR_PASSWORD"}},
        listener={"check": {"type": "galera", "password_file": "/etc/loadstone/galera.pw"}},
    )
    check = parse_config(text).listeners[0].check
    assert check is not None
    assert (check.user, check.password_env, check.password_file) == (
        "monitor",
        None,
        "/etc/loadstone/galera.pw",
    )


def test_bad_default_is_reported_once_not_per_listener() -> None:
    text = doc(
        defaults={"maxconn": 0},
        listeners={"a": {**OTHER}, "b": {**OTHER, "bind": "127.0.0.1:8082"}},
    )
    assert problems_of(text) == ["defaults.maxconn: must be at least 1, got 0"]


def test_admin_bind_null_disables_admin_and_frees_its_port() -> None:
    text = doc(**{"global": {"admin": {"bind": None}}}, listener={"bind": "127.0.0.1:6956"})
    config = parse_config(text)
    assert config.global_.admin.bind is None


# --------------------------------------------------------------------------
# Addresses


def test_ipv6_and_wildcard_binds() -> None:
    text = doc(
        listener={
            "bind": [
                "[::1]:5000",
                "[::]:5001",
                "*:5002",
                "0.0.0.0:5003",
                ":5004",
                "[fe80::1%eth0]:5005",
            ],
            "servers": [
                {"name": "v6", "address": "[2001:db8::11]:5000"},
                {"name": "dns", "address": "ctl1.example.org:5000"},
            ],
        }
    )
    (listener,) = parse_config(text).listeners
    assert listener.bind == (
        Address("::1", 5000),
        Address("::", 5001),
        Address("*", 5002),
        Address("0.0.0.0", 5003),
        Address("", 5004),
        Address("fe80::1%eth0", 5005),
    )
    assert str(listener.bind[0]) == "[::1]:5000"
    assert listener.servers[0].address == Address("2001:db8::11", 5000)
    assert listener.servers[1].address == Address("ctl1.example.org", 5000)


def test_ipv4_and_ipv6_wildcards_on_one_port_coexist() -> None:
    # The binder sets IPV6_V6ONLY, so these are two distinct sockets.
    parse_config(doc(listener={"bind": ["0.0.0.0:80", "[::]:80"]}))


def test_single_bind_string_is_a_list_of_one() -> None:
    (listener,) = parse_config(doc(listener={"bind": "192.0.2.10:5000"})).listeners
    assert listener.bind == (Address("192.0.2.10", 5000),)


# --------------------------------------------------------------------------
# Durations


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        (5, 5.0),
        (2.5, 2.5),
        (0, 0.0),
        ("10", 10.0),
        ("250ms", 0.25),
        ("700ms", 0.7),
        ("2s", 2.0),
        ("1.5s", 1.5),
        ("5m", 300.0),
        ("90m", 5400.0),
        ("1h", 3600.0),
        ("6h", 21600.0),
        ("1d", 86400.0),
        ("1m30s", 90.0),
        ("1h 30m", 5400.0),
        ("500us", 0.0005),
        (" 2s ", 2.0),
    ],
)
def test_parse_duration(value: object, seconds: float) -> None:
    assert math.isclose(parse_duration(value), seconds, rel_tol=0, abs_tol=1e-12)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (True, "expected a duration, got a boolean (true)"),
        (None, "expected a duration, got null"),
        ([1], "expected a duration, got list"),
        (-1, "must not be negative"),
        (float("inf"), "must be finite"),
        (float("nan"), "must be finite"),
        ("", "invalid duration ''"),
        ("5x", "invalid duration '5x'"),
        ("5M", "invalid duration '5M'"),
        ("-5s", "invalid duration '-5s'"),
        ("2 s", "invalid duration '2 s'"),
        ("30s1m", "units must go from the largest to the smallest"),
        ("1m1m", "units must go from the largest to the smallest"),
        ("1m30", "invalid duration '1m30'"),
    ],
)
def test_parse_duration_errors(value: object, message: str) -> None:
    with pytest.raises(DurationError) as info:
        parse_duration(value)
    assert message in str(info.value)


# --------------------------------------------------------------------------
# Checks


def test_http_check_fields() -> None:
    text = web_check(
        type="http",
        method="HEAD",
        path="/healthcheck?full=1",
        host="keystone.example.org",
        expect_status=[200, 401],
        headers={"User-Agent": "loadstone-check", "X-Forwarded-Proto": "https"},
        port=5001,
        fastinter="500ms",
        downinter="10s",
        timeout="1s",
        user="guest",
        password_file="/etc/loadstone/mgmt.pw",
    )
    check = parse_config(text).listeners[0].check
    assert check == CheckConfig(
        type="http",
        method="HEAD",
        path="/healthcheck?full=1",
        host="keystone.example.org",
        expect_status=(200, 401),
        headers=(("User-Agent", "loadstone-check"), ("X-Forwarded-Proto", "https")),
        port=5001,
        fastinter=0.5,
        downinter=10.0,
        timeout=1.0,
        user="guest",
        password_file="/etc/loadstone/mgmt.pw",
    )
    assert (check.fast_interval, check.down_interval) == (0.5, 10.0)


def test_single_expected_status_becomes_a_tuple() -> None:
    check = parse_config(web_check(type="http", expect_status=405)).listeners[0].check
    assert check is not None and check.expect_status == (405,)


def test_galera_and_amqp_checks() -> None:
    galera = (
        parse_config(
            web_check(
                type="galera",
                user="monitor",
                password_env="GALERA_MONITOR_PASSWORD",
                available_when_donor=True,
                available_when_readonly=False,
                max_recv_queue=100,
            )
        )
        .listeners[0]
        .check
    )
    assert galera is not None
    assert (galera.available_when_donor, galera.available_when_readonly) == (True, False)
    assert galera.max_recv_queue == 100
    amqp = (
        parse_config(
            web_check(type="amqp", level="login", user="monitor", vhost="/openstack", alarms=True)
        )
        .listeners[0]
        .check
    )
    assert amqp is not None
    assert (amqp.level, amqp.user, amqp.vhost, amqp.alarms) == (
        "login",
        "monitor",
        "/openstack",
        True,
    )
    header_only = parse_config(web_check(type="amqp")).listeners[0].check
    assert header_only is not None and header_only.user is None


@pytest.mark.parametrize("preset", sorted(SEND_EXPECT_PRESETS))
def test_presets_expand_to_steps(preset: str) -> None:
    check = parse_config(web_check(type="send-expect", preset=preset)).listeners[0].check
    assert check is not None
    assert check.preset == preset
    assert check.steps == SEND_EXPECT_PRESETS[preset]
    assert check.steps[0].action == "send"
    assert any(step.action == "expect" for step in check.steps)


def test_redis_master_preset_looks_for_the_master_role() -> None:
    steps_ = SEND_EXPECT_PRESETS["redis-master"]
    assert SendExpectStep("send", b"PING\r\n") in steps_
    assert SendExpectStep("expect", regex="role:master") in steps_


def test_send_expect_steps_decode_escapes_and_hex() -> None:
    # Plain and single-quoted YAML keep the backslash: the loader decodes it.
    text = r"""
listeners:
  redis:
    bind: ["127.0.0.1:6379"]
    check:
      type: send-expect
      steps:
        - send: PING\r\n
        - {expect: '+PONG', timeout: 500ms}
        - send: "info replication\r\n"
        - expect_regex: 'role:master'
        - send_hex: "51 55 49 54 0d 0a"
        - expect_hex: 2b4f4b
        - send: '\x00\t\\'
    servers: [{name: r1, address: "10.0.0.1:6379"}]
"""
    check = parse_config(text).listeners[0].check
    assert check is not None
    assert check.steps == (
        SendExpectStep("send", b"PING\r\n"),
        SendExpectStep("expect", b"+PONG", timeout=0.5),
        SendExpectStep("send", b"info replication\r\n"),
        SendExpectStep("expect", regex="role:master"),
        SendExpectStep("send", b"QUIT\r\n"),
        SendExpectStep("expect", b"+OK"),
        SendExpectStep("send", b"\x00\t\\"),
    )


# --------------------------------------------------------------------------
# Whole files

DESIGN_EXAMPLE = """
global:
  grace: 10s
  workers: 1                      # data-path threads/processes
  admin:
    bind: 127.0.0.1:9100          # loopback by default
    token_file: null              # when set, write endpoints need 'Authorization: Bearer <token>'
defaults:                         # inherited by every listener, overridable there
  timeouts: {connect: 5s, client: 60s, server: 60s, check: 2s}
  check: {interval: 2s, rise: 2, fall: 3}
listeners:
  keystone_public:                # the name is the mapping key
    bind: ["192.0.2.10:5000"]     # host:port list; IPv6 as "[::1]:5000"
    freebind: true                # bind a VIP that is not (yet) on this host
    mode: http                    # tcp | http
    balance: roundrobin           # roundrobin | leastconn | source | first | active-backup
    check: {type: http, path: /healthcheck, expect_status: [200], interval: 2s, rise: 2, fall: 3}
    servers:
      - {name: ctl1, address: "10.0.0.11:5000", weight: 1}
      - {name: ctl2, address: "10.0.0.12:5000", backup: true}
  galera:
    bind: ["192.0.2.10:3306"]
    mode: tcp
    balance: active-backup        # exactly one server takes traffic
    timeouts: {client: 90m, server: 90m}
    check: {type: galera, user: monitor, password_env: GALERA_MONITOR_PASSWORD, interval: 1s}
    on_marked_down: shutdown-sessions
    servers:
      - {name: db1, address: "10.0.0.11:3306"}
      - {name: db2, address: "10.0.0.12:3306"}
      - {name: db3, address: "10.0.0.13:3306"}
"""


def test_design_example_parses() -> None:
    config = parse_config(DESIGN_EXAMPLE, source="DESIGN.md")
    assert config.source == "DESIGN.md"
    assert config.global_.grace == 10.0
    assert config.global_.admin.bind == Address("127.0.0.1", 9100)
    assert config.global_.admin.token_file is None
    keystone, galera = config.listeners
    assert keystone.name == "keystone_public"
    assert (keystone.mode, keystone.freebind) == ("http", True)
    assert keystone.check == CheckConfig(
        type="http", path="/healthcheck", expect_status=(200,), interval=2.0, rise=2, fall=3
    )
    assert [s.backup for s in keystone.servers] == [False, True]
    assert galera.balance == "active-backup"
    assert galera.on_marked_down == "shutdown-sessions"
    assert galera.timeouts == Timeouts(connect=5.0, client=5400.0, server=5400.0, check=2.0)
    assert galera.check == CheckConfig(
        type="galera",
        user="monitor",
        password_env="GALERA_MONITOR_PASSWORD",
        interval=1.0,
        rise=2,
        fall=3,
    )
    assert [str(s.address) for s in galera.servers] == [
        "10.0.0.11:3306",
        "10.0.0.12:3306",
        "10.0.0.13:3306",
    ]


@pytest.mark.parametrize("path", sorted((ROOT / "configs").glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_configs_parse(path: Path) -> None:
    config = load_config(path)
    assert config.listeners


def test_openstack_controller_config() -> None:
    config = load_config(ROOT / "configs" / "openstack-controller.yaml")
    by_name = {listener.name: listener for listener in config.listeners}
    galera = by_name["galera"]
    assert galera.balance == "active-backup"
    assert galera.on_marked_down == "shutdown-sessions"
    assert galera.check is not None
    assert (galera.check.type, galera.check.user) == ("galera", "monitor")
    assert galera.check.password_env == "GALERA_MONITOR_PASSWORD"
    readers = by_name["galera_readers"]
    assert readers.balance in ("roundrobin", "leastconn")
    assert readers.check is not None and readers.check.type == "galera"
    assert readers.bind[0].port == 3307
    assert galera.timeouts.client == galera.timeouts.server == 5400.0
    assert by_name["glance_api"].timeouts.client == 6 * 3600.0
    assert by_name["neutron_server"].timeouts.server == 600.0
    horizon = by_name["horizon"]
    assert horizon.cookie is not None and horizon.cookie.name == "SERVERID"
    assert horizon.cookie.indirect and horizon.cookie.nocache
    http = {"keystone_public", "nova_api", "placement_api", "glance_api", "neutron_server"}
    http |= {"cinder_api", "horizon"}
    for listener in config.listeners:
        assert listener.freebind
        assert listener.mode == ("http" if listener.name in http else "tcp")
        if listener.mode == "http":
            assert listener.forwardfor is not None and listener.forwarded_port
        assert listener.bind[0].host == "192.0.2.10"
        assert [s.address.host for s in listener.servers] == ["10.0.0.11", "10.0.0.12", "10.0.0.13"]
