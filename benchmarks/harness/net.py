"""Loopback ports: picking free ones and waiting until a server accepts on one."""

from __future__ import annotations

import contextlib
import http.client
import socket
import time
from collections.abc import Callable

# Every benchmark socket lives on loopback: the numbers must not depend on a NIC,
# and nothing here is meant to be reachable from outside the machine.
LOOPBACK = "127.0.0.1"


def free_ports(count: int) -> list[int]:
    """`count` distinct ports that were free on loopback a moment ago.

    All sockets are held open until every port is chosen so that the kernel cannot
    hand out the same port twice; a race with other programs remains possible but is
    caught later, when the server that should bind the port fails to start.
    """
    with contextlib.ExitStack() as stack:
        ports = []
        for _ in range(count):
            sock = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            sock.bind((LOOPBACK, 0))
            ports.append(sock.getsockname()[1])
        return ports


def wait_for_port(
    port: int,
    *,
    timeout: float = 15.0,
    alive: Callable[[], None] = lambda: None,
    host: str = LOOPBACK,
) -> None:
    """Return once a TCP connection to host:port succeeds.

    `alive` is called between attempts and is expected to raise if the server being
    waited for has exited, so that a failed start is reported at once and with its
    own error instead of as a timeout.
    """
    deadline = time.monotonic() + timeout
    delay = 0.005
    while True:
        alive()
        try:
            with socket.create_connection((host, port), timeout=1.0):
                return
        except OSError as exc:
            if time.monotonic() >= deadline:
                raise TimeoutError(f"nothing accepts on {host}:{port} after {timeout}s") from exc
        # Connection refused comes back at once: back off a little so a slow start
        # does not turn into a busy loop competing for the CPU with the server.
        time.sleep(delay)
        delay = min(delay * 2, 0.1)


def http_get(port: int, path: str, *, timeout: float = 10.0) -> tuple[int, int]:
    """GET path through loopback:port; return (status, body length).

    Used as a smoke test before measuring: a proxy that accepts but cannot reach its
    backends would otherwise show up only as a wall of wrk socket errors.
    """
    conn = http.client.HTTPConnection(LOOPBACK, port, timeout=timeout)
    try:
        conn.request("GET", path, headers={"Connection": "close"})
        response = conn.getresponse()
        return response.status, len(response.read())
    finally:
        conn.close()
