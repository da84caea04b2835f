"""The domain's kinds of values: addresses, names, HTTP tokens, send/expect steps, pools.

Each is a `loadstone.config.schema.Value`: it reads a YAML node (reporting a bad
one at its path) and describes itself in JSON Schema. Those that produce a model
object take its class as an argument (`HostPort(Address)`), so that this module
needs nothing from `loadstone.config.model`, which declares its keys with them.
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Any, Final

from loadstone.config.schema import (
    INVALID,
    Ctx,
    Defs,
    Duration,
    JsonSchema,
    ListOf,
    Text,
    Value,
    got,
    read_mapping,
    suggest,
    yaml_text,
)
from loadstone.logtargets import parse_destination

NAME: Final = r"[A-Za-z0-9_.-]+"  # listener, server and pool names
TOKEN: Final = r"[!#$%&'*+.^_`|~0-9A-Za-z-]+"  # RFC 9110 token (header names, cookie values)
_UNSAFE = re.compile(r"[\x00-\x20\x7f]")  # would break the request line
_CR_LF_NUL = re.compile(r"[\r\n\x00]")

Name = Text(NAME, "invalid name {text!r}: use letters, digits, '_', '.' and '-'")
HeaderName = Text(TOKEN, "invalid header name {text!r}")
# RFC 6265 cookie-octets are wider, but a token is what HAProxy's `cookie`
# takes and it never needs quoting.
CookieToken = Text(TOKEN, "invalid cookie value {text!r}: use letters, digits and !#$%&'*+.^_`|~-")
EnvName = Text(r"[A-Za-z_][A-Za-z0-9_]*", "invalid environment variable name {text!r}")
RoutePath = Text(r"/[\s\S]*", "must start with '/', got {text!r}")


class RefinedText(Value):
    """A non-blank string that `refine` checks further (and may normalise)."""

    def parse(self, ctx: Ctx, node: object) -> Any:
        text = Text().parse(ctx, node)
        return INVALID if text is INVALID else self.refine(ctx, text)

    def refine(self, ctx: Ctx, text: str) -> Any:
        raise NotImplementedError


class LogDestination(RefinedText):
    """Where log lines go: stdout, stderr, syslog[:PATH], syslog+udp://HOST[:PORT],
    syslog+tcp://HOST[:PORT] or file:/PATH (loadstone.logtargets.parse_destination)."""

    def refine(self, ctx: Ctx, text: str) -> Any:
        try:
            parse_destination(text)
        except ValueError as err:
            return ctx.error(str(err))
        return text

    def json_schema(self, defs: Defs) -> JsonSchema:
        return {
            "type": "string",
            "pattern": r"^(stdout|stderr|syslog(:/.*)?|syslog\+(udp|tcp)://.+|file:/.+)$",
        }


class SocketPath(RefinedText):
    """An absolute path for a unix socket: sun_path holds 108 bytes, the NUL included."""

    def refine(self, ctx: Ctx, text: str) -> Any:
        if not text.startswith("/"):
            return ctx.error(f"expected an absolute path, got {text!r}")
        if len(os.fsencode(text)) > 107:
            return ctx.error("a unix socket path is at most 107 bytes long")
        return text

    def json_schema(self, defs: Defs) -> JsonSchema:
        return {"type": "string", "pattern": "^/", "maxLength": 107}


class FileMode(Value):
    """Permission bits written in octal as a string ('660', '0600'), as chmod and
    HAProxy's `mode` take them. Only a string: YAML reads 0660 as the number 432
    and 660 as six hundred sixty, so a bare number would be taken wrongly."""

    def parse(self, ctx: Ctx, node: object) -> Any:
        if not isinstance(node, str) or not re.fullmatch(r"0?[0-7]{3}", node.strip()):
            return ctx.error(f"expected octal permissions as a string like '660', {got(node)}")
        return node.strip().removeprefix("0") if len(node.strip()) == 4 else node.strip()

    def json_schema(self, defs: Defs) -> JsonSchema:
        return {"type": "string", "pattern": "^0?[0-7]{3}$"}


# --------------------------------------------------------------------------
# Addresses

_HOST_LABEL = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)")
WILDCARDS: Final = ("*", "")  # HAProxy's "all IPv4 addresses"; the binder maps them to 0.0.0.0


@dataclass(frozen=True, slots=True)
class HostPort(Value):
    """ "host:port": host is IPv4, [IPv6], a DNS name, or (bind only) * or empty."""

    make: Callable[[str, int], Any]  # the model's Address
    bind: bool = False

    def parse(self, ctx: Ctx, node: object) -> Any:
        if not isinstance(node, str):
            return ctx.error(f'expected a string "host:port" (quote it in YAML), {got(node)}')
        text = node.strip()
        if text.startswith("["):
            host, bracket, rest = text[1:].partition("]")
            if not bracket or not rest.startswith(":"):
                return ctx.error(f"expected [IPv6]:port, got {node!r}")
            port_text = rest[1:]
            try:
                ipaddress.IPv6Address(host)
            except ValueError:
                return ctx.error(f"invalid IPv6 address {host!r}")
        else:
            host, colon, port_text = text.rpartition(":")
            if not colon:
                return ctx.error(f"expected host:port, got {node!r} (the port is missing)")
            if ":" in host:
                return ctx.error(
                    f"an IPv6 address must be in brackets, e.g. [::1]:5000; got {node!r}"
                )
            problem = _host_problem(host, bind=self.bind)
            if problem:
                return ctx.error(problem)
        if not (port_text.isascii() and port_text.isdigit()):
            return ctx.error(f"port must be an integer 1-65535, got {port_text!r}")
        port = int(port_text)
        if not 1 <= port <= 65535:
            return ctx.error(f"port must be 1-65535, got {port}")
        return self.make(host, port)

    def json_schema(self, defs: Defs) -> JsonSchema:
        return {"type": "string", "pattern": r"^\s*(\[[^\]]+\]|[^:\[\]]*):[0-9]{1,5}\s*$"}


def _host_problem(host: str, *, bind: bool) -> str | None:
    if host in WILDCARDS:
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


def binds(make: Callable[[str, int], Any]) -> ListOf:
    """A listener's `bind`: a list of addresses, or one address as a list of one."""
    return ListOf(HostPort(make, bind=True), '"host:port" strings', single=(str,))


@dataclass(frozen=True, slots=True)
class Network(RefinedText):
    """An address or CIDR, stored as the network it names (`::1` -> `::1/128`)."""

    def refine(self, ctx: Ctx, text: str) -> Any:
        try:
            return str(ipaddress.ip_network(text, strict=False))
        except ValueError:
            return ctx.error(
                f"invalid network {text!r}: expected an address or CIDR, e.g. 127.0.0.0/8"
            )

    def json_schema(self, defs: Defs) -> JsonSchema:
        return {"type": "string", "pattern": r"^[0-9A-Fa-f:.]+(/[0-9]+)?$"}


# --------------------------------------------------------------------------
# HTTP

HTTP_METHODS: Final = ("GET", "HEAD", "OPTIONS", "POST", "PUT", "PATCH", "DELETE")


@dataclass(frozen=True, slots=True)
class HttpMethod(Value):
    def parse(self, ctx: Ctx, node: object) -> Any:
        if isinstance(node, str) and node.upper() in HTTP_METHODS and node not in HTTP_METHODS:
            return ctx.error(f"HTTP methods are case-sensitive: write {node.upper()!r}")
        if not isinstance(node, str) or node not in HTTP_METHODS:
            shown = f"got {node!r}" if isinstance(node, str) else got(node)
            hint = suggest(node, HTTP_METHODS) if isinstance(node, str) else ""
            return ctx.error(f"must be one of {', '.join(HTTP_METHODS)}; {shown}{hint}")
        return node

    def json_schema(self, defs: Defs) -> JsonSchema:
        return {"enum": list(HTTP_METHODS)}


@dataclass(frozen=True, slots=True)
class RequestText(RefinedText):
    """A check's path or Host: nothing that would break the request line; a path starts with /."""

    path: bool

    def refine(self, ctx: Ctx, text: str) -> Any:
        if self.path and not text.startswith("/"):
            return ctx.error(f"must start with '/', got {text!r}")
        if _UNSAFE.search(text):
            encode = " (percent-encode them)" if self.path else ""
            return ctx.error(f"must not contain spaces or control characters{encode}")
        return text

    def json_schema(self, defs: Defs) -> JsonSchema:
        pattern = "^/[^\\u0000-\\u0020\\u007f]*$" if self.path else "^[^\\u0000-\\u0020\\u007f]+$"
        return {"type": "string", "pattern": pattern}


@dataclass(frozen=True, slots=True)
class HeaderValue(Value):
    def parse(self, ctx: Ctx, node: object) -> Any:
        if not isinstance(node, str):
            return ctx.error(f"expected a string (quote it in YAML), {got(node)}")
        if _CR_LF_NUL.search(node):
            return ctx.error("must not contain CR, LF or NUL")
        try:
            node.encode("latin-1")
        except UnicodeEncodeError:
            return ctx.error("must be Latin-1 text (percent-encode other characters)")
        return node

    def json_schema(self, defs: Defs) -> JsonSchema:
        return {"type": "string", "pattern": "^[^\\r\\n\\u0000]*$"}


@dataclass(frozen=True, slots=True)
class HeaderMap(Value):
    """A check's extra request headers: {Name: value}, kept in the order written."""

    def parse(self, ctx: Ctx, node: object) -> Any:
        if not isinstance(node, dict):
            return ctx.error(f"expected a mapping of header names to strings, {got(node)}")
        headers: list[tuple[str, str]] = []
        ok = True
        for name, value in node.items():
            if not isinstance(name, str) or not re.fullmatch(TOKEN, name):
                ctx.key(yaml_text(name)).error("invalid header name")
                ok = False
            elif not isinstance(value, str):
                at = ctx.key(name)
                at.error(f"expected a string (quote it in YAML), {got(value)}")
                ok = False
            elif _CR_LF_NUL.search(value):
                ctx.key(name).error("must not contain CR, LF or NUL")
                ok = False
            else:
                headers.append((name, value))
        return tuple(headers) if ok else INVALID

    def json_schema(self, defs: Defs) -> JsonSchema:
        return {
            "type": "object",
            "propertyNames": {"pattern": f"^{TOKEN}$"},
            "additionalProperties": {"type": "string", "pattern": "^[^\\r\\n\\u0000]*$"},
        }


# Headers that carry the message framing or the connection's own state: the data
# path writes them itself, so a rule that changed them could desynchronise the
# two sides (request smuggling by configuration).
MANAGED_HEADERS: Final = frozenset(
    {"content-length", "transfer-encoding", "connection", "keep-alive", "upgrade", "te"}
)
_RULE_ACTIONS: Final = ("set", "add", "delete")


@dataclass(frozen=True, slots=True)
class HeaderRule(Value):
    """{set|add: Name, value: text} or {delete: Name}."""

    make: Callable[..., Any]  # the model's HeaderRule(action, name, value)

    def parse(self, ctx: Ctx, node: object) -> Any:
        raw = read_mapping(ctx, node, (*_RULE_ACTIONS, "value"))
        if raw is None:
            return INVALID
        actions = [action for action in _RULE_ACTIONS if action in raw]
        if len(actions) != 1:
            return ctx.error("a rule needs exactly one of set, add, delete (the header name)")
        action = actions[0]
        name = HeaderName.parse(ctx.key(action), raw[action])
        if name is INVALID:
            return INVALID
        if name.lower() in MANAGED_HEADERS:
            return ctx.key(action).error(
                f"{name} is managed by the proxy and cannot be changed by a rule"
            )
        if action == "delete":
            if "value" in raw:
                return ctx.key("value").error("not used by delete")
            return self.make("delete", name)
        if "value" not in raw:
            return ctx.key("value").error(f"required for {action}")
        value = HeaderValue().parse(ctx.key("value"), raw["value"])
        return INVALID if value is INVALID else self.make(action, name, value)

    def json_schema(self, defs: Defs) -> JsonSchema:
        name = HeaderName.json_schema(defs)
        return {
            "type": "object",
            "properties": {
                **{action: name for action in _RULE_ACTIONS},
                "value": HeaderValue().json_schema(defs),
            },
            "additionalProperties": False,
            "oneOf": [{"required": [action]} for action in _RULE_ACTIONS],
        }


def header_rules(make: Callable[..., Any]) -> ListOf:
    return ListOf(HeaderRule(make), "rules like {set: X-Name, value: text}", non_empty=False)


# --------------------------------------------------------------------------
# Checks


@dataclass(frozen=True, slots=True)
class Regex(RefinedText):
    """A regular expression; `binary`: it is matched against bytes read from a socket."""

    binary: bool = False

    def refine(self, ctx: Ctx, text: str) -> Any:
        try:
            re.compile(text.encode() if self.binary else text)
        except re.error as err:
            return ctx.error(f"invalid regular expression: {err}")
        return text

    def json_schema(self, defs: Defs) -> JsonSchema:
        return {"type": "string", "format": "regex"}


@dataclass(frozen=True, slots=True)
class OneOf(RefinedText):
    """A name from a fixed set that is not a Literal (the send/expect presets)."""

    names: Collection[str]
    what: str  # "preset"

    def refine(self, ctx: Ctx, text: str) -> Any:
        if text not in self.names:
            known = ", ".join(sorted(self.names))
            return ctx.error(f"unknown {self.what} {text!r}; known {self.what}s: {known}")
        return text

    def json_schema(self, defs: Defs) -> JsonSchema:
        return {"enum": sorted(self.names)}


_ESCAPES: Final = {"r": b"\r", "n": b"\n", "t": b"\t", "0": b"\0", "\\": b"\\"}


def unescape(text: str) -> bytes:
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


STEP_ACTIONS: Final = ("send", "send_hex", "expect", "expect_regex", "expect_hex")


@dataclass(frozen=True, slots=True)
class Step(Value):
    """One send/expect step: {send: text}, {expect_hex: 2b4f4b, timeout: 1s}..."""

    make: Callable[..., Any]  # the model's SendExpectStep

    def parse(self, ctx: Ctx, node: object) -> Any:
        raw = read_mapping(ctx, node, (*STEP_ACTIONS, "timeout"))
        if raw is None:
            return INVALID
        actions = [name for name in STEP_ACTIONS if name in raw]
        if not actions:
            return ctx.error(f"a step needs one of {', '.join(STEP_ACTIONS)}")
        for extra in actions[1:]:
            ctx.key(extra).error(f"cannot be combined with {actions[0]!r} in one step")
        action = actions[0]
        timeout = None
        if "timeout" in raw:
            if action.startswith("send"):
                return ctx.key("timeout").error("only valid on expect steps")
            timeout = Duration().parse(ctx.key("timeout"), raw["timeout"])
            if timeout is INVALID:
                return INVALID
        at = ctx.key(action)
        text = Text().parse(at, raw[action])
        if text is INVALID or len(actions) > 1:
            return INVALID
        try:
            if action == "expect_regex":
                re.compile(text.encode())  # matched against the bytes read, so compile as bytes
                return self.make("expect", regex=text, timeout=timeout)
            data = bytes.fromhex(text) if action.endswith("_hex") else unescape(text)
        except re.error as err:
            return at.error(f"invalid regular expression: {err}")
        except ValueError as err:
            return at.error(f"invalid hex: {err}" if action.endswith("_hex") else str(err))
        if action.startswith("send"):
            return self.make("send", data)
        return self.make("expect", data, timeout=timeout)

    def json_schema(self, defs: Defs) -> JsonSchema:
        text = {"type": "string", "minLength": 1}
        return {
            "type": "object",
            "properties": {
                **{name: text for name in STEP_ACTIONS},
                "timeout": Duration().json_schema(defs),
            },
            "additionalProperties": False,
            "oneOf": [{"required": [name]} for name in STEP_ACTIONS],
        }


@dataclass(frozen=True, slots=True)
class WholeSeconds(Value):
    """A duration the kernel takes in whole seconds (TCP_KEEPIDLE, TCP_KEEPINTVL)."""

    low: int
    high: int

    def parse(self, ctx: Ctx, node: object) -> Any:
        # Refuse what the kernel cannot do rather than round it silently.
        seconds = Duration().parse(ctx, node)
        if seconds is not INVALID and not (
            seconds.is_integer() and self.low <= seconds <= self.high
        ):
            return ctx.error(
                f"must be a whole number of seconds from {self.low}s to {self.high}s, got {node!r}"
            )
        return seconds

    def json_schema(self, defs: Defs) -> JsonSchema:
        return Duration().json_schema(defs)


# --------------------------------------------------------------------------
# Routing


_HOST_PATTERN = r"(\*\.)?[a-z0-9]([a-z0-9.-]*[a-z0-9])?|\[[0-9a-f:.]+\]"


@dataclass(frozen=True, slots=True)
class RouteHost(RefinedText):
    """A Host a route matches, stored lower case without a final dot."""

    def refine(self, ctx: Ctx, text: str) -> Any:
        host = text.lower().removesuffix(".")
        if not re.fullmatch(_HOST_PATTERN, host):
            return ctx.error(f"invalid host {text!r}: a name without port, or *.domain")
        return host

    def json_schema(self, defs: Defs) -> JsonSchema:
        return {"type": "string", "minLength": 1}


@dataclass(frozen=True, slots=True)
class PoolMap(Value):
    """`pools: {name: {balance: ..., servers: [...]}}` -> {name: (balance or None, servers)}.

    The listener turns these into its pools (a pool without `balance` takes the
    listener's) and its servers (each named after its pool)."""

    balance: Value
    servers: Value

    def parse(self, ctx: Ctx, node: object) -> Any:
        if not isinstance(node, dict) or not node:
            return ctx.error(f"expected a mapping of pool names to pools, {got(node)}")
        pools: dict[str, tuple[Any, Any]] = {}
        ok = True
        for name, body in node.items():
            at = ctx.key(yaml_text(name))
            if not isinstance(name, str) or not re.fullmatch(NAME, name):
                at.error("invalid pool name: use letters, digits, '_', '.' and '-'")
                ok = False
                continue
            if name == "default":
                at.error("'default' is the pool of the listener-level servers; choose another name")
                ok = False
                continue
            raw = read_mapping(at, body, ("balance", "servers"))
            if raw is None:
                ok = False
                continue
            balance = None
            if "balance" in raw:
                balance = self.balance.parse(at.key("balance"), raw["balance"])
                if balance is INVALID:
                    ok = False
                    continue
            if "servers" not in raw:
                at.key("servers").error("required: a list of servers")
                ok = False
                continue
            servers = self.servers.parse(at.key("servers"), raw["servers"])
            if servers is INVALID:
                ok = False
                continue
            pools[name] = (balance, servers)
        return pools if ok else INVALID

    def json_schema(self, defs: Defs) -> JsonSchema:
        return {
            "type": "object",
            "minProperties": 1,
            "propertyNames": {"pattern": f"^{NAME}$", "not": {"const": "default"}},
            "additionalProperties": {
                "type": "object",
                "properties": {
                    "balance": self.balance.json_schema(defs),
                    "servers": self.servers.json_schema(defs),
                },
                "required": ["servers"],
                "additionalProperties": False,
            },
        }


# The TLS 1.3 cipher suites OpenSSL implements (RFC 8446 names).
TLS13_SUITES: Final = (
    "TLS_AES_256_GCM_SHA384",
    "TLS_CHACHA20_POLY1305_SHA256",
    "TLS_AES_128_GCM_SHA256",
    "TLS_AES_128_CCM_SHA256",
    "TLS_AES_128_CCM_8_SHA256",
)


class SuiteList(RefinedText):
    """TLS 1.3 cipher suites, colon-separated as OpenSSL writes them."""

    def refine(self, ctx: Ctx, text: str) -> Any:
        unknown = [s for s in text.split(":") if s not in TLS13_SUITES]
        if unknown:
            return ctx.error(
                f"unknown TLS 1.3 cipher suite {unknown[0]!r}; known: {', '.join(TLS13_SUITES)}"
            )
        return text

    def json_schema(self, defs: Defs) -> JsonSchema:
        return {
            "type": "string",
            "pattern": rf"^(?:{'|'.join(TLS13_SUITES)})(?::(?:{'|'.join(TLS13_SUITES)}))*$",
        }


# An ALPN protocol id: 1-255 printable bytes (RFC 7301), e.g. h2, http/1.1.
AlpnId = Text(r"[!-~]{1,255}", "invalid ALPN protocol name {text!r}")


@dataclass(frozen=True, slots=True)
class IntChoice(Value):
    """One of a few integers (a redirect's status code)."""

    choices: tuple[int, ...]

    def parse(self, ctx: Ctx, node: object) -> Any:
        if isinstance(node, bool) or node not in self.choices:
            allowed = ", ".join(map(str, self.choices))
            return ctx.error(f"must be one of {allowed}, got {node!r}")
        return node

    def json_schema(self, defs: Defs) -> JsonSchema:
        return {"enum": list(self.choices)}
