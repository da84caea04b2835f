"""During global.stop_delay (health failing, the VIP moving) http responses say
`Connection: close` on both data paths, so a keep-alive client's next request
opens a new connection, which reaches whichever host holds the VIP by then;
idle connections stay open (closing one races with the client's next
request), and new connections are still accepted. The same through a moving
VIP: tests/integration/ha/test_keepalived.py (planned stop)."""

from __future__ import annotations

import signal
import socket
from collections.abc import Callable

import pytest

from tests.integration.conftest import listener_config
from tests.integration.harness import Backend, Loadstone, wait_for
from tests.integration.test_ctl import ctl, port_of

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("datapath")]

REQUEST = b"GET / HTTP/1.1\r\nHost: t\r\n\r\n"


def exchange(conn: socket.socket) -> bytes:
    """One request on `conn`; the response head, lower-cased."""
    conn.sendall(REQUEST)
    data = b""
    while not data.endswith(b"s1\n"):
        chunk = conn.recv(65536)
        assert chunk, data
        data += chunk
    return data.split(b"\r\n\r\n", 1)[0].lower()


def test_responses_close_their_connection_during_stop_delay(
    backends: Callable[..., list[Backend]], loadstone: Callable[..., Loadstone]
) -> None:
    config = listener_config(backends(1), mode="http")
    config["global"]["stop_delay"] = "30s"
    ls = loadstone(config)
    assert ls.proc is not None
    address = ("127.0.0.1", port_of(ls, "web"))
    with (
        socket.create_connection(address, timeout=5) as busy,
        socket.create_connection(address, timeout=5) as idle,
    ):
        assert b"connection: close" not in exchange(busy)
        assert b"connection: close" not in exchange(idle)

        ls.proc.send_signal(signal.SIGTERM)
        wait_for(lambda: ctl("health", config=ls.path).returncode == 1, what="health failing")

        assert b"connection: close" in exchange(busy)
        assert busy.recv(1) == b""  # closed after its response
        # The idle one was left open: its next request is answered, then closed.
        assert b"connection: close" in exchange(idle)
        assert idle.recv(1) == b""
        with socket.create_connection(address, timeout=5) as new:
            assert b"connection: close" in exchange(new)
    ls.proc.kill()  # not waiting the 30 s out
