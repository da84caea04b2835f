"""The native HTTP path's control plane: mode http listeners served by the C engine.

Theory of operation
-------------------
The per-request work of an HTTP listener (parse, check and rebuild the head,
pick a server, reuse or open a server connection, relay, answer 400/408/502/
503/504 itself) runs in the engine's workers (src/_fastpath/engine/http_*.c),
next to the TCP relay, on the same server table, picking, counters and timers.
Parsing is llhttp's, vendored (src/_fastpath/vendor/llhttp)
and built into the engine; its self-test runs when the native data path is
configured (`init_llhttp`), and a failure stops the start with one line naming
it: a broken engine is not hidden behind the pure path.

A listener is served natively when its configuration uses only what the engine
implements (`refusal` says why not otherwise: cookie persistence, routing,
Location rewriting stay in Python, and header rules beyond the engine's table).
Header rules (`request_headers`, `response_headers`: HSTS on a TLS listener)
reach the engine compiled (`compile_rules`): the names whose fields go and the
lines added, the same for every head, applied where the request head is
rebuilt and to the head of every relayed response (not to the proxy's own
answers, as on the pure path). `redirect` (a plain listener sending everyone
to https) is answered by the engine itself, byte for byte the pure path's.
The choice is made per listener at start and on every reload (the rules are
given to the engine again then), logged, and shown in the status API
(`data_path`, `data_path_reason`).

Python sees one record per request (the access-log line, built here from the
engine's batched records exactly as the pure path writes it) and one per
failed connect, as the TCP path does.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import os
from typing import TYPE_CHECKING, Any

from loadstone._fastpath import relay
from loadstone.config.model import HeaderRule, ListenerConfig
from loadstone.datapath import tcp_native as native
from loadstone.datapath.traffic import by_class
from loadstone.http import message
from loadstone.server import Pool

if TYPE_CHECKING:
    from loadstone.sessionlog import SessionLog

log = logging.getLogger("loadstone.datapath")

# Listener options the engine does not implement: any of them keeps the
# listener on the pure path.
_PURE_ONLY = (
    ("cookie", "cookie persistence"),
    ("routes", "routing rules"),
    ("pools", "routing pools"),
    ("rewrite_location", "Location rewriting"),
)
MAX_EXCEPT = 32  # LS_HTTP_MAX_EXCEPT
# The engine's table of one direction's header rules (ls_hrules in engine.h).
MAX_RULES = 32  # LS_HTTP_MAX_RULES
MAX_RULE_NAME = 63  # LS_HTTP_RULE_NAME, less its NUL
MAX_RULE_LINES = 4096  # LS_HTTP_RULE_LINES

CompiledRules = tuple[tuple[bytes, ...], bytes]

_llhttp_ready = False


def init_llhttp() -> None:
    """Self-test the engine's llhttp and give the engine its own answers (once).

    Raises RuntimeError naming what failed (datapath.configure stops the start)."""
    global _llhttp_ready
    if _llhttp_ready:
        return
    relay.init_llhttp()
    for status, data in message.ANSWERS.items():
        relay.set_http_answer(status, data)
    _llhttp_ready = True


def refusal(config: ListenerConfig) -> str | None:
    """Why `config` cannot be served by the native HTTP path, or None if it can."""
    if os.environ.get("LOADSTONE_HTTP_PATH", "") == "pure":
        return "LOADSTONE_HTTP_PATH=pure"
    tls = tls_refusal(config)
    if tls is not None:
        return tls
    for field, what in _PURE_ONLY:
        if getattr(config, field):
            return f"{what} (native HTTP path: not implemented)"
    for field in ("request_headers", "response_headers"):
        rules: tuple[HeaderRule, ...] = getattr(config, field)
        if len(rules) > MAX_RULES:
            return f"{field} has more than {MAX_RULES} rules"
        if any(len(r.name) > MAX_RULE_NAME for r in rules):
            return f"a {field} name is longer than {MAX_RULE_NAME} bytes"
        if len(compile_rules(rules)[1]) > MAX_RULE_LINES:
            return f"{field} add more than {MAX_RULE_LINES} bytes of header lines"
    ff = config.forwardfor
    if ff is not None:
        if len(ff.except_nets) > MAX_EXCEPT:
            return f"forwardfor.except has more than {MAX_EXCEPT} networks"
        if len(ff.header.encode()) >= 64:
            return "forwardfor.header name longer than 63 bytes"
    return None


def compile_rules(rules: tuple[HeaderRule, ...]) -> CompiledRules:
    """Header rules as the engine applies them: (lower-cased names whose fields
    go, the lines that follow the fields kept).

    The same as loadstone.http.rules.HeaderRules.apply whatever the head holds:
    a set or delete removes every field of its name, the head's and those
    earlier rules added, so the head's fields of a name some set or delete
    names all go, and what the rules add is the same block every time."""
    drop: list[bytes] = []
    added: list[tuple[bytes, bytes]] = []  # (lower-cased name, line)
    for rule in rules:
        lower = rule.name.lower().encode("ascii")
        if rule.action != "add":
            if lower not in drop:
                drop.append(lower)
            added = [a for a in added if a[0] != lower]
        if rule.action != "delete":
            line = b"%s: %s\r\n" % (rule.name.encode("ascii"), rule.value.encode("latin-1"))
            added.append((lower, line))
    return tuple(drop), b"".join(line for _, line in added)


def tls_refusal(config: ListenerConfig) -> str | None:
    """Why the native engine (tcp or http) cannot serve a listener's TLS: none
    now; it terminates TLS in its workers and re-encrypts to servers there too
    (loadstone.tls.native). Kept as the one place a TLS gap would be named."""
    del config
    return None


class HttpFrontend(native.TcpFrontend):
    """An http listener served by the native engine (same surface as the pure one)."""

    data_path = "native"

    def __init__(
        self,
        config: ListenerConfig,
        pool: Pool,
        sessionlog: SessionLog,
        loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        init_llhttp()  # done by datapath.configure already; here for a direct use
        super().__init__(config, pool, sessionlog, loop)

    def _configure(self) -> None:
        super()._configure()
        c = self.config
        t = c.timeouts
        ff = c.forwardfor
        nets = [ipaddress.ip_network(n) for n in ff.except_nets] if ff is not None else []
        proto = c.forwarded_scheme
        self.engine.configure_http(
            self.lid,
            request=t.http_request,
            keep_alive=t.http_keep_alive,
            client=t.client,
            server=t.server,
            tunnel=t.tunnel,
            linger=t.linger,
            max_head_size=c.max_head_size,
            max_headers=c.max_headers,
            max_requests=c.server_max_requests,
            forwarded_port=c.forwarded_port,
            forwardfor=ff.header if ff is not None else "",
            proto_line=f"X-Forwarded-Proto: {proto}\r\n" if proto is not None else "",
            except_nets=[(n.version, n.network_address.packed, n.prefixlen) for n in nets],
            request_rules=compile_rules(c.request_headers),
            response_rules=compile_rules(c.response_headers),
            redirect_code=c.redirect.code if c.redirect is not None else 0,
            redirect_scheme=c.redirect.scheme if c.redirect is not None else "",
        )

    def record(self, rec: tuple[Any, ...]) -> None:
        if rec[0] != relay.REC_HTTP:
            super().record(rec)  # a failed connect
            return
        (
            _,
            _,
            slot,
            end,
            arg,
            client,
            bytes_in,
            bytes_out,
            _,
            status,
            method,
            target,
            timings,
            tls,
        ) = rec
        server = self._server_at(slot)
        if end == relay.HTTP_END_CONNECT_FAILED:
            word = f"connect-failed ({self._why(arg)})"
        elif end == relay.HTTP_END_SHUTDOWN:
            word = self._shutdown_word(arg)
        else:
            word = relay.HTTP_END_WORDS[end]
        # The engine made this record only if `log` wants its line
        # (http_exchange.c http_logged), as for tcp sessions.
        self.sessionlog.request(
            client,
            self.name,
            server.name if server is not None else "-",
            method,
            target,
            status,
            bytes_in,
            bytes_out,
            timings,
            word,
            tls or None,
        )

    def stop_accepting(self) -> None:
        """Soft stop: idle keep-alive connections close now, the others after the
        response in flight (which says Connection: close)."""
        super().stop_accepting()
        self.engine.http_stop(self.lid)
        native.drain_records()

    def end_keep_alive(self) -> None:
        self.engine.http_close_after_response(self.lid)

    def status_extra(self) -> dict[str, Any]:
        """HTTP counters for the status API, the pure HttpFrontend's shape."""
        native.drain_records()
        # The workers count every request as it ends (engine/metrics.c), whatever
        # the listener's `log`: with `log: none` no record reaches the control
        # plane at all, so the counts are read from there.
        responses = by_class(self.engine.listener_metrics(self.lid)[2])
        servers = [s.name for s in self.pool.servers]
        return {
            "data_path": self.data_path,
            "data_path_reason": None,  # the pure path's field: why a listener is not here
            "http": {
                "requests_total": sum(responses.values()),
                "responses": responses,
                "idle_server_connections": self.engine.http_idle_server_conns(self.lid),
            },
            # The pool's balancer, as the pure path shows it.
            "pools": {"default": {"balance": self.pool.balancer.name, "servers": servers}},
            **self.tls_status(),
            **self.proxy_status(),
        }
