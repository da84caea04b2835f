"""send-expect presets against real Redis and memcached servers, through a listener."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.integration.harness import Loadstone, free_port, wait_for
from tests.integration.peers_amqp.peers import Memcached, RedisServer, resp, started

pytestmark = pytest.mark.integration


def document(servers: list[tuple[str, str]], check: dict[str, Any]) -> dict[str, Any]:
    return {
        "global": {"grace": "2s"},
        "defaults": {"timeouts": {"connect": "1s", "check": "1s"}},
        "listeners": {
            "svc": {
                "bind": [f"127.0.0.1:{free_port()}"],
                "mode": "tcp",
                "balance": "roundrobin",
                "check": {
                    "type": "send-expect",
                    "interval": "200ms",
                    "rise": 1,
                    "fall": 1,
                    **check,
                },
                "servers": [{"name": name, "address": address} for name, address in servers],
            }
        },
    }


def detail(ls: Loadstone, server: str) -> str:
    return str(ls.server("svc", server)["check"]["detail"])


def port_of(ls: Loadstone) -> int:
    return int(ls.config["listeners"]["svc"]["bind"][0].rsplit(":", 1)[1])


def test_redis_listener_follows_the_master(
    redis_base: Path, loadstone: Callable[..., Loadstone]
) -> None:
    r1 = RedisServer(redis_base, "r1").start()
    r2 = RedisServer(redis_base, "r2")
    with started(r1, r2):
        r2.start(replica_of=r1)
        wait_for(r2.linked, what="replication link r1 -> r2")
        ls = loadstone(
            document([("r1", r1.address), ("r2", r2.address)], {"preset": "redis-master"})
        )
        ls.wait_state("svc", "r2", "down")
        ls.wait_state("svc", "r1", "up")
        assert detail(ls, "r1") == "script passed (3 expects matched)"
        # QUIT goes out with INFO: the replica is judged on the server's close,
        # not at the check timeout, and the detail shows its role.
        replica = detail(ls, "r2")
        assert replica.startswith("step 5 (expect /role:master/): connection closed; got "), replica
        assert "role:slave" in replica

        proxy = port_of(ls)
        # Only the master takes traffic: a write on the replica would be -READONLY.
        assert resp("127.0.0.1", proxy, "SET", "k", "one") == b"+OK\r\n"
        assert r1.command("GET", "k") == b"$3\r\none\r\n"

        # Failover as Sentinel or an operator does it: promote r2, demote r1.
        assert r2.command("REPLICAOF", "NO", "ONE") == b"+OK\r\n"
        assert r1.command("REPLICAOF", "127.0.0.1", str(r2.port)) == b"+OK\r\n"
        ls.wait_state("svc", "r1", "down")
        ls.wait_state("svc", "r2", "up")
        assert "role:slave" in detail(ls, "r1")
        assert resp("127.0.0.1", proxy, "SET", "k", "two") == b"+OK\r\n"
        assert r2.command("GET", "k") == b"$3\r\ntwo\r\n"


def test_memcached_preset(
    memcached_ok: None, redis_base: Path, loadstone: Callable[..., Loadstone]
) -> None:
    cache = Memcached().start()
    imposter = RedisServer(redis_base, "imposter")  # something else on a cache port
    with started(cache, imposter):
        imposter.start()
        ls = loadstone(
            document(
                [("mc", cache.address), ("imposter", imposter.address)], {"preset": "memcached"}
            )
        )
        ls.wait_state("svc", "imposter", "down")
        ls.wait_state("svc", "mc", "up")
        assert detail(ls, "mc") == "script passed (1 expect matched)"
        # Redis answers an error and keeps the connection open: the check timeout
        # ends the wait, and the detail still says which step and what came.
        assert detail(ls, "imposter").startswith(
            "step 2 (expect 'VERSION '): timeout; got '-ERR unknown command"
        ), detail(ls, "imposter")

        cache.kill()
        ls.wait_state("svc", "mc", "down")
        assert detail(ls, "mc") == "connection refused"
