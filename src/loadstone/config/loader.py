"""YAML text -> validated `loadstone.config.model.Config`, or every problem at once.

Theory of operation
-------------------
`yaml.safe_load` gives plain dicts, lists and scalars. The loader walks them
once, top to bottom, following the keys `loadstone.config.model` declares (see
`loadstone.config.schema`): each key's value parses itself and reports a bad
node as `"<path>: <message>"` in the one list of problems shared by the walk,
then the walk carries on, so one run of `loadstone check` reports every problem
instead of the first. Only at the end, if the list is not empty, is
`ConfigError` raised. What this module adds to the declarations is the shape of
the file (global, defaults, listeners by name) and inheritance; the rules
across keys are in `loadstone.config.validate`.

Inheritance (defaults -> listener) merges *parsed* values, not raw YAML: each
key of `defaults` is validated once, at its own path, and a listener that
inherits a bad default does not repeat the message. A key that was present
but invalid is kept in the merged mapping as `INVALID` so that it neither
triggers a second "required" message nor silently falls back to the built-in
default; building an object that holds one gives `INVALID` (the problem is
already recorded) and the walk goes on.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

import yaml

from loadstone.config import validate
from loadstone.config.model import (
    SEND_EXPECT_PRESETS,
    Address,
    AdminConfig,
    CheckConfig,
    Config,
    GlobalConfig,
    ListenerConfig,
    Timeouts,
)
from loadstone.config.schema import (
    INVALID,
    Ctx,
    Keys,
    Section,
    build,
    declared_keys,
    got,
    read_keys,
    read_mapping,
    yaml_text,
)
from loadstone.config.values import NAME

__all__ = ["SEND_EXPECT_PRESETS", "ConfigError", "load_config", "parse_config"]


class ConfigError(Exception):
    """The configuration is invalid; `problems` holds one `path: message` line per problem."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = list(problems)
        super().__init__("\n".join(self.problems))

    def __str__(self) -> str:
        return "\n".join(self.problems)


def load_config(path: str | os.PathLike[str]) -> Config:
    """Read and validate the configuration file at `path`."""
    name = os.fspath(path)
    try:
        with open(name, encoding="utf-8") as stream:
            text = stream.read()
    except OSError as err:
        raise ConfigError([f"{name}: cannot read: {err.strerror or err}"]) from err
    except UnicodeDecodeError as err:
        raise ConfigError([f"{name}: cannot read: not UTF-8 text ({err.reason})"]) from err
    return parse_config(text, source=name)


def parse_config(text: str, source: str = "<string>") -> Config:
    """Validate configuration YAML; raise `ConfigError` listing every problem found."""
    problems: list[str] = []
    try:
        document = _load_yaml(text, Ctx("", problems))
    except yaml.YAMLError as err:
        raise ConfigError([_yaml_problem(err, source)]) from err
    config = _config(Ctx("", problems, validate.RULES), document, source)
    if problems or not isinstance(config, Config):
        raise ConfigError(problems or ["(top level): invalid configuration"])
    return config


def _load_yaml(text: str, at: Ctx) -> Any:
    """`yaml.safe_load`, but a key given twice in one mapping is a problem at its
    path: PyYAML silently keeps the last one, so a second listener pasted under an
    existing name would replace the first without a word."""
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _report_duplicate_keys(node, at)
        return loader.construct_document(node)
    finally:
        loader.dispose()


def _report_duplicate_keys(node: yaml.Node, at: Ctx) -> None:
    if isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _report_duplicate_keys(item, at.index(i))
    elif isinstance(node, yaml.MappingNode):
        first_line: dict[str, int] = {}
        for key, value in node.value:
            if not isinstance(key, yaml.ScalarNode) or key.tag == "tag:yaml.org,2002:merge":
                continue  # `<<: *defaults` merges may repeat keys by design
            line = key.start_mark.line + 1
            if key.value in first_line:
                at.key(key.value).error(
                    f"duplicate key (lines {first_line[key.value]} and {line}); "
                    "YAML would keep only the last"
                )
            else:
                first_line[key.value] = line
            _report_duplicate_keys(value, at.key(key.value))


def _yaml_problem(err: yaml.YAMLError, source: str) -> str:
    # A syntax error has no YAML path yet: report the position instead, in the
    # file:line:column form editors understand. Marks count from zero.
    mark = getattr(err, "problem_mark", None)
    problem = getattr(err, "problem", None) or str(err)
    context = getattr(err, "context", None)
    where = f"{source}:{mark.line + 1}:{mark.column + 1}" if mark is not None else source
    message = f"{where}: invalid YAML: {problem}"
    if context:
        message += f" ({context})"
    if context == "while scanning an alias" or "found undefined alias" in problem:
        # `bind: [*:5000]` is YAML alias syntax; the fix is not obvious from the message.
        message += '; quote values that start with "*", e.g. "*:5000"'
    return message


# --------------------------------------------------------------------------
# The file: global, defaults, listeners

ROOT_KEYS: Final = ("global", "defaults", "listeners")
NAME_PATTERN: Final = re.compile(NAME)
LISTENER_KEYS: Final = declared_keys(ListenerConfig)
# What `defaults` may set: the listener keys declared `inherit`.
DEFAULTS_KEYS: Final[Keys] = {
    name: entry for name, entry in LISTENER_KEYS.items() if entry[1].inherit
}
# Sections a listener merges key by key over those of defaults, rather than replaces.
MERGED: Final = {"timeouts": Timeouts, "check": CheckConfig}
_INHERITED_ANY_MODE: Final[Keys] = {
    name: entry for name, entry in DEFAULTS_KEYS.items() if not entry[1].only and name not in MERGED
}
_INHERITED_HTTP: Final[Keys] = {
    name: entry for name, entry in DEFAULTS_KEYS.items() if "http" in entry[1].only
}
# A listener's keys of any mode that `defaults` may not set (freebind, tls...),
# but for those _listener walks itself and pools, which each mode walks with its
# routing (routes in http, sni_passthrough in tcp).
_OWN_ANY_MODE: Final = tuple(
    name
    for name, (_, declared) in LISTENER_KEYS.items()
    if not declared.inherit and not declared.only and name not in ("bind", "servers", "pools")
)

# The same for mode http, but for cookie and pools (walked before the others).
_OWN_HTTP: Final = tuple(
    name
    for name, (_, declared) in LISTENER_KEYS.items()
    if not declared.inherit and "http" in declared.only and name not in ("cookie", "pools")
)


@dataclass(frozen=True, slots=True)
class _Defaults:
    """Parsed `defaults`, by field name: values a listener inherits unless it sets its own."""

    keys: Mapping[str, Any]
    sections: Mapping[str, Mapping[str, Any]]  # timeouts, check: their parsed fields


def _config(ctx: Ctx, document: object, source: str) -> Any:
    if document is None:  # an empty file: report the missing listeners below
        document = {}
    raw = read_mapping(ctx, document, ROOT_KEYS)
    if raw is None:
        return INVALID
    binds: list[tuple[Address, str]] = []  # every bound address, with its path, in order
    global_ = _global(ctx.key("global"), raw.get("global"), binds)
    defaults = _defaults(ctx.key("defaults"), raw.get("defaults"))
    listeners = _listeners(ctx.key("listeners"), raw.get("listeners"), defaults, binds)
    validate.check_bind_conflicts(ctx, binds)
    validate.check_anycast_listeners(ctx, global_, listeners)
    return build(Config, {"global_": global_, "listeners": listeners, "source": source})


def _global(ctx: Ctx, node: object, binds: list[tuple[Address, str]]) -> Any:
    values = Section(GlobalConfig).read(ctx, {} if node is None else node)
    if values is INVALID:
        return INVALID
    assert isinstance(values, dict)
    admin = values.get("admin", AdminConfig())
    if isinstance(admin, AdminConfig) and admin.bind is not None:
        # The admin server's port is taken like a listener's, default or not.
        binds.append((admin.bind, ctx.key("admin").key("bind").path))
    return build(GlobalConfig, values)


def _section_fields(cls: type, ctx: Ctx, node: object) -> Mapping[str, Any]:
    """The parsed fields of a mergeable section; {} when absent or not a mapping."""
    if node is None:
        return {}
    values = Section(cls).read(ctx, node)
    return values if isinstance(values, dict) else {}


def _defaults(ctx: Ctx, node: object) -> _Defaults:
    raw = read_mapping(ctx, {} if node is None else node, DEFAULTS_KEYS) or {}
    keys = read_keys(ctx, {k: v for k, v in raw.items() if k not in MERGED}, DEFAULTS_KEYS)
    sections = {
        name: _section_fields(cls, ctx.key(name), raw.get(name)) for name, cls in MERGED.items()
    }
    return _Defaults(keys, sections)


def _listeners(
    ctx: Ctx, node: object, defaults: _Defaults, binds: list[tuple[Address, str]]
) -> Any:
    if node is None:
        return ctx.error("required: at least one listener")
    if not isinstance(node, dict):
        return ctx.error(f"expected a mapping of listener names to listeners, {got(node)}")
    if not node:
        return ctx.error("at least one listener is required")
    listeners: list[Any] = []
    for name, body in node.items():
        at = ctx.key(yaml_text(name))
        if not isinstance(name, str):
            listeners.append(at.error(f"listener names must be strings, {got(name)}; quote it"))
        elif not NAME_PATTERN.fullmatch(name):
            listeners.append(
                at.error("invalid listener name: use letters, digits, '_', '.' and '-'")
            )
        else:
            listeners.append(_listener(at, name, body, defaults, binds))
    return INVALID if INVALID in listeners else tuple(listeners)


def _parse(ctx: Ctx, raw: Mapping[str, Any], name: str) -> Any:
    """The listener key `name` as its declaration parses it."""
    return LISTENER_KEYS[name][1].value.parse(ctx.key(name), raw[name])


def _listener(
    ctx: Ctx, name: str, node: object, defaults: _Defaults, binds: list[tuple[Address, str]]
) -> Any:
    raw = read_mapping(ctx, node, LISTENER_KEYS)
    if raw is None:
        return INVALID
    # Keys that defaults may set come first, in the order written; then the
    # listener's own keys (the order of the messages is the order of this walk).
    inherited = {k: v for k, v in defaults.keys.items() if k in _INHERITED_ANY_MODE}
    values: dict[str, Any] = {**inherited, **read_keys(ctx, raw, _INHERITED_ANY_MODE)}

    for own in _OWN_ANY_MODE:
        if own in raw:
            values[own] = _parse(ctx, raw, own)
    if "bind" in raw:
        values["bind"] = _parse(ctx, raw, "bind")
        if values["bind"] is not INVALID:
            at = ctx.key("bind")
            single = isinstance(raw["bind"], str)  # one address: a list of one, at `bind` itself
            for i, address in enumerate(values["bind"]):
                binds.append((address, at.path if single else at.index(i).path))
    else:
        values["bind"] = ctx.key("bind").error(LISTENER_KEYS["bind"][1].required or "required")

    timeouts = {
        **defaults.sections["timeouts"],
        **_section_fields(Timeouts, ctx.key("timeouts"), raw.get("timeouts")),
    }
    values["timeouts"] = build(Timeouts, timeouts)
    # No `check` key (or null/false): never probed, whatever defaults.check says;
    # defaults.check only fills in the keys of the checks listeners do declare.
    if raw.get("check") not in (None, False):
        values["check"] = validate.listener_check(
            ctx.key("check"), raw["check"], defaults.sections["check"]
        )

    if "servers" in raw:
        values["servers"] = _parse(ctx, raw, "servers")
    elif "pools" in raw and (
        raw.get("default_pool", "default") != "default" or "sni_passthrough" in raw
    ):
        values["servers"] = ()  # every server is in a named pool
    elif values.get("mode") == "http" and ("monitor" in raw or "redirect" in raw):
        values["servers"] = ()  # every request answered by the proxy (HAProxy: no backend)
    else:
        values["servers"] = ctx.key("servers").error("required: a list of servers")

    mode = values.get("mode", "tcp")
    if mode == "http":
        validate.refuse_keys_of_other_modes(ctx, raw, LISTENER_KEYS, mode)  # sni_passthrough
        _http_listener(ctx, raw, values, defaults)
    elif mode is not INVALID:
        validate.refuse_keys_of_other_modes(ctx, raw, LISTENER_KEYS, mode)
        _sni_listener(ctx, raw, values)
    return build(ListenerConfig, {"name": name, **values})


def _sni_listener(ctx: Ctx, raw: Mapping[str, Any], values: dict[str, Any]) -> None:
    """Parse a tcp listener's sni_passthrough and the pools it routes to."""
    if "sni_passthrough" not in raw:
        if "pools" in raw:
            ctx.key("pools").error("in mode tcp, pools are routed to by sni_passthrough: add it")
        return
    pool_names = {"default"}
    if "pools" in raw:
        pool_names = validate.add_pools(ctx, values, _parse(ctx, raw, "pools"))
    values["sni_passthrough"] = _parse(ctx, raw, "sni_passthrough")
    validate.check_sni_passthrough(ctx, raw, values, pool_names)


def _http_listener(
    ctx: Ctx, raw: Mapping[str, Any], values: dict[str, Any], defaults: _Defaults
) -> None:
    """Parse the http-only keys of a listener into `values`."""
    values.update({k: v for k, v in defaults.keys.items() if k in _INHERITED_HTTP})
    values.update(read_keys(ctx, raw, _INHERITED_HTTP))
    if "cookie" in raw:
        values["cookie"] = _parse(ctx, raw, "cookie")
    pool_names = {"default"}
    if "pools" in raw:
        pool_names = validate.add_pools(ctx, values, _parse(ctx, raw, "pools"))
    for name in _OWN_HTTP:
        if name in raw:
            values[name] = _parse(ctx, raw, name)
    validate.check_pool_names(ctx, values, pool_names)
