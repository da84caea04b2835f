"""One HAProxy proxy as HAProxy builds it: the `defaults` copied, then each directive applied.

`ProxyState` is the record; `apply_directive` looks a directive up in the
keyword table and runs its handler (one per TRANSLATED entry of `keywords`,
registered with `@_handles`), or reports why it is not translated. Handlers
only record what the directive says; what it amounts to with the others
(HAProxy's fallbacks, patterns, routing) is `translate`'s business.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from loadstone.importers.haproxy import keywords
from loadstone.importers.haproxy.conditions import Untranslatable, condition, split_condition
from loadstone.importers.haproxy.keywords import Entry, Kind
from loadstone.importers.haproxy.parser import Directive, Location
from loadstone.importers.haproxy.report import Report, TranslationError

__all__ = [
    "HANDLERS",
    "ProxyState",
    "Server",
    "apply_directive",
    "format_duration",
    "parse_haproxy_time",
    "parse_int",
    "parse_time",
]

_TIME = re.compile(r"(\d+(?:\.\d+)?)(us|ms|s|m|h|d)?")
_UNIT_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0, "h": 3600000.0, "d": 86400000.0}


def parse_haproxy_time(text: str) -> float | None:
    """HAProxy's time format (milliseconds unless a unit is given) -> milliseconds."""
    m = _TIME.fullmatch(text)
    if not m:
        return None
    return float(m.group(1)) * _UNIT_MS[m.group(2) or "ms"]


def format_duration(ms: float) -> str:
    """Milliseconds -> loadstone's duration string, in the largest whole unit."""
    for unit, size in (("h", 3600000), ("m", 60000), ("s", 1000)):
        if ms >= size and ms % size == 0:
            return f"{int(ms // size)}{unit}"
    if ms == int(ms):
        return f"{int(ms)}ms"
    return f"{round(ms * 1000)}us"


@dataclass
class Server:
    name: str
    host: str
    port: int
    location: Location
    options: dict[str, str]  # server option -> its argument ("" for flags), default-server first


@dataclass
class ProxyState:
    """One HAProxy proxy (or defaults section) after inheritance; written by the handlers."""

    kind: str
    name: str
    location: Location
    mode: str = "tcp"
    balance: str | None = None
    timeouts_ms: dict[str, float] = field(default_factory=dict)
    zero_timeouts: set[str] = field(default_factory=set)  # `timeout X 0`: no limit
    maxconn: int | None = None
    backlog: int | None = None
    retries: int | None = None
    redispatch: bool | None = None
    tcpka: bool = False
    tcpka_params: dict[str, str] = field(default_factory=dict)
    check_type: str | None = None  # httpchk | mysql | tcp-check | redis
    check_location: Location | None = None
    http_method: str = "OPTIONS"  # HAProxy's httpchk default request is OPTIONS /
    http_path: str = "/"
    http_host: str | None = None
    http_headers: dict[str, str] = field(default_factory=dict)
    http_check_rules: list[Directive] = field(default_factory=list)
    expect_status: list[int] | None = None
    mysql_user: str | None = None
    tcp_steps: list[dict[str, str]] = field(default_factory=list)
    tcp_check_port: int | None = None
    forwardfor: dict[str, Any] | None = None
    forwarded_port: bool = False
    log: str | None = None
    cookie: dict[str, Any] | None = None
    stick_on_dst: bool = False
    stick_directives: list[Directive] = field(default_factory=list)
    request_headers: list[dict[str, str]] = field(default_factory=list)
    # http-request deny/allow/redirect and conditional header rules, in order,
    # each with its directive (reported as without effect in mode tcp).
    request_rules: list[tuple[Directive, dict[str, Any]]] = field(default_factory=list)
    response_headers: list[dict[str, str]] = field(default_factory=list)
    rewrite_location: bool = False
    default_server: dict[str, str] = field(default_factory=dict)
    binds: list[str] = field(default_factory=list)
    freebind: bool = False
    accept_proxy: bool = False  # a bind line with accept-proxy
    transparent: bool = False  # a bind line with transparent (IP_TRANSPARENT)
    defer_accept: bool = False  # a bind line with defer-accept (TCP_DEFER_ACCEPT)
    tls_binds: int = 0  # bind lines that terminate TLS
    # Each TLS bind line: its directive, addresses and TLS options (name -> value).
    tls_bind_lines: list[tuple[Directive, list[str], dict[str, str]]] = field(default_factory=list)
    monitor_uri: str | None = None
    # `http-request track-sc0 src` and the periods of the proxy's stick-table
    # counters ("http_req_rate" -> "10s"): the rate conditions of request rules.
    track_src: Directive | None = None
    rate_periods: dict[str, str] = field(default_factory=dict)
    rate_table_used: bool = False
    # set-header X-Forwarded-Proto https if { ssl_fc } (and/or http if !{ ssl_fc })
    proto_by_tls: list[Directive] = field(default_factory=list)
    # redirect scheme https if !{ ssl_fc }: answer every plain request with it
    tls_redirect: tuple[Directive, int] | None = None
    servers: list[Server] = field(default_factory=list)
    default_backend: tuple[str, Location] | None = None
    use_backends: list[Directive] = field(default_factory=list)
    acls: dict[str, list[Directive]] = field(default_factory=dict)
    used_acls: set[str] = field(default_factory=set)
    stats_page: bool = False  # HAProxy's stats page is served here

    def inherit(self, kind: str, name: str, location: Location) -> ProxyState:
        child = copy.deepcopy(self)
        child.kind, child.name, child.location = kind, name, location
        return child


def apply_directive(report: Report, state: ProxyState, directive: Directive) -> None:
    """Write one directive of a proxy or defaults section into `state`, or report it."""
    key, entry = keywords.lookup(keywords.PROXY_KEYWORDS, directive.words)
    if key == "stats":
        state.stats_page = True
    if entry.kind is not Kind.TRANSLATED:
        if entry.kind is Kind.UNKNOWN and not directive.indented:
            raise TranslationError(
                directive.location, f"unknown section or keyword '{directive.keyword}'"
            )
        report.note(directive, entry)
        return
    handler = HANDLERS[key]
    negated = directive.words[0] == "no" and key != "no log"
    if negated and key not in _NEGATABLE:
        report.unsupported(directive, "the 'no' form of this keyword is not translated")
        return
    if directive.words[0] == "default":
        report.unsupported(directive, "the 'default' form of this keyword is not translated")
        return
    handler(report, state, directive, negated)


# Argument helpers: a bad value is a file HAProxy refuses.
def parse_int(d: Directive, args: tuple[str, ...], lo: int, hi: int, i: int = 0) -> int:
    try:
        value = int(args[i])
    except (IndexError, ValueError):
        raise TranslationError(d.location, f"'{d.keyword}' expects an integer") from None
    if not lo <= value <= hi:
        raise TranslationError(d.location, f"'{d.keyword}' must be {lo}-{hi}, got {value}")
    return value


def parse_time(d: Directive, args: tuple[str, ...], i: int = 0) -> float:
    ms = parse_haproxy_time(args[i]) if len(args) > i else None
    if ms is None or ms <= 0:
        raise TranslationError(d.location, f"'{d.text}': expects a time")
    return ms


# -- handlers: one per TRANSLATED entry of keywords.PROXY_KEYWORDS ----------------------

Handler = Callable[[Report, ProxyState, Directive, bool], None]
HANDLERS: dict[str, Handler] = {}


def _handles(*keys: str) -> Callable[[Handler], Handler]:
    def register(fn: Handler) -> Handler:
        for key in keys:
            HANDLERS[key] = fn
        return fn

    return register


# Keywords whose `no` form the handlers understand (`no option redispatch`).
_NEGATABLE = frozenset(
    {
        "option redispatch",
        "option tcpka",
        "option clitcpka",
        "option srvtcpka",
        "option forwardfor",
        "option dontlog-normal",
    }
)


def _need(d: Directive, n: int) -> None:
    if len(d.args) < n:
        raise TranslationError(d.location, f"'{d.text}': missing argument")


@_handles("mode")
def _mode(r: Report, s: ProxyState, d: Directive, negated: bool) -> None:
    _need(d, 1)
    if d.args[0] not in ("tcp", "http"):
        r.unsupported(d, f"mode {d.args[0]}: loadstone has tcp and http")
        return
    s.mode = d.args[0]


_BALANCE = {
    "roundrobin": "roundrobin",
    "static-rr": "roundrobin",
    "leastconn": "leastconn",
    "source": "source",
    "first": "first",
}


@_handles("balance")
def _balance(r: Report, s: ProxyState, d: Directive, negated: bool) -> None:
    _need(d, 1)
    algo = d.args[0]
    if algo in _BALANCE:
        s.balance = _BALANCE[algo]
        if algo == "static-rr":
            r.note(d, Entry(Kind.NO_EFFECT, "translated as roundrobin (weights apply the same)"))
    else:
        r.unsupported(d, f"balance {algo} has no loadstone equivalent; roundrobin is used")


@_handles("bind")
def _bind(r: Report, s: ProxyState, d: Directive, negated: bool) -> None:
    if s.kind in ("defaults", "backend"):
        raise TranslationError(d.location, f"'bind' is not allowed in a {s.kind} section")
    _need(d, 1)
    if "defer-accept" in d.args[1:]:
        s.defer_accept = True  # a TLS bind line's too: its client speaks first
    if "ssl" in d.args[1:]:
        # Bound with TLS if every bind of the frontend is (translate.listener);
        # serving plaintext where HAProxy terminated TLS would be wrong.
        addresses = [a for a in map(_bind_address, d.args[0].split(",")) if a is not None]
        s.tls_bind_lines.append((d, addresses, _tls_bind_options(r, d)))
        s.tls_binds += 1
        return
    for spec in d.args[0].split(","):
        address = _bind_address(spec)
        if address is None:
            r.unsupported(
                d,
                f"bind address '{spec}' (unix sockets, port ranges) not supported",
                what=f"bind {spec}",
            )
            continue
        s.binds.append(address)
    i = 1
    while i < len(d.args):
        name = d.args[i]
        option = keywords.BIND_OPTIONS.get(name)
        if option is None:
            r.note(d, Entry(Kind.UNKNOWN, "unknown bind option"), what=f"bind ... {name}")
            i += 1
            continue
        value = d.args[i + 1 : i + 1 + option.nargs]
        what = " ".join(("bind ...", name, *value))
        if name == "accept-proxy":
            s.accept_proxy = True
        elif name == "transparent":
            # IP_TRANSPARENT, and IP_FREEBIND as earlier imports wrote (both let
            # a VIP held by another node be bound).
            s.transparent = s.freebind = True
        elif name == "defer-accept":
            pass  # s.defer_accept, above
        elif option.entry.kind is Kind.TRANSLATED:
            s.freebind = True
        else:
            r.note(d, option.entry, what=what)
        i += 1 + option.nargs


# TLS options of a bind line loadstone's `tls` takes; the others are reported.
_TLS_BIND_TAKEN = frozenset({"ssl", "crt", "alpn", "ca-file", "verify", "ciphers",
                             "ciphersuites", "ssl-min-ver"})  # fmt: skip
# Versions loadstone refuses anyway (its oldest is TLS 1.2): turning them off is a no-op.
_TLS_OLD_OFF = frozenset({"no-sslv3", "no-tlsv10", "no-tlsv11", "prefer-client-ciphers"})


def _tls_bind_options(r: Report, d: Directive) -> dict[str, str]:
    options: dict[str, str] = {}
    i = 1
    while i < len(d.args):
        name = d.args[i]
        option = keywords.BIND_OPTIONS.get(name)
        nargs = option.nargs if option is not None else 0
        value = d.args[i + 1 : i + 1 + nargs]
        if name in _TLS_BIND_TAKEN:
            if name == "crt" and name in options:
                options[name] += "\n" + value[0]  # several certificates, chosen by SNI
            else:
                options[name] = value[0] if value else ""
        elif name in _TLS_OLD_OFF:
            r.note(
                d,
                Entry(Kind.NO_EFFECT, "loadstone accepts TLS 1.2 and 1.3 only"),
                what=f"bind ... {name}",
            )
        elif (
            option is not None
            and option.entry.kind is not Kind.TRANSLATED
            and option.entry.kind is not Kind.TLS
        ):
            r.note(d, option.entry, what=" ".join(("bind ...", name, *value)))
        elif name not in ("transparent", "freebind", "accept-proxy", "defer-accept"):
            r.note(
                d,
                Entry(Kind.UNSUPPORTED, "TLS bind option not translated"),
                what=" ".join(("bind ...", name, *value)),
            )
        i += 1 + nargs
    return options


def _bind_address(spec: str) -> str | None:
    for prefix in ("ipv4@", "ipv6@", "tcp@", "tcp4@", "tcp6@"):
        if spec.startswith(prefix):
            spec = spec[len(prefix) :]
    if spec.startswith("[") and "]:" in spec:
        host, port = spec[1:].split("]:", 1)
    elif ":" in spec:
        host, port = spec.rsplit(":", 1)
    else:
        return None
    if not port.isdigit():
        return None
    if host in ("", "*", "0.0.0.0"):
        return f"*:{port}"
    if ":" in host:
        return f"[{host}]:{port}" if host != "::" else f"[::]:{port}"
    return f"{host}:{port}"


_SERVER_INTEGERS = {"weight": (0, 256), "maxconn": (1, 10_000_000), "rise": (1, 1000),
                    "fall": (1, 1000), "port": (1, 65535)}  # fmt: skip


def _check_option_value(d: Directive, name: str, value: str) -> None:
    """Values HAProxy would refuse are errors here too (and never reach int() later)."""
    if name in ("inter", "fastinter", "downinter"):
        ms = parse_haproxy_time(value)
        if ms is None or ms <= 0:
            raise TranslationError(d.location, f"'{name} {value}': expects a time")
    elif name in _SERVER_INTEGERS:
        lo, hi = _SERVER_INTEGERS[name]
        if not value.isdigit() or not lo <= int(value) <= hi:
            raise TranslationError(d.location, f"'{name} {value}': expects an integer {lo}-{hi}")


def _server_options(r: Report, d: Directive, args: tuple[str, ...]) -> dict[str, str]:
    options: dict[str, str] = {}
    i = 0
    while i < len(args):
        name = args[i]
        option = keywords.SERVER_OPTIONS.get(name)
        if option is None:
            r.note(d, Entry(Kind.UNKNOWN, "unknown server option"), what=f"{d.keyword} ... {name}")
            i += 1
            continue
        value = args[i + 1 : i + 1 + option.nargs]
        if len(value) < option.nargs:
            raise TranslationError(d.location, f"server option '{name}' expects a value")
        if option.entry.kind is Kind.TRANSLATED:
            if name == "no-check":
                options.pop("check", None)
            elif name == "no-backup":
                options.pop("backup", None)
            elif name == "on-marked-down" and value[0] != "shutdown-sessions":
                r.unsupported(d, "only shutdown-sessions", what=f"on-marked-down {value[0]}")
            else:
                options[name] = value[0] if value else ""
            _check_option_value(d, name, value[0] if value else "")
        else:
            r.note(d, option.entry, what=" ".join((f"{d.keyword} ...", name, *value)))
        i += 1 + option.nargs
    return options


@_handles("default-server")
def _default_server(r: Report, s: ProxyState, d: Directive, negated: bool) -> None:
    s.default_server.update(_server_options(r, d, d.args))


@_handles("server")
def _server(r: Report, s: ProxyState, d: Directive, negated: bool) -> None:
    if s.kind in ("defaults", "frontend"):
        raise TranslationError(d.location, f"'server' is not allowed in a {s.kind} section")
    if len(d.args) < 2:
        raise TranslationError(d.location, "server without an address")
    name, spec = d.args[0], d.args[1]
    hostport = _server_address(spec)
    if hostport is None:
        raise TranslationError(d.location, f"server {name}: cannot use address '{spec}'")
    host, port = hostport
    if port is None:
        r.unsupported(
            d,
            "a server without a port takes the client's port in HAProxy; "
            "loadstone needs a port (the bind port is used)",
            what=f"server {name} {spec}",
        )
        port = int(s.binds[0].rsplit(":", 1)[1]) if s.binds else 0
        if not port:
            raise TranslationError(d.location, f"server {name}: no port")
    options = {**s.default_server, **_server_options(r, d, d.args[2:])}
    if any(x.name == name for x in s.servers):
        raise TranslationError(d.location, f"server {name} defined twice in {s.name}")
    s.servers.append(Server(name, host, port, d.location, options))


def _server_address(spec: str) -> tuple[str, int | None] | None:
    for prefix in ("ipv4@", "ipv6@"):
        if spec.startswith(prefix):
            spec = spec[len(prefix) :]
    if "@" in spec or spec.startswith("/"):
        return None
    if spec.startswith("["):
        host, _, rest = spec[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else ""
    elif spec.count(":") > 1:
        host, _, port = spec.rpartition(":")
    elif ":" in spec:
        host, _, port = spec.partition(":")
    else:
        host, port = spec, ""
    if not host:
        return None
    if not port:
        return host, None
    if not port.isdigit() or not 1 <= int(port) <= 65535:
        return None
    return host, int(port)


@_handles("default_backend")
def _default_backend(r: Report, s: ProxyState, d: Directive, negated: bool) -> None:
    _need(d, 1)
    s.default_backend = (d.args[0], d.location)


@_handles("use_backend")
def _use_backend(r: Report, s: ProxyState, d: Directive, negated: bool) -> None:
    _need(d, 1)
    s.use_backends.append(d)


@_handles("acl")
def _acl(r: Report, s: ProxyState, d: Directive, negated: bool) -> None:
    _need(d, 2)
    s.acls.setdefault(d.args[0], []).append(d)


@_handles("maxconn", "backlog", "retries")
def _number(r: Report, s: ProxyState, d: Directive, negated: bool) -> None:
    hi = 100 if d.keyword == "retries" else 10_000_000
    lo = 0 if d.keyword == "retries" else 1
    setattr(s, d.keyword, parse_int(d, d.args, lo, hi))


@_handles("option redispatch", "redispatch")
def _redispatch(r: Report, s: ProxyState, d: Directive, negated: bool) -> None:
    s.redispatch = not negated


_TIMEOUT_ALIASES = {"contimeout": "connect", "clitimeout": "client", "srvtimeout": "server"}


@_handles(
    *(
        f"timeout {k}"
        for k in (
            "connect",
            "client",
            "server",
            "check",
            "queue",
            "tunnel",
            "http-request",
            "http-keep-alive",
        )
    ),
    *_TIMEOUT_ALIASES,
)
def _timeout(r: Report, s: ProxyState, d: Directive, negated: bool) -> None:
    if d.keyword in _TIMEOUT_ALIASES:
        name, args = _TIMEOUT_ALIASES[d.keyword], d.args
        r.note(d, Entry(Kind.NO_EFFECT, f"removed from HAProxy 2.1; translated as timeout {name}"))
    else:
        name, args = d.args[0], d.args[1:]
    if args and parse_haproxy_time(args[0]) == 0:
        # 0 means "no timeout" to HAProxy; loadstone always has one.
        s.timeouts_ms.pop(name, None)
        s.zero_timeouts.add(name)
        return
    s.zero_timeouts.discard(name)
    s.timeouts_ms[name] = parse_time(d, args)


@_handles("option tcpka", "option clitcpka", "option srvtcpka")
def _tcpka(r: Report, s: ProxyState, d: Directive, negated: bool) -> None:
    s.tcpka = not negated


@_handles(*(f"{side}tcpka-{p}" for side in ("cli", "srv") for p in ("idle", "intvl", "cnt")))
def _tcpka_param(r: Report, s: ProxyState, d: Directive, negated: bool) -> None:
    _need(d, 1)
    s.tcpka_params[d.keyword] = d.args[0]


_HTTP_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "POST", "PUT", "PATCH", "DELETE"})


@_handles("option httpchk")
def _httpchk(r: Report, s: ProxyState, d: Directive, negated: bool) -> None:
    s.check_type, s.check_location = "httpchk", d.location
    args = d.args[1:]
    if len(args) == 1:  # `option httpchk <uri>`
        s.http_method, s.http_path = "OPTIONS", args[0]
    elif len(args) >= 2:
        s.http_method, s.http_path = args[0], args[1]
        if len(args) > 2:
            # `HTTP/1.0\r\nHost:\ name`: the old way of sending a Host header
            version = args[2]
            m = re.search(r"\r\nHost:\s*(\S+)", version, re.IGNORECASE)
            if m:
                s.http_host = m.group(1)
    if s.http_method not in _HTTP_METHODS:
        r.unsupported(d, f"check method {s.http_method}: loadstone's http check sends GET instead")
        s.http_method = "GET"


@_handles("http-check send")
def _http_check_send(r: Report, s: ProxyState, d: Directive, negated: bool) -> None:
    s.http_check_rules.append(d)
    args = list(d.args[1:])
    while args:
        word = args.pop(0)
        if word == "meth" and args:
            s.http_method = args.pop(0)
        elif word == "uri" and args:
            s.http_path = args.pop(0)
        elif word == "hdr" and len(args) >= 2:
            name, value = args.pop(0), args.pop(0)
            if name.lower() == "host":
                s.http_host = value
            else:
                s.http_headers[name] = value
        elif word == "ver" and args:
            args.pop(0)
        else:
            r.unsupported(
                d, f"http-check send {word}: not translated", what=f"http-check send {word}"
            )
            return


@_handles("http-check expect")
def _http_check_expect(r: Report, s: ProxyState, d: Directive, negated: bool) -> None:
    s.http_check_rules.append(d)
    args = [a for a in d.args[1:] if a != "!"]
    if len(args) >= 2 and args[0] == "status":
        statuses: list[int] = []
        for part in args[1].split(","):
            lo, _, hi = part.partition("-")
            if not lo.isdigit() or (hi and not hi.isdigit()):
                r.unsupported(d, "status list not understood")
                return
            statuses.extend(range(int(lo), int(hi or lo) + 1))
        s.expect_status = statuses
    elif (
        len(args) >= 2 and args[0] == "rstatus" and re.fullmatch(r"\^?\(?([0-9|]+)\)?\$?", args[1])
    ):
        digits = re.findall(r"\d{3}", args[1])
        s.expect_status = [int(x) for x in digits]
    else:
        r.unsupported(d, "loadstone's http check looks at the status code only")


@_handles("option mysql-check")
def _mysql_check(r: Report, s: ProxyState, d: Directive, negated: bool) -> None:
    s.check_type, s.check_location = "mysql", d.location
    args = d.args[1:]
    s.mysql_user = args[1] if len(args) >= 2 and args[0] == "user" else None


@_handles("option tcp-check")
def _tcp_check(r: Report, s: ProxyState, d: Directive, negated: bool) -> None:
    s.check_type, s.check_location = "tcp-check", d.location
    s.tcp_steps = []


@_handles("option redis-check")
def _redis_check(r: Report, s: ProxyState, d: Directive, negated: bool) -> None:
    s.check_type, s.check_location = "redis", d.location
    s.tcp_steps = [{"send": "PING\r\n"}, {"expect": "+PONG"}]


@_handles("tcp-check send", "tcp-check send-binary", "tcp-check expect", "tcp-check connect")
def _tcp_check_step(r: Report, s: ProxyState, d: Directive, negated: bool) -> None:
    action, args = d.args[0], d.args[1:]
    if action == "connect":
        if len(args) == 2 and args[0] == "port" and args[1].isdigit() and not s.tcp_steps:
            s.tcp_check_port = int(args[1])
        elif args:
            r.unsupported(d, "only 'tcp-check connect [port N]' as the first rule")
        return
    if action == "send" and args:
        s.tcp_steps.append({"send": args[0]})
    elif action == "send-binary" and args:
        s.tcp_steps.append({"send_hex": args[0]})
    elif action == "expect" and len(args) >= 2 and args[0] in ("string", "rstring", "binary"):
        key = {"string": "expect", "rstring": "expect_regex", "binary": "expect_hex"}[args[0]]
        s.tcp_steps.append({key: args[1]})
    else:
        r.unsupported(
            d, "loadstone's send-expect steps: send, send-binary, expect string/rstring/binary"
        )


@_handles("option forwardfor")
def _forwardfor(r: Report, s: ProxyState, d: Directive, negated: bool) -> None:
    if negated:
        s.forwardfor = None
        return
    value: dict[str, Any] = {}
    args = list(d.args[1:])
    while args:
        word = args.pop(0)
        if word == "except" and args:
            value["except"] = [args.pop(0)]
        elif word == "header" and args:
            value["header"] = args.pop(0)
        elif word == "if-none":
            r.unsupported(d, "loadstone always adds the header", what="option forwardfor if-none")
        else:
            r.unsupported(d, f"option forwardfor {word}: not understood")
    s.forwardfor = value


@_handles("option dontlog-normal")
def _dontlog_normal(r: Report, s: ProxyState, d: Directive, negated: bool) -> None:
    s.log = "all" if negated else "errors"


@_handles("no log")
def _no_log(r: Report, s: ProxyState, d: Directive, negated: bool) -> None:
    s.log = "none"


_HEADER_ACTIONS = {"set-header": "set", "add-header": "add", "del-header": "delete"}


def _header_rule(
    r: Report, d: Directive, action: str, args: tuple[str, ...]
) -> dict[str, str] | None:
    """An unconditional, constant header rule, or None (reported)."""
    if any(word in ("if", "unless") for word in args):
        if "ssl_fc" in " ".join(args):
            r.note(d, keywords.Entry(Kind.TLS, "not yet supported by loadstone (TLS)"))
        else:
            r.note(
                d,
                keywords.Entry(
                    Kind.NOT_YET, "not yet supported by loadstone (conditional http-request rules)"
                ),
            )
        return None
    rule_action = _HEADER_ACTIONS[action]
    if rule_action == "delete":
        _need(d, 2)
        return {"delete": args[0]}
    if len(args) < 2 or "%[" in args[1]:
        r.note(
            d,
            keywords.Entry(
                Kind.NOT_YET, "not yet supported by loadstone (header values computed from samples)"
            ),
        )
        return None
    return {rule_action: args[0], "value": args[1]}


@_handles("monitor-uri")
def _monitor_uri(r: Report, s: ProxyState, d: Directive, negated: bool) -> None:
    _need(d, 1)
    s.monitor_uri = d.args[0]


_BY_TLS = {("https", ("{", "ssl_fc", "}")), ("http", ("!{", "ssl_fc", "}"))}


@_handles("http-request set-header", "http-request add-header", "http-request del-header")
def _request_header(r: Report, s: ProxyState, d: Directive, negated: bool) -> None:
    action, args = d.args[0], d.args[1:]
    if (
        action == "set-header"
        and len(args) == 6
        and args[0].lower() == "x-forwarded-proto"
        and args[2] == "if"
        and (args[1], tuple(args[3:])) in _BY_TLS
    ):
        s.proto_by_tls.append(d)  # forwarded_proto: auto (translate)
        return
    if (
        action == "set-header"
        and args[:2] == ("X-Forwarded-Port", "%[dst_port]")
        and len(args) == 2
    ):
        s.forwarded_port = True
        return
    if any(word in ("if", "unless") for word in args) and "ssl_fc" not in args:
        # A conditional header rule: one of the request rules, kept in their order.
        name = args[0] if args else ""
        if action == "del-header":
            _conditional_rule(r, s, d, {"del_header": name}, args[1:])
        elif action == "set-header" and len(args) > 2 and "%[" not in args[1]:
            _conditional_rule(r, s, d, {"set_header": {"name": name, "value": args[1]}}, args[2:])
        else:
            _header_rule(r, d, action, args)  # reports why not
        return
    rule = _header_rule(r, d, action, args)
    if rule is not None:
        s.request_headers.append(rule)


# HAProxy's http-request deny answers 403 unless deny_status says otherwise.
_DENY_STATUSES = frozenset(
    (200, 400, 401, 403, 404, 405, 407, 408, 410, 413, 425, 429, 500, 501, 502, 503, 504)
)
_REDIRECT_CODES = frozenset(("301", "302", "303", "307", "308"))


@_handles("http-request deny", "http-request allow", "http-request redirect", "redirect")
def _request_rule(r: Report, s: ProxyState, d: Directive, negated: bool) -> None:
    """http-request deny|allow|redirect [...] [if|unless COND], and the old `redirect`."""
    if d.keyword == "redirect":
        action, words = "redirect", d.args
    else:
        _need(d, 1)
        action, words = d.args[0], d.args[1:]
    before, keyword, cond = split_condition(words)
    if (
        action == "redirect"
        and before[:2] == ["scheme", "https"]
        and keyword == "if"
        and cond in (["!{", "ssl_fc", "}"], ["!", "{", "ssl_fc", "}"])
    ):
        # Every plain request goes to https: the listener's `redirect` (translate
        # checks that the frontend's binds are plain ones).
        code = 302
        if before[2:3] == ["code"] and len(before) == 4 and before[3] in _REDIRECT_CODES:
            code = int(before[3])
        elif before[2:]:
            r.unsupported(d, "redirect options other than code are not translated")
            return
        s.tls_redirect = (d, code)
        return
    rule: dict[str, Any]
    if action == "allow" and not before:
        rule = {"allow": True}
    elif action == "deny":
        status = 403
        if before[:1] == ["deny_status"] and len(before) == 2 and before[1].isdigit():
            status = int(before[1])
        elif before:
            r.unsupported(d, "deny options other than deny_status are not translated")
            return
        if status not in _DENY_STATUSES:
            r.unsupported(d, f"deny_status {status} is not one loadstone answers with")
            return
        rule = {"deny": status}
    elif (
        action == "redirect" and len(before) >= 2 and before[0] in ("scheme", "location", "prefix")
    ):
        target: dict[str, Any] = {before[0]: before[1]}
        options = before[2:]
        if options[:1] == ["code"] and len(options) == 2 and options[1] in _REDIRECT_CODES:
            target["code"] = int(options[1])
        elif options:
            r.unsupported(d, "redirect options other than code are not translated")
            return
        if before[0] == "scheme" and before[1] not in ("http", "https"):
            r.unsupported(d, f"redirect scheme {before[1]} is not translated")
            return
        rule = {"redirect": target}
    else:
        r.unsupported(d, f"this form of {action} is not translated")
        return
    _conditional_rule(r, s, d, rule, words[len(before) :])


def _conditional_rule(
    r: Report, s: ProxyState, d: Directive, rule: dict[str, Any], words: tuple[str, ...] | list[str]
) -> None:
    """`rule` under the HAProxy condition `words` ("if ..."/"unless ...", or none)."""
    _, keyword, cond = split_condition(list(words))
    if keyword is not None:
        try:
            rates = s.rate_periods if s.track_src is not None else {}
            when, unless = condition(keyword, cond, s.acls, s.used_acls, rates)
            if any("_rate" in k for c in (when or {}, unless or {}) for k in c):
                s.rate_table_used = True
        except Untranslatable as exc:
            if exc.kind == "ssl_fc":
                r.note(d, keywords.Entry(Kind.TLS, "not yet supported by loadstone (TLS)"))
            else:
                r.unsupported(d, f"condition not translated: {exc.reason}")
            return
        if when:
            rule["if"] = when
        if unless:
            rule["unless"] = unless
    s.request_rules.append((d, rule))


@_handles("http-response set-header", "http-response add-header", "http-response del-header")
def _response_header(r: Report, s: ProxyState, d: Directive, negated: bool) -> None:
    rule = _header_rule(r, d, d.args[0], d.args[1:])
    if rule is not None:
        s.response_headers.append(rule)


@_handles("reqadd", "rspadd")
def _removed_add(r: Report, s: ProxyState, d: Directive, negated: bool) -> None:
    _need(d, 1)
    name, sep, value = d.args[0].partition(":")
    family = "http-request" if d.keyword == "reqadd" else "http-response"
    if not sep or len(d.args) > 1:
        r.note(
            d,
            Entry(
                Kind.REMOVED,
                f"removed from HAProxy 2.1 ({family} add-header); "
                "the condition is not yet supported by loadstone",
            ),
        )
        return
    rule = {"add": name.strip(), "value": value.strip()}
    (s.request_headers if d.keyword == "reqadd" else s.response_headers).append(rule)
    r.note(d, Entry(Kind.NO_EFFECT, f"removed from HAProxy 2.1; translated as {family} add-header"))


_LOCATION_REWRITE = re.compile(r"\^Location:(\\ |\\s\*|\\s\+| )http://\(\.\*\)")


@_handles("rspirep", "rsprep")
def _removed_rsprep(r: Report, s: ProxyState, d: Directive, negated: bool) -> None:
    if len(d.args) == 2 and _LOCATION_REWRITE.match(d.args[0]) and "https://\\1" in d.args[1]:
        s.rewrite_location = True
        r.note(d, Entry(Kind.NO_EFFECT, "removed from HAProxy 2.1; translated as rewrite_location"))
        return
    r.note(
        d,
        Entry(
            Kind.REMOVED,
            "removed from HAProxy 2.1 (http-response replace-header); "
            "only the Location http:// -> https:// rewrite has a loadstone equivalent",
        ),
    )


@_handles("reqdel", "reqidel", "rspdel", "rspidel")
def _removed_del(r: Report, s: ProxyState, d: Directive, negated: bool) -> None:
    _need(d, 1)
    m = re.fullmatch(r"\^([A-Za-z0-9-]+):(\.\*)?", d.args[0])
    if m is None or len(d.args) > 1:
        r.note(
            d,
            Entry(
                Kind.REMOVED,
                "removed from HAProxy 2.1; only deleting a header by name "
                "has a loadstone equivalent",
            ),
        )
        return
    rule = {"delete": m.group(1)}
    (s.request_headers if d.keyword.startswith("req") else s.response_headers).append(rule)
    r.note(d, Entry(Kind.NO_EFFECT, "removed from HAProxy 2.1; translated as a del-header rule"))


@_handles("cookie")
def _cookie(r: Report, s: ProxyState, d: Directive, negated: bool) -> None:
    _need(d, 1)
    flags = set(d.args[1:])
    known = {"insert", "indirect", "nocache", "httponly", "secure"}
    if "insert" not in flags or not flags <= known:
        r.unsupported(
            d, "loadstone's cookie persistence is 'insert' with indirect, nocache, httponly, secure"
        )
        return
    s.cookie = {"name": d.args[0], "mode": "insert"}
    for flag in sorted(flags - {"insert"}):
        s.cookie[flag] = True


_RATE_STORE = re.compile(r"(http_req_rate|http_err_rate)\(([0-9.]+[a-z]*)\)")


@_handles("stick-table")
def _stick_table(r: Report, s: ProxyState, d: Directive, negated: bool) -> None:
    s.stick_directives.append(d)
    if "store" in d.args:
        stored = d.args[d.args.index("store") + 1 : d.args.index("store") + 2]
        for item in ",".join(stored).split(","):
            m = _RATE_STORE.fullmatch(item)
            if m is not None and parse_haproxy_time(m[2]) is not None:
                s.rate_periods[m[1]] = format_duration(parse_haproxy_time(m[2]) or 0)


@_handles("http-request track-sc0")
def _track_sc0(r: Report, s: ProxyState, d: Directive, negated: bool) -> None:
    if d.args[1:] == ("src",):
        s.track_src = d
    else:
        r.unsupported(d, "only 'track-sc0 src' (per client address) is translated")


@_handles("stick on")
def _stick_on(r: Report, s: ProxyState, d: Directive, negated: bool) -> None:
    if d.args[1:] == ("dst",):
        s.stick_on_dst = True
    else:
        r.unsupported(d, "stickiness other than the Galera writer pattern ('stick on dst')")
