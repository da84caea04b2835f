"""Parsed HAProxy sections -> a loadstone configuration (a plain mapping) and a report.

Theory of operation
-------------------
HAProxy builds each proxy by copying the last `defaults` section and applying
the proxy's own directives over it; where both are silent its built-in
defaults hold (balance roundrobin, checks `inter 2s rise 2 fall 3`, `timeout
check` = `inter`, `timeout queue` = `timeout connect`, `timeout http-request`
= `timeout client`, ...). `_ProxyState` is that copy: one mutable record per
proxy that the handlers (one per TRANSLATED entry of `keywords`) write into.

Then every `listen`, and every `frontend` with the backends it names, becomes
a loadstone listener (`_Listener`): the frontend gives the binds and
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
from dataclasses import dataclass, field
from typing import Any, Literal

from loadstone.importers.haproxy import keywords
from loadstone.importers.haproxy.keywords import Entry, Kind
from loadstone.importers.haproxy.parser import Directive, Location, Section
from loadstone.importers.haproxy.report import ReportLine, TranslationError

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
class _Server:
    name: str
    host: str
    port: int
    location: Location
    options: dict[str, str]  # server option -> its argument ("" for flags), default-server first


@dataclass
class _ProxyState:
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
    response_headers: list[dict[str, str]] = field(default_factory=list)
    rewrite_location: bool = False
    default_server: dict[str, str] = field(default_factory=dict)
    binds: list[str] = field(default_factory=list)
    freebind: bool = False
    tls_binds: int = 0  # bind lines left out because they terminate TLS
    servers: list[_Server] = field(default_factory=list)
    default_backend: tuple[str, Location] | None = None
    use_backends: list[Directive] = field(default_factory=list)
    acls: dict[str, list[Directive]] = field(default_factory=dict)
    used_acls: set[str] = field(default_factory=set)
    stats_page: bool = False  # HAProxy's stats page is served here

    def inherit(self, kind: str, name: str, location: Location) -> _ProxyState:
        child = copy.deepcopy(self)
        child.kind, child.name, child.location = kind, name, location
        return child


@dataclass
class Translation:
    config: dict[str, Any]  # the loadstone configuration, ready for YAML
    report: list[ReportLine]


class _Translator:
    def __init__(self, galera_check: GaleraCheck, read_file: ReadFile) -> None:
        self.galera_check = galera_check
        self.read_file = read_file
        self.report: list[ReportLine] = []
        self.global_: dict[str, Any] = {}
        self.proxies: dict[str, _ProxyState] = {}
        self.order: list[_ProxyState] = []
        self.galera_backends: set[str] = set()
        self.used_backends: set[str] = set()
        self.files: list[str] = []
        self.global_maxconn: int | None = None

    # -- reporting ---------------------------------------------------------------------

    def note(self, directive: Directive, entry: Entry, what: str | None = None) -> None:
        self.report.append(
            ReportLine(directive.location, what or directive.text, entry.kind, entry.reason)
        )

    def unsupported(self, directive: Directive, reason: str, what: str | None = None) -> None:
        self.note(directive, Entry(Kind.UNSUPPORTED, reason), what)

    # -- sections ----------------------------------------------------------------------

    def run(self, sections: list[Section]) -> Translation:
        self.files = list(dict.fromkeys(section.location.file for section in sections))
        defaults = _ProxyState("defaults", "", Location("<haproxy>", 0))
        named_defaults: dict[str, _ProxyState] = {}
        for section in sections:
            if section.kind == "global":
                for directive in section.directives:
                    self.global_directive(directive)
            elif section.kind == "defaults":
                # A defaults section starts afresh (HAProxy resets every setting),
                # unless it says `from` another one.
                fresh = _ProxyState("defaults", "", section.location)
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
                    self.apply(state, header)
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
                self.note(header, entry)
        listeners = self.build_listeners()
        config: dict[str, Any] = {}
        if self.global_:
            config["global"] = self.global_
        config["listeners"] = listeners
        return Translation(config, self.report)

    def _from(
        self, section: Section, defaults: _ProxyState, named: dict[str, _ProxyState]
    ) -> _ProxyState:
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
            self.note(directive, entry)
            return
        args = directive.args
        if key == "nbthread":
            self.global_["workers"] = self._int(directive, args, 1, 64)
        elif key == "nbproc":
            n = self._int(directive, args, 1, 64)
            if n > 1 and "workers" not in self.global_:
                self.global_["workers"] = n
            self.note(
                directive,
                Entry(
                    Kind.NO_EFFECT,
                    "removed from HAProxy 2.5; "
                    + ("translated as global.workers" if n > 1 else "1 is the default"),
                ),
            )
        elif key == "maxconn":
            # HAProxy's default for a frontend's maxconn is the process's.
            self.global_maxconn = self._int(directive, args, 1, 10_000_000)
            self.note(
                directive,
                Entry(
                    Kind.NOTE,
                    "no process-wide limit in loadstone; every "
                    "listener without its own maxconn gets this one",
                ),
            )
        elif key == "hard-stop-after":
            ms = self._time(directive, args)
            self.global_["grace"] = format_duration(ms)

    # -- proxy directives --------------------------------------------------------------

    def apply_all(self, state: _ProxyState, section: Section) -> None:
        for directive in section.directives:
            self.apply(state, directive)

    def apply(self, state: _ProxyState, directive: Directive) -> None:
        key, entry = keywords.lookup(keywords.PROXY_KEYWORDS, directive.words)
        if key == "stats":
            state.stats_page = True
        if entry.kind is not Kind.TRANSLATED:
            if entry.kind is Kind.UNKNOWN and not directive.indented:
                raise TranslationError(
                    directive.location, f"unknown section or keyword '{directive.keyword}'"
                )
            self.note(directive, entry)
            return
        handler = _HANDLERS[key]
        negated = directive.words[0] == "no" and key != "no log"
        if negated and key not in _NEGATABLE:
            self.unsupported(directive, "the 'no' form of this keyword is not translated")
            return
        if directive.words[0] == "default":
            self.unsupported(directive, "the 'default' form of this keyword is not translated")
            return
        handler(self, state, directive, negated)

    # Argument helpers: a bad value is a file HAProxy refuses.
    def _int(self, d: Directive, args: tuple[str, ...], lo: int, hi: int, i: int = 0) -> int:
        try:
            value = int(args[i])
        except (IndexError, ValueError):
            raise TranslationError(d.location, f"'{d.keyword}' expects an integer") from None
        if not lo <= value <= hi:
            raise TranslationError(d.location, f"'{d.keyword}' must be {lo}-{hi}, got {value}")
        return value

    def _time(self, d: Directive, args: tuple[str, ...], i: int = 0) -> float:
        ms = parse_haproxy_time(args[i]) if len(args) > i else None
        if ms is None or ms <= 0:
            raise TranslationError(d.location, f"'{d.text}': expects a time")
        return ms

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
        for state in self.order:
            if state.kind == "backend" and state.name not in self.used_backends:
                self.report.append(
                    ReportLine(
                        state.location,
                        f"backend {state.name}",
                        Kind.NO_EFFECT,
                        "no frontend uses this backend, so HAProxy sends it no traffic",
                    )
                )
        if not listeners:
            raise TranslationError(
                self.order[0].location if self.order else Location("<haproxy>", 0),
                "no proxy with servers and a bind: nothing to translate",
            )
        return listeners

    def _backend(self, name: str, where: Directive | Location) -> _ProxyState:
        state = self.proxies.get(name)
        location = where.location if isinstance(where, Directive) else where
        if state is None or state.kind == "frontend":
            raise TranslationError(location, f"no backend named '{name}'")
        self.used_backends.add(name)
        return state

    def listener(self, fe: _ProxyState) -> dict[str, Any] | None:
        """A `listen` or a `frontend` (with its backends) -> a loadstone listener, or None."""
        where = Directive((fe.kind, fe.name), fe.location, False)
        if not fe.binds and fe.tls_binds:
            self.note(
                where,
                Entry(
                    Kind.TLS,
                    "every bind is TLS, not yet supported by loadstone: no listener is made",
                ),
            )
            return None
        if not fe.binds:
            self.note(where, Entry(Kind.NO_EFFECT, "no bind line: HAProxy accepts no traffic here"))
            return None
        be = fe
        routes: list[dict[str, Any]] = []
        pools: dict[str, _ProxyState] = {}
        if fe.kind == "listen":
            for d in fe.use_backends:
                self.unsupported(
                    d,
                    "use_backend in a listen section is not translated; its "
                    "own servers take every connection",
                )
            if fe.default_backend is not None and not fe.servers:
                self.unsupported(
                    Directive(
                        ("default_backend", fe.default_backend[0]), fe.default_backend[1], True
                    ),
                    "default_backend in a listen section is not translated",
                )
        if fe.kind == "frontend":
            if fe.default_backend is None and not fe.use_backends:
                self.note(
                    where,
                    Entry(
                        Kind.NOT_YET,
                        "a frontend without backend (monitor-uri, "
                        "redirects) is not yet supported by loadstone",
                    ),
                )
                return None
            be, routes, pools = self._routing(fe)
            if be.mode != fe.mode:
                raise TranslationError(
                    fe.location,
                    f"frontend '{fe.name}' is mode {fe.mode} but backend '{be.name}' is mode "
                    f"{be.mode} (HAProxy refuses this)",
                )
        if not be.servers and be.stats_page:
            self.note(where, keywords.PROXY_KEYWORDS["stats"])
            return None
        if not be.servers:
            self.note(
                Directive((be.kind, be.name), be.location, False),
                Entry(
                    Kind.UNSUPPORTED,
                    "no servers: HAProxy answers 503 or closes; loadstone "
                    "needs at least one server, so no listener is made",
                ),
            )
            return None
        out: dict[str, Any] = {"bind": list(fe.binds)}
        if fe.freebind:
            out["freebind"] = True
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

    def report_unused(self) -> None:
        """Directives whose effect depends on others, checked once every listener is built."""
        for state in self.order:
            for d in state.stick_directives:
                if state.name not in self.galera_backends or d.args[:2] != ("type", "ip"):
                    self.unsupported(
                        d, "stick tables are only translated in the Galera writer pattern"
                    )
            if state.check_type != "httpchk":
                for d in state.http_check_rules:
                    self.note(
                        d,
                        Entry(
                            Kind.NO_EFFECT,
                            "without 'option httpchk' HAProxy ignores http-check rules",
                        ),
                    )
            for name, lines in state.acls.items():
                if name not in state.used_acls:
                    for d in lines:
                        self.note(
                            d,
                            Entry(
                                Kind.NO_EFFECT,
                                "only used by rules reported on their own lines (or by none)",
                            ),
                        )
        unique: dict[tuple[str, str, str], ReportLine] = {}
        for line in self.report:
            unique.setdefault((str(line.location), line.directive, line.reason), line)
        order = {name: i for i, name in enumerate(self.files)}
        self.report[:] = sorted(
            unique.values(), key=lambda r: (order.get(r.location.file, -1), r.location.line)
        )

    # -- routing -----------------------------------------------------------------------

    def _routing(
        self, fe: _ProxyState
    ) -> tuple[_ProxyState, list[dict[str, Any]], dict[str, _ProxyState]]:
        """The default backend, the routes, and the other backends as pools."""
        routes: list[dict[str, Any]] = []
        pools: dict[str, _ProxyState] = {}
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
                    self.note(d, Entry(Kind.NO_EFFECT, "an earlier rule or default_backend wins"))
                continue
            if default is not None and backend.name == default.name and fe.mode == "tcp":
                # charm-helpers: `use_backend X if net_X` beside `default_backend X`
                self._mark_acls(fe, cond)
                continue
            if fe.mode != "http":
                self.unsupported(
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
            self.report.append(
                ReportLine(
                    fe.use_backends[0].location,
                    f"frontend {fe.name}",
                    Kind.UNSUPPORTED,
                    f"no default_backend: HAProxy answers 503 to requests no rule matches; "
                    f"loadstone sends them to backend {default.name}",
                )
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

    def _mark_acls(self, fe: _ProxyState, cond: tuple[str, ...]) -> None:
        for word in cond:
            fe.used_acls.add(word.lstrip("!"))

    _MAP_EXPR = re.compile(
        r"%\[(?P<fetch>req\.hdr\(host\)|hdr\(host\)|req\.hdr\(Host\)|hdr\(Host\)|path|base)"
        r"(?P<conv>(?:,\w+)*?),(?P<map>map|map_str|map_dom|map_reg|map_beg|map_end)"
        r"\((?P<file>[^,)]+)(?:,(?P<default>[^)]*))?\)\]"
    )

    def _map_routes(
        self, fe: _ProxyState, d: Directive
    ) -> tuple[list[dict[str, Any]] | None, str | None]:
        m = self._MAP_EXPR.fullmatch(d.args[0])
        if m is None or len(d.args) > 1 or fe.mode != "http":
            self.unsupported(d, "loadstone routes on a Host or path map only, in mode http")
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
                self.unsupported(d, f"{kind} on {fetch} has no loadstone route equivalent")
                return None, None
        return routes, m["default"] or None

    def _route_conditions(self, fe: _ProxyState, d: Directive) -> list[dict[str, Any]] | None:
        """`use_backend B if ACL` with one Host or path ACL -> route conditions (ORed)."""
        cond = d.args[1:]
        if len(cond) != 2 or cond[0] != "if":
            self.unsupported(d, "loadstone routes on one Host or path condition only")
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
                self.unsupported(acl, "loadstone routes on Host and path conditions only")
                return None
        return conditions

    def _pool_check_note(self, default: _ProxyState, pool: _ProxyState) -> None:
        def shape(p: _ProxyState) -> tuple[Any, ...]:
            return (p.check_type, p.http_method, p.http_path, p.expect_status, p.balance)

        if shape(default)[:4] != shape(pool)[:4]:
            self.report.append(
                ReportLine(
                    pool.location,
                    f"backend {pool.name}",
                    Kind.UNSUPPORTED,
                    f"its check differs from backend {default.name}'s; loadstone checks every "
                    "pool of a listener with the listener's check",
                )
            )

    # -- settings ----------------------------------------------------------------------

    def _balance(self, be: _ProxyState) -> str:
        return be.balance or "roundrobin"

    def _timeouts(
        self, fe: _ProxyState, be: _ProxyState, check_interval_ms: float | None
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
                self.report.append(
                    ReportLine(
                        where.location,
                        f"{where.kind} {where.name}",
                        Kind.UNSUPPORTED,
                        (
                            f"'timeout {key} 0'"
                            if key in where.zero_timeouts
                            else f"no 'timeout {key}'"
                        )
                        + ": HAProxy waits forever; loadstone's default applies",
                    )
                )
        if fe.mode != "http":
            t["http_request"] = t["http_keep_alive"] = t["tunnel"] = None
        return {k: format_duration(v) for k, v in t.items() if v is not None}

    def _keepalive(self, fe: _ProxyState, be: _ProxyState) -> bool | dict[str, Any]:
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

    def _on_marked_down(self, be: _ProxyState) -> bool:
        return any(s.options.get("on-marked-down") == "shutdown-sessions" for s in be.servers)

    def _server(self, s: _Server, be: _ProxyState, prefix: str | None = None) -> dict[str, Any]:
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
        return out

    # -- checks ------------------------------------------------------------------------

    def _check(self, be: _ProxyState, galera: bool) -> tuple[dict[str, Any] | None, float | None]:
        checked = [s for s in be.servers if "check" in s.options]
        if not checked:
            if be.check_type is not None and be.check_location is not None:
                self.report.append(
                    ReportLine(
                        be.check_location,
                        f"option {be.check_type}",
                        Kind.NO_EFFECT,
                        "no server has 'check', so HAProxy never probes them",
                    )
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
                self.report.append(
                    ReportLine(
                        s.location,
                        f"server {s.name} check parameters",
                        Kind.UNSUPPORTED,
                        f"differ from server {first.name}'s; loadstone checks every server of "
                        f"a listener alike (took {first.name}'s)",
                    )
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
                self.report.append(
                    ReportLine(
                        be.check_location,
                        "option mysql-check",
                        Kind.UNSUPPORTED,
                        "without a user HAProxy only reads the server's handshake; translated "
                        "as a tcp check (loadstone's mysql check logs in and needs a user)",
                    )
                )
        elif be.check_type in ("tcp-check", "redis") and be.tcp_steps:
            check = {"type": "send-expect", "steps": list(be.tcp_steps)}
        check.update(params)
        if port is not None:
            check["port"] = int(port)
        return check, inter

    def _is_galera(self, be: _ProxyState) -> bool:
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

    def _galera_notes(self, be: _ProxyState) -> None:
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
        self.report.append(ReportLine(location, f"backend {be.name}", Kind.NOTE, reason))
        if not be.stick_on_dst:
            self.report.append(
                ReportLine(
                    location,
                    f"backend {be.name}",
                    Kind.NOTE,
                    "HAProxy fails back to the first server when it returns; loadstone keeps "
                    "the current writer (no failback, as 'stick on dst' did)",
                )
            )

    # -- http --------------------------------------------------------------------------

    def _http_keys(self, out: dict[str, Any], fe: _ProxyState, be: _ProxyState) -> None:
        # Either side may ask for the header (the backend's options win, as in HAProxy).
        forwardfor = be.forwardfor if be.forwardfor is not None else fe.forwardfor
        if forwardfor is not None:
            out["forwardfor"] = forwardfor or True
        if fe.forwarded_port or be.forwarded_port:
            out["forwarded_port"] = True
        headers = fe.request_headers + (be.request_headers if be is not fe else [])
        if headers:
            out["request_headers"] = headers
        responses = be.response_headers + (fe.response_headers if be is not fe else [])
        if responses:
            out["response_headers"] = responses
        if fe.rewrite_location or be.rewrite_location:
            out["rewrite_location"] = "https"
        if be.cookie is not None:
            out["cookie"] = be.cookie


# -- handlers: one per TRANSLATED entry of keywords.PROXY_KEYWORDS ----------------------

Handler = Callable[[_Translator, _ProxyState, Directive, bool], None]
_HANDLERS: dict[str, Handler] = {}


def _handles(*keys: str) -> Callable[[Handler], Handler]:
    def register(fn: Handler) -> Handler:
        for key in keys:
            _HANDLERS[key] = fn
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
def _mode(t: _Translator, s: _ProxyState, d: Directive, negated: bool) -> None:
    _need(d, 1)
    if d.args[0] not in ("tcp", "http"):
        t.unsupported(d, f"mode {d.args[0]}: loadstone has tcp and http")
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
def _balance(t: _Translator, s: _ProxyState, d: Directive, negated: bool) -> None:
    _need(d, 1)
    algo = d.args[0]
    if algo in _BALANCE:
        s.balance = _BALANCE[algo]
        if algo == "static-rr":
            t.note(d, Entry(Kind.NO_EFFECT, "translated as roundrobin (weights apply the same)"))
    else:
        t.unsupported(d, f"balance {algo} has no loadstone equivalent; roundrobin is used")


@_handles("bind")
def _bind(t: _Translator, s: _ProxyState, d: Directive, negated: bool) -> None:
    if s.kind in ("defaults", "backend"):
        raise TranslationError(d.location, f"'bind' is not allowed in a {s.kind} section")
    _need(d, 1)
    if "ssl" in d.args[1:]:
        # Serving plaintext where HAProxy terminated TLS would be wrong: leave it out.
        t.note(
            d, Entry(Kind.TLS, "not yet supported by loadstone (TLS); this address is not bound")
        )
        s.tls_binds += 1
        return
    for spec in d.args[0].split(","):
        address = _bind_address(spec)
        if address is None:
            t.unsupported(
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
            t.note(d, Entry(Kind.UNKNOWN, "unknown bind option"), what=f"bind ... {name}")
            i += 1
            continue
        value = d.args[i + 1 : i + 1 + option.nargs]
        what = " ".join(("bind ...", name, *value))
        if option.entry.kind is Kind.TRANSLATED:
            s.freebind = True
        else:
            t.note(d, option.entry, what=what)
        i += 1 + option.nargs


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


def _server_options(t: _Translator, d: Directive, args: tuple[str, ...]) -> dict[str, str]:
    options: dict[str, str] = {}
    i = 0
    while i < len(args):
        name = args[i]
        option = keywords.SERVER_OPTIONS.get(name)
        if option is None:
            t.note(d, Entry(Kind.UNKNOWN, "unknown server option"), what=f"{d.keyword} ... {name}")
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
                t.unsupported(d, "only shutdown-sessions", what=f"on-marked-down {value[0]}")
            else:
                options[name] = value[0] if value else ""
            _check_option_value(d, name, value[0] if value else "")
        else:
            t.note(d, option.entry, what=" ".join((f"{d.keyword} ...", name, *value)))
        i += 1 + option.nargs
    return options


@_handles("default-server")
def _default_server(t: _Translator, s: _ProxyState, d: Directive, negated: bool) -> None:
    s.default_server.update(_server_options(t, d, d.args))


@_handles("server")
def _server(t: _Translator, s: _ProxyState, d: Directive, negated: bool) -> None:
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
        t.unsupported(
            d,
            "a server without a port takes the client's port in HAProxy; "
            "loadstone needs a port (the bind port is used)",
            what=f"server {name} {spec}",
        )
        port = int(s.binds[0].rsplit(":", 1)[1]) if s.binds else 0
        if not port:
            raise TranslationError(d.location, f"server {name}: no port")
    options = {**s.default_server, **_server_options(t, d, d.args[2:])}
    if any(x.name == name for x in s.servers):
        raise TranslationError(d.location, f"server {name} defined twice in {s.name}")
    s.servers.append(_Server(name, host, port, d.location, options))


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
def _default_backend(t: _Translator, s: _ProxyState, d: Directive, negated: bool) -> None:
    _need(d, 1)
    s.default_backend = (d.args[0], d.location)


@_handles("use_backend")
def _use_backend(t: _Translator, s: _ProxyState, d: Directive, negated: bool) -> None:
    _need(d, 1)
    s.use_backends.append(d)


@_handles("acl")
def _acl(t: _Translator, s: _ProxyState, d: Directive, negated: bool) -> None:
    _need(d, 2)
    s.acls.setdefault(d.args[0], []).append(d)


@_handles("maxconn", "backlog", "retries")
def _number(t: _Translator, s: _ProxyState, d: Directive, negated: bool) -> None:
    hi = 100 if d.keyword == "retries" else 10_000_000
    lo = 0 if d.keyword == "retries" else 1
    setattr(s, d.keyword, t._int(d, d.args, lo, hi))


@_handles("option redispatch", "redispatch")
def _redispatch(t: _Translator, s: _ProxyState, d: Directive, negated: bool) -> None:
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
def _timeout(t: _Translator, s: _ProxyState, d: Directive, negated: bool) -> None:
    if d.keyword in _TIMEOUT_ALIASES:
        name, args = _TIMEOUT_ALIASES[d.keyword], d.args
        t.note(d, Entry(Kind.NO_EFFECT, f"removed from HAProxy 2.1; translated as timeout {name}"))
    else:
        name, args = d.args[0], d.args[1:]
    if args and parse_haproxy_time(args[0]) == 0:
        # 0 means "no timeout" to HAProxy; loadstone always has one.
        s.timeouts_ms.pop(name, None)
        s.zero_timeouts.add(name)
        return
    s.zero_timeouts.discard(name)
    s.timeouts_ms[name] = t._time(d, args)


@_handles("option tcpka", "option clitcpka", "option srvtcpka")
def _tcpka(t: _Translator, s: _ProxyState, d: Directive, negated: bool) -> None:
    s.tcpka = not negated


@_handles(*(f"{side}tcpka-{p}" for side in ("cli", "srv") for p in ("idle", "intvl", "cnt")))
def _tcpka_param(t: _Translator, s: _ProxyState, d: Directive, negated: bool) -> None:
    _need(d, 1)
    s.tcpka_params[d.keyword] = d.args[0]


_HTTP_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "POST", "PUT", "PATCH", "DELETE"})


@_handles("option httpchk")
def _httpchk(t: _Translator, s: _ProxyState, d: Directive, negated: bool) -> None:
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
        t.unsupported(d, f"check method {s.http_method}: loadstone's http check sends GET instead")
        s.http_method = "GET"


@_handles("http-check send")
def _http_check_send(t: _Translator, s: _ProxyState, d: Directive, negated: bool) -> None:
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
            t.unsupported(
                d, f"http-check send {word}: not translated", what=f"http-check send {word}"
            )
            return


@_handles("http-check expect")
def _http_check_expect(t: _Translator, s: _ProxyState, d: Directive, negated: bool) -> None:
    s.http_check_rules.append(d)
    args = [a for a in d.args[1:] if a != "!"]
    if len(args) >= 2 and args[0] == "status":
        statuses: list[int] = []
        for part in args[1].split(","):
            lo, _, hi = part.partition("-")
            if not lo.isdigit() or (hi and not hi.isdigit()):
                t.unsupported(d, "status list not understood")
                return
            statuses.extend(range(int(lo), int(hi or lo) + 1))
        s.expect_status = statuses
    elif (
        len(args) >= 2 and args[0] == "rstatus" and re.fullmatch(r"\^?\(?([0-9|]+)\)?\$?", args[1])
    ):
        digits = re.findall(r"\d{3}", args[1])
        s.expect_status = [int(x) for x in digits]
    else:
        t.unsupported(d, "loadstone's http check looks at the status code only")


@_handles("option mysql-check")
def _mysql_check(t: _Translator, s: _ProxyState, d: Directive, negated: bool) -> None:
    s.check_type, s.check_location = "mysql", d.location
    args = d.args[1:]
    s.mysql_user = args[1] if len(args) >= 2 and args[0] == "user" else None


@_handles("option tcp-check")
def _tcp_check(t: _Translator, s: _ProxyState, d: Directive, negated: bool) -> None:
    s.check_type, s.check_location = "tcp-check", d.location
    s.tcp_steps = []


@_handles("option redis-check")
def _redis_check(t: _Translator, s: _ProxyState, d: Directive, negated: bool) -> None:
    s.check_type, s.check_location = "redis", d.location
    s.tcp_steps = [{"send": "PING\r\n"}, {"expect": "+PONG"}]


@_handles("tcp-check send", "tcp-check send-binary", "tcp-check expect", "tcp-check connect")
def _tcp_check_step(t: _Translator, s: _ProxyState, d: Directive, negated: bool) -> None:
    action, args = d.args[0], d.args[1:]
    if action == "connect":
        if len(args) == 2 and args[0] == "port" and args[1].isdigit() and not s.tcp_steps:
            s.tcp_check_port = int(args[1])
        elif args:
            t.unsupported(d, "only 'tcp-check connect [port N]' as the first rule")
        return
    if action == "send" and args:
        s.tcp_steps.append({"send": args[0]})
    elif action == "send-binary" and args:
        s.tcp_steps.append({"send_hex": args[0]})
    elif action == "expect" and len(args) >= 2 and args[0] in ("string", "rstring", "binary"):
        key = {"string": "expect", "rstring": "expect_regex", "binary": "expect_hex"}[args[0]]
        s.tcp_steps.append({key: args[1]})
    else:
        t.unsupported(
            d, "loadstone's send-expect steps: send, send-binary, expect string/rstring/binary"
        )


@_handles("option forwardfor")
def _forwardfor(t: _Translator, s: _ProxyState, d: Directive, negated: bool) -> None:
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
            t.unsupported(d, "loadstone always adds the header", what="option forwardfor if-none")
        else:
            t.unsupported(d, f"option forwardfor {word}: not understood")
    s.forwardfor = value


@_handles("option dontlog-normal")
def _dontlog_normal(t: _Translator, s: _ProxyState, d: Directive, negated: bool) -> None:
    s.log = "all" if negated else "errors"


@_handles("no log")
def _no_log(t: _Translator, s: _ProxyState, d: Directive, negated: bool) -> None:
    s.log = "none"


_HEADER_ACTIONS = {"set-header": "set", "add-header": "add", "del-header": "delete"}


def _header_rule(
    t: _Translator, d: Directive, action: str, args: tuple[str, ...]
) -> dict[str, str] | None:
    """An unconditional, constant header rule, or None (reported)."""
    if any(word in ("if", "unless") for word in args):
        if "ssl_fc" in " ".join(args):
            t.note(d, keywords.Entry(Kind.TLS, "not yet supported by loadstone (TLS)"))
        else:
            t.note(
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
        t.note(
            d,
            keywords.Entry(
                Kind.NOT_YET, "not yet supported by loadstone (header values computed from samples)"
            ),
        )
        return None
    return {rule_action: args[0], "value": args[1]}


@_handles("http-request set-header", "http-request add-header", "http-request del-header")
def _request_header(t: _Translator, s: _ProxyState, d: Directive, negated: bool) -> None:
    action, args = d.args[0], d.args[1:]
    if (
        action == "set-header"
        and args[:2] == ("X-Forwarded-Port", "%[dst_port]")
        and len(args) == 2
    ):
        s.forwarded_port = True
        return
    rule = _header_rule(t, d, action, args)
    if rule is not None:
        s.request_headers.append(rule)


@_handles("http-response set-header", "http-response add-header", "http-response del-header")
def _response_header(t: _Translator, s: _ProxyState, d: Directive, negated: bool) -> None:
    rule = _header_rule(t, d, d.args[0], d.args[1:])
    if rule is not None:
        s.response_headers.append(rule)


@_handles("reqadd", "rspadd")
def _removed_add(t: _Translator, s: _ProxyState, d: Directive, negated: bool) -> None:
    _need(d, 1)
    name, sep, value = d.args[0].partition(":")
    family = "http-request" if d.keyword == "reqadd" else "http-response"
    if not sep or len(d.args) > 1:
        t.note(
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
    t.note(d, Entry(Kind.NO_EFFECT, f"removed from HAProxy 2.1; translated as {family} add-header"))


_LOCATION_REWRITE = re.compile(r"\^Location:(\\ |\\s\*|\\s\+| )http://\(\.\*\)")


@_handles("rspirep", "rsprep")
def _removed_rsprep(t: _Translator, s: _ProxyState, d: Directive, negated: bool) -> None:
    if len(d.args) == 2 and _LOCATION_REWRITE.match(d.args[0]) and "https://\\1" in d.args[1]:
        s.rewrite_location = True
        t.note(d, Entry(Kind.NO_EFFECT, "removed from HAProxy 2.1; translated as rewrite_location"))
        return
    t.note(
        d,
        Entry(
            Kind.REMOVED,
            "removed from HAProxy 2.1 (http-response replace-header); "
            "only the Location http:// -> https:// rewrite has a loadstone equivalent",
        ),
    )


@_handles("reqdel", "reqidel", "rspdel", "rspidel")
def _removed_del(t: _Translator, s: _ProxyState, d: Directive, negated: bool) -> None:
    _need(d, 1)
    m = re.fullmatch(r"\^([A-Za-z0-9-]+):(\.\*)?", d.args[0])
    if m is None or len(d.args) > 1:
        t.note(
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
    t.note(d, Entry(Kind.NO_EFFECT, "removed from HAProxy 2.1; translated as a del-header rule"))


@_handles("cookie")
def _cookie(t: _Translator, s: _ProxyState, d: Directive, negated: bool) -> None:
    _need(d, 1)
    flags = set(d.args[1:])
    known = {"insert", "indirect", "nocache", "httponly", "secure"}
    if "insert" not in flags or not flags <= known:
        t.unsupported(
            d, "loadstone's cookie persistence is 'insert' with indirect, nocache, httponly, secure"
        )
        return
    s.cookie = {"name": d.args[0], "mode": "insert"}
    for flag in sorted(flags - {"insert"}):
        s.cookie[flag] = True


@_handles("stick-table")
def _stick_table(t: _Translator, s: _ProxyState, d: Directive, negated: bool) -> None:
    s.stick_directives.append(d)


@_handles("stick on")
def _stick_on(t: _Translator, s: _ProxyState, d: Directive, negated: bool) -> None:
    if d.args[1:] == ("dst",):
        s.stick_on_dst = True
    else:
        t.unsupported(d, "stickiness other than the Galera writer pattern ('stick on dst')")


def translate(
    sections: list[Section],
    galera_check: GaleraCheck = "http",
    read_file: ReadFile = lambda path: None,
) -> Translation:
    """Translate parsed sections; raises TranslationError for a file HAProxy would refuse."""
    translator = _Translator(galera_check, read_file)
    result = translator.run(sections)
    translator.report_unused()
    return result


def _listener_name(name: str) -> str:
    """HAProxy names allow characters loadstone's listener names do not."""
    return re.sub(r"[^A-Za-z0-9_.-]", "_", name)
