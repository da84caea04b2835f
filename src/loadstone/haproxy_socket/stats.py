"""What `show info`, `show stat` and `show servers state` print, as HAProxy 2.6 prints them.

Only the fields loadstone has a value for are written; `show stat` keeps
HAProxy's column order and its header line (`# pxname,svname,...`), so the
tools that read the CSV by column name (Ansible's haproxy module, kolla's
prechecks, monitoring scripts) find what they look for.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass

import loadstone
from loadstone.haproxy_socket.proxies import Backend, all_backends, frontend_name
from loadstone.runtime_view import ListenerView, RuntimeView
from loadstone.server import ServerRuntime

# The CLI dialect spoken, as `Version:` of `show info`: tools compare it with the
# HAProxy version that introduced a command (Ansible's haproxy module drains only
# from 1.5 on).
HAPROXY_DIALECT = "2.6.0"
HAPROXY_DIALECT_DATE = "2022/05/31"  # the release of that version

# HAProxy 2.6's columns (src/stats.c stat_fields), all of them and in their order:
# "some tools happen to rely on the field position instead of its name" (HAProxy's
# own comment there; hatop is one). Those loadstone has no value for stay empty,
# as HAProxy leaves a field empty where it does not apply.
STAT_COLUMNS = (
    "pxname", "svname", "qcur", "qmax", "scur", "smax", "slim", "stot", "bin", "bout",
    "dreq", "dresp", "ereq", "econ", "eresp", "wretr", "wredis", "status", "weight", "act",
    "bck", "chkfail", "chkdown", "lastchg", "downtime", "qlimit", "pid", "iid", "sid",
    "throttle", "lbtot", "tracked", "type", "rate", "rate_lim", "rate_max", "check_status",
    "check_code", "check_duration", "hrsp_1xx", "hrsp_2xx", "hrsp_3xx", "hrsp_4xx",
    "hrsp_5xx", "hrsp_other", "hanafail", "req_rate", "req_rate_max", "req_tot", "cli_abrt",
    "srv_abrt", "comp_in", "comp_out", "comp_byp", "comp_rsp", "lastsess", "last_chk",
    "last_agt", "qtime", "ctime", "rtime", "ttime", "agent_status", "agent_code",
    "agent_duration", "check_desc", "agent_desc", "check_rise", "check_fall", "check_health",
    "agent_rise", "agent_fall", "agent_health", "addr", "cookie", "mode", "algo", "conn_rate",
    "conn_rate_max", "conn_tot", "intercepted", "dcon", "dses", "wrew", "connect", "reuse",
    "cache_lookups", "cache_hits", "srv_icur", "src_ilim", "qtime_max", "ctime_max",
    "rtime_max", "ttime_max", "eint", "idle_conn_cur", "safe_conn_cur", "used_conn_cur",
    "need_conn_est", "uweight",
)  # fmt: skip
TYPE_FRONTEND, TYPE_BACKEND, TYPE_SERVER = 0, 1, 2


def show_info(runtime: RuntimeView, pid: int, node: str = "", now: float | None = None) -> str:
    now = time.time() if now is None else now
    up = int(now - runtime.started_at)
    listeners = runtime.listeners.values()
    fields = (
        ("Name", "loadstone"),
        ("Version", f"{HAPROXY_DIALECT} (loadstone {loadstone.__version__})"),
        ("Release_date", HAPROXY_DIALECT_DATE),
        ("Nbthread", 1),
        ("Nbproc", 1),
        ("Process_num", 1),
        ("Pid", pid),
        ("Uptime", f"{up // 86400}d {up // 3600 % 24}h{up // 60 % 60:02d}m{up % 60:02d}s"),
        ("Uptime_sec", up),
        ("Maxconn", sum(lr.config.maxconn for lr in listeners)),
        ("Maxpipes", 0),
        ("PipesUsed", 0),
        ("CurrConns", sum(lr.frontend.current_sessions for lr in listeners)),
        ("CumConns", sum(lr.frontend.sessions_total for lr in listeners)),
        ("Stopping", 0),
        ("Run_queue", 0),
        ("Tasks", 0),
        ("Idle_pct", 100),
        ("node", node),
        ("description", ""),
    )
    return "".join(f"{name}: {value}\n" for name, value in fields)


def _status(server: ServerRuntime) -> str:
    state = server.state
    if state == "up" and server.check_status == "disabled":
        return "no check"
    return {"up": "UP", "down": "DOWN", "drain": "DRAIN", "maint": "MAINT"}[state]


def _check_status(lr: ListenerView, server: ServerRuntime) -> str:
    """HAProxy's check result codes: layer 4 for a connect check, layer 7 otherwise."""
    check = lr.config.check
    if check is None or server.check_status not in ("ok", "failed"):
        return ""
    layer = "L4" if check.type == "tcp" else "L7"
    if server.check_status == "ok":
        return f"{layer}OK"
    return "L4CON" if layer == "L4" else "L7STS"


def _row(values: Mapping[str, object]) -> str:
    return ",".join(str(values.get(c, "")) for c in STAT_COLUMNS) + ","


@dataclass(frozen=True, slots=True)
class StatFilter:
    """`show stat [<iid>|<proxy> <type> <sid>]`: -1 (or absent) matches any."""

    proxy: str | None = None  # a proxy name, or its iid as digits
    types: int = -1  # a mask: 1 frontends, 2 backends, 4 servers
    sid: int = -1

    def matches(self, pxname: str, iid: int, kind: int, sid: int) -> bool:
        if self.proxy is not None and self.proxy not in (pxname, str(iid)):
            return False
        if self.types != -1 and not self.types & (1 << kind):
            return False
        return self.sid in (-1, sid)


def show_stat(
    runtime: RuntimeView, pid: int, now: float | None = None, only: StatFilter = StatFilter()
) -> str:
    """Per listener: its FRONTEND row, then its backends' server rows and BACKEND row.
    Each proxy name has its own iid, as each HAProxy proxy has (a `listen` one)."""
    now = time.time() if now is None else now
    lines = ["# " + ",".join(STAT_COLUMNS) + ","]
    backends = all_backends(runtime.listeners)
    iids: dict[str, int] = {}

    def iid_of(name: str) -> int:
        return iids.setdefault(name, len(iids) + 1)

    for lr in runtime.listeners.values():
        frontend, config = lr.frontend, lr.config
        name = frontend_name(lr)
        iid = iid_of(name)
        if only.matches(name, iid, TYPE_FRONTEND, 0):
            lines.append(
                _row(
                    {
                        "pxname": name,
                        "svname": "FRONTEND",
                        "scur": frontend.current_sessions,
                        "slim": config.maxconn,
                        "stot": frontend.sessions_total,
                        "bin": frontend.bytes_in,
                        "bout": frontend.bytes_out,
                        "status": "OPEN",
                        "pid": pid,
                        "iid": iid,
                        "sid": 0,
                        "type": TYPE_FRONTEND,
                        "mode": config.mode,
                        "conn_tot": frontend.sessions_total,
                    }
                )
            )
        for backend in (b for b in backends if b.listener is lr):
            lines.extend(_backend_rows(backend, pid, iid_of(backend.name), now, only))
    return "\n".join(lines) + "\n"


def _backend_rows(backend: Backend, pid: int, iid: int, now: float, only: StatFilter) -> list[str]:
    lr = backend.listener
    config = lr.config
    check = config.check
    rows = []
    for name, s in backend.servers:
        if not only.matches(backend.name, iid, TYPE_SERVER, s.index + 1):
            continue
        checked = check is not None and s.check_status != "disabled"
        rows.append(
            _row(
                {
                    "pxname": backend.name,
                    "svname": name,
                    "qcur": 0,
                    "scur": s.sessions,
                    "slim": s.maxconn if s.maxconn is not None else "",
                    "stot": s.sessions_total,
                    "bin": s.bytes_in,
                    "bout": s.bytes_out,
                    "econ": s.connect_errors,
                    "status": _status(s),
                    "weight": s.weight,
                    "act": 0 if s.backup else 1,
                    "bck": 1 if s.backup else 0,
                    "chkfail": s.checks_failed if checked else "",
                    "lastchg": int(now - s.last_change),
                    "pid": pid,
                    "iid": iid,
                    "sid": s.index + 1,
                    "lbtot": s.sessions_total,
                    "type": TYPE_SERVER,
                    "check_status": _check_status(lr, s),
                    "check_duration": int(s.check_duration * 1000) if s.checks_total else "",
                    "last_chk": s.check_detail,
                    "check_desc": s.check_detail,
                    "check_rise": check.rise if checked and check is not None else "",
                    "check_fall": check.fall if checked and check is not None else "",
                    "addr": str(s.address),
                    "cookie": s.config.cookie_value if config.cookie is not None else "",
                    "mode": config.mode,
                    "connect": s.sessions_total + s.connect_errors,
                    "uweight": s.weight,
                }
            )
        )
    if not only.matches(backend.name, iid, TYPE_BACKEND, 0):
        return rows
    servers = [s for _, s in backend.servers]
    usable = [s for s in servers if s.usable]
    rows.append(
        _row(
            {
                "pxname": backend.name,
                "svname": "BACKEND",
                "qcur": lr.frontend.queued_count,
                "scur": sum(s.sessions for s in servers),
                "slim": config.maxconn,
                "stot": sum(s.sessions_total for s in servers),
                "bin": sum(s.bytes_in for s in servers),
                "bout": sum(s.bytes_out for s in servers),
                "econ": sum(s.connect_errors for s in servers),
                "status": "UP" if usable else "DOWN",
                "weight": sum(s.weight for s in usable),
                "act": sum(1 for s in usable if not s.backup),
                "bck": sum(1 for s in usable if s.backup),
                "lastchg": int(now - max((s.last_change for s in servers), default=now)),
                "pid": pid,
                "iid": iid,
                "sid": 0,
                "lbtot": sum(s.sessions_total for s in servers),
                "type": TYPE_BACKEND,
                "cookie": config.cookie.name if config.cookie is not None else "",
                "mode": config.mode,
                "algo": config.balance,
                "uweight": sum(s.weight for s in usable),
            }
        )
    )
    return rows


# HAProxy's server states in `show servers state` (include/haproxy/server-t.h).
_OP_STATE = {"down": 0, "up": 2}  # SRV_ST_STOPPED, SRV_ST_RUNNING
_ADMIN_FLAGS = {"ready": 0, "maint": 0x01, "drain": 0x08}  # SRV_ADMF_FMAINT, SRV_ADMF_FDRAIN
SERVERS_STATE_HEADER = (
    "# be_id be_name srv_id srv_name srv_addr srv_op_state srv_admin_state srv_uweight "
    "srv_iweight srv_time_since_last_change srv_check_status srv_check_result "
    "srv_check_health srv_check_state srv_agent_state bk_f_forced_id srv_f_forced_id "
    "srv_fqdn srv_port srvrecord srv_use_ssl srv_check_port srv_check_addr "
    "srv_agent_addr srv_agent_port"
)


def show_servers_state(backends: list[Backend], now: float | None = None) -> str:
    """Format version 1, the one `server-state-file` reads back."""
    now = time.time() if now is None else now
    lines = ["1", SERVERS_STATE_HEADER]
    for be_id, backend in enumerate(backends, 1):
        check = backend.listener.config.check
        for name, s in backend.servers:
            result = {"ok": 3, "failed": 2}.get(s.check_status, 0)  # CHK_RES_PASSED/FAILED
            check_port = check.port if check is not None and check.port else 0
            lines.append(
                " ".join(
                    str(f)
                    for f in (
                        be_id, backend.name, s.index + 1, name, s.connect_host,
                        _OP_STATE[("up" if s.healthy else "down")],
                        _ADMIN_FLAGS[s.admin], s.weight, s.config.weight,
                        int(now - s.last_change), 6 if result == 3 else 0, result,
                        0, 0 if check is None else 6, 0, 0, 0, "-", s.address.port, "-", 0,
                        check_port, "-", "-", 0,
                    )
                )
            )  # fmt: skip
    return "\n".join(lines) + "\n"
