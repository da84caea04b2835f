"""Descriptor exhaustion and `global.maxconn` (issue 17, part 4), on both paths.

A real `loadstone run` whose RLIMIT_NOFILE is lowered (prlimit) is filled with
held client sessions until accept(2) fails for want of descriptors: accepting
pauses (the process's CPU time stays low: no loop spinning on the event it
cannot serve), an established session keeps flowing, and a client that
connected during the exhaustion is served once sessions end: it waited in the
backlog, it was not refused. `global.maxconn` pauses accepting the same way.
Status and /metrics show the pauses.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import time
from collections.abc import Callable, Iterator

import pytest

from tests.integration.conftest import listener_config
from tests.integration.harness import Backend, Loadstone, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("datapath")]

Backends = Callable[..., list[Backend]]
Start = Callable[..., Loadstone]
CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (all its threads)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def echo(sock: socket.socket, payload: bytes) -> bytes:
    sock.sendall(payload)
    got = b""
    while len(got) < len(payload):
        data = sock.recv(65536)
        if not data:
            break
        got += data
    return got


@pytest.fixture
def clients() -> Iterator[list[socket.socket]]:
    held: list[socket.socket] = []
    yield held
    for s in held:
        s.close()


def connect(port: int, held: list[socket.socket]) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    held.append(s)
    return s


def metric(ls: Loadstone, name: str, labels: str = "") -> float:
    text = ls.get("/metrics").decode()
    found = re.search(rf"^{name}{re.escape(labels)} (\S+)$", text, re.M)
    assert found, f"{name}{labels} not in /metrics"
    return float(found[1])


def http_get(sock: socket.socket, name: bytes) -> bytes:
    """One request on a keep-alive connection; the body of the answer."""
    sock.sendall(b"GET / HTTP/1.1\r\nHost: " + name + b"\r\n\r\n")
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"closed after {data!r}"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = int(re.search(rb"(?i)content-length: *(\d+)", head)[1])  # type: ignore[index]
    while len(body) < length:
        body += sock.recv(65536)
    assert head.startswith(b"HTTP/1.1 200"), head
    return body


def test_accepting_pauses_at_the_descriptor_limit_and_resumes(
    backends: Backends, loadstone: Start, clients: list[socket.socket]
) -> None:
    # Mode http: a client that sends nothing costs one descriptor and no server
    # connection, so the idle clients below fill the table with accepts alone (in
    # mode tcp an accepted client whose server socket finds no descriptor is
    # refused, which is not what this test is about).
    (server,) = backends(1)
    config = listener_config([server], mode="http")
    config["defaults"]["timeouts"]["http_request"] = "60s"
    config["listeners"]["web"]["servers"][0]["check"] = False  # a check needs descriptors too
    ls = loadstone(config)
    assert ls.proc is not None
    port = int(config["listeners"]["web"]["bind"][0].rsplit(":", 1)[1])
    established = connect(port, clients)
    assert http_get(established, b"before") == b"s1\n"
    baseline = ls.fd_count()
    limit = baseline + 24
    subprocess.run(["prlimit", f"--pid={ls.proc.pid}", f"--nofile={limit}:{limit}"], check=True)
    # More idle clients than descriptors left: the rest wait in the backlog.
    held = [connect(port, clients) for _ in range(40)]
    wait_for(lambda: ls.fd_count() >= limit, timeout=10, what="the descriptor limit reached")
    late = connect(port, clients)  # connected while nothing can be accepted
    late.sendall(b"GET / HTTP/1.1\r\nHost: late\r\nConnection: close\r\n\r\n")
    # Paused, not spinning: two seconds at the limit cost little CPU.
    cpu0 = cpu_seconds(ls.proc.pid)
    time.sleep(2.0)  # the measured period itself, not a synchronisation
    used = cpu_seconds(ls.proc.pid) - cpu0
    print(f"CPU at the descriptor limit: {used:.2f} s in 2 s")
    assert used < 0.5, f"{used:.2f} s of CPU in 2 s at the descriptor limit: a busy loop"
    assert ls.proc.poll() is None
    # The established session keeps flowing at the limit (its server connection
    # is kept for it: no new descriptor needed).
    assert http_get(established, b"during") == b"s1\n"
    # Clients leave: accepting resumes and the waiting client is served.
    for s in held:
        s.close()
    late.settimeout(10)
    answer = b""
    while chunk := late.recv(65536):
        answer += chunk
    assert answer.startswith(b"HTTP/1.1 200"), "the client waiting in the backlog was not served"
    limits = ls.status()["limits"]
    assert limits["accept_paused"]["fd_limit"] >= 1, limits
    assert limits["max_files"] == limit
    assert metric(ls, "loadstone_accept_paused_total", '{reason="fd_limit"}') >= 1
    assert metric(ls, "process_max_fds") == limit
    # Every descriptor comes back.
    late.close()
    wait_for(lambda: ls.fd_count() <= baseline, timeout=10, what="descriptors back to baseline")
    assert http_get(connect(port, clients), b"after") == b"s1\n"


def test_global_maxconn_pauses_accepting_until_a_connection_ends(
    backends: Backends, loadstone: Start, clients: list[socket.socket]
) -> None:
    (server,) = backends(1, mode="echo")
    config = listener_config([server])
    config["global"]["maxconn"] = 5
    ls = loadstone(config)
    port = int(config["listeners"]["web"]["bind"][0].rsplit(":", 1)[1])
    held = [connect(port, clients) for _ in range(5)]
    for i, s in enumerate(held):
        assert echo(s, b"%d" % i) == b"%d" % i
    sixth = connect(port, clients)
    sixth.sendall(b"sixth")
    sixth.settimeout(0.5)
    with pytest.raises(TimeoutError):
        sixth.recv(64)  # held in the backlog at global.maxconn
    limits = ls.status()["limits"]
    assert limits["maxconn"] == 5
    assert limits["connections"] == 5
    assert limits["accept_paused"]["maxconn"] >= 1
    assert metric(ls, "loadstone_process_maxconn") == 5
    assert metric(ls, "loadstone_process_connections") == 5
    held[0].close()
    sixth.settimeout(10)
    assert sixth.recv(64) == b"sixth"
    wait_for(
        lambda: ls.status()["limits"]["connections"] == 5,
        timeout=5,
        what="the sixth counted in place of the first",
    )
