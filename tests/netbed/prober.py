"""A client through the VIP: one HTTP request every INTERVAL on a new
connection, each line of OUT `MONOTONIC ok|fail SECONDS DETAIL` (stdlib only).

    prober.py URL OUT [INTERVAL] [TIMEOUT] [keepalive]

keepalive: the requests share one HTTP/1.1 connection, opened again after a
failure, as a client of the API with a connection pool does.

Runs until killed. The outage a failover causes is read from OUT: from the
first failed request to the first succeeding one after it (outage()).
"""

from __future__ import annotations

import http.client
import sys
import time
import urllib.parse
from pathlib import Path


def probe(
    url: urllib.parse.SplitResult, timeout: float, kept: http.client.HTTPConnection | None = None
) -> str:
    """One request, on `kept` (keep-alive, closed on failure) or a new connection."""
    conn = kept or http.client.HTTPConnection(url.hostname or "", url.port or 80, timeout=timeout)
    try:
        conn.request("GET", url.path or "/")
        response = conn.getresponse()
        body = response.read().decode(errors="replace").strip()
        verdict = f"ok {body}" if response.status == 200 else f"fail HTTP {response.status}"
    except (OSError, http.client.HTTPException) as exc:
        conn.close()
        return f"fail {type(exc).__name__}"
    if kept is None or response.will_close:
        conn.close()
    return verdict


def outage(lines: list[str]) -> tuple[float, int] | None:
    """(seconds from the first failure to the next success, failed requests) of
    the first outage in the prober's lines; None if none ended (or none began)."""
    first_fail = None
    failed = 0
    for line in lines:
        stamp, verdict = line.split()[:2]
        if verdict == "fail":
            failed += 1
            first_fail = float(stamp) if first_fail is None else first_fail
        elif first_fail is not None:
            return float(stamp) - first_fail, failed
    return None


def slowest(lines: list[str]) -> float:
    """The longest a request took, failed or not."""
    return max((float(line.split()[2]) for line in lines), default=0.0)


def main() -> None:
    url = urllib.parse.urlsplit(sys.argv[1])
    out = Path(sys.argv[2])
    interval = float(sys.argv[3]) if len(sys.argv) > 3 else 0.02
    timeout = float(sys.argv[4]) if len(sys.argv) > 4 else 0.5
    keep_alive = len(sys.argv) > 5 and sys.argv[5] == "keepalive"
    kept: http.client.HTTPConnection | None = None
    with out.open("a", buffering=1) as f:
        while True:
            started = time.monotonic()
            if keep_alive and kept is None:
                # http.client connects again by itself after a close (ours after a
                # failure, or the server's).
                kept = http.client.HTTPConnection(
                    url.hostname or "", url.port or 80, timeout=timeout
                )
            verdict, _, detail = probe(url, timeout, kept).partition(" ")
            took = time.monotonic() - started
            # Stamped at the start: when the request was sent, not answered.
            f.write(f"{started:.4f} {verdict} {took:.4f} {detail}\n")
            time.sleep(max(0.0, interval - (time.monotonic() - started)))


if __name__ == "__main__":
    main()
