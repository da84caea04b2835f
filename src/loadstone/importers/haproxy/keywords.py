"""What each HAProxy keyword becomes in loadstone: the one table to edit when loadstone grows.

Every directive the importer meets is looked up here (`lookup`). An entry is
either TRANSLATED (a handler in `translate` turns it into loadstone keys; the
unit tests check that the two lists agree) or one of the reasons a directive
is not translated, which the report prints. When loadstone gains a feature
(PROXY protocol, TLS, the runtime socket, http-request rules, ...), flip its
entries to TRANSLATED and write the handler.

Keys: the keyword, or the keyword and its first argument for the families whose
meaning is in the second word (`option httpchk`, `timeout connect`,
`http-request deny`). Server and bind options have their own tables with the
number of arguments each takes, so that a `server` line can be cut up.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

__all__ = [
    "BIND_OPTIONS",
    "GLOBAL_KEYWORDS",
    "OTHER_SECTIONS",
    "PROXY_KEYWORDS",
    "SERVER_OPTIONS",
    "Entry",
    "Kind",
    "Option",
    "lookup",
]


class Kind(Enum):
    TRANSLATED = "translated"
    # Not translated, and the import is still faithful: HAProxy itself does
    # nothing with it, or it is about running the process (systemd does that).
    NO_EFFECT = "no effect"
    NOT_NEEDED = "not needed"
    # Translated, with a difference the operator should know about.
    NOTE = "note"
    # Not translated, behaviour differs: --strict refuses these.
    NOT_YET = "not yet supported by loadstone"
    TLS = "not yet supported by loadstone (TLS)"
    UNSUPPORTED = "unsupported"
    REMOVED = "removed from HAProxy"
    UNKNOWN = "unknown"

    @property
    def blocks_strict(self) -> bool:
        return self not in (Kind.TRANSLATED, Kind.NO_EFFECT, Kind.NOT_NEEDED, Kind.NOTE)


@dataclass(frozen=True, slots=True)
class Entry:
    kind: Kind
    reason: str = ""  # why, for the report; empty for TRANSLATED


@dataclass(frozen=True, slots=True)
class Option:
    """A server or bind option: how many words follow it, and what it becomes."""

    nargs: int
    entry: Entry


T = Entry(Kind.TRANSLATED)


def _no_effect(reason: str) -> Entry:
    return Entry(Kind.NO_EFFECT, reason)


def _not_needed(reason: str) -> Entry:
    return Entry(Kind.NOT_NEEDED, reason)


def _not_yet(what: str = "") -> Entry:
    return Entry(Kind.NOT_YET, f"not yet supported by loadstone{f' ({what})' if what else ''}")


def _tls() -> Entry:
    return Entry(Kind.TLS, "not yet supported by loadstone (TLS)")


def _unsupported(reason: str) -> Entry:
    return Entry(Kind.UNSUPPORTED, reason)


def _removed(reason: str) -> Entry:
    return Entry(Kind.REMOVED, f"removed from HAProxy; {reason}")


_SYSTEMD = "process setting: loadstone runs in the foreground under systemd, which sets this"
_LOGGING = "loadstone logs to standard output (the journal); see global.log_format"

# Families whose second word is part of the key.
TWO_WORD_FAMILIES = frozenset(
    {
        "option",
        "timeout",
        "http-check",
        "tcp-check",
        "http-request",
        "http-response",
        "http-after-response",
        "tcp-request",
        "tcp-response",
        "stats",
        "stick",
        "compression",
        "monitor",
    }
)

GLOBAL_KEYWORDS: dict[str, Entry] = {
    "nbthread": T,
    "nbproc": T,  # removed in 2.5; its equivalent is workers, unless nbthread is set
    "hard-stop-after": T,
    "daemon": _not_needed(_SYSTEMD),
    "master-worker": _not_needed(_SYSTEMD),
    "user": _not_needed(_SYSTEMD + " (User=)"),
    "group": _not_needed(_SYSTEMD + " (Group=)"),
    "uid": _not_needed(_SYSTEMD + " (User=)"),
    "gid": _not_needed(_SYSTEMD + " (Group=)"),
    "chroot": _not_needed(_SYSTEMD + " (RootDirectory=/ProtectSystem=)"),
    "pidfile": _not_needed(_SYSTEMD),
    "ulimit-n": _not_needed(_SYSTEMD + " (LimitNOFILE=)"),
    "log": _not_needed(_LOGGING),
    "log-send-hostname": _not_needed(_LOGGING),
    "log-tag": _not_needed(_LOGGING),
    "maxconn": T,  # the default of every frontend's maxconn
    "stats socket": T,  # the first one: global.admin.haproxy_socket
    "stats timeout": T,
    "stats": _not_needed("loadstone's runtime socket has no such setting"),
    "cpu-map": _unsupported("no CPU pinning of workers in loadstone"),
    "spread-checks": _unsupported("loadstone spreads checks on its own; no setting"),
    "ca-base": T,
    "crt-base": T,
    "ssl-default-bind-ciphers": T,
    "ssl-default-bind-ciphersuites": T,
    "ssl-default-bind-options": T,
    "ssl-default-server-ciphers": _tls(),
    "ssl-default-server-ciphersuites": _tls(),
    "ssl-default-server-options": _tls(),
    "ssl-dh-param-file": _tls(),
    "ssl-server-verify": _tls(),
    "tune.ssl.default-dh-param": _tls(),
    "tune.": _unsupported("HAProxy tuning knob; loadstone has its own limits (max_head_size, ...)"),
    "node": _no_effect("only shown on HAProxy's stats page"),
    "description": _no_effect("only shown on HAProxy's stats page"),
    "external-check": _unsupported("no external check scripts in loadstone"),
    "lua-load": _unsupported("no Lua in loadstone"),
    "setenv": _unsupported("environment of HAProxy's process"),
    "presetenv": _unsupported("environment of HAProxy's process"),
    "server-state-file": _unsupported("loadstone keeps server state across reloads itself"),
    "server-state-base": _unsupported("loadstone keeps server state across reloads itself"),
}

PROXY_KEYWORDS: dict[str, Entry] = {
    # translated
    "mode": T,
    "balance": T,
    "bind": T,
    "server": T,
    "default-server": T,
    "default_backend": T,
    "use_backend": T,
    "acl": T,  # translated as part of the rules that use it; unused ones are reported
    "maxconn": T,
    "backlog": T,
    "retries": T,
    "cookie": T,
    "stick-table": T,  # only as part of the Galera single-writer pattern
    "stick on": T,
    "timeout connect": T,
    "timeout client": T,
    "timeout server": T,
    "timeout check": T,
    "timeout queue": T,
    "timeout tunnel": T,
    "timeout http-request": T,
    "timeout http-keep-alive": T,
    "timeout client-fin": _unsupported("no separate half-closed timeout in loadstone"),
    "timeout server-fin": _unsupported("no separate half-closed timeout in loadstone"),
    "timeout tarpit": _not_yet("http-request tarpit"),
    "contimeout": T,  # removed in 2.1: timeout connect
    "clitimeout": T,  # removed in 2.1: timeout client
    "srvtimeout": T,  # removed in 2.1: timeout server
    "option redispatch": T,
    "redispatch": T,  # removed in 2.1: option redispatch
    "option tcpka": T,
    "option clitcpka": T,
    "option srvtcpka": T,
    "clitcpka-idle": T,
    "clitcpka-intvl": T,
    "clitcpka-cnt": T,
    "srvtcpka-idle": T,
    "srvtcpka-intvl": T,
    "srvtcpka-cnt": T,
    "option httpchk": T,
    "http-check expect": T,
    "http-check send": T,
    "http-check disable-on-404": _unsupported("no 404-means-drain rule in loadstone's http check"),
    "http-check send-state": _unsupported("loadstone's http check sends no X-Haproxy-Server-State"),
    "http-check connect": _unsupported("no per-rule connect options in loadstone's http check"),
    "http-check comment": _no_effect("a comment in HAProxy's check log"),
    "option mysql-check": T,
    "option tcp-check": T,
    "tcp-check send": T,
    "tcp-check send-binary": T,
    "tcp-check expect": T,
    "tcp-check connect": T,
    "tcp-check comment": _no_effect("a comment in HAProxy's check log"),
    "option redis-check": T,
    "option forwardfor": T,
    "option dontlog-normal": T,
    "no log": T,
    "http-request set-header": T,
    "http-request deny": T,
    "http-request track-sc0": T,  # with src, for the rate conditions
    "http-request allow": T,
    "http-request redirect": T,
    "redirect": T,
    "http-request add-header": T,
    "http-request del-header": T,
    "http-response set-header": T,
    "http-response add-header": T,
    "http-response del-header": T,
    "reqadd": T,  # removed in 2.1: http-request add-header
    "rspadd": T,  # removed in 2.1: http-response add-header
    "rspirep": T,  # removed in 2.1; the Location http:// -> https:// rewrite is translated
    "rsprep": T,
    "reqdel": T,
    "reqidel": T,
    "rspdel": T,
    "rspidel": T,
    # equivalent without a key, or without effect
    "log": _not_needed(_LOGGING),
    "option httplog": _not_needed(
        _LOGGING + " (HAProxy's httplog fields are in every access-log line)"
    ),
    "option tcplog": _not_needed(_LOGGING + " (one line per session)"),
    "option dontlognull": _not_needed("loadstone does not log connections that send nothing"),
    "option log-health-checks": _not_needed("loadstone logs every server state change"),
    "option http-ignore-probes": _not_needed(
        "loadstone does not log connections that send nothing"
    ),
    "option http-keep-alive": _not_needed("loadstone keeps client and server connections alive"),
    "option http-server-close": _unsupported(
        "loadstone keeps server connections alive and reuses them (as HAProxy's http-reuse safe)"
    ),
    "option httpclose": _unsupported(
        "loadstone keeps client and server connections alive; it does not close after each request"
    ),
    "option forceclose": _removed(
        "it became option httpclose; loadstone keeps connections alive instead"
    ),
    "option http-tunnel": _removed(
        "HAProxy 2.1 processes every request, as loadstone does; nothing to translate"
    ),
    "option http-use-htx": _removed("HTX is HAProxy's only mode since 2.1; nothing to translate"),
    "option http-pretend-keepalive": _no_effect(
        "only with http-server-close, which loadstone does not do"
    ),
    "option splice-auto": _unsupported("splicing is process-wide in loadstone: global.splice"),
    "option splice-request": _unsupported("splicing is process-wide in loadstone: global.splice"),
    "option splice-response": _unsupported("splicing is process-wide in loadstone: global.splice"),
    "option allbackups": _unsupported("loadstone uses backup servers only when no other is usable"),
    "option abortonclose": _unsupported("loadstone always forwards a request it started"),
    "option http-buffer-request": _unsupported("loadstone streams request bodies"),
    "option prefer-last-server": _unsupported("no such preference in loadstone's balancers"),
    "option persist": _unsupported("no persistence to a down server in loadstone"),
    "option originalto": _not_yet("X-Original-To"),
    "option logasap": _unsupported(_LOGGING),
    "option log-separate-errors": _unsupported(_LOGGING),
    "option socket-stats": _no_effect("loadstone reports per-listener statistics anyway"),
    "option independent-streams": _unsupported("loadstone's timeouts count inactivity both ways"),
    "option nolinger": _unsupported("loadstone closes connections normally"),
    "option ssl-hello-chk": _tls(),
    "option ldap-check": _unsupported("no LDAP check in loadstone"),
    "option pgsql-check": _unsupported("no PostgreSQL check in loadstone"),
    "option smtpchk": _unsupported("no SMTP check in loadstone"),
    "option external-check": _unsupported("no external check scripts in loadstone"),
    "option transparent": _unsupported("no transparent proxying to the original destination"),
    "option checkcache": _unsupported("no cacheability check in loadstone"),
    "errorfile": _unsupported("loadstone answers errors with its own short bodies"),
    "errorfiles": _unsupported("loadstone answers errors with its own short bodies"),
    "errorloc": _unsupported("loadstone answers errors with its own short bodies"),
    "errorloc302": _unsupported("loadstone answers errors with its own short bodies"),
    "errorloc303": _unsupported("loadstone answers errors with its own short bodies"),
    "capture": _unsupported(_LOGGING),
    "log-format": _unsupported(_LOGGING),
    "unique-id-format": _unsupported("no unique request id in loadstone"),
    "unique-id-header": _unsupported("no unique request id in loadstone"),
    "description": _no_effect("only shown on HAProxy's stats page"),
    "id": _no_effect("HAProxy's numeric proxy id"),
    "hash-type": _no_effect("loadstone's source hash is its own; nothing to choose"),
    "fullconn": _no_effect("only used with server minconn, which loadstone does not have"),
    "http-reuse": _not_needed("loadstone reuses idle server connections safely (http-reuse safe)"),
    "stats": _not_needed(
        "the admin server's /stats page and /metrics replace HAProxy's stats page"
    ),
    "monitor-uri": T,
    "monitor fail": _unsupported(
        "loadstone's monitor is down when no server is up, on no condition"
    ),
    "monitor-net": _removed("it became monitor-uri; see monitor"),
    "http-request": _not_yet("http-request rules"),
    "http-response": _not_yet("http-response rules"),
    "http-after-response": _not_yet("http-after-response rules"),
    "tcp-request": _not_yet("tcp-request rules"),
    "tcp-response": _not_yet("tcp-response rules"),
    "reqrep": _removed("http-request replace-header; not yet supported by loadstone"),
    "reqirep": _removed("http-request replace-header; not yet supported by loadstone"),
    "reqallow": _removed("http-request allow; not yet supported by loadstone"),
    "reqdeny": _removed("http-request deny; not yet supported by loadstone"),
    "reqtarpit": _removed("http-request tarpit; not yet supported by loadstone"),
    "reqpass": _removed("http-request rules; not yet supported by loadstone"),
    "block": _removed("http-request deny; not yet supported by loadstone"),
    "rate-limit": _not_yet("rate limits"),
    "stick match": _unsupported("stickiness other than the Galera writer pattern"),
    "stick store-request": _unsupported("stickiness other than the Galera writer pattern"),
    "stick store-response": _unsupported("stickiness other than the Galera writer pattern"),
    "filter": _unsupported("no HAProxy filters in loadstone"),
    "compression algo": _unsupported("no compression in loadstone"),
    "compression type": _unsupported("no compression in loadstone"),
    "compression offload": _unsupported("no compression in loadstone"),
    "email-alert": _unsupported("loadstone logs state changes; alerting is the log pipeline's job"),
    "source": _unsupported("no source address selection for server connections"),
    "dispatch": _unsupported("no dispatch server in loadstone"),
    "persist": _unsupported("no persistence to a down server in loadstone"),
    "load-server-state-from-file": _unsupported(
        "loadstone keeps server state across reloads itself"
    ),
    "use-server": _unsupported("no server selection rules in loadstone"),
    "force-persist": _unsupported("no persistence to a down server in loadstone"),
    "ignore-persist": _unsupported("no persistence rules in loadstone"),
    "external-check": _unsupported("no external check scripts in loadstone"),
    "grace": _removed("hard-stop-after / global.grace"),
    "disabled": _unsupported("loadstone has no disabled listener; remove it from the file"),
    "enabled": _no_effect("proxies are enabled by default"),
    "rspideny": _removed("http-response deny; not yet supported by loadstone"),
    "rspdeny": _removed("http-response deny; not yet supported by loadstone"),
}

# Sections other than global/defaults/proxies: reported once, at their header.
OTHER_SECTIONS: dict[str, Entry] = {
    "userlist": _not_yet("http-request auth"),
    "peers": _no_effect(
        "stick tables are only translated in the Galera pattern, where loadstone keeps the writer"
    ),
    "resolvers": _unsupported("loadstone resolves server names with the system resolver"),
    "mailers": _unsupported("loadstone logs state changes; alerting is the log pipeline's job"),
    "cache": _unsupported("no cache in loadstone"),
    "program": _not_needed(_SYSTEMD),
    "http-errors": _unsupported("loadstone answers errors with its own short bodies"),
    "ring": _not_needed(_LOGGING),
    "log-forward": _not_needed(_LOGGING),
    "fcgi-app": _unsupported("no FastCGI in loadstone"),
    "crt-store": _tls(),
    "traces": _unsupported("HAProxy's trace buffers"),
    "acme": _tls(),
}


def _tls_options(flags: tuple[str, ...], valued: tuple[str, ...]) -> dict[str, Option]:
    """The TLS options of server or bind lines: all wait for loadstone's TLS."""
    return {name: Option(0, _tls()) for name in flags} | {
        name: Option(1, _tls()) for name in valued
    }


# TLS keywords of server and bind lines: flags, then those taking a value.
_SERVER_TLS_FLAGS = (
    "ssl",
    "check-ssl",
    "no-ssl",
    "no-sslv3",
    "no-tlsv10",
    "no-tlsv11",
    "no-tlsv12",
    "no-tlsv13",
    "force-tlsv12",
    "force-tlsv13",
    "no-tls-tickets",
    "ssl-reuse",
    "no-ssl-reuse",
)
_SERVER_TLS_VALUED = (
    "verify",
    "ca-file",
    "crl-file",
    "crt",
    "sni",
    "check-sni",
    "alpn",
    "check-alpn",
    "npn",
    "ciphers",
    "ciphersuites",
    "ssl-min-ver",
    "ssl-max-ver",
    "verifyhost",
    "curves",
    "sigalgs",
)
_BIND_TLS_FLAGS = (
    "ssl",
    "no-sslv3",
    "no-tlsv10",
    "no-tlsv11",
    "no-tlsv12",
    "no-tlsv13",
    "no-tls-tickets",
    "prefer-client-ciphers",
    "strict-sni",
    "force-tlsv12",
    "force-tlsv13",
    "generate-certificates",
    "allow-0rtt",
    "no-ca-names",
)
_BIND_TLS_VALUED = (
    "crt",
    "crt-list",
    "ca-file",
    "crl-file",
    "verify",
    "alpn",
    "npn",
    "ciphers",
    "ciphersuites",
    "ssl-min-ver",
    "ssl-max-ver",
    "curves",
    "ecdhe",
    "ca-sign-file",
    "ca-sign-pass",
    "sigalgs",
)

_CHECK_PARAMS = {"inter", "fastinter", "downinter", "rise", "fall", "port"}

SERVER_OPTIONS: dict[str, Option] = {
    **{name: Option(1, T) for name in _CHECK_PARAMS},
    "check": Option(0, T),
    "no-check": Option(0, T),
    "backup": Option(0, T),
    "no-backup": Option(0, T),
    "weight": Option(1, T),
    "maxconn": Option(1, T),
    "cookie": Option(1, T),
    "on-marked-down": Option(1, T),
    "id": Option(1, _no_effect("HAProxy's numeric server id")),
    "addr": Option(1, _unsupported("checks use the server's own address in loadstone")),
    "on-marked-up": Option(1, _unsupported("loadstone does not close backup sessions on recovery")),
    "on-error": Option(1, _unsupported("loadstone's checks alone decide a server's state")),
    "observe": Option(1, _unsupported("loadstone's checks alone decide a server's state")),
    "error-limit": Option(1, _unsupported("loadstone's checks alone decide a server's state")),
    "disabled": Option(
        0, _unsupported("servers start usable; use `loadstone ctl maint` after start")
    ),
    "enabled": Option(0, _no_effect("servers are enabled by default")),
    "slowstart": Option(1, _unsupported("no slow start in loadstone")),
    "maxqueue": Option(1, _unsupported("the queue is per listener in loadstone")),
    "minconn": Option(1, _unsupported("no dynamic maxconn in loadstone")),
    "track": Option(1, _unsupported("each server is checked on its own in loadstone")),
    "agent-check": Option(0, _unsupported("no agent checks in loadstone")),
    "agent-port": Option(1, _unsupported("no agent checks in loadstone")),
    "agent-inter": Option(1, _unsupported("no agent checks in loadstone")),
    "agent-addr": Option(1, _unsupported("no agent checks in loadstone")),
    "agent-send": Option(1, _unsupported("no agent checks in loadstone")),
    "resolvers": Option(1, _unsupported("loadstone resolves names with the system resolver")),
    "resolve-prefer": Option(1, _unsupported("loadstone resolves names with the system resolver")),
    "resolve-net": Option(1, _unsupported("loadstone resolves names with the system resolver")),
    "init-addr": Option(1, _no_effect("loadstone resolves names when connecting")),
    "send-proxy": Option(0, T),
    "send-proxy-v2": Option(0, T),
    "send-proxy-v2-ssl": Option(0, _unsupported("no TLS fields in loadstone's PROXY v2 header")),
    "check-send-proxy": Option(0, _unsupported("loadstone's checks send no PROXY header")),
    "proxy-v2-options": Option(
        1, _unsupported("no optional fields in loadstone's PROXY v2 header")
    ),
    "proto": Option(1, _unsupported("loadstone speaks HTTP/1.1 to servers")),
    "source": Option(1, _unsupported("no source address selection for server connections")),
    "namespace": Option(1, _unsupported("no network namespaces per server")),
    "tfo": Option(0, _unsupported("no TCP Fast Open to servers")),
    "non-stick": Option(0, _no_effect("only with stick tables")),
    "redir": Option(1, _unsupported("no redirect servers in loadstone")),
    "pool-max-conn": Option(1, _unsupported("loadstone sizes its idle pool itself")),
    "pool-purge-delay": Option(
        1, _unsupported("idle server connections: timeouts.http_keep_alive")
    ),
    "pool-low-conn": Option(1, _unsupported("loadstone sizes its idle pool itself")),
    "max-reuse": Option(
        1, _unsupported("per server in HAProxy; loadstone's is per listener: server_max_requests")
    ),
    **_tls_options(_SERVER_TLS_FLAGS, _SERVER_TLS_VALUED),
    # TLS to servers, translated into the server's `tls` (and check.tls)
    "ssl": Option(0, T),
    "check-ssl": Option(0, T),
    "verify": Option(1, T),
    "ca-file": Option(1, T),
    "sni": Option(1, T),
}

BIND_OPTIONS: dict[str, Option] = {
    "transparent": Option(0, T),
    "freebind": Option(0, T),  # never a HAProxy keyword, accepted for files edited by hand
    "name": Option(1, _no_effect("HAProxy's name for the socket on its stats page")),
    "id": Option(1, _no_effect("HAProxy's numeric socket id")),
    "process": Option(1, _removed("nbproc is gone; loadstone's workers all serve every bind")),
    "thread": Option(1, _unsupported("every worker serves every listener in loadstone")),
    "interface": Option(1, _unsupported("no SO_BINDTODEVICE in loadstone; bind the address")),
    "namespace": Option(1, _unsupported("no network namespaces per listener")),
    "maxconn": Option(1, _unsupported("maxconn is per listener in loadstone")),
    "backlog": Option(1, _unsupported("backlog is per listener in loadstone")),
    "v4v6": Option(0, _unsupported("loadstone binds IPv6 wildcards with IPV6_V6ONLY")),
    "v6only": Option(0, _no_effect("loadstone binds IPv6 wildcards with IPV6_V6ONLY anyway")),
    "defer-accept": Option(0, T),
    "tfo": Option(0, _unsupported("no TCP Fast Open in loadstone")),
    "mss": Option(1, _unsupported("no MSS setting in loadstone")),
    "nice": Option(1, _unsupported("no priorities between listeners")),
    "accept-proxy": Option(0, T),
    "accept-netscaler-cip": Option(1, _unsupported("no NetScaler client IP protocol")),
    "mode": Option(1, _unsupported("unix socket permissions; loadstone binds TCP only")),
    "user": Option(1, _unsupported("unix socket permissions; loadstone binds TCP only")),
    "group": Option(1, _unsupported("unix socket permissions; loadstone binds TCP only")),
    "level": Option(1, _not_yet("HAProxy's runtime socket")),
    "expose-fd": Option(1, _unsupported("no socket passing in loadstone (reloads keep sockets)")),
    **_tls_options(_BIND_TLS_FLAGS, _BIND_TLS_VALUED),
}


def lookup(table: dict[str, Entry], words: tuple[str, ...]) -> tuple[str, Entry]:
    """The key and entry of a directive (with a leading `no`/`default` kept out of the key)."""
    if words[0] in ("no", "default") and len(words) > 1:
        words = words[1:]
        if words[0] == "log":
            return "no log", table.get("no log", Entry(Kind.UNKNOWN, "unknown keyword"))
    first = words[0]
    if first in TWO_WORD_FAMILIES and len(words) > 1:
        key = f"{first} {words[1]}"
        if key in table:
            return key, table[key]
    if first in table:
        return first, table[first]
    for key, entry in table.items():
        if key.endswith(".") and first.startswith(key):
            return key, entry
    return first, Entry(Kind.UNKNOWN, "unknown keyword (HAProxy would refuse it)")
