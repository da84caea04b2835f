"""Resident memory per idle client connection: loadstone against HAProxy (TCP mode).

    .venv/bin/python benchmarks/idle_memory.py               # 8,000 connections
    .venv/bin/python -m benchmarks.idle_memory -n 2000 --markdown

For each proxy in turn (same two nginx backends as compare_haproxy): measure the
proxy's RSS, open N client connections that send nothing, wait until the proxy
holds a backend connection for each one (TCP mode connects at once: 2 N
descriptors), measure the RSS again, close everything. Reported per client
connection: the growth (RSS with the connections minus RSS before, / N) and the
whole RSS / N, with the ratio loadstone / HAProxy. A machine capping a process
at 20,000 descriptors allows N up to about 9,900 (this script needs N of its own).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import re
import resource
import shlex
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `benchmarks` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.harness.backends import NginxBackends
from benchmarks.harness.net import LOOPBACK
from benchmarks.harness.procs import process_tree, rss_bytes
from benchmarks.harness.proxies import HAProxy, Loadstone, Proxy


def fd_count(pid: int) -> int:
    total = 0
    for member in process_tree(pid):
        with contextlib.suppress(FileNotFoundError, ProcessLookupError):
            total += len(os.listdir(f"/proc/{member}/fd"))
    return total


async def hold(port: int, n: int, pid: int, settle: float) -> tuple[int, int, int]:
    """Open n idle connections; return (fds before, fds with them, RSS with them)."""
    before = fd_count(pid)
    conns: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
    sem = asyncio.Semaphore(256)

    async def one() -> None:
        async with sem:
            conns.append(await asyncio.open_connection(LOOPBACK, port))

    try:
        await asyncio.gather(*(one() for _ in range(n)))
        deadline = time.monotonic() + 60
        while fd_count(pid) < before + 2 * n and time.monotonic() < deadline:
            await asyncio.sleep(0.5)
            print(f"  proxy holds {fd_count(pid) - before} more descriptors", file=sys.stderr)
        await asyncio.sleep(settle)  # let lazily allocated state settle
        during = fd_count(pid)
        rss = rss_bytes(pid)
        return before, during, rss
    finally:
        for _, writer in conns:
            writer.close()
        await asyncio.sleep(0.5)


def raise_maxconn(proxy: Proxy, maxconn: int) -> Proxy:
    """The shared harness caps maxconn at a third of the descriptor limit (room
    for HAProxy's splice pipes); idle connections need neither pipes nor that cap."""
    write = proxy.write_config

    def write_config() -> Path:
        path = write()
        text = re.sub(r"(maxconn:?) \d+", rf"\g<1> {maxconn}", path.read_text())
        path.write_text(text)
        return path

    proxy.write_config = write_config  # type: ignore[method-assign]
    return proxy


def measure(proxy: Proxy, n: int, settle: float) -> dict[str, float]:
    proxy.start()
    try:
        time.sleep(0.5)
        rss_before = rss_bytes(proxy.pid)
        fds_before, fds_during, rss_during = asyncio.run(hold(proxy.port, n, proxy.pid, settle))
        held = (fds_during - fds_before) // 2
        return {
            "rss_before": rss_before,
            "rss_during": rss_during,
            "held": held,
            "growth_per_conn": (rss_during - rss_before) / n,
            "rss_per_conn": rss_during / n,
        }
    finally:
        proxy.stop()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="idle_memory", description=__doc__.split("\n")[0])
    parser.add_argument("-n", "--connections", type=int, default=8000)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--settle", type=float, default=1.0, help="seconds before measuring")
    parser.add_argument("--only", choices=["haproxy", "loadstone"])
    parser.add_argument("--pure-python", action="store_true")
    parser.add_argument("--markdown", action="store_true")
    args = parser.parse_args(argv)
    raw = list(sys.argv[1:] if argv is None else argv)

    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    if hard < args.connections + 100:
        parser.error(f"-n {args.connections} needs more descriptors than the limit {hard}")

    workdir = Path(tempfile.mkdtemp(prefix="loadstone-idle-"))
    results: dict[str, dict[str, float]] = {}
    try:
        backends = NginxBackends(workdir)
        try:
            proxies: list[Proxy] = []
            if args.only in (None, "haproxy"):
                proxies.append(
                    HAProxy(
                        workdir,
                        backends.backends,
                        workers=args.workers,
                        extra_global=["nosplice"],
                    )
                )
            if args.only in (None, "loadstone"):
                proxies.append(
                    Loadstone(
                        workdir,
                        backends.backends,
                        workers=args.workers,
                        pure_python=args.pure_python,
                    )
                )
            for proxy in proxies:
                raise_maxconn(proxy, args.connections + 100)
                print(f"{proxy.name}: {args.connections} idle connections...", file=sys.stderr)
                results[proxy.name] = measure(proxy, args.connections, args.settle)
        finally:
            backends.stop()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)

    command = shlex.join(["python", "benchmarks/idle_memory.py", *raw])
    rows = [
        ("connections held", "held", 1, "{:,.0f}"),
        ("RSS before, MB", "rss_before", 2**20, "{:,.1f}"),
        ("RSS with them, MB", "rss_during", 2**20, "{:,.1f}"),
        ("growth per connection, KB", "growth_per_conn", 1024, "{:,.2f}"),
        ("RSS / connections, KB", "rss_per_conn", 1024, "{:,.2f}"),
    ]
    names = list(results)
    header = ["metric", *names] + (["ratio loadstone/haproxy"] if len(names) == 2 else [])
    lines = []
    for label, key, unit, fmt in rows:
        cells = [label] + [fmt.format(results[n][key] / unit) for n in names]
        if len(names) == 2:
            h, ls = results["haproxy"][key], results["loadstone"][key]
            cells.append(f"{ls / h:.2f}x" if h else "-")
        lines.append(cells)
    widths = [max(len(str(r[i])) for r in [header, *lines]) for i in range(len(header))]
    print(f"\n{command}  (workers={args.workers})\n")
    for r in [header, *lines]:
        print("  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)))
    if args.markdown:
        print("\n| " + " | ".join(header) + " |")
        print("|" + "---|" * len(header))
        for r in lines:
            print("| " + " | ".join(r) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
