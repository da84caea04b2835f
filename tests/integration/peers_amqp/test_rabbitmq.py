"""AMQP checks and an AMQP listener against real RabbitMQ 3.10 nodes.

The two nodes are shared by the tests of this package (see conftest.py); a
test that stops a node or raises an alarm on it puts it back before it ends.
Waits are on conditions (the admin API, the broker's own answers), never bare
sleeps.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiormq
import pytest

from tests.integration.harness import Backend, Loadstone, free_port, wait_for
from tests.integration.peers_amqp.peers import (
    MONITOR_PASSWORD,
    MONITOR_USER,
    VHOST,
    RabbitCluster,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]

PASSWORD_ENV = "LS_TEST_AMQP_MONITOR_PASSWORD"
ENV = {PASSWORD_ENV: MONITOR_PASSWORD}
BROKER = re.compile(r"RabbitMQ 3\.\d+\.\d+")


def listener(servers: list[tuple[str, str]], check: dict[str, Any], **extra: Any) -> dict[str, Any]:
    config: dict[str, Any] = {
        "bind": [f"127.0.0.1:{free_port()}"],
        "mode": "tcp",
        "balance": "active-backup",
        "check": {"interval": "300ms", "rise": 1, "fall": 2, "timeout": "2s", **check},
        "servers": [{"name": name, "address": address} for name, address in servers],
    }
    config.update(extra)
    return config


def document(**listeners: dict[str, Any]) -> dict[str, Any]:
    return {
        "global": {"grace": "2s"},
        "defaults": {"timeouts": {"connect": "1s", "check": "2s"}},
        "listeners": listeners,
    }


def login(**extra: Any) -> dict[str, Any]:
    secret = {} if "password_file" in extra else {"password_env": PASSWORD_ENV}
    return {
        "type": "amqp",
        "level": "login",
        "user": MONITOR_USER,
        "vhost": VHOST,
        **secret,
        **extra,
    }


def detail_of(ls: Loadstone, name: str, server: str) -> str:
    return str(ls.server(name, server)["check"]["detail"])


def wait_detail(ls: Loadstone, name: str, server: str, want: Callable[[str], bool]) -> str:
    """Wait until the server's last check detail satisfies `want`; return it."""

    def wanted() -> str | None:
        detail = detail_of(ls, name, server)
        return detail if want(detail) else None

    found = wait_for(wanted, timeout=20, what=f"check detail of {name}/{server}")
    assert found is not None
    return found


def port_of(ls: Loadstone, name: str) -> int:
    return int(ls.config["listeners"][name]["bind"][0].rsplit(":", 1)[1])


def test_checks_pass_and_refuse_with_the_reason(
    rabbit: RabbitCluster,
    loadstone: Callable[..., Loadstone],
    backends: Callable[..., list[Backend]],
    tmp_path: Path,
) -> None:
    a, b = rabbit.nodes
    (http,) = backends(1, mode="http", prefix="web")
    wrong = tmp_path / "wrong-password"
    wrong.write_text("not-the-password\n")
    both = [("a", a.address), ("b", b.address)]
    ls = loadstone(
        document(
            header=listener(both, {"type": "amqp"}),
            login=listener(both, login()),
            bad_password=listener([("a", a.address)], login(password_file=str(wrong))),
            bad_vhost=listener([("a", a.address)], login(vhost="nope")),
            not_amqp=listener([("web", http.address)], {"type": "amqp"}),
            not_amqp_login=listener([("web", http.address)], login()),
        ),
        env=ENV,
    )
    for name in ("a", "b"):
        header = wait_detail(ls, "header", name, lambda d: d.startswith("AMQP 0-9-1"))
        assert BROKER.search(header), header
        ok = wait_detail(ls, "login", name, lambda d: d.startswith("login ok"))
        assert ok.startswith(f"login ok, vhost {VHOST} (RabbitMQ 3."), ok
        assert ls.server("login", name)["state"] == "up"

    ls.wait_state("bad_password", "a", "down")
    assert detail_of(ls, "bad_password", "a") == "access refused"
    ls.wait_state("bad_vhost", "a", "down")
    assert detail_of(ls, "bad_vhost", "a") == "vhost not found (nope)"
    for name in ("not_amqp", "not_amqp_login"):
        ls.wait_state(name, "web", "down")
        assert detail_of(ls, name, "web").startswith("not AMQP (got 'HTTP/1."), name


def test_memory_alarm_takes_the_node_out_until_lifted(
    rabbit: RabbitCluster, loadstone: Callable[..., Loadstone]
) -> None:
    a, b = rabbit.nodes
    check = {
        "type": "amqp",
        "user": MONITOR_USER,
        "password_env": PASSWORD_ENV,
        "alarms": True,
        "management_port": a.mgmt_port,  # the same port on every node, as in production
    }
    ls = loadstone(
        document(rabbitmq=listener([("a", a.address), ("b", b.address)], check)), env=ENV
    )
    ls.wait_all_up("rabbitmq")
    assert ls.status()["listeners"]["rabbitmq"]["active"] == "a"
    try:
        a.ctl("set_vm_memory_high_watermark", "0.0000001")
        ls.wait_state("rabbitmq", "a", "down")
        assert detail_of(ls, "rabbitmq", "a") == "memory alarm"
        # The alarm is a's own: b stays in and takes the new connections.
        assert ls.server("rabbitmq", "b")["state"] == "up"
        assert ls.status()["listeners"]["rabbitmq"]["active"] == "b"
    finally:
        a.ctl("set_vm_memory_high_watermark", "0.4")
    ls.wait_state("rabbitmq", "a", "up")
    assert detail_of(ls, "rabbitmq", "a").startswith("AMQP 0-9-1")

    try:
        # More free disk than any test machine has: a disk alarm, seen by the
        # node's disk monitor within its polling interval (up to 10 s).
        b.ctl("set_disk_free_limit", str(10**15))
        ls.wait_state("rabbitmq", "b", "down", timeout=30)
        assert detail_of(ls, "rabbitmq", "b") == "disk alarm"
    finally:
        b.ctl("set_disk_free_limit", "50000000")
    ls.wait_state("rabbitmq", "b", "up", timeout=30)
    wait_for(lambda: not a.local_alarms() and not b.local_alarms(), what="no alarm left")


async def publish_and_consume(url: str, body: bytes) -> bytes:
    """Round-trip one message through a fresh exclusive queue."""
    connection = await aiormq.connect(url)
    try:
        channel = await connection.channel()
        queue = await channel.queue_declare("", exclusive=True)
        assert queue.queue is not None
        await channel.basic_publish(body, routing_key=queue.queue)
        got: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()

        async def on_message(message: aiormq.abc.DeliveredMessage) -> None:
            if not got.done():
                got.set_result(message.body)

        await channel.basic_consume(queue.queue, on_message, no_ack=True)
        async with asyncio.timeout(10):
            return await got
    finally:
        await connection.close()


async def connect_until(url: str, deadline: float) -> aiormq.Connection:
    """What a client library's reconnect loop does: retry until the VIP answers."""
    loop = asyncio.get_running_loop()
    while True:
        try:
            return await aiormq.connect(url)
        except (ConnectionError, aiormq.exceptions.AMQPError):
            if loop.time() > deadline:
                raise
            await asyncio.sleep(0.2)  # retry pacing, as a client's; not a synchronisation


def sessions_become(ls: Loadstone, server: str, n: int) -> None:
    wait_for(
        lambda: ls.server("rabbitmq", server)["sessions"] == n,
        timeout=10,
        what=f"{n} session(s) on {server}",
    )


def test_broker_stopped_client_reconnects_to_the_other(
    rabbit: RabbitCluster, loadstone: Callable[..., Loadstone]
) -> None:
    a, b = rabbit.nodes
    ls = loadstone(
        document(
            rabbitmq=listener(
                [("a", a.address), ("b", b.address)],
                {"type": "amqp"},
                on_marked_down="shutdown-sessions",
                tcp_keepalive={"idle": "30s", "interval": "5s", "count": 3},
                timeouts={"client": "1h", "server": "1h"},
            )
        )
    )
    ls.wait_all_up("rabbitmq")
    url = f"amqp://guest:guest@127.0.0.1:{port_of(ls, 'rabbitmq')}/"

    async def scenario() -> None:
        assert await publish_and_consume(url, b"before") == b"before"
        connection = await aiormq.connect(url)
        channel = await connection.channel()
        await channel.queue_declare("", exclusive=True)
        # The first client's session may take a moment to end at the proxy.
        await asyncio.to_thread(sessions_become, ls, "a", 1)
        try:
            await asyncio.to_thread(a.ctl, "stop_app")
            # The broker closes its connections (320 CONNECTION_FORCED) on the way down.
            async with asyncio.timeout(30):
                await asyncio.wait([connection.closing])
            await asyncio.to_thread(ls.wait_state, "rabbitmq", "a", "down")
            assert ls.status()["listeners"]["rabbitmq"]["active"] == "b"

            loop = asyncio.get_running_loop()
            again = await connect_until(url, loop.time() + 20)
            await asyncio.to_thread(sessions_become, ls, "b", 1)
            await again.close()
            assert await publish_and_consume(url, b"after") == b"after"
        finally:
            await connection.close()

    try:
        asyncio.run(scenario())
    finally:
        a.ctl("start_app")
        a.wait_started()
    ls.wait_state("rabbitmq", "a", "up")
    # No failback: b keeps the role while it stays up.
    assert ls.status()["listeners"]["rabbitmq"]["active"] == "b"
