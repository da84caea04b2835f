"""`loadstone ctl`: the admin API from the command line, so nobody needs curl.

    loadstone ctl status                       # a table of listeners and servers
    loadstone ctl drain galera db1             # ready | drain | maint
    loadstone ctl weight keystone ctl2 50
    loadstone ctl shutdown-sessions galera db1
    loadstone ctl reload

The admin address and token come from --url/--token-file, or from the
configuration file given with -c (global.admin.bind and token_file).
"""

from __future__ import annotations

import argparse
import json
import sys
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any

from loadstone.config import ConfigError, load_config

DEFAULT_URL = "http://127.0.0.1:9100"


class CtlError(Exception):
    pass


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--url", help=f"admin server URL (default {DEFAULT_URL})")
    parser.add_argument("-c", "--config", help="take the admin address and token from this file")
    parser.add_argument("--token-file", help="file holding the admin bearer token")
    sub = parser.add_subparsers(dest="action", required=True)
    status = sub.add_parser("status", help="listeners and servers at a glance")
    status.add_argument("--json", action="store_true", help="print the raw status document")
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
    sub.add_parser("reload", help="reload the configuration file (as SIGHUP does)")


def _target(args: argparse.Namespace) -> tuple[str, str | None]:
    url, token_file = args.url, args.token_file
    if args.config:
        try:
            config = load_config(args.config)
        except ConfigError as err:
            raise CtlError("\n".join(err.problems)) from None
        bind = config.global_.admin.bind
        if bind is None:
            raise CtlError(f"{args.config}: global.admin.bind is null: no admin server")
        host = "127.0.0.1" if bind.host in ("0.0.0.0", "*", "") else bind.host
        host = f"[{host}]" if ":" in host else host
        url = url or f"http://{host}:{bind.port}"
        token_file = token_file or config.global_.admin.token_file
    token = None
    if token_file:
        try:
            with open(token_file) as f:
                token = f.read().strip()
        except OSError as exc:
            raise CtlError(f"cannot read token file {token_file}: {exc.strerror}") from None
    return (url or DEFAULT_URL).rstrip("/"), token


def request(url: str, token: str | None, method: str = "GET", body: Any = None) -> Any:
    data = json.dumps(body).encode() if body is not None else (b"" if method == "POST" else None)
    req = urllib.request.Request(url, data=data, method=method)
    req.add_header("Content-Type", "application/json")
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=30) as response:
            return json.loads(response.read() or b"null")
    except urllib.error.HTTPError as exc:
        try:
            doc = json.loads(exc.read())
        except ValueError:
            doc = None
        if isinstance(doc, dict) and "errors" in doc:
            message = "\n".join(doc["errors"]) or "rejected"
        elif isinstance(doc, dict) and "error" in doc:
            message = doc["error"]
        else:
            message = exc.reason
        raise CtlError(f"{method} {url}: HTTP {exc.code}: {message}") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise CtlError(f"cannot reach the admin server at {url}: {reason}") from None


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
    return "\n".join(lines)


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


def run(args: argparse.Namespace) -> int:
    try:
        url, token = _target(args)
        api = f"{url}/api/v1"
        if args.action == "status":
            doc = request(f"{api}/status", token)
            print(json.dumps(doc, indent=2) if args.json else format_status(doc))
        elif args.action in SERVER_ACTIONS:
            endpoint, body, show = SERVER_ACTIONS[args.action](args)
            path = f"{api}/listeners/{args.listener}/servers/{args.server}/{endpoint}"
            print(f"{args.listener}/{args.server}: {show(request(path, token, 'POST', body))}")
        elif args.action == "reload":
            r = request(f"{api}/reload", token, "POST")
            print(f"reloaded: configuration generation {r['generation']}")
    except CtlError as exc:
        print(f"loadstone ctl: {exc}", file=sys.stderr)
        return 1
    return 0
