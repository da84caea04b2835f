"""`loadstone ctl`: the admin API from the command line, so nobody needs curl.

    loadstone ctl status [--watch [SECONDS]]   # a table of listeners and servers
    loadstone ctl drain galera db1             # ready | drain | maint
    loadstone ctl weight keystone ctl2 50
    loadstone ctl shutdown-sessions galera db1
    loadstone ctl drain-node ctl2 --wait       # every server named (or at) ctl2
    loadstone ctl ready-node ctl2
    loadstone ctl reload                       # exit 1 when the file is rejected
    loadstone ctl reopen-logs                  # after logrotate moved the log files
    loadstone ctl health                       # exit 0 while fit to hold the VIP (vrrp_script)
    loadstone ctl notify INSTANCE NAME STATE   # keepalived's notify hook

The admin address and token come from --url/--token-file, else from the
configuration file (global.admin.socket or bind, and token_file): the one given
with -c, else $LOADSTONE_CONFIG, else /etc/loadstone/loadstone.yaml when it
exists. With global.admin.socket set, ctl talks HTTP over that unix socket.
Every failure is one line on stderr and exit status 1.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import socket
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable
from typing import Any

from loadstone.config import ConfigError, load_config
from loadstone.config.model import DEFAULT_ADMIN_PORT
from loadstone.systemd import credential_path

DEFAULT_URL = f"http://127.0.0.1:{DEFAULT_ADMIN_PORT}"
DEFAULT_CONFIG = "/etc/loadstone/loadstone.yaml"
# How often --wait and --watch read the status.
POLL_INTERVAL = 0.5


class CtlError(Exception):
    pass


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--url", help=f"admin server URL (default {DEFAULT_URL})")
    parser.add_argument(
        "-c",
        "--config",
        help="take the admin address and token from this file "
        f"(default: $LOADSTONE_CONFIG, else {DEFAULT_CONFIG})",
    )
    parser.add_argument("--token-file", help="file holding the admin bearer token")
    sub = parser.add_subparsers(dest="action", required=True)
    status = sub.add_parser("status", help="listeners and servers at a glance")
    status.add_argument("--json", action="store_true", help="print the raw status document")
    status.add_argument(
        "--watch",
        nargs="?",
        const=2.0,
        type=float,
        metavar="SECONDS",
        help="print the table again every SECONDS (2) until Ctrl-C",
    )
    for state in ("ready", "drain", "maint"):
        p = sub.add_parser(state, help=f"set a server's admin state to {state}")
        p.add_argument("listener")
        p.add_argument("server")
    weight = sub.add_parser("weight", help="set a server's weight (0-256)")
    weight.add_argument("listener")
    weight.add_argument("server")
    weight.add_argument("weight", type=int)
    shut = sub.add_parser("shutdown-sessions", help="close a server's open sessions")
    shut.add_argument("listener")
    shut.add_argument("server")
    drain_node = sub.add_parser(
        "drain-node",
        help="drain every server of a host in every listener (by server name or address host)",
    )
    drain_node.add_argument("node")
    drain_node.add_argument(
        "--wait", action="store_true", help="wait until the node's sessions have ended"
    )
    drain_node.add_argument(
        "--timeout",
        type=float,
        default=300.0,
        metavar="SECONDS",
        help="with --wait: give up (exit 1) after this long (300)",
    )
    ready_node = sub.add_parser("ready-node", help="set every server of a host ready again")
    ready_node.add_argument("node")
    sub.add_parser(
        "reload", help="reload the configuration file (as SIGHUP does); exit 1 if rejected"
    )
    sub.add_parser("reopen-logs", help="reopen the log files (as SIGUSR1 does)")
    health = sub.add_parser(
        "health",
        help="exit 0 while every listener is served and the last reload was accepted "
        "(keepalived's vrrp_script)",
    )
    health.add_argument(
        "--timeout",
        type=float,
        default=2.0,
        metavar="SECONDS",
        help="an admin server that does not answer in this long is unhealthy (2)",
    )
    health.add_argument(
        "--hold",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="when healthy, wait this long and fail at once if loadstone dies or turns "
        "unhealthy meanwhile (keepalived notices a kill -9 without waiting for the next run)",
    )
    notify = sub.add_parser(
        "notify", help="keepalived's notify hook: report a VRRP transition to loadstone"
    )
    # keepalived calls it as: SCRIPT TYPE NAME STATE PRIORITY
    notify.add_argument("type", help="INSTANCE or GROUP")
    notify.add_argument("name", help="the vrrp_instance's name")
    notify.add_argument("state", help="MASTER, BACKUP, FAULT or STOP")
    notify.add_argument("priority", nargs="?", help="the priority (ignored)")


def config_path(given: str | None) -> str | None:
    """The configuration file ctl reads: -c, $LOADSTONE_CONFIG, the default path."""
    if given:
        return given
    from_env = os.environ.get("LOADSTONE_CONFIG")
    if from_env:
        return from_env
    return DEFAULT_CONFIG if os.path.exists(DEFAULT_CONFIG) else None


class UnixHTTPConnection(http.client.HTTPConnection):
    """HTTP over a unix stream socket: the admin server's global.admin.socket."""

    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self.socket_path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self.socket_path)
        except OSError:
            sock.close()
            raise
        self.sock = sock


class UnixHTTPHandler(urllib.request.HTTPHandler):
    def __init__(self, path: str) -> None:
        super().__init__()
        self.socket_path = path

    def http_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
        def connect(_host: str, timeout: float = 30.0, **_: Any) -> UnixHTTPConnection:
            return UnixHTTPConnection(self.socket_path, timeout)

        return self.do_open(connect, req)


class AdminClient:
    """The admin API of one running loadstone, over TCP or its unix socket."""

    def __init__(self, url: str, token: str | None, socket_path: str | None = None) -> None:
        self.token = token
        if socket_path is not None:
            self.base = "http://localhost/api/v1"
            self.where = f"unix:{socket_path}"
            self.opener = urllib.request.build_opener(UnixHTTPHandler(socket_path))
        else:
            self.base = f"{url.rstrip('/')}/api/v1"
            self.where = self.base.removesuffix("/api/v1")
            self.opener = urllib.request.build_opener()

    def get(self, route: str) -> Any:
        return self.request(route)

    def post(self, route: str, body: Any = None) -> Any:
        return self.request(route, "POST", body)

    def health(self, timeout: float, hold: float = 0.0) -> list[str]:
        """Why the instance is unhealthy; empty when it is healthy (for `hold`
        seconds: a body cut short is a death, health_hold.py)."""
        req = urllib.request.Request(f"{self.base}/health" + (f"?hold={hold:g}" if hold else ""))
        try:
            # The socket's timeout is per read: the held body's end comes `hold` late.
            with self.opener.open(req, timeout=timeout + hold) as response:
                return list(json.loads(response.read())["problems"])
        except urllib.error.HTTPError as exc:
            if exc.code == 503:
                return list(json.loads(exc.read())["problems"])
            raise CtlError(f"GET {self.where}/api/v1/health: HTTP {exc.code}") from None
        except http.client.IncompleteRead:
            raise CtlError(
                f"the health at {self.where} ended early: loadstone died or turned unhealthy"
            ) from None
        except (
            urllib.error.URLError,
            OSError,
            ValueError,
            KeyError,
            http.client.HTTPException,
        ) as exc:
            reason = getattr(exc, "reason", exc)
            raise CtlError(f"cannot read the health at {self.where}: {reason}") from None

    def request(self, route: str, method: str = "GET", body: Any = None) -> Any:
        url = f"{self.base}{route}"
        shown = f"{self.where}/api/v1{route}"
        data = (
            json.dumps(body).encode() if body is not None else (b"" if method == "POST" else None)
        )
        req = urllib.request.Request(url, data=data, method=method)
        req.add_header("Content-Type", "application/json")
        if self.token:
            req.add_header("Authorization", f"Bearer {self.token}")
        try:
            with self.opener.open(req, timeout=30) as response:
                return json.loads(response.read() or b"null")
        except urllib.error.HTTPError as exc:
            raise CtlError(f"{method} {shown}: HTTP {exc.code}: {_refusal(exc)}") from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise CtlError(f"cannot reach the admin server at {shown}: {reason}") from None


def _refusal(exc: urllib.error.HTTPError) -> str:
    """What the admin server said when it refused a request."""
    try:
        doc = json.loads(exc.read())
    except ValueError:
        doc = None
    if isinstance(doc, dict) and "errors" in doc:
        message = "; ".join(doc["errors"]) or "rejected"
    elif isinstance(doc, dict) and "error" in doc:
        message = str(doc["error"])
    else:
        message = str(exc.reason)
    if exc.code in (401, 403):
        message += " (the token comes from --token-file or global.admin.token_file)"
    return message


def client(args: argparse.Namespace) -> AdminClient:
    """The admin server to talk to: --url, else the configuration's unix socket,
    else its TCP address, else the default; the token likewise."""
    url, token_file, socket_path = args.url, args.token_file, None
    path = config_path(args.config)
    if path is not None:
        try:
            config = load_config(path)
        except ConfigError as err:
            raise CtlError("; ".join(err.problems)) from None
        admin = config.global_.admin
        if url is None and admin.socket is not None:
            socket_path = admin.socket
        elif url is None and admin.bind is None:
            raise CtlError(f"{path}: global.admin.bind is null: no admin server")
        elif admin.bind is not None:
            host = "127.0.0.1" if admin.bind.host in ("0.0.0.0", "*", "") else admin.bind.host
            host = f"[{host}]" if ":" in host else host
            url = url or f"http://{host}:{admin.bind.port}"
        token_file = token_file or admin.token_file
    token = None
    if token_file:
        try:
            with open(credential_path(token_file)) as f:
                token = f.read().strip()
        except OSError as exc:
            raise CtlError(f"cannot read token file {token_file}: {exc.strerror}") from None
    return AdminClient(url or DEFAULT_URL, token, socket_path)


def format_status(doc: dict[str, Any]) -> str:
    rows = [("LISTENER", "SERVER", "STATE", "WEIGHT", "SESSIONS", "TOTAL", "CHECK")]
    for lname, listener in doc["listeners"].items():
        active = listener.get("active")
        for sname, s in listener["servers"].items():
            name = sname + (" *" if active == sname else "") + (" (backup)" if s["backup"] else "")
            check = s["check"]
            check_text = (
                "-"
                if check["status"] == "disabled"
                else (
                    f"{check['status']}: {check['detail']}" if check["detail"] else check["status"]
                )
            )
            rows.append(
                (
                    lname,
                    name,
                    s["state"],
                    str(s["weight"]),
                    str(s["sessions"]),
                    str(s["sessions_total"]),
                    check_text,
                )
            )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    lines = [
        "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=False)) + "  " + r[-1] for r in rows
    ]
    if any(listener.get("active") for listener in doc["listeners"].values()):
        lines.append("* active server of an active-backup listener")
    if not doc.get("reload", {}).get("ok", True):
        lines.append("last reload rejected: " + "; ".join(doc["reload"]["errors"]))
    lines += anycast_lines(doc.get("anycast"))
    return "\n".join(lines)


def anycast_lines(anycast: dict[str, Any] | None) -> list[str]:
    """global.anycast: each VIP's announcement, and the BGP speaker if it fails."""
    if not anycast:
        return []
    lines = []
    for name, vip in anycast["vips"].items():
        state = {True: "announced", False: "withdrawn", None: "state unknown"}[vip["announced"]]
        why = f" ({'; '.join(vip['problems'])})" if vip["problems"] else ""
        held = ", held by hold_down" if vip["held"] else ""
        lines.append(f"vip {name} {vip['prefix']}: {state}, decision {vip['decision']}{held}{why}")
    driver = anycast["driver"]
    if driver["error"]:
        lines.append(f"anycast driver {driver['name']} down: {driver['error']}")
    return lines


# action -> (endpoint under /listeners/{l}/servers/{s}, request body, what to print)
ServerAction = Callable[[argparse.Namespace], tuple[str, Any, Callable[[dict[str, Any]], str]]]
SERVER_ACTIONS: dict[str, ServerAction] = {
    **{
        state: lambda a: (
            "state",
            {"state": a.action},
            lambda s: f"{s['state']} (admin {s['admin']})",
        )
        for state in ("ready", "drain", "maint")
    },
    "weight": lambda a: ("weight", {"weight": a.weight}, lambda s: f"weight {s['weight']}"),
    "shutdown-sessions": lambda a: (
        "shutdown-sessions",
        None,
        lambda r: f"closed {r['closed']} session(s)",
    ),
}


def known(names: Iterable[str]) -> str:
    return ", ".join(sorted(names)) or "none"


def check_server(doc: dict[str, Any], listener: str, server: str) -> None:
    """Name what exists when asked for a listener or server that does not."""
    listeners = doc["listeners"]
    if listener not in listeners:
        raise CtlError(f"no listener {listener!r}; known listeners: {known(listeners)}")
    servers = listeners[listener]["servers"]
    if server not in servers:
        raise CtlError(
            f"no server {server!r} in listener {listener}; known servers: {known(servers)}"
        )


def node_servers(doc: dict[str, Any], node: str) -> list[tuple[str, str]]:
    """(listener, server) of every server named `node` or whose address host is
    `node`, in every listener: one controller of the cluster."""
    found = []
    for lname, listener in doc["listeners"].items():
        for sname, server in listener["servers"].items():
            host = server["address"].rsplit(":", 1)[0].strip("[]")
            if node in (sname, host):
                found.append((lname, sname))
    if not found:
        names = {s for listener in doc["listeners"].values() for s in listener["servers"]}
        raise CtlError(
            f"no server named or at {node!r} in any listener; known servers: {known(names)}"
        )
    return found


def set_node_state(admin: AdminClient, node: str, state: str) -> list[tuple[str, str]]:
    servers = node_servers(admin.get("/status"), node)
    for lname, sname in servers:
        admin.post(f"/listeners/{lname}/servers/{sname}/state", {"state": state})
        print(f"{lname}/{sname}: {state}")
    return servers


def wait_drained(admin: AdminClient, servers: list[tuple[str, str]], timeout: float) -> None:
    """Until the servers carry no session, or raise CtlError after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        listeners = admin.get("/status")["listeners"]
        left = {
            f"{lname}/{sname}": listeners[lname]["servers"][sname]["sessions"]
            for lname, sname in servers
            if sname in listeners.get(lname, {}).get("servers", {})
        }
        if not any(left.values()):
            print("drained: no session left")
            return
        if time.monotonic() >= deadline:
            busy = ", ".join(f"{name} {n}" for name, n in left.items() if n)
            raise CtlError(f"timed out after {timeout:g}s; sessions still open: {busy}")
        time.sleep(POLL_INTERVAL)


def watch_status(admin: AdminClient, every: float) -> None:
    while True:
        table = format_status(admin.get("/status"))
        stamp = time.strftime("%H:%M:%S")
        # Clear the screen and home the cursor (ANSI), as watch(1) does.
        sys.stdout.write(f"\x1b[H\x1b[2J{stamp}  every {every:g}s, Ctrl-C to stop\n{table}\n")
        sys.stdout.flush()
        time.sleep(every)


def run(args: argparse.Namespace) -> int:
    try:
        admin = client(args)
        if args.action == "status":
            if args.watch:
                watch_status(admin, args.watch)
            doc = admin.get("/status")
            print(json.dumps(doc, indent=2) if args.json else format_status(doc))
        elif args.action in SERVER_ACTIONS:
            check_server(admin.get("/status"), args.listener, args.server)
            endpoint, body, show = SERVER_ACTIONS[args.action](args)
            route = f"/listeners/{args.listener}/servers/{args.server}/{endpoint}"
            print(f"{args.listener}/{args.server}: {show(admin.post(route, body))}")
        elif args.action in ("drain-node", "ready-node"):
            state = "drain" if args.action == "drain-node" else "ready"
            servers = set_node_state(admin, args.node, state)
            if state == "drain" and args.wait:
                wait_drained(admin, servers, args.timeout)
        elif args.action == "reload":
            r = admin.post("/reload")
            print(f"reloaded: configuration generation {r['generation']}")
        elif args.action == "reopen-logs":
            admin.post("/reopen-logs")
            print("log files reopened")
        elif args.action == "health":
            problems = admin.health(args.timeout, args.hold)
            if problems:
                raise CtlError("unhealthy: " + "; ".join(problems))
        elif args.action == "notify":
            admin.post("/vrrp", {"instance": args.name, "state": args.state})
    except CtlError as exc:
        print(f"loadstone ctl: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:  # the end of --watch
        return 0
    return 0
