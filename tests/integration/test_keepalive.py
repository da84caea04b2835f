"""`tcp_keepalive` reaches both of the proxy's sockets of a session.

Two independent views of the proxy's sockets, read from outside the process:
- the kernel's socket table (`ss -tnpoe`): a keepalive timer runs only on a
  socket with SO_KEEPALIVE, and it starts from TCP_KEEPIDLE, so a timer below
  the configured idle (47 s, far from the kernel's 7200 s) proves both;
- the options themselves: pidfd_getfd(2) (Linux 5.6) copies the proxy's
  socket into this process and getsockopt reads SO_KEEPALIVE, TCP_KEEPIDLE,
  TCP_KEEPINTVL and TCP_KEEPCNT, which no table shows.
A listener without keepalive, in the same process, must show neither.
"""

from __future__ import annotations

import ctypes
import os
import re
import socket
import subprocess
from collections.abc import Callable
from dataclasses import dataclass

import pytest

from tests.integration.harness import Backend, Loadstone, free_port, wait_for

# On both data paths (the native one sets the options in C), and both loops.
pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("datapath")]

IDLE, INTERVAL, COUNT = 47, 7, 4
SYS_PIDFD_GETFD = 438  # the same number on every Linux architecture


@dataclass
class ProxySocket:
    local_port: int
    peer_port: int
    fd: int
    timer: str | None  # "keepalive", "on", ... or None
    remaining: float | None  # seconds left on the timer


_ENTRY = re.compile(r"^\S+\s+\S+\s+\S+:(\d+)\s+\S+:(\d+)\s+(.*)$")
_TIMER = re.compile(r"timer:\((\w+),([^,]*),\d+\)")
_TIME = re.compile(r"^(?:(\d+)min)?(?:(\d+)sec)?(?:(\d+)ms)?$")


def proxy_sockets(pid: int) -> list[ProxySocket]:
    """The established TCP sockets of process `pid`, as the kernel lists them."""
    out = subprocess.run(
        ["ss", "-Htnpoe", "state", "established"], capture_output=True, text=True, check=True
    ).stdout
    found = []
    for line in out.splitlines():
        entry = _ENTRY.match(line)
        owner = re.search(rf"pid={pid},fd=(\d+)", line)
        if entry is None or owner is None:
            continue
        timer = _TIMER.search(entry[3])
        remaining = None
        if timer is not None and (t := _TIME.match(timer[2])) is not None:
            minutes, seconds, millis = (int(x or 0) for x in t.groups())
            remaining = minutes * 60 + seconds + millis / 1000
        found.append(
            ProxySocket(
                int(entry[1]),
                int(entry[2]),
                int(owner[1]),
                timer[1] if timer else None,
                remaining,
            )
        )
    return found


def keepalive_options(pid: int, fd: int) -> tuple[int, int, int, int] | None:
    """(SO_KEEPALIVE, TCP_KEEPIDLE, TCP_KEEPINTVL, TCP_KEEPCNT) of another
    process's socket, or None where pidfd_getfd is not allowed."""
    libc = ctypes.CDLL(None, use_errno=True)
    pidfd = os.pidfd_open(pid)
    try:
        copy = libc.syscall(SYS_PIDFD_GETFD, pidfd, fd, 0)
    finally:
        os.close(pidfd)
    if copy < 0:
        return None
    with socket.socket(fileno=copy) as sock:
        return (
            sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE),
            sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE),
            sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL),
            sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT),
        )


def test_keepalive_on_client_and_server_sockets(
    event_loop_name: str,
    backends: Callable[..., list[Backend]],
    loadstone: Callable[..., Loadstone],
) -> None:
    ka_backend, plain_backend = backends(2, mode="echo")
    ka_port, plain_port = free_port(), free_port()

    def listener(port: int, backend: Backend, **extra: object) -> dict[str, object]:
        return {
            "bind": [f"127.0.0.1:{port}"],
            "mode": "tcp",
            "servers": [{"name": backend.name, "address": backend.address}],
            **extra,
        }

    ls = loadstone(
        {
            "listeners": {
                "ka": listener(
                    ka_port,
                    ka_backend,
                    tcp_keepalive={"idle": f"{IDLE}s", "interval": f"{INTERVAL}s", "count": COUNT},
                ),
                "plain": listener(plain_port, plain_backend),
            }
        },
        loop=event_loop_name,
    )
    assert ls.proc is not None
    pid = ls.proc.pid
    clients = [socket.create_connection(("127.0.0.1", p), timeout=5) for p in (ka_port, plain_port)]
    try:
        for client in clients:  # an echo proves the server side is connected too
            client.sendall(b"ping")
            assert client.recv(4) == b"ping"

        def sides() -> dict[str, ProxySocket] | None:
            by_role = {}
            for s in proxy_sockets(pid):
                for role, (port, peer) in {
                    "ka client": (ka_port, None),
                    "ka server": (None, ka_backend.port),
                    "plain client": (plain_port, None),
                    "plain server": (None, plain_backend.port),
                }.items():
                    if s.local_port == port or s.peer_port == peer:
                        by_role[role] = s
            # Wait out the moment just after the echo when a timer other than
            # keepalive (the delayed ack's) may still run.
            settled = all(s.timer in (None, "keepalive") for s in by_role.values())
            return by_role if len(by_role) == 4 and settled else None

        found = wait_for(sides, timeout=10, what="the proxy's four sockets, idle")
        assert found is not None
        for role in ("ka client", "ka server"):
            s = found[role]
            assert s.timer == "keepalive", (role, s)
            assert s.remaining is not None and IDLE - 10 < s.remaining <= IDLE, (role, s)
        for role in ("plain client", "plain server"):
            assert found[role].timer is None, (role, found[role])

        options = {role: keepalive_options(pid, s.fd) for role, s in found.items()}
        if any(value is None for value in options.values()):
            pytest.skip("pidfd_getfd not permitted here; the kernel timers above passed")
        assert options["ka client"] == (1, IDLE, INTERVAL, COUNT)
        assert options["ka server"] == (1, IDLE, INTERVAL, COUNT)
        assert options["plain client"] is not None and options["plain client"][0] == 0
        assert options["plain server"] is not None and options["plain server"][0] == 0
    finally:
        for client in clients:
            client.close()
