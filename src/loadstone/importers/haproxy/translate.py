"""Parsed HAProxy sections -> a loadstone configuration (a plain mapping) and a report.

Theory of operation
-------------------
HAProxy builds each proxy by copying the last `defaults` section and applying
the proxy's own directives over it (`proxy.ProxyState`, `proxy.apply_directive`);
where both are silent its built-in defaults hold (balance roundrobin, checks
`inter 2s rise 2 fall 3`, `timeout check` = `inter`, `timeout queue` =
`timeout connect`, `timeout http-request` = `timeout client`, ...), which is
applied here, when the listeners are made.

Every `listen`, and every `frontend` with the backends it names, becomes
a loadstone listener: the frontend gives the binds and
client-side settings, the backend the servers, the check and the server-side
settings, as HAProxy splits them. A backend no frontend uses carries no
traffic in HAProxy and is reported, not translated.

Patterns are recognised after the directives are applied: the Galera single
writer (one server + backups, or all backups with `stick on dst`, checked
through clustercheck or `option mysql-check`), map-file routing, the Location
rewrite of removed `rspirep`. Anything not translated goes to the report with
its file:line; a file HAProxy would refuse raises `TranslationError`.

Sans-IO: map files are read through the `read_file` callable the caller passes.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final, Literal

from loadstone.importers.haproxy import keywords
from loadstone.importers.haproxy.keywords import Entry, Kind
from loadstone.importers.haproxy.parser import Directive, Location, Section
from loadstone.importers.haproxy.proxy import (
    ProxyState,
    Server,
    apply_directive,
    format_duration,
    parse_haproxy_time,
    parse_int,
    parse_time,
)
from loadstone.importers.haproxy.report import Report, ReportLine, TranslationError

__all__ = ["GaleraCheck", "Translation", "format_duration", "parse_haproxy_time", "translate"]

GaleraCheck = Literal["native", "http"]
ReadFile = Callable[[str], str | None]

# HAProxy's defaults where a file is silent (doc: "server" keywords, "timeout check").
HAPROXY_INTER_MS = 2000
HAPROXY_RISE = 2
HAPROXY_FALL = 3
CLUSTERCHECK_PORTS = frozenset({9200, 4569, 49000})
# A backend named for the database is a database, whatever its ports.
_DATABASE_NAME = re.compile(r"galera|mysql|mariadb|percona", re.IGNORECASE)
GALERA_MONITOR_USER = "monitor"
GALERA_PASSWORD_ENV = "GALERA_MONITOR_PASSWORD"


@dataclass
class Translation:
    config: dict[str, Any]  # the loadstone configuration, ready for YAML
    report: list[ReportLine]
    # listener -> the HAProxy proxies it was made from ("frontend f, backend b at file:line")
    origins: dict[str, str]


class _Translator:
    def __init__(self, galera_check: GaleraCheck, read_file: ReadFile) -> None:
        self.galera_check = galera_check
        self.read_file = read_file
        self.report = Report()
        self.global_: dict[str, Any] = {}
        self.proxies: dict[str, ProxyState] = {}
        self.order: list[ProxyState] = []
        self.galera_backends: set[str] = set()
        self.used_backends: set[str] = set()
        self.origins: dict[str, str] = {}
        self.frontend_backends: dict[str, list[str]] = {}  # the default first, then the pools
        self.files: list[str] = []
        self.global_maxconn: int | None = None
        # ssl-default-bind-ciphers/-ciphersuites/-options ssl-min-ver; crt-base, ca-base
        self.tls_bind_defaults: dict[str, str] = {}
        self.tls_bases: dict[str, str] = {}

    # -- sections ----------------------------------------------------------------------

    def run(self, sections: list[Section]) -> dict[str, Any]:
        self.files = list(dict.fromkeys(section.location.file for section in sections))
        defaults = ProxyState("defaults", "", Location("<haproxy>", 0))
        named_defaults: dict[str, ProxyState] = {}
        for section in sections:
            if section.kind == "global":
                for directive in section.directives:
                    self.global_directive(directive)
            elif section.kind == "defaults":
                # A defaults section starts afresh (HAProxy resets every setting),
                # unless it says `from` another one.
                fresh = ProxyState("defaults", "", section.location)
                base = self._from(section, fresh, named_defaults)
                state = base.inherit("defaults", section.name, section.location)
                self.apply_all(state, section)
                defaults = state
                if section.name:
                    named_defaults[section.name] = state
            elif section.kind in ("listen", "frontend", "backend"):
                base = self._from(section, defaults, named_defaults)
                state = base.inherit(section.kind, section.name, section.location)
                if section.kind == "listen" and section.args and section.args[0] != "from":
                    # `listen NAME ADDR:PORT`: the old form of a bind line
                    header = Directive(("bind", *section.args), section.location, False)
                    apply_directive(self.report, state, header)
                self.apply_all(state, section)
                if section.name in self.proxies:
                    raise TranslationError(
                        section.location, f"proxy '{section.name}' is defined twice"
                    )
                self.proxies[section.name] = state
                self.order.append(state)
            else:
                entry = keywords.OTHER_SECTIONS[section.kind]
                header = Directive((section.kind, section.name), section.location, False)
                self.report.note(header, entry)
        listeners = self.build_listeners()
        config: dict[str, Any] = {}
        if self.global_:
            config["global"] = self.global_
        config["listeners"] = listeners
        return config

    def _from(
        self, section: Section, defaults: ProxyState, named: dict[str, ProxyState]
    ) -> ProxyState:
        args = section.args
        if "from" in args:
            i = args.index("from")
            if i + 1 >= len(args) or args[i + 1] not in named:
                raise TranslationError(section.location, "'from' names no defaults section")
            return named[args[i + 1]]
        return defaults

    # -- global ------------------------------------------------------------------------

    def global_directive(self, directive: Directive) -> None:
        key, entry = keywords.lookup(keywords.GLOBAL_KEYWORDS, directive.words)
        if entry.kind is Kind.UNKNOWN and not directive.indented:
            raise TranslationError(
                directive.location, f"unknown section or keyword '{directive.keyword}'"
            )
        if entry.kind is not Kind.TRANSLATED:
            self.report.note(directive, entry)
            return
        args = directive.args
        if key == "nbthread":
            self.global_["workers"] = parse_int(directive, args, 1, 64)
        elif key == "nbproc":
            n = parse_int(directive, args, 1, 64)
            if n > 1 and "workers" not in self.global_:
                self.global_["workers"] = n
            self.report.note(
                directive,
                Entry(
                    Kind.NO_EFFECT,
                    "removed from HAProxy 2.5; "
                    + ("translated as global.workers" if n > 1 else "1 is the default"),
                ),
            )
        elif key == "maxconn":
            # HAProxy's default for a frontend's maxconn is the process's.
            self.global_maxconn = parse_int(directive, args, 1, 10_000_000)
            self.report.note(
                directive,
                Entry(
                    Kind.NOTE,
                    "no process-wide limit in loadstone; every "
                    "listener without its own maxconn gets this one",
                ),
            )
        elif key == "hard-stop-after":
            ms = parse_time(directive, args)
            self.global_["grace"] = format_duration(ms)
        elif key in ("ssl-default-bind-ciphers", "ssl-default-bind-ciphersuites"):
            _need_arg(directive)
            self.tls_bind_defaults[key.rsplit("-", 1)[1]] = args[0]
        elif key == "ssl-default-bind-options":
            self._bind_options(directive)
        elif key in ("crt-base", "ca-base"):
            _need_arg(directive)
            self.tls_bases[key.split("-")[0]] = args[0]
        elif key == "stats socket":
            self._stats_socket(directive)
        elif key == "stats timeout":
            ms = parse_time(directive, args[1:])
            self._haproxy_socket()["timeout"] = format_duration(ms)

    def _bind_options(self, directive: Directive) -> None:
        words = list(directive.args)
        while words:
            word = words.pop(0)
            if word == "ssl-min-ver" and words:
                self.tls_bind_defaults["ssl-min-ver"] = words.pop(0)
            elif word in ("no-sslv3", "no-tlsv10", "no-tlsv11"):
                self.report.note(
                    directive,
                    Entry(Kind.NO_EFFECT, "loadstone accepts TLS 1.2 and 1.3 only"),
                    what=f"ssl-default-bind-options ... {word}",
                )
            else:
                self.report.unsupported(
                    directive,
                    "TLS option not translated",
                    what=f"ssl-default-bind-options ... {word}",
                )

    def _haproxy_socket(self) -> dict[str, Any]:
        admin = self.global_.setdefault("admin", {})
        socket: dict[str, Any] = admin.setdefault("haproxy_socket", {})
        return socket

    # HAProxy's bind options on a stats socket and what loadstone's socket does with them.
    _SOCKET_KEYS: Final = {"mode": "mode", "level": "level", "user": "user", "group": "group"}

    def _stats_socket(self, directive: Directive) -> None:
        """`stats socket ADDRESS [mode M] [level L] [user U] [group G] ...` ->
        global.admin.haproxy_socket (the first one: loadstone serves one)."""
        words = directive.args[1:]
        if not words:
            raise TranslationError(directive.location, "'stats socket' needs an address")
        socket = self._haproxy_socket()
        if "path" in socket or "bind" in socket:
            self.report.unsupported(
                directive, "loadstone serves one runtime socket; the first one is translated"
            )
            return
        address = words[0].removeprefix("unix@")
        for family in ("ipv4@", "ipv6@"):
            address = address.removeprefix(family)
        if address.startswith("/"):
            socket["path"] = address
        elif ":" in address and not address.startswith(("abns@", "fd@", "sockpair@")):
            host, _, port = address.rpartition(":")
            socket["bind"] = f"{host if host not in ('', '*') else '0.0.0.0'}:{port}"
        else:
            self.report.unsupported(directive, f"no runtime socket on {address}")
            return
        options = words[1:]
        i = 0
        while i < len(options):
            name = options[i]
            value = options[i + 1] if i + 1 < len(options) else ""
            if name in self._SOCKET_KEYS and value:
                socket[self._SOCKET_KEYS[name]] = value
            elif name == "expose-fd":
                self.report.note(
                    directive,
                    Entry(Kind.NO_EFFECT, "loadstone's reloads keep their sockets themselves"),
                    f"expose-fd {value}",
                )
            else:
                self.report.unsupported(
                    directive, "not an option of loadstone's runtime socket", f"{name} {value}"
                )
            i += 2

    # -- proxy directives --------------------------------------------------------------

    def apply_all(self, state: ProxyState, section: Section) -> None:
        for directive in section.directives:
            apply_directive(self.report, state, directive)

    # -- listeners ---------------------------------------------------------------------

    def build_listeners(self) -> dict[str, Any]:
        listeners: dict[str, Any] = {}
        for state in self.order:
            if state.kind == "backend":
                continue
            listener = self.listener(state)
            if listener is not None:
                name = _listener_name(state.name)
                if name in listeners:
                    raise TranslationError(
                        state.location,
                        f"'{state.name}' and another proxy both become listener '{name}'",
                    )
                listeners[name] = listener
                self.origins[name] = self._origin(state)
        for state in self.order:
            if state.kind == "backend" and state.name not in self.used_backends:
                self.report.add(
                    state.location,
                    f"backend {state.name}",
                    Kind.NO_EFFECT,
                    "no frontend uses this backend, so HAProxy sends it no traffic",
                )
        if not listeners:
            raise TranslationError(
                self.order[0].location if self.order else Location("<haproxy>", 0),
                "no proxy with servers and a bind: nothing to translate",
            )
        return listeners

    def _origin(self, state: ProxyState) -> str:
        """Which HAProxy proxies a listener comes from, for a comment in the YAML."""
        names = [f"{state.kind} {state.name} ({state.location})"]
        for backend in self.frontend_backends.get(state.name, []):
            names.append(f"backend {backend} ({self.proxies[backend].location})")
        return ", ".join(names)

    def _backend(self, name: str, where: Directive | Location) -> ProxyState:
        state = self.proxies.get(name)
        location = where.location if isinstance(where, Directive) else where
        if state is None or state.kind == "frontend":
            raise TranslationError(location, f"no backend named '{name}'")
        self.used_backends.add(name)
        return state

    def listener(self, fe: ProxyState) -> dict[str, Any] | None:
        """A `listen` or a `frontend` (with its backends) -> a loadstone listener, or None."""
        where = Directive((fe.kind, fe.name), fe.location, False)
        tls: dict[str, Any] | None = None
        if fe.binds:
            for d, _, _ in fe.tls_bind_lines:
                self.report.note(
                    d,
                    Entry(
                        Kind.UNSUPPORTED,
                        "plain and TLS binds in one frontend: a loadstone listener is one or "
                        "the other; this address is not bound (split the frontend in two)",
                    ),
                )
        elif fe.tls_bind_lines:
            fe.binds = [a for _, addresses, _ in fe.tls_bind_lines for a in addresses]
            tls = self._listener_tls(fe)
        if not fe.binds:
            self.report.note(
                where, Entry(Kind.NO_EFFECT, "no bind line: HAProxy accepts no traffic here")
            )
            return None
        be = fe
        routes: list[dict[str, Any]] = []
        pools: dict[str, ProxyState] = {}
        if fe.kind == "listen":
            for d in fe.use_backends:
                self.report.unsupported(
                    d,
                    "use_backend in a listen section is not translated; its "
                    "own servers take every connection",
                )
            if fe.default_backend is not None and not fe.servers:
                self.report.unsupported(
                    Directive(
                        ("default_backend", fe.default_backend[0]), fe.default_backend[1], True
                    ),
                    "default_backend in a listen section is not translated",
                )
        if fe.kind == "frontend":
            if fe.default_backend is None and not fe.use_backends:
                if fe.mode == "http" and (fe.monitor_uri or fe.tls_redirect) and tls is None:
                    return self._answering_listener(fe)
                self.report.note(
                    where,
                    Entry(
                        Kind.UNSUPPORTED,
                        "a frontend without backend and without monitor-uri or redirect "
                        "answers nothing but 503: no listener is made",
                    ),
                )
                return None
            be, routes, pools = self._routing(fe)
            self.frontend_backends[fe.name] = [be.name, *pools]
            if be.mode != fe.mode:
                raise TranslationError(
                    fe.location,
                    f"frontend '{fe.name}' is mode {fe.mode} but backend '{be.name}' is mode "
                    f"{be.mode} (HAProxy refuses this)",
                )
        if not be.servers and be.stats_page:
            self.report.note(where, keywords.PROXY_KEYWORDS["stats"])
            return None
        if not be.servers:
            self.report.note(
                Directive((be.kind, be.name), be.location, False),
                Entry(
                    Kind.UNSUPPORTED,
                    "no servers: HAProxy answers 503 or closes; loadstone "
                    "needs at least one server, so no listener is made",
                ),
            )
            return None
        out: dict[str, Any] = {"bind": list(fe.binds)}
        if tls is not None:
            out["tls"] = tls
        if {fe.name, be.name} != {_listener_name(fe.name)}:
            # The names HAProxy's runtime socket knows it by (`disable server be/srv`).
            out["haproxy_names"] = {"frontend": fe.name, "backend": be.name}
        if fe.freebind:
            out["freebind"] = True
        if fe.transparent:
            out["transparent"] = True
        if fe.defer_accept:
            out["defer_accept"] = True
        if fe.accept_proxy:
            # HAProxy takes a header from any client of an accept-proxy bind;
            # loadstone asks whom to trust: every address, as HAProxy, until narrowed.
            out["accept_proxy"] = {"trusted": ["0.0.0.0/0", "::/0"]}
            self.report.note(
                where,
                Entry(
                    Kind.NOTE,
                    "accept-proxy: every source is trusted, as in HAProxy; narrow "
                    "accept_proxy.trusted to the proxies in front",
                ),
            )
        out["mode"] = fe.mode
        galera = self._is_galera(be)
        out["balance"] = "active-backup" if galera else self._balance(be)
        maxconn = fe.maxconn if fe.maxconn is not None else self.global_maxconn
        if maxconn is not None:
            out["maxconn"] = maxconn
        if fe.backlog is not None:
            out["backlog"] = fe.backlog
        if be.retries is not None:
            out["retries"] = be.retries
        if be.redispatch is not None:
            out["redispatch"] = be.redispatch
        check, check_interval_ms = self._check(be, galera)
        out["timeouts"] = self._timeouts(fe, be, check_interval_ms)
        if check is not None:
            if any("check-ssl" in s.options for s in be.servers):
                check["tls"] = True  # with the server's `tls` settings
            out["check"] = check
        if self._on_marked_down(be):
            out["on_marked_down"] = "shutdown-sessions"
        if fe.tcpka or be.tcpka:
            out["tcp_keepalive"] = self._keepalive(fe, be)
        log = fe.log or be.log
        if log:
            out["log"] = log
        out["servers"] = [self._server(s, be) for s in be.servers]
        if fe.mode == "http":
            self._http_keys(out, fe, be)
            self._answers(out, fe, tls is not None)
        else:
            for d, _ in fe.request_rules + (be.request_rules if be is not fe else []):
                self.report.note(
                    d, Entry(Kind.NO_EFFECT, "http-request rules in mode tcp: HAProxy ignores them")
                )
        if pools:
            out["pools"] = {
                name: {
                    "balance": self._balance(p),
                    "servers": [self._server(s, p, prefix=name) for s in p.servers],
                }
                for name, p in pools.items()
            }
            out["routes"] = routes
        if galera:
            self._galera_notes(be)
            self.galera_backends.add(be.name)
        return out

    # -- TLS, and what the proxy answers itself ---------------------------------------------

    def _listener_tls(self, fe: ProxyState) -> dict[str, Any]:
        """The `tls` of a frontend whose binds all terminate TLS (`bind ... ssl crt ...`)."""
        first, _, options = fe.tls_bind_lines[0]
        for d, _, other in fe.tls_bind_lines[1:]:
            if other != options:
                self.report.unsupported(
                    d, "TLS options differ between the binds: the first bind's apply to all"
                )
        if "crt" not in options:
            raise TranslationError(first.location, "'bind ... ssl' without a certificate (crt)")
        tls: dict[str, Any] = {
            "certificates": [self._tls_path(c, "crt") for c in options["crt"].split("\n")]
        }
        alpn = options.get("alpn")
        if alpn is not None:
            offered = [p for p in alpn.split(",") if p in ("http/1.1", "http/1.0")]
            if offered != alpn.split(","):
                self.report.note(
                    first,
                    Entry(Kind.NOTE, "loadstone speaks HTTP/1.1: ALPN offers http/1.1 only"),
                    what=f"bind ... alpn {alpn}",
                )
            if offered and fe.mode == "tcp":
                tls["alpn"] = offered
        ciphers = options.get("ciphers") or self.tls_bind_defaults.get("ciphers")
        if ciphers:
            tls["ciphers"] = ciphers
        suites = options.get("ciphersuites") or self.tls_bind_defaults.get("ciphersuites")
        if suites:
            tls["ciphersuites"] = suites
        version = options.get("ssl-min-ver") or self.tls_bind_defaults.get("ssl-min-ver")
        if version in ("TLSv1.2", "TLSv1.3"):
            tls["min_version"] = version
        elif version is not None:
            self.report.note(
                first,
                Entry(Kind.NOTE, f"loadstone accepts TLS 1.2 and 1.3 only, not {version}"),
                what=f"ssl-min-ver {version}",
            )
        if "ca-file" in options:
            tls["client_ca"] = self._tls_path(options["ca-file"], "ca")
            tls["verify_client"] = options.get("verify", "required")
        elif options.get("verify", "none") != "none":
            raise TranslationError(first.location, "'verify' on a bind needs 'ca-file'")
        return tls

    def _tls_path(self, path: str, kind: str) -> str:
        base = self.tls_bases.get(kind)
        return f"{base.rstrip('/')}/{path}" if base and not path.startswith("/") else path

    def _server_tls(self, s: Server) -> dict[str, Any] | bool:
        """`server ... ssl [verify none|required] [ca-file F] [sni str(NAME)]`."""
        tls: dict[str, Any] = {}
        verify = s.options.get("verify", "required")
        if verify == "none":
            tls["verify"] = "none"
        elif "ca-file" not in s.options:
            # HAProxy refuses this: verify is required by default and needs a CA file.
            raise TranslationError(
                s.location, f"server {s.name}: 'ssl' verify required needs ca-file"
            )
        if "ca-file" in s.options:
            tls["ca_file"] = self._tls_path(s.options["ca-file"], "ca")
        sni = s.options.get("sni")
        if sni is not None:
            m = re.fullmatch(r"str\(([^)]+)\)", sni)
            if m is None:
                self.report.unsupported(
                    Directive(("server", s.name), s.location, True),
                    "only a constant sni str(NAME) is translated",
                    what=f"server ... sni {sni}",
                )
            else:
                tls["sni"] = m[1]
        return tls or True

    def _answers(self, out: dict[str, Any], fe: ProxyState, tls: bool) -> None:
        """monitor-uri, and `redirect scheme https if !{ ssl_fc }` with X-Forwarded-Proto."""
        if fe.monitor_uri is not None:
            out["monitor"] = fe.monitor_uri
        if fe.tls_redirect is not None:
            d, code = fe.tls_redirect
            if tls:
                self.report.note(d, Entry(Kind.NO_EFFECT, "every request of this listener is TLS"))
            else:
                out["redirect"] = {"scheme": "https", "code": code}
        # `set-header X-Forwarded-Proto https if { ssl_fc }` applies on a TLS listener
        # only, `... http if !{ ssl_fc }` on a plain one: forwarded_proto auto says both.
        forms = {"https" if "https" in d.words else "http" for d in fe.proto_by_tls}
        if ("https" if tls else "http") in forms:
            out["forwarded_proto"] = "auto"

    def _answering_listener(self, fe: ProxyState) -> dict[str, Any]:
        """A frontend without backend that answers itself (kolla's `frontend status`
        with monitor-uri, openstack-ansible's redirect to https): no servers."""
        out: dict[str, Any] = {"bind": list(fe.binds), "mode": "http"}
        if fe.freebind:
            out["freebind"] = True
        if fe.transparent:
            out["transparent"] = True
        if fe.defer_accept:
            out["defer_accept"] = True
        maxconn = fe.maxconn if fe.maxconn is not None else self.global_maxconn
        if maxconn is not None:
            out["maxconn"] = maxconn
        out["timeouts"] = self._timeouts(fe, fe, None)
        self._answers(out, fe, False)
        return out

    def report_unused(self) -> None:
        """Directives whose effect depends on others, checked once every listener is built."""
        for state in self.order:
            for d in state.stick_directives:
                if state.rate_table_used and not state.stick_on_dst:
                    continue  # the counters of rate conditions, translated with them
                if state.name not in self.galera_backends or d.args[:2] != ("type", "ip"):
                    self.report.unsupported(
                        d, "stick tables are only translated in the Galera writer pattern"
                    )
            if state.track_src is not None and not state.rate_table_used:
                self.report.note(
                    state.track_src,
                    Entry(Kind.NO_EFFECT, "tracked counters no translated rule reads"),
                )
            if state.check_type != "httpchk":
                for d in state.http_check_rules:
                    self.report.note(
                        d,
                        Entry(
                            Kind.NO_EFFECT,
                            "without 'option httpchk' HAProxy ignores http-check rules",
                        ),
                    )
            for name, lines in state.acls.items():
                if name not in state.used_acls:
                    for d in lines:
                        self.report.note(
                            d,
                            Entry(
                                Kind.NO_EFFECT,
                                "only used by rules reported on their own lines (or by none)",
                            ),
                        )

    # -- routing -----------------------------------------------------------------------

    def _routing(
        self, fe: ProxyState
    ) -> tuple[ProxyState, list[dict[str, Any]], dict[str, ProxyState]]:
        """The default backend, the routes, and the other backends as pools."""
        routes: list[dict[str, Any]] = []
        pools: dict[str, ProxyState] = {}
        default = (
            self._backend(fe.default_backend[0], fe.default_backend[1])
            if fe.default_backend
            else None
        )
        for d in fe.use_backends:
            target = d.args[0]
            cond = d.args[1:]
            if target.startswith("%["):
                new_routes, map_default = self._map_routes(fe, d)
                if new_routes is None:
                    continue
                if map_default and default is None:
                    default = self._backend(map_default, d)
                for route in new_routes:
                    pool_be = self._backend(route["pool"], d)
                    if default is None or pool_be.name != default.name:
                        pools[pool_be.name] = pool_be
                    routes.append(route)
                continue
            backend = self._backend(target, d)
            if not cond:
                if default is None:
                    default = backend
                else:
                    self.report.note(
                        d, Entry(Kind.NO_EFFECT, "an earlier rule or default_backend wins")
                    )
                continue
            if default is not None and backend.name == default.name and fe.mode == "tcp":
                # charm-helpers: `use_backend X if net_X` beside `default_backend X`
                self._mark_acls(fe, cond)
                continue
            if fe.mode != "http":
                self.report.unsupported(
                    d,
                    "loadstone routes http requests only; in tcp mode every "
                    "connection goes to the default backend",
                )
                continue
            conditions = self._route_conditions(fe, d)
            if conditions is None:
                continue
            for condition in conditions:
                routes.append({**condition, "pool": backend.name})
            if default is None or backend.name != default.name:
                pools[backend.name] = backend
        if default is None:
            if not pools:
                raise TranslationError(fe.location, f"frontend '{fe.name}': no usable backend")
            # HAProxy answers 503 to what no rule matches; loadstone needs a default pool.
            default = pools.pop(next(iter(pools)))
            self.report.add(
                fe.use_backends[0].location,
                f"frontend {fe.name}",
                Kind.UNSUPPORTED,
                f"no default_backend: HAProxy answers 503 to requests no rule matches; "
                f"loadstone sends them to backend {default.name}",
            )
        # Route pools that are the default backend are the listener's own servers.
        for route in routes:
            if route["pool"] == default.name:
                route["pool"] = "default"
        for pool in pools.values():
            if pool.mode != fe.mode:
                raise TranslationError(pool.location, f"backend '{pool.name}' mode mismatch")
            self._pool_check_note(default, pool)
        return default, routes, pools

    def _mark_acls(self, fe: ProxyState, cond: tuple[str, ...]) -> None:
        for word in cond:
            fe.used_acls.add(word.lstrip("!"))

    _MAP_EXPR = re.compile(
        r"%\[(?P<fetch>req\.hdr\(host\)|hdr\(host\)|req\.hdr\(Host\)|hdr\(Host\)|path|base)"
        r"(?P<conv>(?:,\w+)*?),(?P<map>map|map_str|map_dom|map_reg|map_beg|map_end)"
        r"\((?P<file>[^,)]+)(?:,(?P<default>[^)]*))?\)\]"
    )

    def _map_routes(
        self, fe: ProxyState, d: Directive
    ) -> tuple[list[dict[str, Any]] | None, str | None]:
        m = self._MAP_EXPR.fullmatch(d.args[0])
        if m is None or len(d.args) > 1 or fe.mode != "http":
            self.report.unsupported(d, "loadstone routes on a Host or path map only, in mode http")
            return None, None
        text = self.read_file(m["file"])
        if text is None:
            raise TranslationError(d.location, f"cannot read map file {m['file']}")
        fetch, kind = m["fetch"].lower(), m["map"]
        on_host = "host" in fetch
        routes: list[dict[str, Any]] = []
        for line in text.splitlines():
            words = line.split("#", 1)[0].split()
            if len(words) < 2:
                continue
            key, backend = words[0], words[1]
            if on_host and kind in ("map", "map_str"):
                routes.append({"host": key.lower(), "pool": backend})
            elif on_host and kind == "map_dom":
                # map_dom matches the key on dot boundaries: the name and its subdomains
                routes.append({"host": [key.lower(), f"*.{key.lower()}"], "pool": backend})
            elif not on_host and kind == "map_beg":
                routes.append({"path_prefix": key, "pool": backend})
            elif not on_host and kind in ("map", "map_str"):
                routes.append({"path_exact": key, "pool": backend})
            elif not on_host and kind == "map_reg":
                # HAProxy searches anywhere in the path; loadstone matches from its start
                regex = key if key.startswith("^") else f".*{key}"
                routes.append({"path_regex": regex, "pool": backend})
            else:
                self.report.unsupported(d, f"{kind} on {fetch} has no loadstone route equivalent")
                return None, None
        return routes, m["default"] or None

    def _route_conditions(self, fe: ProxyState, d: Directive) -> list[dict[str, Any]] | None:
        """`use_backend B if ACL` with one Host or path ACL -> route conditions (ORed)."""
        cond = d.args[1:]
        if len(cond) != 2 or cond[0] != "if":
            self.report.unsupported(d, "loadstone routes on one Host or path condition only")
            return None
        name = cond[1]
        acl_lines = fe.acls.get(name)
        if not acl_lines:
            raise TranslationError(d.location, f"no acl named '{name}'")
        fe.used_acls.add(name)
        conditions: list[dict[str, Any]] = []
        for acl in acl_lines:
            criterion, values = acl.args[1], [v for v in acl.args[2:] if not v.startswith("-")]
            flags = [v for v in acl.args[2:] if v.startswith("-")]
            if criterion in ("hdr(host)", "req.hdr(host)", "hdr_dom(host)") and set(flags) <= {
                "-i"
            }:
                for v in values:
                    host = v.lower()
                    conditions.append(
                        {"host": [host, f"*.{host}"] if criterion == "hdr_dom(host)" else host}
                    )
            elif criterion in ("path_beg", "path", "path_reg") and not flags:
                key = {"path_beg": "path_prefix", "path": "path_exact", "path_reg": "path_regex"}
                for v in values:
                    if criterion == "path_reg" and not v.startswith("^"):
                        v = f".*{v}"
                    conditions.append({key[criterion]: v})
            else:
                self.report.unsupported(acl, "loadstone routes on Host and path conditions only")
                return None
        return conditions

    def _pool_check_note(self, default: ProxyState, pool: ProxyState) -> None:
        def shape(p: ProxyState) -> tuple[Any, ...]:
            return (p.check_type, p.http_method, p.http_path, p.expect_status, p.balance)

        if shape(default)[:4] != shape(pool)[:4]:
            self.report.add(
                pool.location,
                f"backend {pool.name}",
                Kind.UNSUPPORTED,
                f"its check differs from backend {default.name}'s; loadstone checks every "
                "pool of a listener with the listener's check",
            )

    # -- settings ----------------------------------------------------------------------

    def _balance(self, be: ProxyState) -> str:
        return be.balance or "roundrobin"

    def _timeouts(
        self, fe: ProxyState, be: ProxyState, check_interval_ms: float | None
    ) -> dict[str, str]:
        # Client-side timeouts come from the frontend, server-side ones from the backend.
        t = {
            "connect": be.timeouts_ms.get("connect"),
            "client": fe.timeouts_ms.get("client"),
            "server": be.timeouts_ms.get("server"),
            "check": be.timeouts_ms.get("check"),
            "queue": be.timeouts_ms.get("queue"),
            "tunnel": be.timeouts_ms.get("tunnel"),
            "http_request": fe.timeouts_ms.get("http-request"),
            "http_keep_alive": fe.timeouts_ms.get("http-keep-alive"),
        }
        # HAProxy's fallbacks when a timeout is not set (its documentation of each).
        if t["check"] is None and check_interval_ms is not None:
            t["check"] = check_interval_ms
        if t["queue"] is None:
            t["queue"] = t["connect"]
        if t["http_request"] is None:
            t["http_request"] = t["client"]
        if t["http_keep_alive"] is None:
            t["http_keep_alive"] = t["http_request"]
        if t["tunnel"] is None and t["client"] is not None and t["server"] is not None:
            t["tunnel"] = max(t["client"], t["server"])
        for key, where in (("connect", be), ("client", fe), ("server", be)):
            if t[key] is None:
                self.report.add(
                    where.location,
                    f"{where.kind} {where.name}",
                    Kind.UNSUPPORTED,
                    (f"'timeout {key} 0'" if key in where.zero_timeouts else f"no 'timeout {key}'")
                    + ": HAProxy waits forever; loadstone's default applies",
                )
        if fe.mode != "http":
            t["http_request"] = t["http_keep_alive"] = t["tunnel"] = None
        return {k: format_duration(v) for k, v in t.items() if v is not None}

    def _keepalive(self, fe: ProxyState, be: ProxyState) -> bool | dict[str, Any]:
        params = {**be.tcpka_params, **fe.tcpka_params}
        if not params:
            return True
        out: dict[str, Any] = {}
        for suffix, key in (("idle", "idle"), ("intvl", "interval")):
            value = params.get(f"clitcpka-{suffix}") or params.get(f"srvtcpka-{suffix}")
            if value is not None:
                ms = parse_haproxy_time(value) or 0
                out[key] = format_duration(max(1000, ms - ms % 1000))
        cnt = params.get("clitcpka-cnt") or params.get("srvtcpka-cnt")
        if cnt is not None:
            out["count"] = int(cnt)
        return out

    def _on_marked_down(self, be: ProxyState) -> bool:
        return any(s.options.get("on-marked-down") == "shutdown-sessions" for s in be.servers)

    def _server(self, s: Server, be: ProxyState, prefix: str | None = None) -> dict[str, Any]:
        out: dict[str, Any] = {
            "name": f"{prefix}.{s.name}" if prefix else s.name,
            "address": f"[{s.host}]:{s.port}" if ":" in s.host else f"{s.host}:{s.port}",
        }
        if "weight" in s.options:
            out["weight"] = int(s.options["weight"])
        if "backup" in s.options:
            out["backup"] = True
        if "maxconn" in s.options:
            out["maxconn"] = int(s.options["maxconn"])
        if "check" not in s.options and any("check" in o.options for o in be.servers):
            out["check"] = False
        if "cookie" in s.options and be.cookie is not None:
            out["cookie"] = s.options["cookie"]
        if "ssl" in s.options:
            out["tls"] = self._server_tls(s)
        if "send-proxy-v2" in s.options:
            out["send_proxy"] = "v2"
        elif "send-proxy" in s.options:
            out["send_proxy"] = "v1"
        return out

    # -- checks ------------------------------------------------------------------------

    def _check(self, be: ProxyState, galera: bool) -> tuple[dict[str, Any] | None, float | None]:
        checked = [s for s in be.servers if "check" in s.options]
        if not checked:
            if be.check_type is not None and be.check_location is not None:
                self.report.add(
                    be.check_location,
                    f"option {be.check_type}",
                    Kind.NO_EFFECT,
                    "no server has 'check', so HAProxy never probes them",
                )
            return None, None
        first = next((s for s in checked if "backup" not in s.options), checked[0])
        inter = parse_haproxy_time(first.options.get("inter", "")) or HAPROXY_INTER_MS
        check: dict[str, Any] = {"type": "tcp"}
        params: dict[str, Any] = {
            "interval": format_duration(inter),
            "rise": int(first.options.get("rise", HAPROXY_RISE)),
            "fall": int(first.options.get("fall", HAPROXY_FALL)),
        }
        for opt in ("fastinter", "downinter"):
            if opt in first.options:
                params[opt] = format_duration(parse_haproxy_time(first.options[opt]) or inter)
        port = first.options.get("port")
        if port is None and be.tcp_check_port is not None:
            port = str(be.tcp_check_port)
        for s in checked:
            same = all(
                s.options.get(k) == first.options.get(k)
                for k in ("inter", "rise", "fall", "fastinter", "downinter", "port")
            )
            if not same:
                self.report.add(
                    s.location,
                    f"server {s.name} check parameters",
                    Kind.UNSUPPORTED,
                    f"differ from server {first.name}'s; loadstone checks every server of "
                    f"a listener alike (took {first.name}'s)",
                )
        if galera and self.galera_check == "native":
            check = {
                "type": "galera",
                "user": be.mysql_user or GALERA_MONITOR_USER,
                "password_env": GALERA_PASSWORD_ENV,
            }
            port = None  # the galera check asks the MySQL port itself, not clustercheck
        elif be.check_type == "httpchk":
            check = {"type": "http", "method": be.http_method, "path": be.http_path}
            if be.expect_status:
                check["expect_status"] = be.expect_status
            else:
                # HAProxy's default: any 2xx or 3xx status passes
                check["expect_status"] = [*range(200, 207), *range(300, 309)]
            if be.http_host:
                check["host"] = be.http_host
            if be.http_headers:
                check["headers"] = dict(be.http_headers)
        elif be.check_type == "mysql":
            if be.mysql_user:
                check = {"type": "mysql", "user": be.mysql_user}
            else:
                assert be.check_location is not None
                self.report.add(
                    be.check_location,
                    "option mysql-check",
                    Kind.UNSUPPORTED,
                    "without a user HAProxy only reads the server's handshake; translated "
                    "as a tcp check (loadstone's mysql check logs in and needs a user)",
                )
        elif be.check_type in ("tcp-check", "redis") and be.tcp_steps:
            check = {"type": "send-expect", "steps": list(be.tcp_steps)}
        check.update(params)
        if port is not None:
            check["port"] = int(port)
        return check, inter

    def _is_galera(self, be: ProxyState) -> bool:
        """HAProxy's single-writer Galera pattern (see the module docstring)."""
        if be.mode != "tcp" or len(be.servers) < 2:
            return False
        backups = [s for s in be.servers if "backup" in s.options]
        one_active = len(backups) == len(be.servers) - 1
        all_backup_sticky = len(backups) == len(be.servers) and be.stick_on_dst
        if not (one_active or all_backup_sticky):
            return False
        ports = {int(s.options["port"]) for s in be.servers if "port" in s.options}
        return (
            be.check_type == "mysql"
            or bool(ports & CLUSTERCHECK_PORTS)
            or all(s.port == 3306 for s in be.servers)
            or _DATABASE_NAME.search(be.name) is not None
        )

    def _galera_notes(self, be: ProxyState) -> None:
        location = be.servers[0].location
        if self.galera_check == "native":
            reason = (
                f"single-writer Galera pattern -> balance active-backup with a galera check: "
                f"create the account ({be.mysql_user or GALERA_MONITOR_USER}) and set "
                f"${GALERA_PASSWORD_ENV}"
            )
        else:
            reason = (
                "single-writer Galera pattern -> balance active-backup, HAProxy's check kept "
                "(--galera-check native reads wsrep status instead)"
            )
        self.report.add(location, f"backend {be.name}", Kind.NOTE, reason)
        if not be.stick_on_dst:
            self.report.add(
                location,
                f"backend {be.name}",
                Kind.NOTE,
                "HAProxy fails back to the first server when it returns; loadstone keeps "
                "the current writer (no failback, as 'stick on dst' did)",
            )

    # -- http --------------------------------------------------------------------------

    def _http_keys(self, out: dict[str, Any], fe: ProxyState, be: ProxyState) -> None:
        # Either side may ask for the header (the backend's options win, as in HAProxy).
        forwardfor = be.forwardfor if be.forwardfor is not None else fe.forwardfor
        if forwardfor is not None:
            out["forwardfor"] = forwardfor or True
        if fe.forwarded_port or be.forwarded_port:
            out["forwarded_port"] = True
        headers = fe.request_headers + (be.request_headers if be is not fe else [])
        if headers:
            out["request_headers"] = headers
        # HAProxy runs the frontend's http-request rules, then the backend's.
        rules = fe.request_rules + (be.request_rules if be is not fe else [])
        if rules:
            # Copies: a backend shared by two frontends must not become a YAML alias.
            out["request_rules"] = [copy.deepcopy(rule) for _, rule in rules]
        responses = be.response_headers + (fe.response_headers if be is not fe else [])
        if responses:
            out["response_headers"] = responses
        if fe.rewrite_location or be.rewrite_location:
            out["rewrite_location"] = "https"
        if be.cookie is not None:
            out["cookie"] = be.cookie


def translate(
    sections: list[Section],
    galera_check: GaleraCheck = "http",
    read_file: ReadFile = lambda path: None,
) -> Translation:
    """Translate parsed sections; raises TranslationError for a file HAProxy would refuse."""
    translator = _Translator(galera_check, read_file)
    config = translator.run(sections)
    translator.report_unused()
    report = translator.report.in_file_order(translator.files)
    return Translation(config, report, translator.origins)


def _need_arg(directive: Directive) -> None:
    if not directive.args:
        raise TranslationError(directive.location, f"'{directive.text}': missing argument")


def _listener_name(name: str) -> str:
    """HAProxy names allow characters loadstone's listener names do not."""
    return re.sub(r"[^A-Za-z0-9_.-]", "_", name)
