"""Rules across keys, which no single key's declaration can say.

Each reports at the YAML path of the key at fault and marks what it refuses
INVALID, as the per-key parsers do. `RULES` holds those of one object (run by
the walk on every object of that class once its keys are read); the others
are called by the loader where it assembles a listener or the whole file.
"""

from __future__ import annotations

import dataclasses
import ipaddress
from collections.abc import Mapping
from typing import Any, Final

from loadstone.config.model import (
    SEND_EXPECT_PRESETS,
    Address,
    CheckConfig,
    HaproxySocket,
    LocationRewrite,
    PoolConfig,
    RequestMatch,
    RequestRule,
    RouteConfig,
    RuleRedirect,
)
from loadstone.config.schema import INVALID, Ctx, Keys, Rule, Section, build, declared_keys
from loadstone.config.values import MANAGED_HEADERS, WILDCARDS

__all__ = [
    "RULES",
    "add_pools",
    "check_anycast_listeners",
    "check_bind_conflicts",
    "check_pool_names",
    "check_sni_passthrough",
    "listener_check",
    "refuse_keys_of_other_modes",
]


# --------------------------------------------------------------------------
# Rules of one object

_ROUTE_PATHS: Final = ("path_prefix", "path_exact", "path_regex")


def _route(ctx: Ctx, raw: Mapping[str, Any], values: dict[str, Any]) -> bool:
    paths = [name for name in _ROUTE_PATHS if name in raw]
    if len(paths) > 1:
        ctx.key(paths[1]).error(f"cannot be combined with {paths[0]!r}")
        return False
    if "host" not in raw and not paths:
        ctx.error("a route needs a host, a path_prefix, a path_exact or a path_regex")
        return False
    return True


def _request_match(ctx: Ctx, raw: Mapping[str, Any], values: dict[str, Any]) -> bool:
    paths = [name for name in _ROUTE_PATHS if name in raw]
    if len(paths) > 1:
        ctx.key(paths[1]).error(f"cannot be combined with {paths[0]!r}")
        return False
    if not raw:
        ctx.error("a condition needs at least one of host, path_*, method, src, dst")
        return False
    return True


_RULE_ACTIONS: Final = ("allow", "deny", "redirect", "set_header", "del_header")


def _request_rule(ctx: Ctx, raw: Mapping[str, Any], values: dict[str, Any]) -> bool:
    actions = [name for name in _RULE_ACTIONS if name in raw]
    if len(actions) != 1:
        ctx.error(f"a rule needs exactly one of {', '.join(_RULE_ACTIONS)}; got {len(actions)}")
        return False
    if raw.get("allow") is False:
        ctx.key("allow").error("write `allow: true`, or leave the rule out")
        return False
    for action in ("del_header", "set_header"):
        named = raw.get(action)
        name = named.get("name") if isinstance(named, dict) else named
        if isinstance(name, str) and name.lower() in MANAGED_HEADERS | {"host"}:
            ctx.key(action).error(f"{name} cannot be changed by a rule")
            return False
    return True


def _rule_redirect(ctx: Ctx, raw: Mapping[str, Any], values: dict[str, Any]) -> bool:
    targets = [name for name in ("scheme", "location", "prefix") if name in raw]
    if len(targets) != 1:
        ctx.error("a redirect needs exactly one of scheme, location, prefix")
        return False
    return True


def _location_rewrite(ctx: Ctx, raw: Mapping[str, Any], values: dict[str, Any]) -> bool:
    if values.get("prefix") == "":
        ctx.key("from").error("must not be empty")
        return False
    return True


# Pairs that are two ways of saying one thing: a listener giving either one
# replaces both as inherited from defaults.check, and one mapping may not hold both.
_ALTERNATIVES: Final = (("password_env", "password_file"), ("preset", "steps"))


def _check_alternatives(ctx: Ctx, raw: Mapping[str, Any], values: dict[str, Any]) -> bool:
    # The refused key stays INVALID in the parsed fields: defaults.check keeps them
    # for the listeners to inherit, and one bad key must not make the rest vanish.
    for first, second in _ALTERNATIVES:
        if first in raw and second in raw:
            values[second] = ctx.key(second).error(f"cannot be used together with {first!r}")
    return True


def _haproxy_socket(ctx: Ctx, raw: Mapping[str, Any], values: dict[str, Any]) -> bool:
    if raw.get("path") is None and raw.get("bind") is None:
        ctx.error("the runtime socket needs a path (unix socket), a bind (TCP), or both")
        return False
    return True


RULES: Final[Mapping[type, Rule]] = {
    RouteConfig: _route,
    RequestMatch: _request_match,
    RequestRule: _request_rule,
    RuleRedirect: _rule_redirect,
    HaproxySocket: _haproxy_socket,
    LocationRewrite: _location_rewrite,
    CheckConfig: _check_alternatives,
}


def only_for(only: tuple[str, ...], owner: str, what: str, actual: str) -> str:
    """The message for a key of another check type or listener mode than its owner's."""
    scope = f"{what} {only[0]}" if len(only) == 1 else f"{what}s {', '.join(only)}"
    return f"only valid for {scope} (this {owner} is {what} {actual})"


# --------------------------------------------------------------------------
# A listener's check: its own keys over those of defaults.check, then the type rules

_CHECK_KEYS: Final = declared_keys(CheckConfig)
# field name -> the check types it belongs to (those restricted by the declaration)
_CHECK_ONLY: Final = {field.name: k.only for field, k in _CHECK_KEYS.values() if k.only}


def listener_check(ctx: Ctx, node: object, inherited: Mapping[str, Any]) -> Any:
    """A CheckConfig, or INVALID; `node` is the listener's `check` (a mapping or true)."""
    if node is True:  # "check with the defaults"
        own: dict[str, Any] = {}
    else:
        parsed = Section(CheckConfig).read(ctx, node)
        if parsed is INVALID:
            return INVALID
        assert isinstance(parsed, dict)
        own = parsed
    kind = own.get("type", inherited.get("type", "tcp"))
    if kind is INVALID:
        return INVALID  # which keys belong is unknowable; the bad type is reported
    replaced = {name for pair in _ALTERNATIVES if own.keys() & set(pair) for name in pair}
    merged = {
        name: value
        for name, value in inherited.items()
        # Defaults hold keys for every type; a listener takes only those of its own type.
        if name not in replaced and kind in _CHECK_ONLY.get(name, (kind,))
    }
    for name, value in own.items():
        only = _CHECK_ONLY.get(name, (kind,))
        if kind not in only:
            ctx.key(name).error(only_for(only, "check", "type", kind))
        else:
            merged[name] = value

    if kind in ("galera", "mysql") and "user" not in merged:
        ctx.key("user").error(f"required for type {kind}")
    if kind == "amqp" and merged.get("level") == "login" and "user" not in merged:
        ctx.key("user").error("required for type amqp with level login")
    elif kind == "amqp" and merged.get("alarms") is True and "user" not in merged:
        # The management API has no anonymous access.
        ctx.key("user").error("required for type amqp with alarms: true")
    for secret in ("password_env", "password_file"):
        if secret in merged and "user" not in merged:
            inherited_note = "" if secret in own else " (inherited from defaults.check)"
            ctx.key(secret).error(f"needs 'user'{inherited_note}")
    if kind == "send-expect":
        if "preset" in merged and merged["preset"] is not INVALID:
            merged["steps"] = SEND_EXPECT_PRESETS[merged["preset"]]
        elif "steps" not in merged and "preset" not in merged:
            known = ", ".join(sorted(SEND_EXPECT_PRESETS))
            ctx.key("steps").error(f"required for type send-expect (or a preset: {known})")
    return build(CheckConfig, merged)


# --------------------------------------------------------------------------
# Addresses bound twice, across the whole file


def _ip(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    if host in WILDCARDS:
        return ipaddress.IPv4Address("0.0.0.0")
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


def _overlap(a: Address, b: Address) -> bool:
    """Would binding both fail (or, with SO_REUSEPORT, silently share traffic)?"""
    if a.port != b.port:
        return False
    ip_a, ip_b = _ip(a.host), _ip(b.host)
    if ip_a is None or ip_b is None:
        return a.host.lower().removesuffix(".") == b.host.lower().removesuffix(".")
    # IPv4 and IPv6 never collide: the binder sets IPV6_V6ONLY.
    if ip_a.version != ip_b.version:
        return False
    return ip_a == ip_b or ip_a.is_unspecified or ip_b.is_unspecified


def check_bind_conflicts(ctx: Ctx, binds: list[tuple[Address, str]]) -> None:
    """`binds`: every bound address with its YAML path, in the order of the file."""
    for i, (address, path) in enumerate(binds):
        for earlier, earlier_path in binds[:i]:
            if _overlap(address, earlier):
                clash = (
                    "is already bound" if address == earlier else f"conflicts with {earlier}, bound"
                )
                ctx.problems.append(f"{path}: {address} {clash} by {earlier_path}")
                break


def check_anycast_listeners(ctx: Ctx, global_: Any, listeners: Any) -> None:
    """Every listener a VIP of global.anycast names exists (ctx: the file's root)."""
    anycast = getattr(global_, "anycast", None)
    if anycast is None or listeners is INVALID:
        return
    names = {listener.name for listener in listeners}
    vips = ctx.key("global").key("anycast").key("vips")
    for i, vip in enumerate(anycast.vips):
        for j, name in enumerate(vip.listeners):
            if name not in names:
                vips.index(i).key("listeners").index(j).error(f"no listener named {name!r}")


# --------------------------------------------------------------------------
# A listener in http mode: keys of another mode, pools, and the pools routes name


def refuse_keys_of_other_modes(ctx: Ctx, raw: Mapping[str, Any], keys: Keys, mode: str) -> None:
    """Report the keys of `raw` that belong to other listener modes than `mode`."""
    for name in raw:
        only = keys[name][1].only if name in keys else ()
        if only and mode not in only:
            ctx.key(name).error(only_for(only, "listener", "mode", mode))


def add_pools(ctx: Ctx, values: dict[str, Any], pools: Any) -> set[str]:
    """Turn a parsed `pools` mapping into the listener's pools and servers.

    A pool without its own `balance` takes the listener's; server names are
    unique across the listener and its pools. Returns the pool names, "default" included."""
    if pools is INVALID:
        values["pools"] = INVALID
        return {"default"}
    balance = values.get("balance", "roundrobin")
    if not isinstance(balance, str):
        balance = "roundrobin"
    values["pools"] = tuple(
        PoolConfig(name, own_balance or balance)  # type: ignore[arg-type]  # parsed as Balance
        for name, (own_balance, _) in pools.items()
    )
    servers = values.get("servers")
    if isinstance(servers, tuple):
        seen = {server.name for server in servers}
        for name, (_, members) in pools.items():
            for server in members:
                if server.name in seen:
                    ctx.key("pools").key(name).error(
                        f"duplicate server name {server.name!r}: server names are "
                        "unique across a listener and its pools"
                    )
                    values["servers"] = INVALID
                seen.add(server.name)
                if values["servers"] is not INVALID:
                    values["servers"] += (dataclasses.replace(server, pool=name),)
    return {"default", *pools}


def check_pool_names(ctx: Ctx, values: dict[str, Any], pool_names: set[str]) -> None:
    """Every route and the default pool name a pool of the listener."""
    if values.get("pools") is INVALID:
        return  # the names are unknowable; the bad pools are reported
    known = ", ".join(sorted(pool_names))
    routes = values.get("routes", ())
    if routes is not INVALID:
        for i, route in enumerate(routes):
            if route.pool not in pool_names:
                ctx.key("routes").index(i).key("pool").error(
                    f"unknown pool {route.pool!r}; known: {known}"
                )
                values["routes"] = INVALID
    default_pool = values.get("default_pool", "default")
    if default_pool is not INVALID and default_pool not in pool_names:
        values["default_pool"] = ctx.key("default_pool").error(
            f"unknown pool {default_pool!r}; known: {known}"
        )


# --------------------------------------------------------------------------
# A tcp listener routing on SNI: known pools, and TLS left to the servers


def check_sni_passthrough(
    ctx: Ctx, raw: Mapping[str, Any], values: dict[str, Any], pool_names: set[str]
) -> None:
    """The pools sni_passthrough names exist; the listener neither terminates TLS
    nor encrypts to its servers (the client's TLS goes through untouched)."""
    passthrough = values.get("sni_passthrough")
    at = ctx.key("sni_passthrough")
    for own in ("tls", "server_tls"):
        if own in raw:
            values[own] = ctx.key(own).error(
                "cannot be used with sni_passthrough, which passes the client's TLS through"
            )
    if "server_tls" not in raw:
        values["server_tls"] = None  # inherited from defaults: not for passthrough
    if passthrough is INVALID or passthrough is None or values.get("pools") is INVALID:
        return
    known = ", ".join(sorted(pool_names))
    for i, route in enumerate(passthrough.routes):
        if route.pool not in pool_names:
            at.key("routes").index(i).key("pool").error(
                f"unknown pool {route.pool!r}; known: {known}"
            )
            values["sni_passthrough"] = INVALID
    if passthrough.default_pool not in pool_names:
        at.key("default_pool").error(f"unknown pool {passthrough.default_pool!r}; known: {known}")
        values["sni_passthrough"] = INVALID
