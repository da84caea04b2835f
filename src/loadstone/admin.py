"""The admin server (aiohttp, on global.admin.bind and/or the unix socket
global.admin.socket): status API, metrics, the stats page, and the write API
that changes the running data path.

Everything read here is read on demand from the runtime's live objects: no
counter is pushed to Prometheus per packet or per session; a scrape walks the
pools. Writes go through `Pool.set_*`, the same path the checks use, so they
take effect on the next connection.

Access: reads are open (the admin server binds to loopback by default). With
global.admin.token_file set, every write needs `Authorization: Bearer <token>`:
401 without one, 403 with a wrong one, compared in constant time. A write that a
browser sends on behalf of another site (its `Origin` names another host than
the request's `Host`, or `Sec-Fetch-Site` says cross-site) is refused with 403,
token or not: without a token, a page on any site could otherwise POST to the
loopback admin API from an operator's browser (the body is parsed as JSON
whatever its Content-Type, so no CORS preflight stops it). curl, ctl and other
tools send no `Origin` and are not affected; the stats page is same-origin.
"""

from __future__ import annotations

import contextlib
import errno
import hmac
import os
import socket
import stat
from collections.abc import Awaitable, Callable
from importlib import resources
from typing import Any

import orjson
from aiohttp import web
from prometheus_client import CollectorRegistry, ProcessCollector
from prometheus_client.exposition import choose_encoder

from loadstone.config.model import AdminConfig
from loadstone.health_hold import held_health, requested_hold
from loadstone.metrics import RuntimeCollector
from loadstone.runtime_view import RuntimeView
from loadstone.server import Pool, ServerRuntime
from loadstone.server_actions import ActionError, set_state, set_weight, shutdown_sessions
from loadstone.status import server_status, status_document


@web.middleware
async def require_token(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    runtime = request.app[RUNTIME_KEY]
    token = runtime.admin_token
    writes = request.method not in ("GET", "HEAD", "OPTIONS")
    if writes and from_another_site(request):
        return _error(403, "cross-site write refused (Origin does not match Host)")
    if writes and token is not None:
        header = request.headers.get("Authorization", "")
        if not header.startswith("Bearer "):
            return _error(
                401,
                "this endpoint needs 'Authorization: Bearer <token>'",
                headers={"WWW-Authenticate": 'Bearer realm="loadstone"'},
            )
        if not hmac.compare_digest(header[7:].strip().encode(), token.encode()):
            return _error(403, "wrong token")
    return await handler(request)


def from_another_site(request: web.Request) -> bool:
    """Whether a browser sent this request for a page of another origin."""
    if request.headers.get("Sec-Fetch-Site", "") in ("cross-site", "same-site"):
        return True
    origin = request.headers.get("Origin")
    if origin is None:
        return False  # not a browser's cross-origin request (curl, ctl, scripts)
    host = request.headers.get("Host", "")
    return origin in ("null", "") or origin.split("://", 1)[-1].rstrip("/") != host


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(
        status=status,
        body=orjson.dumps({"error": message}),
        content_type="application/json",
        headers=headers,
    )


def _json(doc: Any) -> web.Response:
    return web.Response(
        body=orjson.dumps(doc, option=orjson.OPT_INDENT_2), content_type="application/json"
    )


RUNTIME_KEY: web.AppKey[RuntimeView] = web.AppKey("runtime")


class AdminBindError(Exception):
    """The admin server cannot listen; the message starts with the YAML path."""


def _reason(exc: OSError) -> str:
    return (os.strerror(exc.errno) if exc.errno else str(exc)).lower()


def remove_stale_socket(path: str) -> None:
    """Remove the socket a previous run left behind, so that binding works; an
    OSError (EADDRINUSE) if a running process still accepts on it, or if the
    path is something else than a socket."""
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        raise FileExistsError(errno.EEXIST, "exists and is not a socket")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        try:
            probe.connect(path)
        except ConnectionRefusedError:
            os.unlink(path)  # nobody accepts: left by a process that is gone
            return
    raise OSError(errno.EADDRINUSE, "another process accepts on it")  # a second loadstone


# What keepalived passes to a notify script as its third argument.
VRRP_STATES = ("MASTER", "BACKUP", "FAULT", "STOP")


class AdminServer:
    def __init__(self, runtime: RuntimeView, config: AdminConfig) -> None:
        self.runtime = runtime
        self.config = config
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(RuntimeCollector(runtime))
        # process_cpu_seconds_total, process_resident_memory_bytes, process_open_fds,
        # process_max_fds, process_start_time_seconds: the standard names
        ProcessCollector(registry=self.registry)
        self.app = web.Application(middlewares=[require_token])
        self.app[RUNTIME_KEY] = runtime
        r = self.app.router
        r.add_get("/api/v1/status", self.get_status)
        r.add_get("/api/v1/health", self.get_health)
        r.add_get("/metrics", self.get_metrics)
        r.add_get("/stats", self.get_stats)
        server_path = "/api/v1/listeners/{listener}/servers/{server}"
        r.add_post(server_path + "/state", self.post_state)
        r.add_post(server_path + "/weight", self.post_weight)
        r.add_post(server_path + "/shutdown-sessions", self.post_shutdown_sessions)
        r.add_post("/api/v1/reload", self.post_reload)
        r.add_post("/api/v1/reopen-logs", self.post_reopen_logs)
        r.add_post("/api/v1/vrrp", self.post_vrrp)
        self.runner: web.AppRunner | None = None

    async def start(self) -> None:
        """Listen on the address and the socket configured; AdminBindError
        (nothing left listening) when one cannot be bound."""
        self.runner = web.AppRunner(self.app, access_log=None, handle_signals=False)
        await self.runner.setup()
        bind, path = self.config.bind, self.config.socket
        try:
            if bind is not None:
                try:
                    await web.TCPSite(self.runner, bind.host, bind.port).start()
                except OSError as exc:
                    raise AdminBindError(
                        f"global.admin.bind: cannot bind {bind}: {_reason(exc)} "
                        "(set global.admin.bind to a free address, or null for no admin server)"
                    ) from None
            if path is not None:
                try:
                    remove_stale_socket(path)
                    await web.UnixSite(self.runner, path).start()
                except OSError as exc:
                    raise AdminBindError(
                        f"global.admin.socket: cannot bind {path}: {_reason(exc)}"
                    ) from None
        except AdminBindError:
            await self.runner.cleanup()
            self.runner = None
            raise

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()
            self.runner = None
            if self.config.socket is not None:
                with contextlib.suppress(OSError):
                    os.unlink(self.config.socket)

    async def get_status(self, request: web.Request) -> web.Response:
        return _json(status_document(self.runtime))

    async def get_health(self, request: web.Request) -> web.StreamResponse:
        """200 while this instance may hold the VIP, else 503 and why (ctl health);
        ?hold=SECONDS: a healthy answer's body stays open (health_hold.py)."""
        problems = self.runtime.health_problems()
        hold = requested_hold(request)
        if hold and not problems:
            return await held_health(request, self.runtime.health_problems, hold)
        return web.Response(
            status=503 if problems else 200,
            body=orjson.dumps({"healthy": not problems, "problems": problems}),
            content_type="application/json",
        )

    async def get_stats(self, request: web.Request) -> web.Response:
        page = resources.files("loadstone").joinpath("static/stats.html").read_bytes()
        return web.Response(body=page, content_type="text/html", charset="utf-8")

    def _server(self, request: web.Request) -> tuple[Pool, ServerRuntime]:
        lr = self.runtime.listeners.get(request.match_info["listener"])
        if lr is None:
            raise web.HTTPNotFound(
                body=orjson.dumps({"error": "no such listener"}), content_type="application/json"
            )
        server = lr.pool.by_name.get(request.match_info["server"])
        if server is None:
            raise web.HTTPNotFound(
                body=orjson.dumps({"error": "no such server"}), content_type="application/json"
            )
        return lr.pool, server

    @staticmethod
    async def _body(request: web.Request) -> dict[str, Any]:
        try:
            doc = orjson.loads(await request.read())
        except orjson.JSONDecodeError:
            raise web.HTTPBadRequest(
                body=orjson.dumps({"error": "body must be JSON"}), content_type="application/json"
            ) from None
        if not isinstance(doc, dict):
            raise web.HTTPBadRequest(
                body=orjson.dumps({"error": "body must be a JSON object"}),
                content_type="application/json",
            )
        return doc

    async def post_state(self, request: web.Request) -> web.Response:
        pool, server = self._server(request)
        try:
            set_state(pool, server, (await self._body(request)).get("state"))
        except ActionError as err:
            return _error(400, str(err))
        return _json(server_status(server))

    async def post_weight(self, request: web.Request) -> web.Response:
        pool, server = self._server(request)
        try:
            set_weight(pool, server, (await self._body(request)).get("weight"))
        except ActionError as err:
            return _error(400, str(err))
        return _json(server_status(server))

    async def post_shutdown_sessions(self, request: web.Request) -> web.Response:
        _, server = self._server(request)
        return _json({"closed": shutdown_sessions(server)})

    async def post_reload(self, request: web.Request) -> web.Response:
        report = await self.runtime.reload()
        return web.Response(
            status=200 if report.ok else 422,
            body=orjson.dumps(report.as_dict(), option=orjson.OPT_INDENT_2),
            content_type="application/json",
        )

    async def post_reopen_logs(self, request: web.Request) -> web.Response:
        errors = await self.runtime.reopen_logs()
        return web.Response(
            status=500 if errors else 200,
            body=orjson.dumps({"ok": not errors, "errors": errors}),
            content_type="application/json",
        )

    async def post_vrrp(self, request: web.Request) -> web.Response:
        """keepalived's notify hook (`loadstone ctl notify`) reports a transition."""
        body = await self._body(request)
        instance, state = body.get("instance"), body.get("state")
        if not isinstance(instance, str) or state not in VRRP_STATES:
            return _error(400, f"need instance and state ({', '.join(VRRP_STATES)})")
        self.runtime.vrrp_transition(instance, state)
        return _json({"instance": instance, "state": state})

    async def get_metrics(self, request: web.Request) -> web.Response:
        # The Prometheus text format, or OpenMetrics for a scraper that asks for it.
        encode, content_type = choose_encoder(request.headers.get("Accept", ""))
        return web.Response(body=encode(self.registry), headers={"Content-Type": content_type})
