"""The validated configuration: frozen, slotted dataclasses in the shape of DESIGN.md.

This module is also the declaration of the configuration file: every field the
file may set carries a `loadstone.config.schema.Key` in its metadata, with the
kind of value (type, bounds, parser), its default (the field's own) and a line
of description. `loadstone.config.loader` walks these declarations and is the
only place that knows about YAML paths; `loadstone schema` prints them as JSON
Schema. Everything downstream (runtime, listeners, checks, admin) reads these
objects and never the raw mapping.

Durations are stored as float seconds. Addresses are stored resolved into
(host, port) with the host as written (a name is resolved when used, so that an
unresolvable server is a runtime "down" and not a start-up failure).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Final, Literal

from loadstone.config import values as v
from loadstone.config.schema import (
    Bool,
    Choice,
    Duration,
    Int,
    ListOf,
    Nullable,
    Section,
    SectionOrWord,
    Switch,
    Text,
    key,
)

Mode = Literal["tcp", "http"]
Balance = Literal["roundrobin", "leastconn", "source", "first", "active-backup"]
CheckType = Literal["tcp", "http", "galera", "amqp", "send-expect", "mysql"]
OnMarkedDown = Literal["none", "shutdown-sessions"]
LogFormat = Literal["text", "json"]
# Which sessions (tcp) or requests (http) a listener logs: all, only those that
# did not end normally, or none (HAProxy: default, `option dontlog-normal`, `no log`).
SessionLogging = Literal["all", "errors", "none"]
SyslogProtocol = Literal["rfc5424", "rfc3164"]
SyslogFacility = Literal[
    "kern", "user", "mail", "daemon", "auth", "syslog", "lpr", "news", "uucp", "cron",
    "authpriv", "ftp", "local0", "local1", "local2", "local3", "local4", "local5",
    "local6", "local7",
]  # fmt: skip
Splice = Literal["auto", "on", "off"]
IoUring = Literal["auto", "off"]
HeaderAction = Literal["set", "add", "delete"]
ForwardedProto = Literal["http", "https"]
AmqpLevel = Literal["header", "login"]
CookieMode = Literal["insert"]
TlsVersion = Literal["TLSv1.2", "TLSv1.3"]
VerifyClient = Literal["none", "optional", "required"]
VerifyServer = Literal["required", "none"]
RedirectScheme = Literal["https"]
ProxyVersion = Literal["v1", "v2"]

# Check keys that only make sense for some check types; the others apply to all.
_HTTP: Final = ("http",)
_CREDENTIALS: Final = ("http", "galera", "mysql", "amqp")
_GALERA: Final = ("galera",)
_AMQP: Final = ("amqp",)
_SEND_EXPECT: Final = ("send-expect",)
# The checks whose dialogue can run over TLS (galera, mysql and amqp speak their
# own protocols through their client libraries, which are not given a TLS context).
_TLS_CHECKS: Final = ("tcp", "http", "send-expect")


@dataclass(frozen=True, slots=True)
class Address:
    host: str  # as written: an IP literal or a name; IPv6 without brackets
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


def _timeout(default: float, doc: str) -> float:
    return field(default=default, metadata=key(Duration(), doc))


@dataclass(frozen=True, slots=True)
class Timeouts:
    connect: float = _timeout(5.0, "TCP connect to a server, per attempt")
    client: float = _timeout(60.0, "client side inactivity")
    server: float = _timeout(60.0, "server side inactivity")
    check: float = _timeout(2.0, "one health-check probe, connect included")
    queue: float = _timeout(30.0, "how long a connection may wait for a free slot at maxconn")
    tunnel: float = _timeout(3600.0, "inactivity of an upgraded (WebSocket) HTTP connection")
    http_request: float = _timeout(10.0, "time to receive a whole HTTP request head")
    http_keep_alive: float = _timeout(
        10.0, "idle time allowed between two requests of one connection"
    )
    linger: float = field(
        default=2.0,
        metadata=key(
            Duration(allow_zero=True),
            "mode http: how long a client still sending after its connection's last "
            "response is read and dropped before the close (lingering close); 0: close at once",
        ),
    )


@dataclass(frozen=True, slots=True)
class TcpKeepalive:
    # TCP_KEEPIDLE and TCP_KEEPINTVL are whole seconds, 1-32767 on Linux.
    idle: float = field(
        default=60.0, metadata=key(v.WholeSeconds(1, 32767), "seconds before the first probe")
    )
    interval: float = field(
        default=10.0, metadata=key(v.WholeSeconds(1, 32767), "seconds between probes")
    )
    count: int = field(  # Linux caps TCP_KEEPCNT at 127
        default=6,
        metadata=key(Int(1, 127), "unanswered probes before the kernel drops the connection"),
    )


@dataclass(frozen=True, slots=True)
class SendExpectStep:
    action: Literal["send", "expect"]
    data: bytes = b""  # send: the bytes; expect (string/hex): the bytes looked for
    regex: str | None = None  # expect: a regular expression over the bytes read so far
    timeout: float | None = None  # expect: per-step timeout, else the check timeout


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

_PORT: Final = Int(1, 65535)


@dataclass(frozen=True, slots=True)
class CheckConfig:
    """A listener's health check; `defaults.check` gives keys for the checks listeners declare."""

    type: CheckType = field(default="tcp", metadata=key(Choice.of(CheckType), "the probe"))
    interval: float = field(
        default=2.0,
        metadata=key(Duration(), "between checks of a server whose state is settled"),
    )
    rise: int = field(
        default=2, metadata=key(Int(1), "consecutive successes to mark a down server up")
    )
    fall: int = field(
        default=3, metadata=key(Int(1), "consecutive failures to mark an up server down")
    )
    fastinter: float | None = field(
        default=None,
        metadata=key(Duration(), "interval while a transition is in progress (default: interval)"),
    )
    downinter: float | None = field(
        default=None,
        metadata=key(Duration(), "interval while the server is down (default: interval)"),
    )
    timeout: float | None = field(
        default=None, metadata=key(Duration(), "probe timeout (default: timeouts.check)")
    )
    port: int | None = field(
        default=None, metadata=key(_PORT, "probe another port than the traffic port")
    )
    # http
    method: str = field(default="GET", metadata=key(v.HttpMethod(), only=_HTTP))
    path: str = field(default="/", metadata=key(v.RequestText(path=True), only=_HTTP))
    host: str | None = field(
        default=None,
        metadata=key(
            v.RequestText(path=False), "Host header (default: the server address)", only=_HTTP
        ),
    )
    expect_status: tuple[int, ...] = field(
        default=(200,),
        metadata=key(
            ListOf(Int(100, 599), "statuses", single=(object,)),
            "the statuses that mean up",
            only=_HTTP,
        ),
    )
    headers: tuple[tuple[str, str], ...] = field(
        default=(), metadata=key(v.HeaderMap(), "extra request headers", only=_HTTP)
    )
    # galera / mysql / amqp credentials: the password itself never appears in
    # repr(), logs or the status API; only where it is read from does.
    user: str | None = field(default=None, metadata=key(Text(), only=_CREDENTIALS))
    password_env: str | None = field(
        default=None,
        metadata=key(v.EnvName, "environment variable holding the password", only=_CREDENTIALS),
    )
    password_file: str | None = field(
        default=None,
        metadata=key(Text(), "file holding the password", only=_CREDENTIALS),
    )
    # galera
    available_when_donor: bool = field(default=False, metadata=key(Bool(), only=_GALERA))
    available_when_readonly: bool = field(default=True, metadata=key(Bool(), only=_GALERA))
    max_recv_queue: int | None = field(
        default=None,
        metadata=key(Int(0), "down above this wsrep_local_recv_queue", only=_GALERA),
    )
    # amqp
    level: AmqpLevel = field(
        default="header",
        metadata=key(Choice.of(AmqpLevel), "protocol header only, or a full login", only=_AMQP),
    )
    vhost: str = field(default="/", metadata=key(Text(), only=_AMQP))
    alarms: bool = field(
        default=False,
        metadata=key(Bool(), "down while the node raises a resource alarm", only=_AMQP),
    )
    management_port: int = field(  # alarms: the node's RabbitMQ management API (HTTP)
        default=15672,
        metadata=key(_PORT, "the RabbitMQ management API, for alarms", only=_AMQP),
    )
    tls: bool = field(
        default=False,
        metadata=key(
            Bool(),
            "probe over TLS, with the server's `tls` (or server_tls) settings",
            only=_TLS_CHECKS,
        ),
    )
    # send-expect
    preset: str | None = field(
        default=None,
        metadata=key(v.OneOf(SEND_EXPECT_PRESETS, "preset"), "a named script", only=_SEND_EXPECT),
    )
    steps: tuple[SendExpectStep, ...] = field(
        default=(),
        metadata=key(ListOf(v.Step(SendExpectStep), "steps"), only=_SEND_EXPECT),
    )

    @property
    def fast_interval(self) -> float:
        return self.fastinter if self.fastinter is not None else self.interval

    @property
    def down_interval(self) -> float:
        return self.downinter if self.downinter is not None else self.interval


# -- TLS -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CertificateSpec:
    """One certificate of a listener: a PEM file with the chain and the key, or
    the chain in `cert` and the key in `key`."""

    cert: str = field(
        default="", metadata=key(Text(), "PEM: the certificate, its chain (and the key)")
    )
    key: str | None = field(
        default=None, metadata=key(Text(), "PEM private key (default: read from cert)")
    )


_CERTIFICATE: Final = SectionOrWord(Section(CertificateSpec), "cert", lambda: CertificateSpec())


@dataclass(frozen=True, slots=True)
class ListenerTls:
    """TLS termination on a listener (HAProxy `bind ... ssl crt ...`)."""

    certificates: tuple[CertificateSpec, ...] = field(
        default=(),
        metadata=key(
            ListOf(_CERTIFICATE, "certificates", single=(str, dict)),
            "PEM paths (chain and key) or {cert, key}; chosen by SNI, the first is the default",
            required="required: at least one certificate",
        ),
    )
    alpn: tuple[str, ...] = field(
        default=(),
        metadata=key(
            ListOf(v.AlpnId, "protocol names", single=(str,)),
            "protocols offered by ALPN (default: http/1.1 in mode http, none in tcp)",
        ),
    )
    min_version: TlsVersion = field(
        default="TLSv1.2", metadata=key(Choice.of(TlsVersion), "oldest protocol version accepted")
    )
    ciphers: str = field(
        # Mozilla's "intermediate" list: forward secrecy and AEAD only.
        default="ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:"
        "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:"
        "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305",
        metadata=key(Text(), "OpenSSL cipher string for TLS 1.2 (checked by OpenSSL at load)"),
    )
    ciphersuites: str | None = field(
        default=None,
        metadata=key(
            v.SuiteList(), "TLS 1.3 suites, colon-separated (default: OpenSSL's, all AEAD)"
        ),
    )
    client_ca: str | None = field(
        default=None, metadata=key(Text(), "PEM file of the CAs client certificates must chain to")
    )
    verify_client: VerifyClient = field(
        default="none",
        metadata=key(Choice.of(VerifyClient), "ask for a client certificate (needs client_ca)"),
    )
    handshake_timeout: float = field(
        default=10.0, metadata=key(Duration(), "time allowed for a client's TLS handshake")
    )


@dataclass(frozen=True, slots=True)
class ServerTls:
    """TLS to servers (HAProxy `server ... ssl verify required ca-file ...`)."""

    verify: VerifyServer = field(
        default="required",
        metadata=key(Choice.of(VerifyServer), "check the server's certificate and name"),
    )
    ca_file: str | None = field(
        default=None, metadata=key(Text(), "PEM file of trusted CAs (default: the system's)")
    )
    sni: str | None = field(
        default=None,
        metadata=key(
            Text(), "server name sent, and verified (default: the server's address if a name)"
        ),
    )
    alpn: tuple[str, ...] = field(
        default=(),
        metadata=key(ListOf(v.AlpnId, "protocol names", single=(str,)), "protocols offered"),
    )
    certificate: str | None = field(
        default=None, metadata=key(Text(), "PEM client certificate (and key) presented")
    )
    key: str | None = field(
        default=None, metadata=key(Text(), "PEM key of `certificate` (default: in it)")
    )


_SERVER_TLS: Final = Switch(Section(ServerTls), ((True, ServerTls()),))


@dataclass(frozen=True, slots=True)
class Redirect:
    """Answer every request with a redirect to the same URL in another scheme."""

    scheme: RedirectScheme = field(default="https", metadata=key(Choice.of(RedirectScheme)))
    code: int = field(default=301, metadata=key(v.IntChoice((301, 302, 303, 307, 308))))


@dataclass(frozen=True, slots=True)
class Monitor:
    """An answer from the proxy itself on one URI (HAProxy `monitor-uri`), for
    keepalived, container health checks and load balancers in front."""

    path: str = field(
        default="/",
        metadata=key(v.RoutePath, "the request target answered (compared whole, as HAProxy)"),
    )
    up_status: int = field(
        default=200,
        metadata=key(v.IntChoice((200, 204)), "while the listener serves"),
    )
    down_status: int = field(
        default=503,
        metadata=key(
            v.IntChoice((500, 502, 503, 504)),
            "while no server of the listener is up, or the proxy is stopping",
        ),
    )


@dataclass(frozen=True, slots=True)
class ServerConfig:
    name: str = field(metadata=key(v.Name, required="required"))
    address: Address = field(metadata=key(v.HostPort(Address), required="required"))
    weight: int = field(
        default=1,
        metadata=key(Int(0, 256), "0 means no new sessions from weighted algorithms"),
    )
    backup: bool = field(
        default=False, metadata=key(Bool(), "used only when no non-backup server is up")
    )
    maxconn: int | None = field(
        default=None, metadata=key(Int(1), "per-server session limit (used by `first`)")
    )
    check: bool = field(
        default=True, metadata=key(Bool(), "false: never probed, always considered up")
    )
    # http mode
    cookie: str | None = field(
        default=None,
        metadata=key(v.CookieToken, "value of the persistence cookie (default: the name)"),
    )
    tls: ServerTls | None = field(
        default=None,
        metadata=key(_SERVER_TLS, "TLS to this server; true: verified against the system CAs"),
    )
    pool: str = "default"  # the routing pool this server belongs to (http mode)
    # PROXY protocol header sent first on each connection (HAProxy `send-proxy`,
    # `send-proxy-v2`); None: the listener's send_proxy; "off": none even then.
    send_proxy: ProxyVersion | Literal["off"] | None = field(
        default=None,
        metadata=key(
            Choice(("v1", "v2", "off"), ((False, "off"),)),
            "PROXY protocol header to this server (default: the listener's send_proxy)",
        ),
    )

    @property
    def cookie_value(self) -> str:
        return self.cookie if self.cookie is not None else self.name


# -- http mode -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class HeaderRule:
    """One request or response header rule; rules apply in the order written."""

    action: HeaderAction
    name: str
    value: str = ""  # set/add only


@dataclass(frozen=True, slots=True)
class ForwardFor:
    header: str = field(default="X-Forwarded-For", metadata=key(v.HeaderName))
    except_nets: tuple[str, ...] = field(
        default=(),
        metadata=key(
            ListOf(v.Network(), "networks", non_empty=False, single=(object,)),
            "clients in these networks get no header",
            yaml="except",
        ),
    )


@dataclass(frozen=True, slots=True)
class CookiePersistence:
    name: str = field(default="SERVERID", metadata=key(v.CookieToken))
    mode: CookieMode = field(default="insert", metadata=key(Choice.of(CookieMode)))
    indirect: bool = field(
        default=False, metadata=key(Bool(), "strip the cookie before the server sees it")
    )
    nocache: bool = field(
        default=False,
        metadata=key(Bool(), "mark responses that set it `Cache-Control: private`"),
    )
    httponly: bool = field(default=False, metadata=key(Bool()))
    secure: bool = field(default=False, metadata=key(Bool()))


@dataclass(frozen=True, slots=True)
class LocationRewrite:
    """A Location (and Content-Location) starting with `from` starts with `to` instead."""

    prefix: str = field(
        default="http://", metadata=key(v.HeaderValue(), yaml="from", required="required")
    )
    replacement: str = field(
        default="https://", metadata=key(v.HeaderValue(), yaml="to", required="required")
    )


@dataclass(frozen=True, slots=True)
class PoolConfig:
    """A routing pool; its servers are those with `ServerConfig.pool == name`.

    The listener-level `servers` form the pool named "default"."""

    name: str
    balance: Balance = "roundrobin"


@dataclass(frozen=True, slots=True)
class RouteConfig:
    """Send matching requests to `pool`. Every condition given must match."""

    # a name in ListenerConfig.pools, or "default" (the listener-level servers)
    pool: str = field(metadata=key(v.Name, required="required"))
    hosts: tuple[str, ...] = field(  # lower case, no port; "*.example.com" matches subdomains
        default=(),
        metadata=key(
            ListOf(v.RouteHost(), "hosts", single=(object,)),
            "Host names without port; *.example.com matches subdomains",
            yaml="host",
        ),
    )
    path_prefix: str | None = field(default=None, metadata=key(v.RoutePath))
    path_exact: str | None = field(default=None, metadata=key(v.RoutePath))
    path_regex: str | None = field(  # searched from the start of the path (re.match)
        default=None,
        metadata=key(v.Regex(), "matched from the start of the path"),
    )


_SERVERS: Final = ListOf(Section(ServerConfig), "servers", unique="name")


@dataclass(frozen=True, slots=True)
class RateCondition:
    """The client address's rate over a sliding `per` (HAProxy `sc_http_req_rate(0) gt N`
    with `track-sc0 src` and a stick-table storing `http_req_rate(per)`)."""

    above: int = field(
        default=0, metadata=key(Int(0), "holds when the rate is above this", required="required")
    )
    per: float = field(default=10.0, metadata=key(Duration(), "the sliding period"))


@dataclass(frozen=True, slots=True)
class RequestMatch:
    """Conditions of a request rule; every one given must hold. Host and path
    are the keys of `routes`, with the same meaning (HAProxy's `hdr(host)`,
    `path_beg`, `path`, `path_reg`); `src`/`dst` are HAProxy's ACLs of the same
    names (the client's address, a PROXY header's if accepted; the address it reached)."""

    hosts: tuple[str, ...] = field(
        default=(),
        metadata=key(
            ListOf(v.RouteHost(), "hosts", single=(object,)),
            "Host names without port; *.example.com matches subdomains",
            yaml="host",
        ),
    )
    path_prefix: str | None = field(default=None, metadata=key(v.RoutePath))
    path_exact: str | None = field(default=None, metadata=key(v.RoutePath))
    path_regex: str | None = field(
        default=None, metadata=key(v.Regex(), "searched from the start of the path")
    )
    methods: tuple[str, ...] = field(
        default=(),
        metadata=key(ListOf(v.HttpMethod(), "methods", single=(str,)), yaml="method"),
    )
    src: tuple[str, ...] = field(
        default=(),
        metadata=key(
            ListOf(v.Network(), "networks", single=(object,)), "client address in these networks"
        ),
    )
    dst: tuple[str, ...] = field(
        default=(),
        metadata=key(
            ListOf(v.Network(), "networks", single=(object,)),
            "the address the client reached in these networks",
        ),
    )
    request_rate: RateCondition | None = field(
        default=None,
        metadata=key(
            Section(RateCondition),
            "{above: N, per: 10s}: the client address sent more than N requests per period",
        ),
    )
    error_rate: RateCondition | None = field(
        default=None,
        metadata=key(
            Section(RateCondition),
            "{above: N, per: 10s}: more than N of its requests per period got a 4xx (not 401/407)",
        ),
    )


RuleScheme = Literal["http", "https"]


@dataclass(frozen=True, slots=True)
class RuleRedirect:
    """Where a `redirect` rule sends the client: exactly one of scheme, location, prefix."""

    scheme: RuleScheme | None = field(
        default=None,
        metadata=key(Choice.of(RuleScheme), "the same URL in this scheme (redirect scheme)"),
    )
    location: str | None = field(
        default=None, metadata=key(v.HeaderValue(), "this URL as it is (redirect location)")
    )
    prefix: str | None = field(
        default=None,
        metadata=key(
            v.HeaderValue(), "this prefix followed by the request's path (redirect prefix)"
        ),
    )
    code: int = field(default=302, metadata=key(v.IntChoice((301, 302, 303, 307, 308))))


@dataclass(frozen=True, slots=True)
class HeaderSet:
    name: str = field(default="", metadata=key(v.HeaderName, required="required"))
    value: str = field(default="", metadata=key(v.HeaderValue(), required="required"))


# Statuses a `deny` rule may answer with (those HAProxy's deny_status takes).
DENY_STATUSES: Final = (
    200,
    400,
    401,
    403,
    404,
    405,
    407,
    408,
    410,
    413,
    425,
    429,
    500,
    501,
    502,
    503,
    504,
)


@dataclass(frozen=True, slots=True)
class RequestRule:
    """One rule of `request_rules` (HAProxy `http-request ACTION [if|unless COND]`):
    exactly one action, under optional conditions. Rules run in the order
    written; the first allow, deny or redirect that applies ends the walk."""

    allow: bool = field(
        default=False, metadata=key(Bool(), "true: send the request on, skip the rules after")
    )
    deny: int | None = field(
        default=None, metadata=key(v.IntChoice(DENY_STATUSES), "answer with this status")
    )
    redirect: RuleRedirect | None = field(default=None, metadata=key(Section(RuleRedirect)))
    set_header: HeaderSet | None = field(
        default=None, metadata=key(Section(HeaderSet), "{name, value}: replace the header")
    )
    del_header: str | None = field(
        default=None, metadata=key(v.HeaderName, "remove every field of this name")
    )
    # With both: apply if all of `if` hold and not all of `unless` do (HAProxy's
    # `if A !B`, when the negated terms are of one kind: `!{ src X } !{ src Y }`).
    when: RequestMatch | None = field(
        default=None, metadata=key(Section(RequestMatch), "apply only if all these hold", yaml="if")
    )
    unless: RequestMatch | None = field(
        default=None, metadata=key(Section(RequestMatch), "apply only if not all these hold")
    )


@dataclass(frozen=True, slots=True)
class ProxyAccept:
    """PROXY protocol headers accepted from trusted senders (HAProxy `accept-proxy`)."""

    trusted: tuple[str, ...] = field(
        default=(),
        metadata=key(
            ListOf(v.Network(), "networks", single=(object,)),
            "connections from these networks must start with a PROXY header (v1 or v2); "
            "a header from elsewhere closes the connection",
            required="required: a list of networks, e.g. [10.0.0.0/8]",
        ),
    )
    timeout: float = field(
        default=5.0, metadata=key(Duration(), "time allowed for the whole header to arrive")
    )


_BALANCE: Final = Choice.of(Balance)


@dataclass(frozen=True, slots=True)
class HaproxyNames:
    """The HAProxy proxies a listener was imported from, by which HAProxy's runtime
    socket (global.admin.haproxy_socket) also knows it: `disable server B/S` with
    B the backend's name, `show stat` rows under both names."""

    frontend: str | None = field(
        default=None, metadata=key(Text(), "the frontend (or listen section) name")
    )
    backend: str | None = field(
        default=None, metadata=key(Text(), "the backend (or listen section) name")
    )


@dataclass(frozen=True, slots=True)
class SniRoute:
    """Connections whose ClientHello names one of `names` go to `pool`."""

    names: tuple[str, ...] = field(  # lower case; "*.example.com" matches subdomains
        metadata=key(
            ListOf(v.RouteHost(), "names", single=(object,)),
            "server names (SNI); *.example.com matches subdomains",
            required="required: the server names routed to the pool",
        )
    )
    # a name in ListenerConfig.pools, or "default" (the listener-level servers)
    pool: str = field(metadata=key(v.Name, required="required"))


@dataclass(frozen=True, slots=True)
class SniPassthrough:
    """Route a tcp listener's connections on the SNI of their ClientHello, without
    terminating TLS (HAProxy `tcp-request inspect-delay` + `use_backend ... req.ssl_sni`)."""

    routes: tuple[SniRoute, ...] = field(
        default=(),
        metadata=key(
            ListOf(Section(SniRoute), "routes like {names: [a.example.com], pool: a}"),
            "the first route naming the client's SNI chooses the pool",
        ),
    )
    default_pool: str = field(  # pool of a ClientHello no route names, or without SNI
        default="default",
        metadata=key(v.Name, "pool of a ClientHello without SNI or with a name no route has"),
    )
    inspect_timeout: float = field(
        default=5.0,
        metadata=key(
            Duration(),
            "time allowed for the whole ClientHello to arrive; then the connection is closed",
        ),
    )


@dataclass(frozen=True, slots=True)
class ListenerConfig:
    """A listener: its name is its key under `listeners`."""

    name: str
    bind: tuple[Address, ...] = field(
        metadata=key(
            v.binds(Address),
            'host:port addresses; IPv6 as "[::1]:5000"',
            required='required: a list of "host:port" addresses',
        )
    )
    mode: Mode = field(default="tcp", metadata=key(Choice.of(Mode), inherit=True))
    balance: Balance = field(default="roundrobin", metadata=key(_BALANCE, inherit=True))
    freebind: bool = field(
        default=False, metadata=key(Bool(), "bind an address that is not (yet) on this host")
    )
    # IP_TRANSPARENT: also accept connections to addresses of other hosts that the
    # kernel delivers here (TPROXY rules); needs CAP_NET_ADMIN.
    transparent: bool = field(
        default=False,
        metadata=key(
            Bool(), "IP_TRANSPARENT: bind any address and accept TPROXY-diverted connections"
        ),
    )
    # TCP_DEFER_ACCEPT (HAProxy's `bind ... defer-accept`): for protocols whose
    # client speaks first (HTTP, TLS). Off by default: MySQL and AMQP servers
    # speak first, and their clients would wait for the kernel's deadline.
    defer_accept: bool = field(
        default=False,
        metadata=key(
            Bool(),
            "accept a connection once its first bytes arrive (only where clients speak first)",
        ),
    )
    accept_proxy: ProxyAccept | None = field(
        default=None,
        metadata=key(
            Section(ProxyAccept),
            "take the client address from a PROXY protocol header sent by trusted proxies",
        ),
    )
    send_proxy: ProxyVersion | None = field(
        default=None,
        metadata=key(
            Nullable(Choice.of(ProxyVersion)),
            "send a PROXY protocol header (v1 | v2) to every server first",
            inherit=True,
        ),
    )
    maxconn: int = field(default=4096, metadata=key(Int(1), inherit=True))
    backlog: int = field(default=1024, metadata=key(Int(1), inherit=True))
    retries: int = field(
        default=3,
        metadata=key(
            Int(0, 100), "further connect attempts after the first one fails", inherit=True
        ),
    )
    redispatch: bool = field(
        default=True,
        metadata=key(Bool(), "retry on another server rather than the same one", inherit=True),
    )
    # defaults.timeouts and defaults.check are merged key by key into a listener's own
    # (loadstone.config.loader); `check: true` is a check of defaults.check's keys, and
    # the keys of other check types than its own are refused (loadstone.config.validate).
    timeouts: Timeouts = field(
        default_factory=Timeouts, metadata=key(Section(Timeouts), inherit=True)
    )
    check: CheckConfig | None = field(  # None: servers are never probed
        default=None,
        metadata=key(
            Switch(Section(CheckConfig), ((True, CheckConfig()),)),
            "true: check with defaults.check; absent or false: never probed",
            inherit=True,
        ),
    )
    on_marked_down: OnMarkedDown = field(
        default="none", metadata=key(Choice.of(OnMarkedDown), inherit=True)
    )
    tcp_keepalive: TcpKeepalive | None = field(
        default=None,
        metadata=key(
            Switch(Section(TcpKeepalive), ((True, TcpKeepalive()),)),
            "true: the kernel probe defaults",
            inherit=True,
        ),
    )
    log: SessionLogging = field(
        default="all", metadata=key(Choice.of(SessionLogging), inherit=True)
    )
    tls: ListenerTls | None = field(
        default=None, metadata=key(Switch(Section(ListenerTls)), "terminate TLS from clients")
    )
    server_tls: ServerTls | None = field(
        default=None,
        metadata=key(
            _SERVER_TLS,
            "TLS to every server without its own `tls` (true: system CAs)",
            inherit=True,
        ),
    )
    sni_passthrough: SniPassthrough | None = field(
        default=None,
        metadata=key(
            Section(SniPassthrough),
            "route on the ClientHello's SNI to `pools`, passing TLS through",
            only=("tcp",),
        ),
    )
    # Every server of the listener; with `pools` (http, or tcp with sni_passthrough),
    # each names its pool.
    servers: tuple[ServerConfig, ...] = field(default=(), metadata=key(_SERVERS))
    # -- http mode only ------------------------------------------------------------
    forwardfor: ForwardFor | None = field(
        default=None,
        metadata=key(
            Switch(Section(ForwardFor), ((True, ForwardFor()),)),
            "add X-Forwarded-For",
            inherit=True,
            only=_HTTP,
        ),
    )
    forwarded_proto: ForwardedProto | Literal["auto"] | None = field(
        default=None,
        metadata=key(
            Choice(("http", "https", "auto")),
            "set X-Forwarded-Proto to this; auto: https on a TLS listener, else http",
            inherit=True,
            only=_HTTP,
        ),
    )
    redirect: Redirect | None = field(
        default=None,
        metadata=key(
            Switch(Section(Redirect), (("https", Redirect()),)),
            "https: answer 301 to https://same-host/same-path (HAProxy `redirect scheme`)",
            only=_HTTP,
        ),
    )
    forwarded_port: bool = field(  # set X-Forwarded-Port to the port the client reached
        default=False,
        metadata=key(
            Bool(), "set X-Forwarded-Port to the port the client reached", inherit=True, only=_HTTP
        ),
    )
    request_headers: tuple[HeaderRule, ...] = field(
        default=(), metadata=key(v.header_rules(HeaderRule), inherit=True, only=_HTTP)
    )
    response_headers: tuple[HeaderRule, ...] = field(
        default=(), metadata=key(v.header_rules(HeaderRule), inherit=True, only=_HTTP)
    )
    rewrite_location: LocationRewrite | None = field(
        default=None,
        metadata=key(
            Switch(
                Section(LocationRewrite),
                (("https", LocationRewrite()),),
                hint="expected 'https' or a mapping {from: ..., to: ...}",
            ),
            "https: http:// becomes https://",
            inherit=True,
            only=_HTTP,
        ),
    )
    cookie: CookiePersistence | None = field(
        default=None,
        metadata=key(Switch(Section(CookiePersistence)), "cookie persistence", only=_HTTP),
    )
    pools: tuple[PoolConfig, ...] = field(
        default=(),
        metadata=key(
            v.PoolMap(_BALANCE, _SERVERS),
            "routing pools by name (mode tcp: with sni_passthrough)",
        ),
    )
    monitor: Monitor | None = field(
        default=None,
        metadata=key(
            SectionOrWord(Section(Monitor), "path", lambda: Monitor()),
            "a path the proxy answers itself: up_status, or down_status (monitor-uri)",
            only=_HTTP,
        ),
    )
    request_rules: tuple[RequestRule, ...] = field(
        default=(),
        metadata=key(
            ListOf(
                Section(RequestRule),
                "rules like {deny: 403, if: {src: 10.0.0.0/8}}",
                non_empty=False,
            ),
            "allow, deny, redirect, set_header, del_header under conditions (http-request)",
            only=_HTTP,
        ),
    )
    routes: tuple[RouteConfig, ...] = field(
        default=(),
        metadata=key(
            ListOf(
                Section(RouteConfig), "routes like {path_prefix: /v2, pool: name}", non_empty=False
            ),
            only=_HTTP,
        ),
    )
    default_pool: str = field(  # pool of requests no route matches
        default="default",
        metadata=key(v.Name, "pool of requests no route matches", only=_HTTP),
    )
    max_head_size: int = field(  # bytes of request (or response) line plus headers
        default=65536,
        metadata=key(
            Int(1024, 1024 * 1024),
            "bytes of request (or response) line plus headers",
            inherit=True,
            only=_HTTP,
        ),
    )
    max_headers: int = field(  # header fields in one request or response
        default=100,
        metadata=key(
            Int(1, 1000), "header fields in one request or response", inherit=True, only=_HTTP
        ),
    )
    # A server connection is renewed after at most this many requests (HAProxy
    # `max-reuse`, nginx `keepalive_requests`): behind a server with several workers
    # on one port the kernel gives each new connection to whichever worker waits in
    # accept, so connections opened in a burst land on one worker; renewed while the
    # server is busy, they spread over its workers. Each connection draws its own
    # limit when it opens, uniform between half this and this (1 stays 1): one limit
    # for all would renew the pooled connections, used in turn, all in one burst
    # landing on the one worker waiting then; spread in time, each new connection
    # lands on whichever worker is free at its moment (http_pool.c, upstream.py).
    server_max_requests: int = field(
        default=1000,
        metadata=key(
            Int(1, 2**31 - 1),
            "most requests one server connection serves before it is closed; each draws"
            " its own limit between half this and this, so renewals spread in time"
            " (1: none reused)",
            inherit=True,
            only=_HTTP,
        ),
    )
    haproxy_names: HaproxyNames | None = field(
        default=None,
        metadata=key(
            Section(HaproxyNames),
            "HAProxy's names of this listener, for the runtime socket (set by the importer)",
        ),
    )

    def proxy_version(self, server: ServerConfig) -> ProxyVersion | None:
        """The PROXY protocol header sent to `server`, if any."""
        wanted = server.send_proxy if server.send_proxy is not None else self.send_proxy
        return None if wanted == "off" else wanted

    @property
    def forwarded_scheme(self) -> str | None:
        """The X-Forwarded-Proto value sent, `auto` resolved by the listener's TLS."""
        if self.forwarded_proto == "auto":
            return "https" if self.tls is not None else "http"
        return self.forwarded_proto


# Not 9100: that is node_exporter's port, which most monitored controllers run
# (kolla deploys it), nor 8404, HAProxy's stats port during a migration; no
# Prometheus exporter allocation or OpenStack service uses 6956.
DEFAULT_ADMIN_PORT = 6956


HaproxySocketLevel = Literal["user", "operator", "admin"]


@dataclass(frozen=True, slots=True)
class HaproxySocket:
    """HAProxy's runtime API (`stats socket PATH mode M level L`), for the tools
    that speak it: socat scripts, keepalived checks, Ansible's haproxy module, hatop."""

    path: str | None = field(
        default=None, metadata=key(Nullable(v.SocketPath()), "the unix socket; null: none")
    )
    mode: str = field(  # octal digits, as chmod takes them
        default="600",
        metadata=key(v.FileMode(), "permissions of the socket file, octal as a string: '660'"),
    )
    level: HaproxySocketLevel = field(  # HAProxy's default level is operator too
        default="operator",
        metadata=key(
            Choice.of(HaproxySocketLevel),
            "user, operator: show and get commands; admin: also those that change servers",
        ),
    )
    bind: Address | None = field(
        default=None,
        metadata=key(
            Nullable(v.HostPort(Address, bind=True)),
            "also on TCP (HAProxy's `stats socket ipv4@HOST:PORT`); no access control but level",
        ),
    )
    timeout: float = field(
        default=10.0,
        metadata=key(Duration(), "a client that sends no command for this long is disconnected"),
    )
    # HAProxy's `user`/`group` of a stats socket: kolla gives the socket to group
    # kolla, so that its keepalived check (another user) may connect.
    user: str | None = field(
        default=None, metadata=key(Nullable(Text()), "owner of the socket file (a user name)")
    )
    group: str | None = field(
        default=None, metadata=key(Nullable(Text()), "group of the socket file (a group name)")
    )


@dataclass(frozen=True, slots=True)
class AdminConfig:
    bind: Address | None = field(
        default_factory=lambda: Address("127.0.0.1", DEFAULT_ADMIN_PORT),
        metadata=key(
            Nullable(v.HostPort(Address, bind=True)),
            f"the status API, /metrics and the write API (default 127.0.0.1:{DEFAULT_ADMIN_PORT}); "
            "null: off",
        ),
    )
    token_file: str | None = field(
        default=None,
        metadata=key(
            Nullable(Text()), "when set, write endpoints need 'Authorization: Bearer <token>'"
        ),
    )
    # The same API on a unix socket too (e.g. /run/loadstone/admin.sock), which
    # `loadstone ctl` prefers: file permissions guard it, no port is needed.
    socket: str | None = field(
        default=None,
        metadata=key(Nullable(v.SocketPath()), "the admin API on a unix socket as well"),
    )
    haproxy_socket: HaproxySocket | None = field(
        default=None,
        metadata=key(
            Switch(Section(HaproxySocket)), "HAProxy's runtime API on a unix socket (and/or TCP)"
        ),
    )


@dataclass(frozen=True, slots=True)
class LogTarget:
    """Where one kind of line goes: events (global.log.events) or session and
    request lines (global.log.sessions)."""

    target: str = field(
        default="stdout",
        metadata=key(
            v.LogDestination(),
            "stdout | stderr | syslog[:/dev/log] | syslog+udp://HOST[:PORT] | "
            "syslog+tcp://HOST[:PORT] | file:/PATH",
        ),
    )
    format: LogFormat | None = field(
        default=None,
        metadata=key(Nullable(Choice.of(LogFormat)), "text | json; default: global.log_format"),
    )
    # syslog targets only. RFC 3164 by default, as HAProxy and syslog(3): what a
    # local /dev/log (rsyslog, journald) parses; RFC 5424 for a receiver that takes it.
    protocol: SyslogProtocol = field(
        default="rfc3164", metadata=key(Choice.of(SyslogProtocol), "syslog message format")
    )
    facility: SyslogFacility = field(
        default="daemon", metadata=key(Choice.of(SyslogFacility), "syslog facility")
    )
    tag: str = field(
        default="loadstone",
        metadata=key(
            # RFC 5424 APP-NAME: 1-48 printable US-ASCII characters, no space.
            Text(
                r"[!-~]{1,48}",
                "expected 1-48 printable ASCII characters without spaces, got {text!r}",
            ),
            "APP-NAME (RFC 5424) or TAG (RFC 3164)",
        ),
    )


_EVENTS_TO = LogTarget("stderr")
_SESSIONS_TO = LogTarget()


@dataclass(frozen=True, slots=True)
class LogConfig:
    events: LogTarget = field(
        default=_EVENTS_TO,
        metadata=key(
            SectionOrWord(Section(LogTarget), "target", lambda: _EVENTS_TO),
            "where events go (default stderr)",
        ),
    )
    sessions: LogTarget = field(
        default=_SESSIONS_TO,
        metadata=key(
            SectionOrWord(Section(LogTarget), "target", lambda: _SESSIONS_TO),
            "where session and request lines go (default stdout)",
        ),
    )


@dataclass(frozen=True, slots=True)
class PeerConfig:
    """Another loadstone instance of the same HA group (global.peers.peers[i])."""

    name: str = field(metadata=key(v.Name, required="required"))
    address: Address = field(metadata=key(v.HostPort(Address), required="required"))


@dataclass(frozen=True, slots=True)
class PeersConfig:
    """Writer agreement between the instances of an HA group, as HAProxy's `peers`
    section: each tells the others the writer of its active-backup listeners
    (docs/high-availability.md)."""

    bind: Address = field(
        metadata=key(
            v.HostPort(Address, bind=True), "UDP address the peers send to", required="required"
        )
    )
    key_file: str = field(
        metadata=key(
            Text(), "file holding the shared key of the group (HMAC-SHA256)", required="required"
        )
    )
    # This instance's name in the peers' lists; the host name when not set.
    name: str | None = field(
        default=None, metadata=key(Nullable(v.Name), "this instance's name among its peers")
    )
    peers: tuple[PeerConfig, ...] = field(
        default=(),
        metadata=key(ListOf(Section(PeerConfig), "peers", unique="name"), "the other instances"),
    )
    interval: float = field(
        default=1.0, metadata=key(Duration(), "how often this instance tells its peers")
    )


AnycastDriver = Literal["bird", "exabgp"]


@dataclass(frozen=True, slots=True)
class AnycastVip:
    """A VIP announced by BGP while this instance serves it (global.anycast.vips[i]):
    one listener or a group of listeners bound to the same address (docs/anycast.md)."""

    name: str = field(metadata=key(v.Name, required="required"))
    prefix: str = field(
        metadata=key(v.Network(), "the route announced, e.g. 198.51.100.10/32", required="required")
    )
    listeners: tuple[str, ...] = field(
        metadata=key(
            ListOf(v.Name, "listener names"),
            "the listeners served at this VIP: it is announced while each has a server up",
            required="required",
        )
    )
    # BIRD: the protocol (a static route of the VIP) enabled to announce and
    # disabled to withdraw; the VIP's name when not set.
    protocol: str | None = field(
        default=None, metadata=key(Nullable(v.Name), "bird: the protocol enabled while announced")
    )

    @property
    def bird_protocol(self) -> str:
        return self.protocol or self.name


@dataclass(frozen=True, slots=True)
class AnycastConfig:
    """Announce VIPs by BGP through BIRD or ExaBGP while this instance serves them."""

    driver: AnycastDriver = field(
        metadata=key(Choice.of(AnycastDriver), "who speaks BGP", required="required")
    )
    # bird: BIRD's control socket (birdc's -s); exabgp: the unix socket loadstone
    # listens on, which the feed process ExaBGP runs connects to.
    socket: str = field(
        metadata=key(
            Text(),
            "bird: BIRD's control socket; exabgp: the socket the ExaBGP feed connects to",
            required="required",
        )
    )
    vips: tuple[AnycastVip, ...] = field(
        metadata=key(
            ListOf(Section(AnycastVip), "VIPs", unique="name"),
            "the VIPs and the listeners each serves",
            required="required",
        )
    )
    hold_down: float = field(
        default=5.0,
        metadata=key(
            Duration(allow_zero=True),
            "flap damping: an announce or withdraw decision holds at least this long",
        ),
    )
    interval: float = field(
        default=1.0,
        metadata=key(Duration(), "how often the decision is taken and told to the driver"),
    )
    timeout: float = field(
        default=2.0, metadata=key(Duration(), "the longest wait for the driver's answer")
    )
    retry_max: float = field(
        default=30.0,
        metadata=key(Duration(), "back-off cap between attempts while the driver fails"),
    )


@dataclass(frozen=True, slots=True)
class GlobalConfig:
    grace: float = field(  # zero: stop at once, closing sessions
        default=10.0,
        metadata=key(Duration(allow_zero=True), "how long SIGTERM waits for sessions to finish"),
    )
    # The planned stop of an HA pair (docs/high-availability.md): on SIGTERM,
    # first report unhealthy (`loadstone ctl health`, keepalived's vrrp_script)
    # while still serving, so the VIP moves away before the drain begins.
    stop_delay: float = field(
        default=0.0,
        metadata=key(
            Duration(allow_zero=True),
            "on SIGTERM, fail the health check and keep serving this long before draining",
        ),
    )
    # HAProxy's global maxconn: at the bound the process stops accepting and
    # clients wait in the kernel's backlog (datapath/limits.py); none: only the
    # descriptor limit, where accepting pauses likewise.
    maxconn: int | None = field(
        default=None,
        metadata=key(Int(1), "client connections of the whole process, all listeners together"),
    )
    workers: int = field(default=1, metadata=key(Int(1, 64), "data-path threads (native path)"))
    # native path: relay with splice(2) (on), recv/send through a buffer (off),
    # or recv/send switching to splice once a transfer fills the buffer (auto)
    splice: Splice = field(
        default="auto",
        metadata=key(Choice.of(Splice, on=True, off=False), "native path: relay with splice(2)"),
    )
    # native path: send the messages a worker holds back in a pass with one
    # io_uring_enter() where the kernel allows io_uring (auto), or one send() each
    io_uring: IoUring = field(
        default="auto",
        metadata=key(Choice.of(IoUring, off=False), "native path: batch sends with io_uring"),
    )
    # native path: a worker whose events come close together looks for more this
    # long before sleeping, yielding the CPU meanwhile (engine/worker.c
    # poll_events); 0 (the default) never spins. Off by default: it turns idle
    # CPU into rate at the price of CPU per request (docs/configuration.md).
    # Changed by a reload.
    poll_spin: float = field(
        default=0.0,
        metadata=key(
            Duration(allow_zero=True),
            "native path: how long a busy worker looks for events before sleeping",
        ),
    )
    admin: AdminConfig = field(
        default_factory=AdminConfig,
        metadata=key(
            Section(AdminConfig, if_null="to disable the admin server set admin.bind: null")
        ),
    )
    log_format: LogFormat = field(default="text", metadata=key(Choice.of(LogFormat)))
    log: LogConfig = field(
        default_factory=LogConfig,
        metadata=key(Section(LogConfig), "destinations of events and session lines"),
    )
    peers: PeersConfig | None = field(
        default=None,
        metadata=key(Nullable(Section(PeersConfig)), "writer agreement with other instances"),
    )
    anycast: AnycastConfig | None = field(
        default=None,
        metadata=key(Nullable(Section(AnycastConfig)), "announce VIPs by BGP (docs/anycast.md)"),
    )


@dataclass(frozen=True, slots=True)
class Config:
    global_: GlobalConfig
    listeners: tuple[ListenerConfig, ...]
    source: str = "<string>"  # where it was read from, for messages
