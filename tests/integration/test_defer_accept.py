"""`defer_accept` (TCP_DEFER_ACCEPT, HAProxy's `bind ... defer-accept`).

The kernel completes a connection's accept only once the client's first bytes
have arrived. Seen from outside the proxy: the option on its listening socket
(copied into this process with pidfd_getfd(2) and read back), a client that
connected but said nothing is not yet a session of the listener while a later
client is served, and once it speaks it is served like any other.
"""

from __future__ import annotations

import ctypes
import os
import re
import socket
import subprocess
from collections.abc import Callable

import pytest

from tests.integration.harness import Backend, Loadstone, wait_for
from tests.integration.test_http_mode import http_config, port_of

# On both data paths: the option is the listening socket's, the serving is theirs.
pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("datapath")]

SYS_PIDFD_GETFD = 438  # the same number on every Linux architecture
REQUEST = b"GET /echo HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"


def listening_option(pid: int, port: int) -> int | None:
    """TCP_DEFER_ACCEPT of process `pid`'s socket listening on `port`, or None
    where pidfd_getfd is not allowed."""
    out = subprocess.run(
        ["ss", "-Hltnp", f"sport = :{port}"], capture_output=True, text=True, check=True
    ).stdout
    owner = re.search(rf"pid={pid},fd=(\d+)", out)
    assert owner is not None, out
    libc = ctypes.CDLL(None, use_errno=True)
    pidfd = os.pidfd_open(pid)
    try:
        copy = libc.syscall(SYS_PIDFD_GETFD, pidfd, int(owner[1]), 0)
    finally:
        os.close(pidfd)
    if copy < 0:
        return None
    with socket.socket(fileno=copy) as sock:
        return sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_DEFER_ACCEPT)


def exchange(sock: socket.socket) -> bytes:
    sock.sendall(REQUEST)
    answer = b""
    while chunk := sock.recv(65536):
        answer += chunk
    return answer


@pytest.mark.parametrize("defer", [True, False])
def test_defer_accept_sets_the_option_and_serves(
    defer: bool, backends: Callable[..., list[Backend]], loadstone: Callable[..., Loadstone]
) -> None:
    ls = loadstone(http_config(backends(1), defer_accept=defer))
    port = port_of(ls)
    assert ls.proc is not None
    value = listening_option(ls.proc.pid, port)
    if value is not None:  # pidfd_getfd permitted: the option itself (HAProxy's 1 s)
        assert value == (1 if defer else 0)
    silent = socket.create_connection(("127.0.0.1", port), timeout=10)
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as speaking:
            assert exchange(speaking).startswith(b"HTTP/1.1 200 ")
        if defer and value is None:
            # Without pidfd_getfd, the option by its effect: the silent client is
            # still the kernel's (for up to a second after its connect) while the
            # speaking one's session has ended, so the listener has none open.
            wait_for(lambda: ls.status()["listeners"]["web"]["sessions"] == 0, timeout=0.8)
        # Accepted and served once it speaks (at once, or after the kernel's second).
        assert exchange(silent).startswith(b"HTTP/1.1 200 ")
    finally:
        silent.close()
