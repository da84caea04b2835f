"""Two loadstone instances as peers (global.peers) on loopback: B adopts the
writer A failed over to, where without peers it would pick the first server
again; bad datagrams change nothing; a silent peer shows as down.

The servers are real TCP servers behind an active-backup listener with a tcp
check, standing in for Galera nodes: the agreement reads only whether a server
is eligible (usable) in each instance's own pool, which a Galera check decides
the same way (tests/integration/galera covers that rule against real nodes),
and a three-node cluster would not boot in this test's time on a shared machine.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from loadstone.peers.codec import Report, Writer, encode
from tests.integration.harness import Backend, Loadstone, free_port, wait_for

pytestmark = pytest.mark.integration

Backends = Callable[..., list[Backend]]
Start = Callable[..., Loadstone]
KEY = "a-shared-key-of-the-ha-group-0123456789"


def instance(
    name: str, servers: list[Backend], key_file: Path, me: int, other: tuple[str, int] | None
) -> dict[str, Any]:
    config: dict[str, Any] = {
        "global": {"grace": "1s"},
        "listeners": {
            "galera": {
                "bind": [f"127.0.0.1:{free_port()}"],
                "mode": "tcp",
                "balance": "active-backup",
                "check": {"type": "tcp", "interval": "200ms", "rise": 1, "fall": 1},
                "servers": [{"name": b.name, "address": b.address} for b in servers],
            }
        },
    }
    if other is not None:
        config["global"]["peers"] = {
            "name": name,
            "bind": f"127.0.0.1:{me}",
            "key_file": str(key_file),
            "interval": "250ms",
            "peers": [{"name": other[0], "address": f"127.0.0.1:{other[1]}"}],
        }
    return config


def active(ls: Loadstone) -> str | None:
    return ls.status()["listeners"]["galera"]["active"]  # type: ignore[no-any-return]


def peer(ls: Loadstone, name: str) -> dict[str, Any]:
    return ls.status()["peers"]["peers"][name]  # type: ignore[no-any-return]


def group(backends: Backends, tmp_path: Path) -> tuple[Backend, Backend, Path, int, int]:
    """Two database stand-ins, the group's key file, a peers port for A and for B."""
    db1, db2 = backends(2, mode="echo", prefix="db")
    key_file = tmp_path / "peers.key"
    key_file.write_text(KEY)
    return db1, db2, key_file, free_port(), free_port()


def test_b_adopts_the_writer_a_failed_over_to(
    backends: Backends, loadstone: Start, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    db1, db2, key_file, port_a, port_b = group(backends, tmp_path)
    a = loadstone(instance("a", [db1, db2], key_file, port_a, ("b", port_b)))
    wait_for(lambda: active(a) == "db1", what="A writes to db1")

    db1.kill()
    wait_for(lambda: active(a) == "db2", what="A fails over to db2")
    db1_again = Backend("db1", db1.port, "echo").start()  # db1 comes back: no failback on A
    request.addfinalizer(db1_again.stop)
    wait_for(lambda: a.server("galera", "db1")["state"] == "up", what="db1 up again on A")
    assert active(a) == "db2"

    # Without peers, a fresh instance picks the first eligible server: db1.
    alone = loadstone(instance("c", [db1, db2], key_file, 0, None))
    wait_for(lambda: active(alone) == "db1", what="a peerless instance picking db1")

    t0 = time.monotonic()
    b = loadstone(instance("b", [db1, db2], key_file, port_b, ("a", port_a)))
    wait_for(lambda: active(b) == "db2", what="B adopting db2 from A")
    print(f"\nB adopted A's writer {time.monotonic() - t0:.2f}s after its start")
    assert b.status()["peers"]["adopted"] >= 1
    wait_for(lambda: peer(a, "b")["up"] and peer(b, "a")["up"], what="both peers up")
    assert peer(b, "a")["writers"]["galera"]["server"] == "db2"
    # db1 stays eligible on B: B keeps db2 (adopted with A's time, not newer).
    time.sleep(1.0)  # several report intervals during which nothing may change
    assert active(b) == "db2" and active(a) == "db2"


def send(port: int, data: bytes) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.sendto(data, ("127.0.0.1", port))


def keyed(sender: str, seq: int, sent: float, **writers: str) -> bytes:
    """A datagram as a peer holding the key sends it."""
    report = Report(sender, "boot1", seq, sent, {n: Writer(s, sent) for n, s in writers.items()})
    return encode(report, KEY.encode())


def test_bad_datagrams_change_nothing_and_a_silent_peer_is_down(
    backends: Backends, loadstone: Start, tmp_path: Path
) -> None:
    db1, db2, key_file, port_a, port_b = group(backends, tmp_path)
    b = loadstone(instance("b", [db1, db2], key_file, port_b, ("a", port_a)))
    wait_for(lambda: active(b) == "db1", what="B writes to db1")
    assert peer(b, "a")["up"] is False  # A never started: down from the start

    now = time.time()
    first = keyed("a", 1, now, nosuch="db2")
    send(port_b, b"garbage")
    send(port_b, b"LSP1" + b"\0" * 32 + b'{"from":"a"}')  # no key
    send(port_b, encode(Report("a", "boot1", 9, now, {"galera": Writer("db2", now)}), b"wrong"))
    send(port_b, first)  # valid, but names a listener B does not have
    send(port_b, first)  # the same again: replayed
    send(port_b, keyed("a", 2, now - 100, galera="db2"))  # stale
    send(port_b, keyed("intruder", 1, now, galera="db2"))  # not a configured peer

    def refused() -> dict[str, int]:
        return b.status()["peers"]["rejected"]  # type: ignore[no-any-return]

    expected = {
        "garbage": 1,
        "bad-key": 2,
        "unknown-listener": 1,
        "replayed": 1,
        "stale": 1,
        "unknown-peer": 1,
    }
    wait_for(lambda: refused() == expected, what=f"each datagram counted: {expected}")
    assert active(b) == "db1"  # none of them moved the writer
    metrics = b.get("/metrics").decode()
    assert 'loadstone_peer_datagrams_refused_total{reason="bad-key"} 2.0' in metrics
    # The one valid datagram made A up for a moment; silent since: down again.
    wait_for(lambda: not peer(b, "a")["up"], what="a silent: down")
    assert 'loadstone_peer_up{peer="a"} 0.0' in b.get("/metrics").decode()


def test_adopting_a_writer_closes_the_sessions_of_the_old_one(
    backends: Backends, loadstone: Start, tmp_path: Path
) -> None:
    db1, db2, key_file, port_a, port_b = group(backends, tmp_path)
    config = instance("b", [db1, db2], key_file, port_b, ("a", port_a))
    # What the Galera writer policy implies; a tcp check needs it said.
    config["listeners"]["galera"]["on_marked_down"] = "shutdown-sessions"
    b = loadstone(config)
    wait_for(lambda: active(b) == "db1", what="B writes to db1")
    listen = config["listeners"]["galera"]["bind"][0].rsplit(":", 1)
    client = socket.create_connection((listen[0], int(listen[1])), timeout=5)
    try:
        client.sendall(b"hello")
        assert client.recv(16) == b"hello"  # a session on db1, through B
        assert b.server("galera", "db1")["sessions"] == 1
        # A, holding the key, reports a newer choice: db2 (A failed over).
        send(port_b, keyed("a", 1, time.time(), galera="db2"))
        wait_for(lambda: active(b) == "db2", what="B adopting db2")
        # The session to the old writer is closed, as on a writer marked down.
        assert client.recv(64) == b""
    finally:
        client.close()
    wait_for(lambda: b.server("galera", "db1")["sessions"] == 0, what="no session")
