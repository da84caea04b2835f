"""Tiny network tools run inside a bed's namespaces (stdlib only, so they start fast).

probe.py serve HOST PORT           # accept and close, prints "ready"
probe.py connect HOST PORT [SECS]  # prints connected | refused | timeout | unreachable
"""

from __future__ import annotations

import socket
import sys


def serve(host: str, port: int) -> None:
    sock = socket.create_server((host, port))
    print("ready", flush=True)
    while True:
        conn, _ = sock.accept()
        conn.close()


def connect(host: str, port: int, timeout: float) -> str:
    try:
        socket.create_connection((host, port), timeout=timeout).close()
    except ConnectionRefusedError:
        return "refused"
    except TimeoutError:
        return "timeout"
    except OSError:
        return "unreachable"
    return "connected"


if __name__ == "__main__":
    action, host, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
    if action == "serve":
        serve(host, port)
    else:
        print(connect(host, port, float(sys.argv[4]) if len(sys.argv) > 4 else 1.0))
