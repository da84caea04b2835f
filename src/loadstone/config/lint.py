"""Likely mistakes in a valid configuration: `loadstone check` (and `run`, at
start) print them as warnings and still exit 0, since each can be meant.

- a duration written without a unit that looks like milliseconds (`5000`):
  a bare number is seconds, so that is 83 minutes, where HAProxy would read 5 s;
- a check interval longer than the client or server timeout: clients give up
  long before a dead server is noticed;
- an active-backup listener with one server: there is nothing to fail over to.

And for a configuration that is refused: an unknown key that is an HAProxy
keyword (`inter`, `option`, `timeout`) gets a hint naming loadstone's
equivalent, after the error lines (`haproxy_hints`).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import yaml

from loadstone.config.jsonschema import config_schema
from loadstone.config.model import Config
from loadstone.config.schema_walk import Schema, is_duration, mapping_schemas, non_null

# HAProxy keywords a person coming from haproxy.cfg may write as YAML keys, and
# what loadstone calls the same thing (docs/migration.md has the whole table;
# `loadstone import haproxy` translates a file).
HAPROXY_KEYWORDS: dict[str, str] = {
    "frontend": "a listener (a frontend and its backend are one listener under `listeners`)",
    "backend": "a listener (a frontend and its backend are one listener under `listeners`)",
    "listen": "a listener under `listeners`",
    "server": "an entry of the listener's `servers` list",
    "timeout": "`timeouts` (connect, client, server, queue, check, http_request, "
    "http_keep_alive, tunnel)",
    "inter": "`check.interval` on the listener",
    "fastinter": "`check.fastinter` on the listener",
    "downinter": "`check.downinter` on the listener",
    "rise": "`check.rise` on the listener",
    "fall": "`check.fall` on the listener",
    "option": "a key of its own: httpchk -> `check: {type: http}`, forwardfor -> "
    "`forwardfor`, redispatch -> `redispatch`, httplog/tcplog -> `log`",
    "httpchk": "`check: {type: http, path: ...}`",
    "default_backend": "the listener's own `servers`, or `pools` with `routes`",
    "use_backend": "`routes` to `pools`",
    "acl": "the conditions of `routes`",
    "http-request": "`request_headers` (set, add, del), or `redirect`",
    "http-response": "`response_headers`",
    "stick-table": "`balance: source` or `cookie` persistence",
    "stick": "`balance: source` or `cookie` persistence",
    "hash-type": "`balance: source` (consistent hashing)",
    "nbthread": "`global.workers`",
    "nbproc": "`global.workers`",
    "stats": "the admin server (`global.admin`): /stats, /metrics, /api/v1/status",
    "monitor-uri": "GET /api/v1/health on the admin server",
    "crt": "`tls.certificates`",
    "ssl": "`tls` (on the listener), `server_tls` or a server's `tls`",
    "ca-file": "`ca_file` under `server_tls` or a server's `tls`",
    "verify": "`verify` under `server_tls` or a server's `tls`",
    "maxqueue": "`timeouts.queue` (loadstone bounds the queue by time)",
    "daemon": "nothing: loadstone runs in the foreground, under systemd",
    "chroot": "the systemd unit's sandboxing",
    "pidfile": "nothing: systemd tracks the process",
}

# A unitless number this large and this round was probably meant in milliseconds.
_MS_LOOKING = 1000
_PATH_STEP = re.compile(r"\[\d+\]$")


def _human(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:g}s"
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    text = f"{hours}h{minutes}m" if hours else f"{minutes}m"
    return text + (f"{secs}s" if secs else "")


def _looks_like_ms(value: object) -> bool:
    return (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and value >= _MS_LOOKING
        and value % 500 == 0  # 5000, 30000, 1500; not 3600 or 86400 (hours, a day)
    )


def _unitless(node: Any, schema: Schema, root: Schema, path: str) -> Iterator[str]:
    if isinstance(node, list):
        items = non_null(schema)[0].get("items")
        if isinstance(items, dict):
            for i, item in enumerate(node):
                yield from _unitless(item, items, root, f"{path}[{i}]")
        return
    if not isinstance(node, dict):
        return
    for section in mapping_schemas(schema, root):
        properties = section.get("properties", {})
        named = section.get("additionalProperties")
        for key, value in node.items():
            sub = properties.get(key)
            if sub is None and isinstance(named, dict):
                sub = named
            if sub is None:
                continue
            where = f"{path}.{key}" if path else str(key)
            if is_duration(non_null(sub)[0]) and _looks_like_ms(value):
                yield (
                    f"{where}: {value} has no unit, so it is {value} seconds "
                    f"({_human(float(value))}); write '{value}ms' if milliseconds were meant"
                )
            else:
                yield from _unitless(value, sub, root, where)
        return  # the first mapping schema that fits the node


def warnings(config: Config, document: Any) -> list[str]:
    """Likely mistakes in a configuration that loaded (`document`: its YAML as read)."""
    root = config_schema()
    found = list(_unitless(document, root, root, ""))
    for listener in config.listeners:
        where = f"listeners.{listener.name}"
        check, t = listener.check, listener.timeouts
        if check is not None and any(s.check for s in listener.servers):
            shortest = min(t.client, t.server)
            if check.interval > shortest:
                which = "client" if t.client <= t.server else "server"
                found.append(
                    f"{where}.check.interval: {_human(check.interval)} is longer than "
                    f"timeouts.{which} ({_human(shortest)}): clients time out before a "
                    "dead server is noticed"
                )
        if listener.balance == "active-backup" and len(listener.servers) == 1:
            found.append(
                f"{where}.servers: active-backup with a single server has nothing to "
                "fail over to; add the other servers, or use balance: first"
            )
    return found


def haproxy_hints(problems: list[str]) -> list[str]:
    """For each `PATH: unknown key` problem whose key is an HAProxy keyword, a
    line naming loadstone's equivalent."""
    hints = []
    for problem in problems:
        path, _, message = problem.partition(": ")
        if not message.startswith("unknown key"):
            continue
        key = _PATH_STEP.sub("", path.rsplit(".", 1)[-1])
        equivalent = HAPROXY_KEYWORDS.get(key)
        if equivalent is not None:
            hints.append(f"{path}: '{key}' is HAProxy's; in loadstone it is {equivalent}")
    return hints


def read_document(path: str) -> Any:
    """The YAML of a configuration file that loaded, as plain data."""
    # the loader read it already; reading it again keeps the loader unchanged
    with open(path, encoding="utf-8") as f:
        return yaml.safe_load(f)
