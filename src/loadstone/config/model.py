"""The validated configuration: frozen, slotted dataclasses in the shape of DESIGN.md.

Nothing here parses or validates; `loadstone.config.loader` turns YAML into these
objects and is the only place that knows about YAML paths. Everything downstream
(runtime, listeners, checks, admin) reads these objects and never the raw mapping.

Durations are stored as float seconds. Addresses are stored resolved into
(host, port) with the host as written (a name is resolved when used, so that an
unresolvable server is a runtime "down" and not a start-up failure).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

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


@dataclass(frozen=True, slots=True)
class Address:
    host: str  # as written: an IP literal or a name; IPv6 without brackets
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


@dataclass(frozen=True, slots=True)
class Timeouts:
    connect: float = 5.0  # TCP connect to a server, per attempt
    client: float = 60.0  # client side inactivity
    server: float = 60.0  # server side inactivity
    check: float = 2.0  # one health-check probe, connect included
    queue: float = 30.0  # how long a connection may wait for a free slot at maxconn
    tunnel: float = 3600.0  # inactivity of an upgraded (WebSocket) HTTP connection
    http_request: float = 10.0  # time to receive a whole HTTP request head
    http_keep_alive: float = 10.0  # idle time allowed between two requests of one connection


@dataclass(frozen=True, slots=True)
class TcpKeepalive:
    idle: float = 60.0  # seconds before the first probe
    interval: float = 10.0  # seconds between probes
    count: int = 6  # unanswered probes before the kernel drops the connection


@dataclass(frozen=True, slots=True)
class SendExpectStep:
    action: Literal["send", "expect"]
    data: bytes = b""  # send: the bytes; expect (string/hex): the bytes looked for
    regex: str | None = None  # expect: a regular expression over the bytes read so far
    timeout: float | None = None  # expect: per-step timeout, else the check timeout


@dataclass(frozen=True, slots=True)
class CheckConfig:
    type: CheckType = "tcp"
    interval: float = 2.0  # between checks of a server whose state is settled
    rise: int = 2  # consecutive successes to mark a down server up
    fall: int = 3  # consecutive failures to mark an up server down
    fastinter: float | None = None  # interval while a transition is in progress
    downinter: float | None = None  # interval while the server is down
    timeout: float | None = None  # probe timeout; None means timeouts.check
    port: int | None = None  # probe another port than the traffic port
    # http
    method: str = "GET"
    path: str = "/"
    host: str | None = None  # Host header; None means the server address
    expect_status: tuple[int, ...] = (200,)
    headers: tuple[tuple[str, str], ...] = ()
    # galera / mysql / amqp credentials: the password itself never appears in
    # repr(), logs or the status API; only where it is read from does.
    user: str | None = None
    password_env: str | None = None
    password_file: str | None = None
    # galera
    available_when_donor: bool = False
    available_when_readonly: bool = True
    max_recv_queue: int | None = None
    # amqp
    level: Literal["header", "login"] = "header"
    vhost: str = "/"
    alarms: bool = False
    management_port: int = 15672  # alarms: the node's RabbitMQ management API (HTTP)
    # send-expect
    preset: str | None = None
    steps: tuple[SendExpectStep, ...] = ()

    @property
    def fast_interval(self) -> float:
        return self.fastinter if self.fastinter is not None else self.interval

    @property
    def down_interval(self) -> float:
        return self.downinter if self.downinter is not None else self.interval


@dataclass(frozen=True, slots=True)
class ServerConfig:
    name: str
    address: Address
    weight: int = 1  # 0-256; 0 means no new sessions from weighted algorithms
    backup: bool = False  # used only when no non-backup server is up
    maxconn: int | None = None  # per-server session limit (used by `first`)
    check: bool = True  # False: never probed, always considered up
    # http mode
    cookie: str | None = None  # value of the persistence cookie; None means the name
    pool: str = "default"  # the routing pool this server belongs to (http mode)

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
    header: str = "X-Forwarded-For"
    except_nets: tuple[str, ...] = ()  # clients in these networks get no header


@dataclass(frozen=True, slots=True)
class CookiePersistence:
    name: str = "SERVERID"
    mode: Literal["insert"] = "insert"
    indirect: bool = False  # strip the cookie before the server sees it
    nocache: bool = False  # mark responses that set it `Cache-Control: private`
    httponly: bool = False
    secure: bool = False


@dataclass(frozen=True, slots=True)
class LocationRewrite:
    prefix: str = "http://"  # a Location (and Content-Location) starting with this...
    replacement: str = "https://"  # ...starts with this instead


@dataclass(frozen=True, slots=True)
class PoolConfig:
    """A routing pool; its servers are those with `ServerConfig.pool == name`.

    The listener-level `servers` form the pool named "default"."""

    name: str
    balance: Balance = "roundrobin"


@dataclass(frozen=True, slots=True)
class RouteConfig:
    """Send matching requests to `pool`. Every condition given must match."""

    pool: str  # a name in ListenerConfig.pools, or "default" (the listener-level servers)
    hosts: tuple[str, ...] = ()  # lower case, no port; "*.example.com" matches subdomains
    path_prefix: str | None = None
    path_exact: str | None = None
    path_regex: str | None = None  # searched from the start of the path (re.match)


@dataclass(frozen=True, slots=True)
class ListenerConfig:
    name: str
    bind: tuple[Address, ...]
    mode: Mode = "tcp"
    balance: Balance = "roundrobin"
    freebind: bool = False
    maxconn: int = 4096
    backlog: int = 1024
    retries: int = 3  # further connect attempts after the first one fails
    redispatch: bool = True  # retry on another server rather than the same one
    timeouts: Timeouts = field(default_factory=Timeouts)
    check: CheckConfig | None = None  # None: servers are never probed
    on_marked_down: OnMarkedDown = "none"
    tcp_keepalive: TcpKeepalive | None = None
    log: SessionLogging = "all"
    # Every server of the listener; in http mode with `pools`, each names its pool.
    servers: tuple[ServerConfig, ...] = ()
    # -- http mode only ------------------------------------------------------------
    forwardfor: ForwardFor | None = None
    forwarded_proto: ForwardedProto | None = None  # set X-Forwarded-Proto to this
    forwarded_port: bool = False  # set X-Forwarded-Port to the port the client reached
    request_headers: tuple[HeaderRule, ...] = ()
    response_headers: tuple[HeaderRule, ...] = ()
    rewrite_location: LocationRewrite | None = None
    cookie: CookiePersistence | None = None
    pools: tuple[PoolConfig, ...] = ()
    routes: tuple[RouteConfig, ...] = ()
    default_pool: str = "default"  # pool of requests no route matches
    max_head_size: int = 65536  # bytes of request (or response) line plus headers
    max_headers: int = 100  # header fields in one request or response


# Not 9100: that is node_exporter's port, which most monitored controllers run
# (kolla deploys it), nor 8404, HAProxy's stats port during a migration; no
# Prometheus exporter allocation or OpenStack service uses 6956.
DEFAULT_ADMIN_PORT = 6956


@dataclass(frozen=True, slots=True)
class AdminConfig:
    bind: Address | None = field(default_factory=lambda: Address("127.0.0.1", DEFAULT_ADMIN_PORT))
    token_file: str | None = None
    # The same API on a unix socket too (e.g. /run/loadstone/admin.sock), which
    # `loadstone ctl` prefers: file permissions guard it, no port is needed.
    socket: str | None = None


@dataclass(frozen=True, slots=True)
class LogTarget:
    """Where one kind of line goes: events (global.log.events) or session and
    request lines (global.log.sessions)."""

    # stdout | stderr | syslog[:/dev/log] | syslog+udp://HOST[:PORT] |
    # syslog+tcp://HOST[:PORT] | file:/PATH (loadstone.logtargets.parse_destination)
    target: str = "stdout"
    format: LogFormat | None = None  # None: global.log_format (or run --log-format)
    # syslog targets only
    # RFC 3164 by default, as HAProxy and syslog(3): what a local /dev/log
    # (rsyslog, journald) parses; RFC 5424 for a receiver that takes it.
    protocol: SyslogProtocol = "rfc3164"
    facility: SyslogFacility = "daemon"
    tag: str = "loadstone"  # APP-NAME (RFC 5424) or TAG (RFC 3164)


@dataclass(frozen=True, slots=True)
class LogConfig:
    events: LogTarget = field(default_factory=lambda: LogTarget("stderr"))
    sessions: LogTarget = field(default_factory=LogTarget)


@dataclass(frozen=True, slots=True)
class GlobalConfig:
    grace: float = 10.0  # how long SIGTERM waits for sessions to finish
    workers: int = 1  # data-path threads (native path)
    # native path: relay with splice(2) (on), recv/send through a buffer (off),
    # or recv/send switching to splice once a transfer fills the buffer (auto)
    splice: Splice = "auto"
    # native path: send the messages a worker holds back in a pass with one
    # io_uring_enter() where the kernel allows io_uring (auto), or one send() each
    io_uring: IoUring = "auto"
    admin: AdminConfig = field(default_factory=AdminConfig)
    log_format: LogFormat = "text"
    log: LogConfig = field(default_factory=LogConfig)


@dataclass(frozen=True, slots=True)
class Config:
    global_: GlobalConfig
    listeners: tuple[ListenerConfig, ...]
    source: str = "<string>"  # where it was read from, for messages
