"""HTTP load through the VIP from the client host, flow by flow (stdlib only).

    flows.py URL OUT MODE WORKERS SOURCES [INTERVAL]

MODE new: each request on a new connection (a new flow each time, hashed anew
by the router); keepalive: each worker keeps one connection and sends its
requests on it, reconnecting after a failure. Worker i sends from source
address SOURCES[i % n] (a comma-separated list). Each request is a line of OUT:

    START ok|fail TOOK SERVED_BY BACKEND CONN SOURCE

START is time.monotonic() when the request was sent (the clock is the
machine's, the same in every namespace); SERVED_BY the X-Served-By header (the
loadstone instance); CONN the worker's connection number. Runs until killed.
"""

from __future__ import annotations

import http.client
import sys
import threading
import time
import urllib.parse
from dataclasses import dataclass
from typing import TextIO


@dataclass(frozen=True, slots=True)
class Flow:
    start: float
    ok: bool
    took: float
    served_by: str
    backend: str
    conn: str
    source: str


def parse(lines: list[str]) -> list[Flow]:
    flows = []
    for line in lines:
        parts = line.split()
        if len(parts) == 7:
            start, verdict, took, served, backend, conn, source = parts
            flows.append(
                Flow(float(start), verdict == "ok", float(took), served, backend, conn, source)
            )
    return flows


def worker(
    n: int,
    url: urllib.parse.SplitResult,
    mode: str,
    source: str,
    out: TextIO,
    interval: float,
    lock: threading.Lock,
) -> None:
    conn: http.client.HTTPConnection | None = None
    serial = 0
    while True:
        if conn is None:
            serial += 1
            conn = http.client.HTTPConnection(
                url.hostname or "", url.port or 80, timeout=1.0, source_address=(source, 0)
            )
        started = time.monotonic()
        try:
            conn.request("GET", "/")
            response = conn.getresponse()
            body = (response.read().decode(errors="replace").split() or ["-"])[0]
            served = response.getheader("X-Served-By", "-")
            ok = response.status == 200
            line = f"{'ok' if ok else 'fail'} {time.monotonic() - started:.4f} {served} {body}"
        except OSError as exc:
            line = f"fail {time.monotonic() - started:.4f} - {type(exc).__name__}"
            conn.close()
            conn = None
            ok = False
        with lock:
            out.write(f"{started:.4f} {line} {n}.{serial} {source}\n")
        if mode == "new" and conn is not None:
            conn.close()
            conn = None
        time.sleep(max(0.0, interval - (time.monotonic() - started)))


def main() -> None:
    url = urllib.parse.urlsplit(sys.argv[1])
    mode, workers, sources = sys.argv[3], int(sys.argv[4]), sys.argv[5].split(",")
    interval = float(sys.argv[6]) if len(sys.argv) > 6 else 0.02
    lock = threading.Lock()
    out = open(sys.argv[2], "a", buffering=1)  # noqa: SIM115 - open while the threads run
    for n in range(workers):
        args = (n, url, mode, sources[n % len(sources)], out, interval, lock)
        threading.Thread(target=worker, args=args, daemon=True).start()
    print("ready", flush=True)
    while True:
        time.sleep(3600)


if __name__ == "__main__":
    main()
