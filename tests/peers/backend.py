"""A test backend, run as a subprocess so a test can kill it like a real server.

    python tests/peers/backend.py --name web1 --port 8081 --mode http|echo

http: GET / answers "<name>\\n"; GET /health answers 200 (503 once the file
      given by --fail-file exists); GET /download?size=N streams N bytes of a
      deterministic pattern. For HTTP mode: /echo (JSON: method, target, headers,
      body length and sha256, the proxy's source port), /upload (streams the
      body in, answers its length and sha256), /chunked?n=K (a chunked answer),
      /redirect (302 to an http:// Location), /status?code=N, /slow?delay=S,
      /close (answers with Connection: close), /ws (WebSocket echo); OPTIONS on
      any path answers like GET (HAProxy's default health check). With
      --record FILE every request is appended there as a JSON line as soon as its
      head arrives, so a test can prove what never reached the server.
echo: raw TCP; everything received is sent back; on the client's FIN the server
      sends "\\nEOF <sha256 of all it received> <name>\\n" and closes. This
      checks integrity and that a half-close is passed on while the other
      direction keeps flowing.
It prints "ready" on stdout once listening.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import resource
import signal
import sys
import time
from collections.abc import Awaitable, Callable

from aiohttp import WSMsgType, web

PATTERN = bytes(range(256)) * 256  # 64 KiB


def pattern_bytes(size: int) -> bytes:
    """The bytes /download?size=N sends, for a test to hash the same way."""
    whole, rest = divmod(size, len(PATTERN))
    return PATTERN * whole + PATTERN[:rest]


class Echo(asyncio.Protocol):
    def __init__(self, name: str) -> None:
        self.name = name
        self.digest = hashlib.sha256()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.digest.update(data)
        assert self.transport is not None
        self.transport.write(data)

    def pause_writing(self) -> None:
        assert self.transport is not None
        self.transport.pause_reading()

    def resume_writing(self) -> None:
        assert self.transport is not None
        self.transport.resume_reading()

    def eof_received(self) -> bool:
        assert self.transport is not None
        self.transport.write(f"\nEOF {self.digest.hexdigest()} {self.name}\n".encode())
        self.transport.close()
        return True


def http_app(name: str, fail_file: str | None, record: str | None = None) -> web.Application:
    connections: set[int] = set()

    @web.middleware
    async def recorder(
        request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        peer = request.transport.get_extra_info("peername") if request.transport else None
        if peer:
            connections.add(peer[1])
        if record:
            line = {
                "server": name,
                "time": time.time(),  # when the head arrived (check timing tests)
                "method": request.method,
                "target": request.path_qs,
                "headers": [[k, v] for k, v in request.headers.items()],
            }
            with open(record, "a") as f:
                f.write(json.dumps(line) + "\n")
        return await handler(request)

    async def index(request: web.Request) -> web.Response:
        return web.Response(text=f"{name}\n")

    async def echo(request: web.Request) -> web.Response:
        body = await request.read()
        peer = request.transport.get_extra_info("peername") if request.transport else None
        doc = {
            "server": name,
            "method": request.method,
            "target": request.path_qs,
            "version": f"{request.version.major}.{request.version.minor}",
            "headers": [[k, v] for k, v in request.headers.items()],
            "body_length": len(body),
            "body_sha256": hashlib.sha256(body).hexdigest(),
            "peer_port": peer[1] if peer else None,
            "connections": len(connections),
        }
        return web.json_response(doc)

    async def upload(request: web.Request) -> web.Response:
        digest = hashlib.sha256()
        size = 0
        async for data in request.content.iter_any():
            digest.update(data)
            size += len(data)
        return web.json_response({"server": name, "length": size, "sha256": digest.hexdigest()})

    async def chunked(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        response.enable_chunked_encoding()
        await response.prepare(request)
        for i in range(int(request.query.get("n", "3"))):
            await response.write(f"chunk {i} from {name}\n".encode())
        await response.write_eof()
        return response

    async def redirect(request: web.Request) -> web.Response:
        host = request.headers.get("Host", "localhost")
        return web.Response(status=302, headers={"Location": f"http://{host}/landed"})

    async def status(request: web.Request) -> web.Response:
        return web.Response(status=int(request.query["code"]), text=f"{name}\n")

    async def slow(request: web.Request) -> web.Response:
        await asyncio.sleep(float(request.query.get("delay", "1")))
        return web.Response(text=f"{name}\n")

    async def close(request: web.Request) -> web.Response:
        response = web.Response(text=f"{name}\n")
        response.force_close()
        return response

    async def ws(request: web.Request) -> web.WebSocketResponse:
        sock = web.WebSocketResponse()
        await sock.prepare(request)
        async for msg in sock:
            if msg.type == WSMsgType.TEXT:
                await sock.send_str(f"{name}: {msg.data}")
            elif msg.type == WSMsgType.BINARY:
                await sock.send_bytes(msg.data)
        return sock

    async def health(request: web.Request) -> web.Response:
        if fail_file and os.path.exists(fail_file):
            return web.Response(status=503, text="failing\n")
        return web.Response(text="ok\n")

    async def download(request: web.Request) -> web.StreamResponse:
        size = int(request.query.get("size", "0"))
        response = web.StreamResponse()
        response.content_length = size
        await response.prepare(request)
        if request.method == "HEAD":
            return response  # aiohttp would send the body of a HEAD response as written
        sent = 0
        while sent < size:
            chunk = PATTERN[: min(len(PATTERN), size - sent)]
            await response.write(chunk)
            sent += len(chunk)
        await response.write_eof()
        return response

    app = web.Application(middlewares=[recorder], client_max_size=2**40)
    app.router.add_get("/", index)
    app.router.add_route("*", "/echo", echo)
    app.router.add_route("*", "/upload", upload)
    app.router.add_get("/chunked", chunked)
    app.router.add_get("/redirect", redirect)
    app.router.add_route("*", "/status", status)
    app.router.add_get("/slow", slow)
    app.router.add_get("/close", close)
    app.router.add_get("/ws", ws)
    app.router.add_get("/{tail:.*}", index)  # any other path: the name, for routing tests
    # HAProxy's `option httpchk` without a method sends OPTIONS / (deployers' configs do)
    app.router.add_route("OPTIONS", "/{tail:.*}", index)
    app.router.add_get("/health", health)
    app.router.add_get("/download", download)
    return app


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--name", required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--mode", choices=["http", "echo"], default="http")
    parser.add_argument("--fail-file")
    parser.add_argument("--record")
    args = parser.parse_args()
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    if args.mode == "echo":
        server = await loop.create_server(
            lambda: Echo(args.name), args.host, args.port, backlog=4096
        )
        print("ready", flush=True)
        await stop.wait()
        server.close()
    else:
        runner = web.AppRunner(http_app(args.name, args.fail_file, args.record), access_log=None)
        await runner.setup()
        await web.TCPSite(runner, args.host, args.port, backlog=4096).start()
        print("ready", flush=True)
        await stop.wait()
        await runner.cleanup()


if __name__ == "__main__":
    asyncio.run(main())
    sys.exit(0)
