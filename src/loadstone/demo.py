"""`loadstone demo`: the embedded default, needing nothing but loadstone itself.

It starts three small HTTP backends in this process (on the addresses the demo
configuration names), the proxy in front of them, prints where to look, and
stops cleanly on Ctrl-C (SIGINT) or SIGTERM. `--port P` moves the proxy to P and
the backends to P+1..P+3; `--admin-port` moves the admin server.
"""

from __future__ import annotations

import os
import sys
from dataclasses import replace
from importlib import resources

from aiohttp import web

from loadstone.config import ConfigError, parse_config
from loadstone.config.model import Address, Config, ServerConfig
from loadstone.runtime import Runtime, StartError


def demo_config(port: int | None = None, admin_port: int | None = None) -> Config:
    text = resources.files("loadstone").joinpath("configs/demo.yaml").read_text()
    config = parse_config(text, source="demo.yaml")
    if port is not None:
        listeners = tuple(
            replace(
                listener,
                bind=(Address("127.0.0.1", port),),
                servers=tuple(
                    replace(s, address=Address("127.0.0.1", port + 1 + i))
                    for i, s in enumerate(listener.servers)
                ),
            )
            for listener in config.listeners
        )
        config = replace(config, listeners=listeners)
    if admin_port is not None:
        admin = replace(config.global_.admin, bind=Address("127.0.0.1", admin_port))
        config = replace(config, global_=replace(config.global_, admin=admin))
    return config


def backend_app(server: ServerConfig) -> web.Application:
    hits = 0

    async def hello(request: web.Request) -> web.Response:
        nonlocal hits
        hits += 1
        return web.Response(
            text=f"Hello from {server.name} ({server.address}), request {hits} here\n"
        )

    async def health(request: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    app = web.Application()
    app.router.add_get("/", hello)
    app.router.add_get("/health", health)
    return app


async def run_demo(port: int | None = None, admin_port: int | None = None) -> int:
    try:
        config = demo_config(port, admin_port)
    except ConfigError as err:  # only if the packaged file were broken
        print("\n".join(err.problems), file=sys.stderr)
        return 2
    runners: list[web.AppRunner] = []
    try:
        for listener in config.listeners:
            for server in listener.servers:
                runner = web.AppRunner(backend_app(server), access_log=None, handle_signals=False)
                await runner.setup()
                runners.append(runner)
                site = web.TCPSite(runner, server.address.host, server.address.port)
                try:
                    await site.start()
                except OSError as exc:
                    why = os.strerror(exc.errno) if exc.errno else str(exc)
                    print(
                        f"loadstone demo: cannot start backend {server.name} on "
                        f"{server.address}: {why.lower()} (try --port)",
                        file=sys.stderr,
                    )
                    return 1
        runtime = Runtime(config)
        try:
            await runtime.start()
        except StartError as exc:
            print(f"loadstone demo: {exc}", file=sys.stderr)
            print("loadstone demo: --port and --admin-port choose other ports", file=sys.stderr)
            return 1
        admin = config.global_.admin.bind
        for listener in config.listeners:
            for address in listener.bind:
                print(f"proxy    http://{address}/   (try: curl http://{address}/)")
        if admin is not None:
            print(f"status   http://{admin}/api/v1/status")
            print(f"metrics  http://{admin}/metrics")
        print("Press Ctrl-C to stop.", flush=True)
        await runtime.serve()
        return 0
    finally:
        for runner in runners:
            await runner.cleanup()
