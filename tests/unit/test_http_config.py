"""Configuration keys of mode http: shapes, defaults inheritance, YAML-path errors."""

from __future__ import annotations

import pytest

from loadstone.config import ConfigError, parse_config
from loadstone.config.model import (
    CookiePersistence,
    ForwardFor,
    HeaderRule,
    ListenerConfig,
    LocationRewrite,
    PoolConfig,
    RouteConfig,
)


def one(body: str, defaults: str = "") -> ListenerConfig:
    text = f"{defaults}\nlisteners:\n  api:\n    bind: ['127.0.0.1:8080']\n{body}"
    return parse_config(text).listeners[0]


def problems(body: str, defaults: str = "") -> list[str]:
    with pytest.raises(ConfigError) as info:
        one(body, defaults)
    return info.value.problems


SERVERS = "    servers: [{name: a, address: '127.0.0.1:1'}]\n"


def test_http_keys() -> None:
    cfg = one(
        "    mode: http\n"
        "    forwardfor: {except: [127.0.0.0/8, '::1'], header: X-Real-IP}\n"
        "    forwarded_proto: https\n"
        "    forwarded_port: true\n"
        "    request_headers: [{delete: X-Forwarded-Proto}, {set: X-A, value: b}]\n"
        "    response_headers: [{add: Strict-Transport-Security, value: max-age=1}]\n"
        "    rewrite_location: {from: 'http://', to: 'https://'}\n"
        "    cookie: {name: SERVERID, mode: insert, indirect: true, nocache: true}\n"
        "    max_head_size: 32768\n"
        "    max_headers: 50\n"
        "    timeouts: {http_request: 5s, http_keep_alive: 2s, tunnel: 1h}\n" + SERVERS
    )
    assert cfg.forwardfor == ForwardFor("X-Real-IP", ("127.0.0.0/8", "::1/128"))
    assert cfg.forwarded_proto == "https" and cfg.forwarded_port
    assert cfg.request_headers == (
        HeaderRule("delete", "X-Forwarded-Proto"),
        HeaderRule("set", "X-A", "b"),
    )
    assert cfg.response_headers == (HeaderRule("add", "Strict-Transport-Security", "max-age=1"),)
    assert cfg.rewrite_location == LocationRewrite("http://", "https://")
    assert cfg.cookie == CookiePersistence("SERVERID", "insert", True, True)
    assert (cfg.max_head_size, cfg.max_headers) == (32768, 50)
    assert (cfg.timeouts.http_request, cfg.timeouts.http_keep_alive) == (5.0, 2.0)


def test_shorthands_and_defaults() -> None:
    cfg = one("    mode: http\n    forwardfor: true\n    rewrite_location: https\n" + SERVERS)
    assert cfg.forwardfor == ForwardFor()
    assert cfg.rewrite_location == LocationRewrite()
    plain = one("    mode: http\n" + SERVERS)
    assert plain.forwardfor is None and plain.cookie is None and plain.routes == ()
    assert plain.max_head_size == 65536 and plain.default_pool == "default"


def test_defaults_apply_to_http_listeners_only() -> None:
    text = (
        "defaults: {forwardfor: true, max_headers: 20}\n"
        "listeners:\n"
        "  api: {bind: ['127.0.0.1:1'], mode: http, servers: [{name: a, address: '127.0.0.1:9'}]}\n"
        "  db: {bind: ['127.0.0.1:2'], mode: tcp, servers: [{name: a, address: '127.0.0.1:9'}]}\n"
        "  own: {bind: ['127.0.0.1:3'], mode: http, forwardfor: false,"
        " servers: [{name: a, address: '127.0.0.1:9'}]}\n"
    )
    api, db, own = parse_config(text).listeners
    assert api.forwardfor == ForwardFor() and api.max_headers == 20
    assert db.forwardfor is None and db.max_headers == 100
    assert own.forwardfor is None


def test_http_keys_refused_on_tcp_listeners() -> None:
    assert problems("    mode: tcp\n    forwardfor: true\n    cookie: {name: S}\n" + SERVERS) == [
        "listeners.api.forwardfor: only valid for mode http (this listener is mode tcp)",
        "listeners.api.cookie: only valid for mode http (this listener is mode tcp)",
    ]


def test_pools_and_routes() -> None:
    cfg = one(
        "    mode: http\n"
        "    balance: leastconn\n" + SERVERS + "    pools:\n"
        "      images: {balance: source, servers: [{name: g1, address: '127.0.0.1:2'}]}\n"
        "      compute: {servers: [{name: n1, address: '127.0.0.1:3', cookie: nova1}]}\n"
        "    routes:\n"
        "      - {host: Glance.Example.com, pool: images}\n"
        "      - {host: ['*.compute.example', api], path_prefix: /compute, pool: compute}\n"
        "      - {path_regex: '^/v[0-9]/images', pool: images}\n"
        "      - {path_exact: /healthcheck, pool: default}\n"
        "    default_pool: compute\n"
    )
    assert cfg.pools == (PoolConfig("images", "source"), PoolConfig("compute", "leastconn"))
    assert [(s.name, s.pool, s.cookie_value) for s in cfg.servers] == [
        ("a", "default", "a"),
        ("g1", "images", "g1"),
        ("n1", "compute", "nova1"),
    ]
    assert cfg.routes[0] == RouteConfig("images", hosts=("glance.example.com",))
    assert cfg.routes[1].hosts == ("*.compute.example", "api")
    assert cfg.routes[2].path_regex == "^/v[0-9]/images"
    assert cfg.default_pool == "compute"


def test_servers_optional_when_default_pool_is_named() -> None:
    cfg = one(
        "    mode: http\n"
        "    pools: {p: {servers: [{name: a, address: '127.0.0.1:2'}]}}\n"
        "    default_pool: p\n"
    )
    assert [s.pool for s in cfg.servers] == ["p"]
    assert problems("    mode: http\n    pools: {p: {servers: [{name: a, address: 'h:2'}]}}\n") == [
        "listeners.api.servers: required: a list of servers"
    ]


def test_http_errors_carry_paths() -> None:
    found = problems(
        "    mode: http\n" + SERVERS + "    forwardfor: {except: [300.1.1.1/8]}\n"
        "    request_headers: [{set: Content-Length, value: '1'}, {add: X-A}, {delete: 'a b'}]\n"
        '    response_headers: [{set: X, value: "a\\nb"}]\n'
        "    cookie: {name: 'bad;name', mode: rewrite}\n"
        "    pools:\n"
        "      p: {servers: [{name: a, address: '127.0.0.1:2'}]}\n"
        "    routes: [{path_prefix: nope, pool: p}, {pool: p}, {host: a, pool: missing},"
        " {path_regex: '(', pool: p}, {path_prefix: /a, path_exact: /b, pool: p}]\n"
        "    default_pool: nowhere\n"
        "    max_head_size: 10\n"
    )
    assert found == [
        "listeners.api.forwardfor.except[0]: invalid network '300.1.1.1/8': expected an address"
        " or CIDR, e.g. 127.0.0.0/8",
        "listeners.api.request_headers[0].set: Content-Length is managed by the proxy and cannot"
        " be changed by a rule",
        "listeners.api.request_headers[1].value: required for add",
        "listeners.api.request_headers[2].delete: invalid header name 'a b'",
        "listeners.api.response_headers[0].value: must not contain CR, LF or NUL",
        "listeners.api.max_head_size: must be 1024-1048576, got 10",
        "listeners.api.cookie.name: invalid cookie value 'bad;name': use letters, digits and"
        " !#$%&'*+.^_`|~-",
        "listeners.api.cookie.mode: must be one of insert; got 'rewrite'",
        "listeners.api.pools.p: duplicate server name 'a': server names are unique across a"
        " listener and its pools",
        "listeners.api.routes[0].path_prefix: must start with '/', got 'nope'",
        "listeners.api.routes[1]: a route needs a host, a path_prefix, a path_exact or a"
        " path_regex",
        "listeners.api.routes[3].path_regex: invalid regular expression: missing ), unterminated"
        " subpattern at position 0",
        "listeners.api.routes[4].path_exact: cannot be combined with 'path_prefix'",
        "listeners.api.default_pool: unknown pool 'nowhere'; known: default, p",
    ]


def test_pool_named_default_is_refused() -> None:
    assert problems(
        "    mode: http\n"
        + SERVERS
        + "    pools: {default: {servers: [{name: x, address: 'h:2'}]}}\n"
    ) == [
        "listeners.api.pools.default: 'default' is the pool of the listener-level servers;"
        " choose another name"
    ]


def test_route_to_unknown_pool() -> None:
    assert problems("    mode: http\n" + SERVERS + "    routes: [{host: a, pool: missing}]\n") == [
        "listeners.api.routes[0].pool: unknown pool 'missing'; known: default"
    ]


def test_server_max_requests() -> None:
    assert one("    mode: http\n" + SERVERS).server_max_requests == 1000
    inherited = one("    mode: http\n" + SERVERS, "defaults: {server_max_requests: 100}")
    assert inherited.server_max_requests == 100
    assert one("    mode: http\n    server_max_requests: 1\n" + SERVERS).server_max_requests == 1
    assert problems("    mode: http\n    server_max_requests: 0\n" + SERVERS) == [
        "listeners.api.server_max_requests: must be 1-2147483647, got 0"
    ]
