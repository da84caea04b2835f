"""Both data paths make the choices of the Python balancers: the native picker
reads a table the control plane publishes and must agree with them exactly."""

from __future__ import annotations

import socket
import urllib.error
import urllib.request

import pytest
import yaml

from loadstone.config import parse_config
from loadstone.server import Pool
from tests.integration.conftest import listener_config
from tests.integration.harness import Loadstone, wait_for
from tests.integration.test_tcp_proxy import Backends, Start, proxy_port, who

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("datapath")]


def set_state(ls: Loadstone, server: str, state: str) -> None:
    request = urllib.request.Request(
        f"http://127.0.0.1:{ls.admin_port}/api/v1/listeners/web/servers/{server}/state",
        data=f'{{"state": "{state}"}}'.encode(),
        method="POST",
        headers={"Content-Type": "application/json"},
    )
    try:
        urllib.request.urlopen(request, timeout=5).read()
    except urllib.error.HTTPError as exc:
        if exc.code in (404, 405):
            pytest.skip(f"no admin write API in this build: {exc.code}")
        raise


@pytest.mark.parametrize("balance", ["roundrobin", "leastconn", "source", "first"])
def test_same_choices_as_the_python_balancer(
    backends: Backends, loadstone: Start, balance: str
) -> None:
    servers = backends(4)
    config = listener_config(servers, balance=balance)
    specs = config["listeners"]["web"]["servers"]
    for spec, weight in zip(specs, [1, 3, 0, 2], strict=True):
        spec["weight"] = weight
    specs[3]["backup"] = True
    ls = loadstone(config)
    port = proxy_port(ls)
    got = []
    for _ in range(14):
        got.append(who(port))
        # one session at a time, so leastconn's loads are those of the model
        wait_for(lambda: ls.status()["listeners"]["web"]["sessions"] == 0)
    pool = Pool(parse_config(yaml.safe_dump(config)).listeners[0])
    expected = []
    for _ in range(14):
        server = pool.pick("127.0.0.1")
        assert server is not None
        expected.append(server.name)
    assert got == expected


def test_drained_server_takes_no_new_sessions_but_keeps_its_own(
    backends: Backends, loadstone: Start
) -> None:
    servers = backends(2, mode="echo")
    ls = loadstone(listener_config(servers))
    port = proxy_port(ls)
    kept = socket.create_connection(("127.0.0.1", port), timeout=5)
    kept.sendall(b"a")
    assert kept.recv(1) == b"a"
    first = next(n for n, s in ls.status()["listeners"]["web"]["servers"].items() if s["sessions"])
    set_state(ls, first, "drain")
    ls.wait_state("web", first, "drain")
    for _ in range(6):
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            s.sendall(b"x")
            s.shutdown(socket.SHUT_WR)
            data = b""
            while chunk := s.recv(4096):
                data += chunk
            assert not data.endswith(f" {first}\n".encode())
    kept.sendall(b"b")
    assert kept.recv(1) == b"b"  # the drained server's session goes on
    assert ls.server("web", first)["sessions"] == 1
    set_state(ls, first, "maint")  # maint closes it
    assert kept.recv(10) == b""
    kept.close()
    wait_for(lambda: ls.server("web", first)["sessions"] == 0)
    wait_for(lambda: any("maintenance" in e["end"] for e in ls.session_logs()))
