"""What `show info`, `show stat` and `show servers state` print, as HAProxy 2.6 prints them.

Only the fields loadstone has a value for are written; `show stat` keeps
HAProxy's column order and its header line (`# pxname,svname,...`), so the
tools that read the CSV by column name (Ansible's haproxy module, kolla's
prechecks, monitoring scripts) find what they look for.
"""

from __future__ import annotations

import time
from collections.abc import Mapping

import loadstone
from loadstone.haproxy_socket.proxies import Backend, all_backends, frontend_name
from loadstone.runtime_view import ListenerView, RuntimeView
from loadstone.server import ServerRuntime

# The CLI dialect spoken, as `Version:` of `show info`: tools compare it with the
# HAProxy version that introduced a command (Ansible's haproxy module drains only
# from 1.5 on).
HAPROXY_DIALECT = "2.6.0"

# HAProxy's columns (include/haproxy/stats-t.h, in that order) that loadstone fills.
STAT_COLUMNS = (
    "pxname", "svname", "qcur", "scur", "slim", "stot", "bin", "bout", "econ", "status",
    "weight", "act", "bck", "chkfail", "lastchg", "pid", "iid", "sid", "lbtot", "type",
    "check_status", "check_duration", "last_chk", "addr", "mode", "algo",
)  # fmt: skip
TYPE_FRONTEND, TYPE_BACKEND, TYPE_SERVER = 0, 1, 2


def show_info(runtime: RuntimeView, pid: int, now: float | None = None) -> str:
    now = time.time() if now is None else now
    up = int(now - runtime.started_at)
    listeners = runtime.listeners.values()
    fields = (
        ("Name", "loadstone"),
        ("Version", f"{HAPROXY_DIALECT} (loadstone {loadstone.__version__})"),
        ("Release_date", ""),
        ("Nbthread", 1),
        ("Nbproc", 1),
        ("Process_num", 1),
        ("Pid", pid),
        ("Uptime", f"{up // 86400}d {up // 3600 % 24}h{up // 60 % 60:02d}m{up % 60:02d}s"),
        ("Uptime_sec", up),
        ("Maxconn", sum(lr.config.maxconn for lr in listeners)),
        ("CurrConns", sum(lr.frontend.current_sessions for lr in listeners)),
        ("CumConns", sum(lr.frontend.sessions_total for lr in listeners)),
        ("Stopping", 0),
        ("Run_queue", 0),
        ("Tasks", 0),
        ("Idle_pct", 100),
        ("node", ""),
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


def show_stat(runtime: RuntimeView, pid: int, now: float | None = None) -> str:
    """FRONTEND row of each listener, then its backends' server rows and BACKEND row."""
    now = time.time() if now is None else now
    lines = ["# " + ",".join(STAT_COLUMNS) + ","]
    backends = all_backends(runtime.listeners)
    for iid, lr in enumerate(runtime.listeners.values(), 1):
        frontend, config = lr.frontend, lr.config
        lines.append(
            _row(
                {
                    "pxname": frontend_name(lr),
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
                }
            )
        )
        for backend in (b for b in backends if b.listener is lr):
            lines.extend(_backend_rows(backend, pid, iid, now))
    return "\n".join(lines) + "\n"


def _backend_rows(backend: Backend, pid: int, iid: int, now: float) -> list[str]:
    lr = backend.listener
    config = lr.config
    rows = []
    for name, s in backend.servers:
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
                    "chkfail": s.checks_failed,
                    "lastchg": int(now - s.last_change),
                    "pid": pid,
                    "iid": iid,
                    "sid": s.index + 1,
                    "lbtot": s.sessions_total,
                    "type": TYPE_SERVER,
                    "check_status": _check_status(lr, s),
                    "check_duration": int(s.check_duration * 1000) if s.checks_total else "",
                    "last_chk": s.check_detail,
                    "addr": str(s.address),
                    "mode": config.mode,
                }
            )
        )
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
                "mode": config.mode,
                "algo": config.balance,
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
