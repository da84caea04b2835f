"""YAML text -> validated `loadstone.config.model.Config`, or every problem at once.

Theory of operation
-------------------
`yaml.safe_load` gives plain dicts, lists and scalars. The loader walks them
once, top to bottom, carrying a `_Ctx`: the YAML path of the value at hand plus
the one list of problems shared by the whole walk. A helper that finds a bad
value appends `"<path>: <message>"` to that list and returns None; the caller
carries on with the next key, so one run of `loadstone check` reports every
problem instead of the first. Only at the end, if the list is not empty, is
`ConfigError` raised.

Inheritance (defaults -> listener) merges *parsed* values, not raw YAML: each
key of `defaults` is validated once, at its own path, and a listener that
inherits a bad default does not repeat the message. A key that was present
but invalid is kept in the merged mapping as `_INVALID` so that it neither
triggers a second "required" message nor silently falls back to the built-in
default; a builder that meets `_INVALID` returns None (the problem is already
recorded) and the walk goes on.
"""

from __future__ import annotations

import dataclasses
import difflib
import ipaddress
import os
import re
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, fields
from datetime import date
from types import MappingProxyType
from typing import Any, Final, TypeVar, get_args

import yaml

from loadstone.config.durations import DurationError, parse_duration
from loadstone.config.model import (
    Address,
    AdminConfig,
    Balance,
    CheckConfig,
    CheckType,
    Config,
    CookiePersistence,
    ForwardedProto,
    ForwardFor,
    GlobalConfig,
    HeaderRule,
    IoUring,
    ListenerConfig,
    LocationRewrite,
    LogConfig,
    LogFormat,
    LogTarget,
    Mode,
    OnMarkedDown,
    PoolConfig,
    RouteConfig,
    SendExpectStep,
    ServerConfig,
    SessionLogging,
    Splice,
    SyslogFacility,
    SyslogProtocol,
    TcpKeepalive,
    Timeouts,
)
from loadstone.logtargets import parse_destination

__all__ = ["SEND_EXPECT_PRESETS", "ConfigError", "load_config", "parse_config"]


class ConfigError(Exception):
    """The configuration is invalid; `problems` holds one `path: message` line per problem."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = list(problems)
        super().__init__("\n".join(self.problems))

    def __str__(self) -> str:
        return "\n".join(self.problems)


# Named send/expect scripts, so that common services need no hand-written steps.
SEND_EXPECT_PRESETS: Final[Mapping[str, tuple[SendExpectStep, ...]]] = MappingProxyType(
    {
        # HAProxy's documented Redis check (tcp-check send PING / expect +PONG /
        # send info replication / expect role:master / send QUIT / expect +OK),
        # as puppet-tripleo deploys it: only the master takes traffic. QUIT goes
        # out with INFO: Redis answers both in order and then closes, so on a
        # replica the expect of role:master fails at once on that close, where
        # HAProxy's order waits for the check timeout on every check.
        "redis-master": (
            SendExpectStep("send", b"PING\r\n"),
            SendExpectStep("expect", b"+PONG"),
            SendExpectStep("send", b"INFO replication\r\n"),
            SendExpectStep("send", b"QUIT\r\n"),
            SendExpectStep("expect", regex="role:master"),
            SendExpectStep("expect", b"+OK"),
        ),
        # The text protocol's cheapest command; the answer is "VERSION 1.6.21\r\n".
        "memcached": (
            SendExpectStep("send", b"version\r\n"),
            SendExpectStep("expect", b"VERSION "),
        ),
    }
)


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
        document = _load_yaml(text, _Ctx("", problems))
    except yaml.YAMLError as err:
        raise ConfigError([_yaml_problem(err, source)]) from err
    config = _config(_Ctx("", problems), document, source)
    if problems or config is None:
        raise ConfigError(problems or ["(top level): invalid configuration"])
    return config


def _load_yaml(text: str, at: _Ctx) -> Any:
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


def _report_duplicate_keys(node: yaml.Node, at: _Ctx) -> None:
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
# The walk: a path plus the shared problem list


class _Invalid:
    """Marks a value that was present but bad (and already reported)."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "<invalid>"


_INVALID: Final = _Invalid()
_PLAIN_KEY = re.compile(r"[A-Za-z0-9_-]+")


class _Ctx:
    """Where we are in the document, and where problems go."""

    __slots__ = ("path", "problems")

    def __init__(self, path: str, problems: list[str]) -> None:
        self.path = path
        self.problems = problems

    def key(self, name: str) -> _Ctx:
        # Listener names may contain dots; quote such keys so the path stays unambiguous.
        if not _PLAIN_KEY.fullmatch(name):
            return _Ctx(f"{self.path}[{name!r}]", self.problems)
        return _Ctx(f"{self.path}.{name}" if self.path else name, self.problems)

    def index(self, i: int) -> _Ctx:
        return _Ctx(f"{self.path}[{i}]", self.problems)

    def error(self, message: str) -> None:
        self.problems.append(f"{self.path or '(top level)'}: {message}")


def _kind(value: object) -> str:
    """The YAML name of a value's type, with its article."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, date):  # YAML reads 2024-01-01 as a date
        return "a date"
    return f"a {type(value).__name__}"


def _yaml_text(value: object) -> str:
    """A scalar as YAML would write it (true, null), not as Python would (True, None)."""
    if value is None:
        return "null"
    return str(value).lower() if isinstance(value, bool) else str(value)


def _got(value: object) -> str:
    if value is None or isinstance(value, list | dict):
        return f"got {_kind(value)}"
    shown = repr(value) if isinstance(value, str) else _yaml_text(value)
    if len(shown) > 40:
        shown = shown[:37] + "..."
    return f"got {_kind(value)} ({shown})"


def _suggest(word: str, choices: Collection[str]) -> str:
    close = difflib.get_close_matches(word, sorted(choices), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _mapping(ctx: _Ctx, node: object, allowed: Collection[str]) -> dict[str, Any] | None:
    """The known keys of a mapping; unknown and non-string keys are reported."""
    if not isinstance(node, dict):
        ctx.error(f"expected a mapping, {_got(node)}")
        return None
    known: dict[str, Any] = {}
    for key, value in node.items():
        if not isinstance(key, str):
            # `on: 1` or `80: ...`: YAML 1.1 turned the key into a boolean or a number.
            ctx.key(_yaml_text(key)).error(f"keys must be strings, {_got(key)}; quote it")
        elif key not in allowed:
            hint = _suggest(key, allowed)
            if not hint and len(allowed) <= 12:
                hint = f"; valid keys: {', '.join(sorted(allowed))}"
            ctx.key(key).error(f"unknown key{hint}")
        else:
            known[key] = value
    return known


# --------------------------------------------------------------------------
# Scalars. Each returns the parsed value, or None after reporting a problem.

_Parser = Callable[[_Ctx, Any], Any]
_T = TypeVar("_T")


def _int(ctx: _Ctx, node: object, low: int, high: int | None = None) -> int | None:
    # bool is an int subclass in Python; in a configuration `true` is never a count.
    if isinstance(node, bool) or not isinstance(node, int):
        ctx.error(f"expected an integer, {_got(node)}")
        return None
    if node < low or (high is not None and node > high):
        bounds = f"{low}-{high}" if high is not None else f"at least {low}"
        ctx.error(f"must be {bounds}, got {node}")
        return None
    return node


def _bool(ctx: _Ctx, node: object) -> bool | None:
    if not isinstance(node, bool):
        ctx.error(f"expected a boolean (true or false), {_got(node)}")
        return None
    return node


def _str(ctx: _Ctx, node: object) -> str | None:
    if not isinstance(node, str):
        ctx.error(f"expected a string, {_got(node)}")
        return None
    if not node.strip():
        ctx.error("must not be empty")
        return None
    return node


def _choice(ctx: _Ctx, node: object, choices: tuple[str, ...]) -> str | None:
    if not isinstance(node, str) or node not in choices:
        got = f"got {node!r}" if isinstance(node, str) else _got(node)
        hint = _suggest(node, choices) if isinstance(node, str) else ""
        ctx.error(f"must be one of {', '.join(choices)}; {got}{hint}")
        return None
    return node


def _literal(kind: Any) -> _Parser:
    """A parser for one of the model's Literal types, so the choices live in one place."""
    choices: tuple[str, ...] = get_args(kind)
    return lambda ctx, node: _choice(ctx, node, choices)


def _duration(ctx: _Ctx, node: object, *, allow_zero: bool = False) -> float | None:
    try:
        seconds = parse_duration(node)
    except DurationError as err:
        ctx.error(str(err))
        return None
    if seconds == 0 and not allow_zero:
        ctx.error("must be greater than zero")
        return None
    return seconds


def _positive_duration(ctx: _Ctx, node: object) -> float | None:
    return _duration(ctx, node)


def _port(ctx: _Ctx, node: object) -> int | None:
    return _int(ctx, node, 1, 65535)


_NAME = re.compile(r"[A-Za-z0-9_.-]+")


def _name(ctx: _Ctx, node: object) -> str | None:
    name = _str(ctx, node)
    if name is not None and not _NAME.fullmatch(name):
        ctx.error(f"invalid name {name!r}: use letters, digits, '_', '.' and '-'")
        return None
    return name


# --------------------------------------------------------------------------
# Addresses

_HOST_LABEL = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)")
_WILDCARDS: Final = ("*", "")  # HAProxy's "all IPv4 addresses"; the binder maps them to 0.0.0.0


def _address(ctx: _Ctx, node: object, *, bind: bool = False) -> Address | None:
    """Parse "host:port": host is IPv4, [IPv6], a DNS name, or (bind only) * or empty."""
    if not isinstance(node, str):
        ctx.error(f'expected a string "host:port" (quote it in YAML), {_got(node)}')
        return None
    text = node.strip()
    if text.startswith("["):
        host, bracket, rest = text[1:].partition("]")
        if not bracket or not rest.startswith(":"):
            ctx.error(f"expected [IPv6]:port, got {node!r}")
            return None
        port_text = rest[1:]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            ctx.error(f"invalid IPv6 address {host!r}")
            return None
    else:
        host, colon, port_text = text.rpartition(":")
        if not colon:
            ctx.error(f"expected host:port, got {node!r} (the port is missing)")
            return None
        if ":" in host:
            ctx.error(f"an IPv6 address must be in brackets, e.g. [::1]:5000; got {node!r}")
            return None
        problem = _host_problem(host, bind=bind)
        if problem:
            ctx.error(problem)
            return None
    if not (port_text.isascii() and port_text.isdigit()):
        ctx.error(f"port must be an integer 1-65535, got {port_text!r}")
        return None
    port = int(port_text)
    if not 1 <= port <= 65535:
        ctx.error(f"port must be 1-65535, got {port}")
        return None
    return Address(host, port)


def _host_problem(host: str, *, bind: bool) -> str | None:
    if host in _WILDCARDS:
        return None if bind else "a server address needs a host"
    if re.fullmatch(r"[0-9.]+", host):
        # All digits and dots: it is meant as IPv4, never as a name (10.0.0.256).
        try:
            ipaddress.IPv4Address(host)
        except ValueError:
            return f"invalid IPv4 address {host!r}"
        return None
    name = host.removesuffix(".")
    if len(name) > 253 or not all(_HOST_LABEL.fullmatch(label) for label in name.split(".")):
        return f"invalid host {host!r}: expected an IPv4 address, [IPv6] or a DNS name"
    return None


def _ip(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    if host in _WILDCARDS:
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


# --------------------------------------------------------------------------
# Field tables: key -> parser. `_parse_fields` applies them to a mapping.


def _parse_fields(
    ctx: _Ctx, raw: Mapping[str, Any], table: Mapping[str, _Parser]
) -> dict[str, Any]:
    parsed: dict[str, Any] = {}
    for key, value in raw.items():
        if key in table:
            result = table[key](ctx.key(key), value)
            parsed[key] = _INVALID if result is None else result
    return parsed


def _or_invalid(value: _T | None) -> _T | _Invalid:
    return _INVALID if value is None else value


def _build(cls: Callable[..., _T], values: Mapping[str, Any]) -> _T | None:
    if any(value is _INVALID for value in values.values()):
        return None
    return cls(**values)


def _keepalive(ctx: _Ctx, node: object) -> TcpKeepalive | bool | None:
    """`true` (the kernel probe defaults below), `false`/null (off), or {idle, interval, count}.

    Returns False for "off" because None means "invalid" to `_parse_fields`.
    """
    if node is None or node is False:
        return False
    if node is True:
        return TcpKeepalive()
    raw = _mapping(ctx, node, _KEEPALIVE_FIELDS)
    if raw is None:
        return None
    return _build(TcpKeepalive, _parse_fields(ctx, raw, _KEEPALIVE_FIELDS))


def _keepalive_seconds(ctx: _Ctx, node: object) -> float | None:
    # TCP_KEEPIDLE and TCP_KEEPINTVL are whole seconds, 1-32767 on Linux:
    # refuse what the kernel cannot do rather than round it silently.
    seconds = _duration(ctx, node)
    if seconds is not None and not (seconds.is_integer() and 1 <= seconds <= 32767):
        ctx.error(f"must be a whole number of seconds from 1s to 32767s, got {node!r}")
        return None
    return seconds


_KEEPALIVE_FIELDS: Final[Mapping[str, _Parser]] = {
    "idle": _keepalive_seconds,
    "interval": _keepalive_seconds,
    "count": lambda ctx, node: _int(ctx, node, 1, 127),  # Linux caps TCP_KEEPCNT at 127
}

_TIMEOUT_FIELDS: Final[Mapping[str, _Parser]] = {
    field.name: _positive_duration for field in fields(Timeouts)
}

# Listener keys that may also be given in `defaults`; a listener's own value wins.
_TUNABLE_FIELDS: Final[Mapping[str, _Parser]] = {
    "mode": _literal(Mode),
    "balance": _literal(Balance),
    "maxconn": lambda ctx, node: _int(ctx, node, 1),
    "backlog": lambda ctx, node: _int(ctx, node, 1),
    "retries": lambda ctx, node: _int(ctx, node, 0, 100),
    "redispatch": _bool,
    "on_marked_down": _literal(OnMarkedDown),
    "tcp_keepalive": _keepalive,
    "log": _literal(SessionLogging),
}

_SERVER_FIELDS: Final[Mapping[str, _Parser]] = {
    "name": _name,
    "address": _address,
    "weight": lambda ctx, node: _int(ctx, node, 0, 256),
    "backup": _bool,
    "maxconn": lambda ctx, node: _int(ctx, node, 1),
    "check": _bool,
    "cookie": lambda ctx, node: _cookie_token(ctx, node),
}


# --------------------------------------------------------------------------
# Health checks

_HTTP_METHODS: Final = ("GET", "HEAD", "OPTIONS", "POST", "PUT", "PATCH", "DELETE")
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")  # RFC 9110 token (header names)
_UNSAFE = re.compile(r"[\x00-\x20\x7f]")  # would break the request line
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _http_method(ctx: _Ctx, node: object) -> str | None:
    if isinstance(node, str) and node.upper() in _HTTP_METHODS and node not in _HTTP_METHODS:
        ctx.error(f"HTTP methods are case-sensitive: write {node.upper()!r}")
        return None
    return _choice(ctx, node, _HTTP_METHODS)


def _http_path(ctx: _Ctx, node: object) -> str | None:
    path = _str(ctx, node)
    if path is None:
        return None
    if not path.startswith("/"):
        ctx.error(f"must start with '/', got {path!r}")
        return None
    if _UNSAFE.search(path):
        ctx.error("must not contain spaces or control characters (percent-encode them)")
        return None
    return path


def _http_host(ctx: _Ctx, node: object) -> str | None:
    host = _str(ctx, node)
    if host is not None and _UNSAFE.search(host):
        ctx.error("must not contain spaces or control characters")
        return None
    return host


def _statuses(ctx: _Ctx, node: object) -> tuple[int, ...] | None:
    if not isinstance(node, list):
        status = _int(ctx, node, 100, 599)
        return None if status is None else (status,)
    if not node:
        ctx.error("must not be empty")
        return None
    statuses = [_int(ctx.index(i), item, 100, 599) for i, item in enumerate(node)]
    return None if None in statuses else tuple(s for s in statuses if s is not None)


def _headers(ctx: _Ctx, node: object) -> tuple[tuple[str, str], ...] | None:
    if not isinstance(node, dict):
        ctx.error(f"expected a mapping of header names to strings, {_got(node)}")
        return None
    headers: list[tuple[str, str]] = []
    ok = True
    for name, value in node.items():
        if not isinstance(name, str) or not _TOKEN.fullmatch(name):
            ctx.key(_yaml_text(name)).error("invalid header name")
            ok = False
        elif not isinstance(value, str):
            ctx.key(name).error(f"expected a string (quote it in YAML), {_got(value)}")
            ok = False
        elif re.search(r"[\r\n\x00]", value):
            ctx.key(name).error("must not contain CR, LF or NUL")
            ok = False
        else:
            headers.append((name, value))
    return tuple(headers) if ok else None


def _env_name(ctx: _Ctx, node: object) -> str | None:
    name = _str(ctx, node)
    if name is not None and not _ENV_NAME.fullmatch(name):
        ctx.error(f"invalid environment variable name {name!r}")
        return None
    return name


def _preset(ctx: _Ctx, node: object) -> str | None:
    name = _str(ctx, node)
    if name is not None and name not in SEND_EXPECT_PRESETS:
        known = ", ".join(sorted(SEND_EXPECT_PRESETS))
        ctx.error(f"unknown preset {name!r}; known presets: {known}")
        return None
    return name


_ESCAPES: Final = {"r": b"\r", "n": b"\n", "t": b"\t", "0": b"\0", "\\": b"\\"}


def _unescape(text: str) -> bytes:
    r"""Decode \r \n \t \0 \\ \xHH; other characters are UTF-8 encoded.

    YAML decodes these escapes itself inside double quotes; in plain and single
    quoted scalars they arrive as a backslash, so both spellings work.
    """
    out = bytearray()
    i = 0
    while i < len(text):
        char = text[i]
        if char != "\\":
            out += char.encode()
            i += 1
            continue
        code = text[i + 1 : i + 2]
        if code == "x" and re.fullmatch(r"[0-9A-Fa-f]{2}", text[i + 2 : i + 4]):
            out.append(int(text[i + 2 : i + 4], 16))
            i += 4
        elif code in _ESCAPES:
            out += _ESCAPES[code]
            i += 2
        else:
            raise ValueError(
                f"unknown escape '\\{code}' (known: \\r \\n \\t \\0 \\\\ \\xHH)"
                if code
                else "ends with a lone backslash"
            )
    return bytes(out)


_STEP_ACTIONS: Final = ("send", "send_hex", "expect", "expect_regex", "expect_hex")


def _step(ctx: _Ctx, node: object) -> SendExpectStep | None:
    raw = _mapping(ctx, node, (*_STEP_ACTIONS, "timeout"))
    if raw is None:
        return None
    actions = [key for key in _STEP_ACTIONS if key in raw]
    if not actions:
        ctx.error(f"a step needs one of {', '.join(_STEP_ACTIONS)}")
        return None
    for extra in actions[1:]:
        ctx.key(extra).error(f"cannot be combined with {actions[0]!r} in one step")
    action = actions[0]
    timeout = None
    if "timeout" in raw:
        if action.startswith("send"):
            ctx.key("timeout").error("only valid on expect steps")
            return None
        timeout = _positive_duration(ctx.key("timeout"), raw["timeout"])
        if timeout is None:
            return None
    at = ctx.key(action)
    text = _str(at, raw[action])
    if text is None or len(actions) > 1:
        return None
    try:
        if action == "expect_regex":
            re.compile(text.encode())  # matched against the bytes read, so compile as bytes
            return SendExpectStep("expect", regex=text, timeout=timeout)
        data = bytes.fromhex(text) if action.endswith("_hex") else _unescape(text)
    except re.error as err:
        at.error(f"invalid regular expression: {err}")
        return None
    except ValueError as err:
        at.error(f"invalid hex: {err}" if action.endswith("_hex") else str(err))
        return None
    if action.startswith("send"):
        return SendExpectStep("send", data)
    return SendExpectStep("expect", data, timeout=timeout)


def _steps(ctx: _Ctx, node: object) -> tuple[SendExpectStep, ...] | None:
    if not isinstance(node, list):
        ctx.error(f"expected a list of steps, {_got(node)}")
        return None
    if not node:
        ctx.error("must not be empty")
        return None
    steps = [_step(ctx.index(i), item) for i, item in enumerate(node)]
    return None if None in steps else tuple(s for s in steps if s is not None)


_CHECK_FIELDS: Final[Mapping[str, _Parser]] = {
    "type": _literal(CheckType),
    "interval": _positive_duration,
    "rise": lambda ctx, node: _int(ctx, node, 1),
    "fall": lambda ctx, node: _int(ctx, node, 1),
    "fastinter": _positive_duration,
    "downinter": _positive_duration,
    "timeout": _positive_duration,
    "port": _port,
    "method": _http_method,
    "path": _http_path,
    "host": _http_host,
    "expect_status": _statuses,
    "headers": _headers,
    "user": _str,
    "password_env": _env_name,
    "password_file": _str,
    "available_when_donor": _bool,
    "available_when_readonly": _bool,
    "max_recv_queue": lambda ctx, node: _int(ctx, node, 0),
    "level": lambda ctx, node: _choice(ctx, node, ("header", "login")),
    "vhost": _str,
    "alarms": _bool,
    "management_port": _port,
    "preset": _preset,
    "steps": _steps,
}

# Keys that only make sense for some check types; the others apply to all.
_CREDENTIAL_TYPES: Final = ("http", "galera", "mysql", "amqp")
_CHECK_KEY_TYPES: Final[Mapping[str, tuple[str, ...]]] = {
    "method": ("http",),
    "path": ("http",),
    "host": ("http",),
    "expect_status": ("http",),
    "headers": ("http",),
    "user": _CREDENTIAL_TYPES,
    "password_env": _CREDENTIAL_TYPES,
    "password_file": _CREDENTIAL_TYPES,
    "available_when_donor": ("galera",),
    "available_when_readonly": ("galera",),
    "max_recv_queue": ("galera",),
    "level": ("amqp",),
    "vhost": ("amqp",),
    "alarms": ("amqp",),
    "management_port": ("amqp",),
    "preset": ("send-expect",),
    "steps": ("send-expect",),
}

# Pairs that are two ways of saying one thing: a listener giving either one
# replaces both as inherited from defaults.check, and one mapping may not hold both.
_ALTERNATIVES: Final = (("password_env", "password_file"), ("preset", "steps"))


def _check_fields(ctx: _Ctx, node: object) -> dict[str, Any] | None:
    """Parse one check mapping on its own (no inheritance, no type rules)."""
    raw = _mapping(ctx, node, _CHECK_FIELDS)
    if raw is None:
        return None
    parsed = _parse_fields(ctx, raw, _CHECK_FIELDS)
    for first, second in _ALTERNATIVES:
        if first in raw and second in raw:
            ctx.key(second).error(f"cannot be used together with {first!r}")
            parsed[second] = _INVALID
    return parsed


def _check(ctx: _Ctx, node: object, inherited: Mapping[str, Any]) -> CheckConfig | None:
    """A listener's check: its own keys over those of defaults.check, then the type rules."""
    if node is True:  # "check with the defaults"
        own: dict[str, Any] = {}
    else:
        parsed = _check_fields(ctx, node)
        if parsed is None:
            return None
        own = parsed
    kind = own.get("type", inherited.get("type", "tcp"))
    if kind is _INVALID:
        return None  # which keys belong is unknowable; the bad type is reported
    replaced = {key for pair in _ALTERNATIVES if own.keys() & set(pair) for key in pair}
    merged = {
        key: value
        for key, value in inherited.items()
        # Defaults hold keys for every type; a listener takes only those of its own type.
        if key not in replaced and kind in _CHECK_KEY_TYPES.get(key, (kind,))
    }
    for key, value in own.items():
        types = _CHECK_KEY_TYPES.get(key, (kind,))
        if kind not in types:
            only = f"type {types[0]}" if len(types) == 1 else f"types {', '.join(types)}"
            ctx.key(key).error(f"only valid for {only} (this check is type {kind})")
        else:
            merged[key] = value

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
        if "preset" in merged and merged["preset"] is not _INVALID:
            merged["steps"] = SEND_EXPECT_PRESETS[merged["preset"]]
        elif "steps" not in merged and "preset" not in merged:
            known = ", ".join(sorted(SEND_EXPECT_PRESETS))
            ctx.key("steps").error(f"required for type send-expect (or a preset: {known})")
    return _build(CheckConfig, merged)


# --------------------------------------------------------------------------
# HTTP mode: header rules, forwardfor, cookie persistence, routing pools


def _cookie_token(ctx: _Ctx, node: object) -> str | None:
    # RFC 6265 cookie-octets are wider, but a token is what HAProxy's `cookie`
    # takes and it never needs quoting.
    text = _str(ctx, node)
    if text is not None and not _TOKEN.fullmatch(text):
        ctx.error(f"invalid cookie value {text!r}: use letters, digits and !#$%&'*+.^_`|~-")
        return None
    return text


def _header_name(ctx: _Ctx, node: object) -> str | None:
    name = _str(ctx, node)
    if name is not None and not _TOKEN.fullmatch(name):
        ctx.error(f"invalid header name {name!r}")
        return None
    return name


def _header_value(ctx: _Ctx, node: object) -> str | None:
    if not isinstance(node, str):
        ctx.error(f"expected a string (quote it in YAML), {_got(node)}")
        return None
    if re.search(r"[\r\n\x00]", node):
        ctx.error("must not contain CR, LF or NUL")
        return None
    try:
        node.encode("latin-1")
    except UnicodeEncodeError:
        ctx.error("must be Latin-1 text (percent-encode other characters)")
        return None
    return node


# Headers that carry the message framing or the connection's own state: the data
# path writes them itself, so a rule that changed them could desynchronise the
# two sides (request smuggling by configuration).
_MANAGED_HEADERS: Final = frozenset(
    {"content-length", "transfer-encoding", "connection", "keep-alive", "upgrade", "te"}
)


def _header_rule(ctx: _Ctx, node: object) -> HeaderRule | None:
    raw = _mapping(ctx, node, ("set", "add", "delete", "value"))
    if raw is None:
        return None
    actions = [key for key in ("set", "add", "delete") if key in raw]
    if len(actions) != 1:
        ctx.error("a rule needs exactly one of set, add, delete (the header name)")
        return None
    action = actions[0]
    name = _header_name(ctx.key(action), raw[action])
    if name is None:
        return None
    if name.lower() in _MANAGED_HEADERS:
        ctx.key(action).error(f"{name} is managed by the proxy and cannot be changed by a rule")
        return None
    if action == "delete":
        if "value" in raw:
            ctx.key("value").error("not used by delete")
            return None
        return HeaderRule("delete", name)
    if "value" not in raw:
        ctx.key("value").error(f"required for {action}")
        return None
    value = _header_value(ctx.key("value"), raw["value"])
    return None if value is None else HeaderRule("set" if action == "set" else "add", name, value)


def _header_rules(ctx: _Ctx, node: object) -> tuple[HeaderRule, ...] | None:
    if not isinstance(node, list):
        ctx.error(f"expected a list of rules like {{set: X-Name, value: text}}, {_got(node)}")
        return None
    rules = [_header_rule(ctx.index(i), item) for i, item in enumerate(node)]
    return None if None in rules else tuple(r for r in rules if r is not None)


def _network(ctx: _Ctx, node: object) -> str | None:
    text = _str(ctx, node)
    if text is None:
        return None
    try:
        return str(ipaddress.ip_network(text, strict=False))
    except ValueError:
        ctx.error(f"invalid network {text!r}: expected an address or CIDR, e.g. 127.0.0.0/8")
        return None


def _forwardfor(ctx: _Ctx, node: object) -> ForwardFor | bool | None:
    """`true`, `false`, or {except: [networks], header: name}. False means off."""
    if node is None or node is False:
        return False
    if node is True:
        return ForwardFor()
    raw = _mapping(ctx, node, ("except", "header"))
    if raw is None:
        return None
    values: dict[str, Any] = {}
    if "header" in raw:
        values["header"] = _or_invalid(_header_name(ctx.key("header"), raw["header"]))
    if "except" in raw:
        at = ctx.key("except")
        items = raw["except"] if isinstance(raw["except"], list) else [raw["except"]]
        nets = [_network(at.index(i), item) for i, item in enumerate(items)]
        values["except_nets"] = (
            _INVALID if None in nets else tuple(n for n in nets if n is not None)
        )
    return _build(ForwardFor, values)


def _rewrite_location(ctx: _Ctx, node: object) -> LocationRewrite | bool | None:
    """`https` (http:// -> https://), or {from: prefix, to: replacement}; false: off."""
    if node is None or node is False:
        return False
    if node == "https":
        return LocationRewrite()
    if isinstance(node, str):
        ctx.error(f"expected 'https' or a mapping {{from: ..., to: ...}}, got {node!r}")
        return None
    raw = _mapping(ctx, node, ("from", "to"))
    if raw is None:
        return None
    for key in ("from", "to"):
        if key not in raw:
            ctx.key(key).error("required")
            return None
    prefix = _header_value(ctx.key("from"), raw["from"])
    replacement = _header_value(ctx.key("to"), raw["to"])
    if prefix is None or replacement is None:
        return None
    if not prefix:
        ctx.key("from").error("must not be empty")
        return None
    return LocationRewrite(prefix, replacement)


_COOKIE_FIELDS: Final[Mapping[str, _Parser]] = {
    "name": _cookie_token,
    "mode": lambda ctx, node: _choice(ctx, node, ("insert",)),
    "indirect": _bool,
    "nocache": _bool,
    "httponly": _bool,
    "secure": _bool,
}


def _cookie(ctx: _Ctx, node: object) -> CookiePersistence | bool | None:
    if node is None or node is False:
        return False
    raw = _mapping(ctx, node, _COOKIE_FIELDS)
    if raw is None:
        return None
    return _build(CookiePersistence, _parse_fields(ctx, raw, _COOKIE_FIELDS))


def _size(low: int, high: int) -> _Parser:
    return lambda ctx, node: _int(ctx, node, low, high)


_HOST_PATTERN = re.compile(r"(\*\.)?[a-z0-9]([a-z0-9.-]*[a-z0-9])?|\[[0-9a-f:.]+\]")


def _route_hosts(ctx: _Ctx, node: object) -> tuple[str, ...] | None:
    items = node if isinstance(node, list) else [node]
    if not items:
        ctx.error("must not be empty")
        return None
    hosts: list[str] = []
    for i, item in enumerate(items):
        at = ctx.index(i) if isinstance(node, list) else ctx
        text = _str(at, item)
        if text is None:
            return None
        host = text.lower().removesuffix(".")
        if not _HOST_PATTERN.fullmatch(host):
            at.error(f"invalid host {text!r}: a name without port, or *.domain")
            return None
        hosts.append(host)
    return tuple(hosts)


def _route_path(ctx: _Ctx, node: object) -> str | None:
    path = _str(ctx, node)
    if path is not None and not path.startswith("/"):
        ctx.error(f"must start with '/', got {path!r}")
        return None
    return path


def _route_regex(ctx: _Ctx, node: object) -> str | None:
    text = _str(ctx, node)
    if text is None:
        return None
    try:
        re.compile(text)
    except re.error as err:
        ctx.error(f"invalid regular expression: {err}")
        return None
    return text


_ROUTE_FIELDS: Final[Mapping[str, _Parser]] = {
    "host": _route_hosts,
    "path_prefix": _route_path,
    "path_exact": _route_path,
    "path_regex": _route_regex,
    "pool": _name,
}


def _routes(ctx: _Ctx, node: object) -> tuple[RouteConfig, ...] | None:
    if not isinstance(node, list):
        ctx.error(f"expected a list of routes like {{path_prefix: /v2, pool: name}}, {_got(node)}")
        return None
    routes: list[RouteConfig] = []
    ok = True
    for i, item in enumerate(node):
        at = ctx.index(i)
        raw = _mapping(at, item, _ROUTE_FIELDS)
        if raw is None:
            ok = False
            continue
        values = _parse_fields(at, raw, _ROUTE_FIELDS)
        paths = [key for key in ("path_prefix", "path_exact", "path_regex") if key in raw]
        if len(paths) > 1:
            at.key(paths[1]).error(f"cannot be combined with {paths[0]!r}")
            ok = False
        if "host" not in raw and not paths:
            at.error("a route needs a host, a path_prefix, a path_exact or a path_regex")
            ok = False
        if "pool" not in raw:
            at.key("pool").error("required")
            ok = False
        if "host" in values:
            values["hosts"] = values.pop("host")
        route = _build(RouteConfig, values) if ok else None
        if route is None:
            ok = False
        else:
            routes.append(route)
    return tuple(routes) if ok else None


def _pools(
    ctx: _Ctx, node: object, balance: object
) -> tuple[tuple[PoolConfig, ...], tuple[ServerConfig, ...]] | None:
    """`pools: {name: {balance: ..., servers: [...]}}` -> pool configs and their servers."""
    if not isinstance(node, dict) or not node:
        ctx.error(f"expected a mapping of pool names to pools, {_got(node)}")
        return None
    pools: list[PoolConfig] = []
    servers: list[ServerConfig] = []
    ok = True
    for name, body in node.items():
        at = ctx.key(_yaml_text(name))
        if not isinstance(name, str) or not _NAME.fullmatch(name):
            at.error("invalid pool name: use letters, digits, '_', '.' and '-'")
            ok = False
            continue
        if name == "default":
            at.error("'default' is the pool of the listener-level servers; choose another name")
            ok = False
            continue
        raw = _mapping(at, body, ("balance", "servers"))
        if raw is None:
            ok = False
            continue
        pool_balance = balance if isinstance(balance, str) else "roundrobin"
        if "balance" in raw:
            parsed = _literal(Balance)(at.key("balance"), raw["balance"])
            if parsed is None:
                ok = False
                continue
            pool_balance = parsed
        if "servers" not in raw:
            at.key("servers").error("required: a list of servers")
            ok = False
            continue
        members = _servers(at.key("servers"), raw["servers"])
        if members is None:
            ok = False
            continue
        pools.append(PoolConfig(name, pool_balance))  # type: ignore[arg-type]
        servers += [dataclasses.replace(s, pool=name) for s in members]
    return (tuple(pools), tuple(servers)) if ok else None


# Listener keys of mode http only. Those also in _HTTP_TUNABLE_FIELDS may be set
# in `defaults` (they then apply to the http listeners, and tcp ones ignore them).
_HTTP_TUNABLE_FIELDS: Final[Mapping[str, _Parser]] = {
    "forwardfor": _forwardfor,
    "forwarded_proto": _literal(ForwardedProto),
    "forwarded_port": _bool,
    "request_headers": _header_rules,
    "response_headers": _header_rules,
    "rewrite_location": _rewrite_location,
    "max_head_size": _size(1024, 1024 * 1024),
    "max_headers": _size(1, 1000),
}
_HTTP_LISTENER_FIELDS: Final = (
    *_HTTP_TUNABLE_FIELDS,
    "cookie",
    "pools",
    "routes",
    "default_pool",
)


def _http_listener(
    ctx: _Ctx, raw: Mapping[str, Any], values: dict[str, Any], inherited: Mapping[str, Any]
) -> None:
    """Parse the http-only keys of a listener into `values` (mode is known valid)."""
    mode = values.get("mode", "tcp")
    own = [key for key in _HTTP_LISTENER_FIELDS if key in raw]
    if mode != "http":
        for key in own:
            ctx.key(key).error(f"only valid for mode http (this listener is mode {mode})")
        return
    values.update(inherited)
    values.update(_parse_fields(ctx, raw, _HTTP_TUNABLE_FIELDS))
    for key in ("forwardfor", "rewrite_location"):
        if values.get(key) is False:
            values[key] = None
    if "cookie" in raw:
        cookie = _cookie(ctx.key("cookie"), raw["cookie"])
        values["cookie"] = None if cookie is False else _or_invalid(cookie)
    pool_names = {"default"}
    if "pools" in raw:
        parsed = _pools(ctx.key("pools"), raw["pools"], values.get("balance", "roundrobin"))
        if parsed is None:
            values["pools"] = _INVALID
        else:
            values["pools"], pool_servers = parsed
            pool_names |= {p.name for p in values["pools"]}
            servers = values.get("servers")
            if isinstance(servers, tuple):
                seen = {s.name for s in servers}
                for server in pool_servers:
                    if server.name in seen:
                        ctx.key("pools").key(server.pool).error(
                            f"duplicate server name {server.name!r}: server names are "
                            "unique across a listener and its pools"
                        )
                        values["servers"] = _INVALID
                    seen.add(server.name)
                if values["servers"] is not _INVALID:
                    values["servers"] = servers + pool_servers
    if "routes" in raw:
        routes = _routes(ctx.key("routes"), raw["routes"])
        values["routes"] = _or_invalid(routes)
        if routes is not None and values.get("pools") is not _INVALID:
            for i, route in enumerate(routes):
                if route.pool not in pool_names:
                    ctx.key("routes").index(i).key("pool").error(
                        f"unknown pool {route.pool!r}; known: {', '.join(sorted(pool_names))}"
                    )
                    values["routes"] = _INVALID
    if "default_pool" in raw:
        name = _name(ctx.key("default_pool"), raw["default_pool"])
        if name is not None and name not in pool_names and values.get("pools") is not _INVALID:
            ctx.key("default_pool").error(
                f"unknown pool {name!r}; known: {', '.join(sorted(pool_names))}"
            )
            name = None
        values["default_pool"] = _or_invalid(name)


# --------------------------------------------------------------------------
# Sections


@dataclass(frozen=True, slots=True)
class _Defaults:
    """Parsed `defaults`: values a listener inherits unless it sets its own."""

    tunables: Mapping[str, Any]
    timeouts: Mapping[str, Any]
    check: Mapping[str, Any]
    http: Mapping[str, Any]  # http-only keys, for the http listeners


_GLOBAL_KEYS: Final = ("grace", "workers", "splice", "io_uring", "admin", "log_format", "log")
_ADMIN_KEYS: Final = ("bind", "token_file", "socket")
_LOG_KEYS: Final = ("events", "sessions")
_DEFAULTS_KEYS: Final = ("timeouts", "check", *_TUNABLE_FIELDS, *_HTTP_TUNABLE_FIELDS)
_LISTENER_KEYS: Final = (
    "bind",
    "freebind",
    "timeouts",
    "check",
    "servers",
    *_TUNABLE_FIELDS,
    *_HTTP_LISTENER_FIELDS,
)


def _config(ctx: _Ctx, document: object, source: str) -> Config | None:
    if document is None:  # an empty file: report the missing listeners below
        document = {}
    raw = _mapping(ctx, document, ("global", "defaults", "listeners"))
    if raw is None:
        return None
    binds: list[tuple[Address, str]] = []  # every bound address, with its path, in order
    global_ = _global(ctx.key("global"), raw.get("global"), binds)
    defaults = _defaults(ctx.key("defaults"), raw.get("defaults"))
    listeners = _listeners(ctx.key("listeners"), raw.get("listeners"), defaults, binds)
    _check_bind_conflicts(ctx, binds)
    if global_ is None or listeners is None:
        return None
    return Config(global_=global_, listeners=listeners, source=source)


def _splice(ctx: _Ctx, node: object) -> str | None:
    # YAML 1.1 reads a bare on/off as a boolean: take both spellings.
    if node is True:
        return "on"
    if node is False:
        return "off"
    return _choice(ctx, node, get_args(Splice))


def _io_uring(ctx: _Ctx, node: object) -> str | None:
    if node is False:  # a bare `off` in YAML 1.1
        return "off"
    return _choice(ctx, node, get_args(IoUring))


def _global(ctx: _Ctx, node: object, binds: list[tuple[Address, str]]) -> GlobalConfig | None:
    raw = _mapping(ctx, {} if node is None else node, _GLOBAL_KEYS)
    if raw is None:
        return None
    values = _parse_fields(
        ctx,
        raw,
        {
            # Zero is allowed: stop at once, closing sessions.
            "grace": lambda c, n: _duration(c, n, allow_zero=True),
            "workers": lambda c, n: _int(c, n, 1, 64),
            "splice": _splice,
            "io_uring": _io_uring,
            "log_format": _literal(LogFormat),
        },
    )
    admin_ctx = ctx.key("admin")
    admin = _admin(admin_ctx, raw["admin"]) if "admin" in raw else AdminConfig()
    if admin is not None and admin.bind is not None:
        # The admin server's port is taken like a listener's, default or not.
        binds.append((admin.bind, admin_ctx.key("bind").path))
    values["admin"] = _or_invalid(admin)
    if "log" in raw:
        values["log"] = _or_invalid(_log(ctx.key("log"), raw["log"]))
    return _build(GlobalConfig, values)


def _log_target_name(ctx: _Ctx, node: object) -> str | None:
    text = _str(ctx, node)
    if text is None:
        return None
    try:
        parse_destination(text)
    except ValueError as err:
        ctx.error(str(err))
        return None
    return text


def _log_tag(ctx: _Ctx, node: object) -> str | None:
    tag = _str(ctx, node)
    # RFC 5424 APP-NAME: 1-48 printable US-ASCII characters, no space.
    if tag is not None and not re.fullmatch(r"[!-~]{1,48}", tag):
        ctx.error(f"expected 1-48 printable ASCII characters without spaces, got {tag!r}")
        return None
    return tag


_LOG_TARGET_FIELDS: Final[Mapping[str, _Parser]] = MappingProxyType(
    {
        "target": _log_target_name,
        "format": _literal(LogFormat),
        "protocol": _literal(SyslogProtocol),
        "facility": _literal(SyslogFacility),
        "tag": _log_tag,
    }
)


def _log(ctx: _Ctx, node: object) -> LogConfig | None:
    """global.log: {events: TARGET, sessions: TARGET}, each a destination string
    or a mapping {target, format, protocol, facility, tag}; what a mapping leaves
    out keeps its default (events to stderr, sessions to stdout)."""
    raw = _mapping(ctx, {} if node is None else node, _LOG_KEYS)
    if raw is None:
        return None
    built = LogConfig()
    values: dict[str, Any] = {}
    for key in _LOG_KEYS:
        if key not in raw:
            continue
        at, item = ctx.key(key), raw[key]
        parsed: dict[str, Any] | None
        if isinstance(item, str):  # the target alone, reported at the key itself
            parsed = {"target": _or_invalid(_log_target_name(at, item))}
        else:
            given = _mapping(at, item, _LOG_TARGET_FIELDS)
            parsed = None if given is None else _parse_fields(at, given, _LOG_TARGET_FIELDS)
        invalid = parsed is None or any(v is _INVALID for v in parsed.values())
        target: LogTarget = getattr(built, key)
        values[key] = _INVALID if invalid else dataclasses.replace(target, **(parsed or {}))
    return _build(LogConfig, values)


def _admin(ctx: _Ctx, node: object) -> AdminConfig | None:
    if node is None:
        ctx.error("expected a mapping; to disable the admin server set admin.bind: null")
        return None
    raw = _mapping(ctx, node, _ADMIN_KEYS)
    if raw is None:
        return None
    values: dict[str, Any] = {}
    if "bind" in raw:
        # null disables the admin server (and with it /metrics and the status API).
        bind = raw["bind"]
        values["bind"] = (
            None if bind is None else _or_invalid(_address(ctx.key("bind"), bind, bind=True))
        )
    if raw.get("token_file") is not None:
        values["token_file"] = _or_invalid(_str(ctx.key("token_file"), raw["token_file"]))
    if raw.get("socket") is not None:
        values["socket"] = _or_invalid(_socket_path(ctx.key("socket"), raw["socket"]))
    return _build(AdminConfig, values)


def _socket_path(ctx: _Ctx, node: object) -> str | None:
    path = _str(ctx, node)
    if path is None:
        return None
    if not path.startswith("/"):
        ctx.error(f"expected an absolute path, got {path!r}")
        return None
    # sun_path holds 108 bytes, the terminating NUL included (unix(7)).
    if len(os.fsencode(path)) > 107:
        ctx.error("a unix socket path is at most 107 bytes long")
        return None
    return path


def _defaults(ctx: _Ctx, node: object) -> _Defaults:
    raw = _mapping(ctx, {} if node is None else node, _DEFAULTS_KEYS) or {}
    timeouts = _timeouts(ctx.key("timeouts"), raw.get("timeouts"))
    check: Mapping[str, Any] = {}
    if raw.get("check") is not None:
        check = _check_fields(ctx.key("check"), raw["check"]) or {}
    return _Defaults(
        _parse_fields(ctx, raw, _TUNABLE_FIELDS),
        timeouts,
        check,
        _parse_fields(ctx, raw, _HTTP_TUNABLE_FIELDS),
    )


def _timeouts(ctx: _Ctx, node: object) -> dict[str, Any]:
    if node is None:
        return {}
    raw = _mapping(ctx, node, _TIMEOUT_FIELDS)
    return {} if raw is None else _parse_fields(ctx, raw, _TIMEOUT_FIELDS)


def _listeners(
    ctx: _Ctx, node: object, defaults: _Defaults, binds: list[tuple[Address, str]]
) -> tuple[ListenerConfig, ...] | None:
    if node is None:
        ctx.error("required: at least one listener")
        return None
    if not isinstance(node, dict):
        ctx.error(f"expected a mapping of listener names to listeners, {_got(node)}")
        return None
    if not node:
        ctx.error("at least one listener is required")
        return None
    listeners: list[ListenerConfig] = []
    ok = True
    for name, body in node.items():
        at = ctx.key(_yaml_text(name))
        if not isinstance(name, str):
            at.error(f"listener names must be strings, {_got(name)}; quote it")
            ok = False
            continue
        if not _NAME.fullmatch(name):
            at.error("invalid listener name: use letters, digits, '_', '.' and '-'")
            ok = False
            continue
        listener = _listener(at, name, body, defaults, binds)
        if listener is None:
            ok = False
        else:
            listeners.append(listener)
    return tuple(listeners) if ok else None


def _listener(
    ctx: _Ctx, name: str, node: object, defaults: _Defaults, binds: list[tuple[Address, str]]
) -> ListenerConfig | None:
    raw = _mapping(ctx, node, _LISTENER_KEYS)
    if raw is None:
        return None
    values: dict[str, Any] = {**defaults.tunables, **_parse_fields(ctx, raw, _TUNABLE_FIELDS)}
    if values.get("tcp_keepalive") is False:
        values["tcp_keepalive"] = None
    if "freebind" in raw:
        values["freebind"] = _or_invalid(_bool(ctx.key("freebind"), raw["freebind"]))

    if "bind" in raw:
        values["bind"] = _or_invalid(_binds(ctx.key("bind"), raw["bind"], binds))
    else:
        ctx.key("bind").error('required: a list of "host:port" addresses')
        values["bind"] = _INVALID

    timeouts = {**defaults.timeouts, **_timeouts(ctx.key("timeouts"), raw.get("timeouts"))}
    values["timeouts"] = _or_invalid(_build(Timeouts, timeouts))

    # No `check` key (or null/false): never probed, whatever defaults.check says;
    # defaults.check only fills in the keys of the checks listeners do declare.
    if raw.get("check") not in (None, False):
        values["check"] = _or_invalid(_check(ctx.key("check"), raw["check"], defaults.check))

    if "servers" in raw:
        values["servers"] = _or_invalid(_servers(ctx.key("servers"), raw["servers"]))
    elif "pools" in raw and raw.get("default_pool", "default") != "default":
        values["servers"] = ()  # every server is in a named pool
    else:
        ctx.key("servers").error("required: a list of servers")
        values["servers"] = _INVALID
    if values.get("mode", "tcp") is not _INVALID:
        _http_listener(ctx, raw, values, defaults.http)
    return _build(ListenerConfig, {"name": name, **values})


def _binds(ctx: _Ctx, node: object, binds: list[tuple[Address, str]]) -> tuple[Address, ...] | None:
    if isinstance(node, str):  # a single address is a list of one
        items: list[tuple[_Ctx, object]] = [(ctx, node)]
    elif isinstance(node, list):
        if not node:
            ctx.error("must not be empty")
            return None
        items = [(ctx.index(i), item) for i, item in enumerate(node)]
    else:
        ctx.error(f'expected a list of "host:port" strings, {_got(node)}')
        return None
    addresses: list[Address] = []
    for at, item in items:
        address = _address(at, item, bind=True)
        if address is not None:
            addresses.append(address)
            binds.append((address, at.path))
    return tuple(addresses) if len(addresses) == len(items) else None


def _check_bind_conflicts(ctx: _Ctx, binds: list[tuple[Address, str]]) -> None:
    for i, (address, path) in enumerate(binds):
        for earlier, earlier_path in binds[:i]:
            if _overlap(address, earlier):
                clash = (
                    "is already bound" if address == earlier else f"conflicts with {earlier}, bound"
                )
                ctx.problems.append(f"{path}: {address} {clash} by {earlier_path}")
                break


def _servers(ctx: _Ctx, node: object) -> tuple[ServerConfig, ...] | None:
    if not isinstance(node, list):
        ctx.error(f"expected a list of servers, {_got(node)}")
        return None
    if not node:
        ctx.error("must not be empty")
        return None
    servers: list[ServerConfig] = []
    seen: dict[str, int] = {}
    ok = True
    for i, item in enumerate(node):
        at = ctx.index(i)
        raw = _mapping(at, item, _SERVER_FIELDS)
        if raw is None:
            ok = False
            continue
        values = _parse_fields(at, raw, _SERVER_FIELDS)
        for required in ("name", "address"):
            if required not in values:
                at.key(required).error("required")
                values[required] = _INVALID
        name = values["name"]
        if isinstance(name, str):
            if name in seen:
                at.key("name").error(f"duplicate server name {name!r} (also servers[{seen[name]}])")
                ok = False
            seen.setdefault(name, i)
        server = _build(ServerConfig, values)
        if server is None:
            ok = False
        else:
            servers.append(server)
    return tuple(servers) if ok else None
