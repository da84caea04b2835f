"""Network fuzzer: mutated HTTP/1.1 streams and TLS ClientHellos sent to a running
loadstone (issue 17, part 2).

    .venv/bin/python -m fuzz.net --path native --seconds 600
    .venv/bin/python -m fuzz.net --path pure --seconds 60 --json
    scripts/sanitize-tests tests/integration/test_net_fuzz.py    # native under ASan

One `loadstone run` (the data path chosen by --path) serves two listeners in
front of one aiohttp backend: `web`, plain HTTP (native-eligible: the native
engine serves it on --path native), and `tls`, HTTP over TLS (the pure path
today; the native engine once it terminates TLS: the report names the data
path each listener ran on). Fuzzing clients send, over many connections at
once, mutations of the seed corpora (fuzz/corpus/request_head, the smuggling
requests of tests/integration/test_smuggling.py, and real ClientHellos made by
Python's ssl), cut at random points, sometimes half-closed, sometimes reset.

The verdict: the process never dies, a canary client (a well-formed request on
each listener, twice a second) is always served, and once the fuzzing stops the
process's descriptors come back to where they were after the warm-up.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import json
import random
import socket
import ssl
import struct
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from tests.integration.harness import Backend, Loadstone, free_port, wait_for
from tests.tlscerts import Ca

from fuzz.registry import seeds

TOKENS = [
    b"\r\n",
    b"\n",
    b"\r",
    b" ",
    b"\t",
    b":",
    b"\x00",
    b"\xff",
    b"Transfer-Encoding: chunked\r\n",
    b"Transfer-Encoding: xchunked\r\n",
    b"Content-Length: 5\r\n",
    b"Content-Length: -1\r\n",
    b"Content-Length: 99999999999999999999\r\n",
    b"0\r\n\r\n",
    b"ffffffffffffffffff\r\n",
    b"5;ext=1\r\nhello\r\n",
    b"Host: a\r\n",
    b"Host: b\r\n",
    b"Connection: close\r\n",
    b"Connection: keep-alive, Upgrade\r\n",
    b"Upgrade: websocket\r\n",
    b"Expect: 100-continue\r\n",
    b"GET http://evil.example/ HTTP/1.1\r\n",
    b"HTTP/1.0",
    b"HTTP/0.9",
    b"\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: t\r\n\r\n",
]
CANARY_INTERVAL = 0.5
CONCURRENCY = 16


def mutate(data: bytes, others: list[bytes], rnd: random.Random) -> bytes:
    """1 to 6 byte-level changes: flip, insert, delete, repeat, a token, a splice."""
    out = bytearray(data)
    for _ in range(rnd.randint(1, 6)):
        at = rnd.randrange(len(out) + 1)
        action = rnd.randrange(7)
        if action == 0 and out:
            out[min(at, len(out) - 1)] ^= 1 << rnd.randrange(8)
        elif action == 1:
            out[at:at] = rnd.randbytes(rnd.randint(1, 16))
        elif action == 2 and out:
            del out[at : at + rnd.randint(1, 32)]
        elif action == 3 and out:
            out[at:at] = out[at : at + rnd.randint(1, 64)] * rnd.randint(2, 8)
        elif action == 4:
            out[at:at] = rnd.choice(TOKENS)
        elif action == 5:
            other = rnd.choice(others)
            out = out[:at] + other[rnd.randrange(len(other) + 1) :]
        elif action == 6 and len(out) >= 5:
            # a TLS record or handshake length field: the ClientHello's framing
            pos = rnd.choice([3, 7]) if len(out) > 9 else 3
            out[pos : pos + 2] = struct.pack("!H", rnd.choice([0, 1, 0x3FFF, 0xFFFF, len(out)]))
    return bytes(out[:65536])


def smuggling_requests() -> list[bytes]:
    """The smuggling corpus of tests/integration/test_smuggling.py (imported by name:
    mypy checks fuzz/, not the test modules it would follow into)."""
    module = importlib.import_module("tests.integration.test_smuggling")
    return list(module.CORPUS.values())


def client_hellos() -> list[bytes]:
    """Real ClientHellos from Python's ssl: with and without SNI, ALPN, TLS 1.2 only."""
    hellos = []
    for sni, alpn, tls12 in ((True, False, False), (False, True, False), (True, True, True)):
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        if alpn:
            ctx.set_alpn_protocols(["h2", "http/1.1"])
        if tls12:
            ctx.maximum_version = ssl.TLSVersion.TLSv1_2
        incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        obj = ctx.wrap_bio(incoming, outgoing, server_hostname="fuzz.test" if sni else None)
        with contextlib.suppress(ssl.SSLWantReadError):
            obj.do_handshake()
        hellos.append(outgoing.read())
    return hellos


@dataclass
class Report:
    path: str
    seconds: float
    data_paths: dict[str, str] = field(default_factory=dict)
    executions: dict[str, int] = field(default_factory=lambda: {"http": 0, "tls": 0})
    canaries: int = 0
    canary_failures: list[str] = field(default_factory=list)
    alive: bool = True
    fds_baseline: int = 0
    fds_end: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


async def send_one(port: int, data: bytes, rnd: random.Random) -> None:
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 5)
    except (OSError, TimeoutError):
        return
    try:
        cuts = sorted(rnd.randrange(len(data) + 1) for _ in range(rnd.randrange(4)))
        last = 0
        for cut in [*cuts, len(data)]:
            writer.write(data[last:cut])
            last = cut
            await writer.drain()
            if rnd.random() < 0.3:
                await asyncio.sleep(rnd.random() * 0.01)
        if rnd.random() < 0.3:
            writer.write_eof()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(reader.read(65536), rnd.choice([0.01, 0.1, 0.3]))
    except (OSError, RuntimeError):
        pass
    finally:
        sock = writer.get_extra_info("socket")
        if sock is not None and rnd.random() < 0.3:  # a reset, not a FIN
            with contextlib.suppress(OSError):  # already closed by an error
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        writer.close()


async def canary(port: int, tls: ssl.SSLContext | None) -> str | None:
    """A well-formed request: None when served, else what went wrong."""
    try:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection("127.0.0.1", port, ssl=tls, server_hostname=None), 5
        )
        writer.write(b"GET / HTTP/1.1\r\nHost: canary\r\nConnection: close\r\n\r\n")
        head = await asyncio.wait_for(reader.read(65536), 5)
        writer.close()
        return None if head.startswith(b"HTTP/1.1 200") else f"answered {head[:40]!r}"
    except (OSError, TimeoutError, ssl.SSLError) as exc:
        return f"{type(exc).__name__}: {exc}"


async def fuzz(ports: dict[str, int], seconds: float, seed: int, report: Report) -> None:
    rnd = random.Random(seed)
    corpora = {
        "http": seeds("request_head") + smuggling_requests(),
        "tls": client_hellos(),
    }
    tls_client = ssl.create_default_context()
    tls_client.check_hostname = False
    tls_client.verify_mode = ssl.CERT_NONE
    deadline = time.monotonic() + seconds

    async def worker(n: int) -> None:
        local = random.Random(rnd.random())
        while time.monotonic() < deadline:
            kind = "tls" if n % 4 == 0 else "http"
            corpus = corpora[kind]
            data = mutate(local.choice(corpus), corpus, local)
            await send_one(ports[kind], data, local)
            report.executions[kind] += 1

    async def canaries() -> None:
        while time.monotonic() < deadline:
            for name, tls in (("web", None), ("tls", tls_client)):
                report.canaries += 1
                failure = await canary(ports["http" if name == "web" else "tls"], tls)
                if failure is not None:
                    report.canary_failures.append(f"{name}: {failure}")
            await asyncio.sleep(CANARY_INTERVAL)

    await asyncio.gather(canaries(), *(worker(n) for n in range(CONCURRENCY)))


def loadstone_config(backend: Backend, ports: dict[str, int], cert: Path) -> dict[str, Any]:
    def listener(port: int) -> dict[str, Any]:
        return {
            "bind": [f"127.0.0.1:{port}"],
            "mode": "http",
            "servers": [{"name": backend.name, "address": backend.address, "check": False}],
        }

    tls = listener(ports["tls"])
    tls["tls"] = {"certificates": str(cert), "handshake_timeout": "1s"}
    return {
        "global": {"grace": "1s"},
        "defaults": {"timeouts": {"http_request": "1s", "http_keep_alive": "1s", "client": "2s"}},
        "listeners": {"web": listener(ports["http"]), "tls": tls},
    }


def run(path: str, seconds: float, seed: int, workdir: Path) -> Report:
    report = Report(path, seconds)
    backend = Backend("b1", free_port()).start()
    cert = Ca(workdir).issue("net-fuzz", ["localhost", "127.0.0.1"]).bundle
    ports = {"http": free_port(), "tls": free_port()}
    env = {"LOADSTONE_NO_EXTENSIONS": "1" if path == "pure" else "0"}
    ls = Loadstone(workdir, loadstone_config(backend, ports, cert), env=env)
    try:
        ls.start()
        assert ls.proc is not None
        listeners = ls.status()["listeners"]
        report.data_paths = {name: doc["data_path"] for name, doc in listeners.items()}
        # warm-up: the canaries once, so the baseline has what they leave (pooled
        # server connections)
        asyncio.run(fuzz(ports, 0.0, seed, report))
        report.fds_baseline = ls.fd_count()
        asyncio.run(fuzz(ports, seconds, seed, report))
        report.alive = ls.proc.poll() is None
        if not report.alive:
            report.problems.append(f"loadstone died: exit {ls.proc.returncode}")
        else:
            with contextlib.suppress(AssertionError):
                wait_for(
                    lambda: ls.fd_count() <= report.fds_baseline,
                    timeout=15,
                    what="descriptors back to baseline",
                )
            report.fds_end = ls.fd_count()
            if report.fds_end > report.fds_baseline:
                report.problems.append(
                    f"{report.fds_end} descriptors, {report.fds_baseline} before fuzzing"
                )
        if report.canary_failures:
            report.problems.append(f"{len(report.canary_failures)} canary request(s) failed")
    finally:
        if ls.proc is not None and ls.proc.poll() is None:
            ls.stop()
        backend.stop()
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fuzz.net", description=__doc__.split("\n")[0])
    parser.add_argument("--path", choices=("native", "pure"), default="native")
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--seed", type=int, default=0, help="0: a random one (printed)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    seed = args.seed or random.randrange(1, 2**31)
    with tempfile.TemporaryDirectory(prefix="net-fuzz-") as tmp:
        report = run(args.path, args.seconds, seed, Path(tmp))
    doc = {**asdict(report), "seed": seed, "ok": report.ok}
    if args.json:
        print(json.dumps(doc, indent=2))
    else:
        total = sum(report.executions.values())
        print(
            f"{args.path}: {total} connections ({report.executions}) in {args.seconds:.0f} s,"
            f" seed {seed}, data paths {report.data_paths}; {report.canaries} canaries,"
            f" fds {report.fds_baseline} -> {report.fds_end}:"
            f" {'ok' if report.ok else '; '.join(report.problems)}"
        )
        for failure in report.canary_failures[:10]:
            print("  canary:", failure)
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
