"""Several native workers: sessions accepted by one worker wait in the
listener's maxconn queue and are admitted when a session of another worker
ends; counters are the sum over the workers. (The pure path ignores workers.)"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from tests.integration.conftest import listener_config
from tests.integration.harness import Backend, Loadstone, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("datapath")]

Backends = Callable[..., list[Backend]]
Start = Callable[..., Loadstone]


def test_two_workers_share_a_maxconn_queue(backends: Backends, loadstone: Start) -> None:
    servers = backends(2, mode="echo")
    config = listener_config(servers, maxconn=4)
    config["global"]["workers"] = 2
    config["listeners"]["web"]["timeouts"] = {"queue": "30s"}
    ls = loadstone(config)
    port = int(config["listeners"]["web"]["bind"][0].rsplit(":", 1)[1])
    baseline = ls.fd_count()
    n = 300

    async def one(i: int) -> bool:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        message = f"hello {i}\n".encode() * 50
        writer.write(message)
        writer.write_eof()
        data = await reader.read()
        writer.close()
        await writer.wait_closed()
        return data.startswith(message) and b"\nEOF " in data

    async def run() -> list[bool]:
        return await asyncio.gather(*(one(i) for i in range(n)))

    assert all(asyncio.run(run()))
    wait_for(lambda: ls.status()["listeners"]["web"]["sessions"] == 0)
    status = ls.status()["listeners"]["web"]
    assert status["sessions_total"] == n
    assert status["queued"] == 0
    servers_total = sum(s["sessions_total"] for s in status["servers"].values())
    assert servers_total == n
    assert status["bytes_in"] == sum(len(f"hello {i}\n") * 50 for i in range(n))
    ends = wait_for(lambda: [e for e in ls.session_logs() if e["event"] == "session"][n - 1 :])
    assert ends
    wait_for(lambda: ls.fd_count() <= baseline, what="descriptors back to the baseline")
