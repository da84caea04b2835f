"""A test backend, run as a subprocess so a test can kill it like a real server.

    python tests/peers/backend.py --name web1 --port 8081 --mode http|echo

http: GET / answers "<name>\\n"; GET /health answers 200 (503 once the file
      given by --fail-file exists); GET /download?size=N streams N bytes of a
      deterministic pattern.
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
import os
import resource
import signal
import sys

from aiohttp import web

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


def http_app(name: str, fail_file: str | None) -> web.Application:
    async def index(request: web.Request) -> web.Response:
        return web.Response(text=f"{name}\n")

    async def health(request: web.Request) -> web.Response:
        if fail_file and os.path.exists(fail_file):
            return web.Response(status=503, text="failing\n")
        return web.Response(text="ok\n")

    async def download(request: web.Request) -> web.StreamResponse:
        size = int(request.query.get("size", "0"))
        response = web.StreamResponse()
        response.content_length = size
        await response.prepare(request)
        sent = 0
        while sent < size:
            chunk = PATTERN[: min(len(PATTERN), size - sent)]
            await response.write(chunk)
            sent += len(chunk)
        await response.write_eof()
        return response

    app = web.Application()
    app.router.add_get("/", index)
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
        runner = web.AppRunner(http_app(args.name, args.fail_file), access_log=None)
        await runner.setup()
        await web.TCPSite(runner, args.host, args.port, backlog=4096).start()
        print("ready", flush=True)
        await stop.wait()
        await runner.cleanup()


if __name__ == "__main__":
    asyncio.run(main())
    sys.exit(0)
