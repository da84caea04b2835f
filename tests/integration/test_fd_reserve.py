"""The descriptor reserve (issue 17, part 4), on both paths, in mode tcp.

A session in mode tcp needs two descriptors. Before, a client accepted with
the last descriptor found none for its server socket and was refused, and the
clients waiting in the backlog went round accept-and-refuse. Now, as HAProxy
derives its maxconn from `ulimit -n`, loadstone bounds its sessions by
(RLIMIT_NOFILE - the descriptors open outside sessions - a reserve) / 2,
taken at start and at each reload (datapath.limits), and pauses accepting at
that bound: a real process whose limit is lowered with prlimit (and reloaded)
keeps the clients past the bound waiting in the backlog, spends no CPU on them,
and serves every one of them once sessions end. None is refused.
"""

from __future__ import annotations

import select
import signal
import socket
import subprocess
from collections.abc import Callable

import pytest

from loadstone.datapath.limits import FD_RESERVE, FDS_PER_SESSION
from tests.integration.conftest import listener_config
from tests.integration.harness import Backend, Loadstone, wait_for
from tests.integration.test_exhaustion import clients, cpu_seconds, echo

__all__ = ["clients"]  # the fixture, for pytest

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("datapath")]

SESSIONS = 8  # what the lowered limit leaves room for
LATE = 6  # clients past the bound


def test_sessions_past_the_descriptor_bound_wait_and_are_served(
    backends: Callable[..., list[Backend]],
    loadstone: Callable[..., Loadstone],
    clients: list[socket.socket],  # closed at the end (test_exhaustion's fixture)
) -> None:
    held = clients
    (server,) = backends(1, mode="echo")
    config = listener_config([server])
    config["listeners"]["web"]["servers"][0]["check"] = False
    ls = loadstone(config)
    assert ls.proc is not None
    port = int(config["listeners"]["web"]["bind"][0].rsplit(":", 1)[1])
    limit = ls.fd_count() + FD_RESERVE + FDS_PER_SESSION * SESSIONS
    subprocess.run(["prlimit", f"--pid={ls.proc.pid}", f"--nofile={limit}:{limit}"], check=True)
    ls.proc.send_signal(signal.SIGHUP)  # the bound is taken at each reload
    wait_for(
        lambda: (ls.status()["limits"]["fd_bound"] or 0) <= SESSIONS + 2,
        timeout=10,
        what="the bound derived from the lowered limit",
    )
    bound = ls.status()["limits"]["fd_bound"]
    assert bound >= SESSIONS - 2, bound

    first = []
    for i in range(bound):
        s = socket.create_connection(("127.0.0.1", port), timeout=10)
        held.append(s)
        first.append(s)
        assert echo(s, b"session %d" % i) == b"session %d" % i
    late = []
    for i in range(LATE):
        s = socket.create_connection(("127.0.0.1", port), timeout=10)  # the backlog
        held.append(s)
        late.append(s)
        s.sendall(b"late %d" % i)
    # Waiting, not refused nor spinning: in a second at the bound none of them
    # reads anything (a refusal would read as EOF or a reset) and the process
    # spends little CPU.
    cpu0 = cpu_seconds(ls.proc.pid)
    readable, _, _ = select.select(late, [], [], 1.0)  # the measured period
    used = cpu_seconds(ls.proc.pid) - cpu0
    print(f"bound {bound} sessions at RLIMIT_NOFILE {limit}; CPU {used:.2f} s in 1 s")
    assert readable == [], "a client past the bound was accepted and refused"
    assert used < 0.5, f"{used:.2f} s of CPU in 1 s at the bound: a busy loop"
    limits = ls.status()["limits"]
    assert limits["connections"] == bound, limits
    assert limits["accept_paused"]["fd_limit"] >= 1, limits  # the descriptors' bound
    assert limits["accept_paused"]["maxconn"] == 0, limits
    # Sessions end: every waiting client gets its session, and its echo.
    for s in first[:LATE]:
        s.close()
    for i, s in enumerate(late):
        s.settimeout(10)
        assert s.recv(64) == b"late %d" % i, "a waiting client was refused"
    # The established sessions kept flowing throughout.
    for i, s in enumerate(first[LATE:]):
        assert echo(s, b"still %d" % i) == b"still %d" % i
    assert ls.proc.poll() is None
    assert ls.fd_count() <= limit
