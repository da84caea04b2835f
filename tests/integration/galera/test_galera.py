"""loadstone in front of a real 3-node Galera cluster, through `loadstone run`.

Order: tests that leave every node running come first; the ones that kill
nodes come last. Every test gets the cluster healthy (the `cluster` fixture
restores it before and after), and starts its own loadstone processes.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pymysql
import pytest

from tests.integration.galera.bank import Bank, connect
from tests.integration.galera.cluster import (
    MONITOR_USER,
    GaleraCluster,
)
from tests.integration.galera.conftest import galera_config, monitor_env, port_of
from tests.integration.harness import Loadstone, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.slow]

Start = Callable[..., Loadstone]


def node_behind(port: int) -> str:
    """wsrep_node_name of the node a new connection through `port` lands on."""
    conn = connect(port)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT @@wsrep_node_name")
            return str(cur.fetchone()[0])
    finally:
        conn.close()


def active(ls: Loadstone, listener: str = "writer") -> str | None:
    return ls.status()["listeners"][listener]["active"]  # type: ignore[no-any-return]


def detail(ls: Loadstone, server: str, listener: str = "writer") -> str:
    return str(ls.server(listener, server)["check"]["detail"])


def start_galera(loadstone: Start, cluster: GaleraCluster, **kw: Any) -> tuple[Loadstone, int]:
    config = galera_config(cluster, **kw)
    ls = loadstone(config, env=monitor_env())
    wait_for(lambda: active(ls) == "db1", timeout=10, what="db1 active")
    return ls, port_of(config, "writer")


# -- everything running --------------------------------------------------------------


def test_writer_is_db1_and_readers_spread_over_three(
    cluster: GaleraCluster, loadstone: Start
) -> None:
    config = galera_config(cluster)
    ls = loadstone(config, env=monitor_env())
    wait_for(lambda: active(ls) == "db1", timeout=10, what="db1 active")
    ls.wait_all_up("writer")
    ls.wait_all_up("readers")
    status = ls.status()["listeners"]
    for listener in ("writer", "readers"):
        for name, server in status[listener]["servers"].items():
            assert server["state"] == "up", (listener, name, server)
            assert server["check"] == {**server["check"], "status": "ok", "detail": "synced"}

    writer, readers = port_of(config, "writer"), port_of(config, "readers")
    assert {node_behind(writer) for _ in range(12)} == {"db1"}
    assert sorted(node_behind(readers) for _ in range(9)) == ["db1"] * 3 + ["db2"] * 3 + ["db3"] * 3

    # One kept-open monitor connection per server and listener, not a login per check.
    def monitor_sessions() -> int:
        rows = cluster["db2"].query(
            "SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE USER = %s", (MONITOR_USER,)
        )
        return int(rows[0][0])

    assert monitor_sessions() == 2  # writer + readers listeners
    connections_before = int(cluster["db2"].status("Connections"))
    runs = {listener: checks_run(ls, listener, "db2") for listener in ("writer", "readers")}
    wait_for(
        lambda: all(checks_run(ls, lst, "db2") >= n + 2 for lst, n in runs.items()),
        timeout=10,
        what="two more checks of db2 per listener",
    )
    # Four checks, no login: the only new connection is this status query's own.
    assert int(cluster["db2"].status("Connections")) == connections_before + 1
    assert monitor_sessions() == 2


def checks_run(ls: Loadstone, listener: str, server: str) -> float:
    """loadstone_server_checks_total of one server, from /metrics."""
    prefix = f'loadstone_server_checks_total{{listener="{listener}",server="{server}"}} '
    for line in ls.get("/metrics").decode().splitlines():
        if line.startswith(prefix):
            return float(line[len(prefix) :])
    raise AssertionError(f"no {prefix.strip()} in /metrics")


def test_wrong_monitor_password_is_access_denied_not_a_crash(
    cluster: GaleraCluster, loadstone: Start
) -> None:
    config = galera_config(cluster, readers=False)
    ls = loadstone(config, env=monitor_env("not-the-password"))
    wait_for(
        lambda: all(detail(ls, n.name) == "access denied" for n in cluster.nodes),
        timeout=10,
        what="access denied everywhere",
    )
    status = ls.status()["listeners"]["writer"]
    assert status["active"] is None
    assert {s["state"] for s in status["servers"].values()} == {"down"}
    # Nothing to send a client to: the connection is closed, not relayed.
    with pytest.raises(pymysql.err.OperationalError):
        node_behind(port_of(config, "writer"))
    assert ls.proc is not None and ls.proc.poll() is None
    assert "not-the-password" not in ls.stderr() + ls.stdout_path.read_text()


def test_mysql_liveness_probe_quits_cleanly(cluster: GaleraCluster, loadstone: Start) -> None:
    db3 = cluster["db3"]
    aborted_before = int(db3.status("Aborted_connects"))
    config = galera_config(cluster, readers=False)
    config["listeners"]["writer"]["check"] = {
        "type": "mysql",
        "user": MONITOR_USER,
        "password_env": "GALERA_MONITOR_PASSWORD",
        "interval": "200ms",
    }
    ls = loadstone(config, env=monitor_env())
    checks_before = int(db3.status("Connections"))
    wait_for(
        lambda: int(db3.status("Connections")) - checks_before >= 10,
        timeout=15,
        what="ten logins on db3",
    )
    assert detail(ls, "db3").startswith("logged in (10.")
    # Every check logged in and sent COM_QUIT: no aborted connect counted.
    assert int(db3.status("Aborted_connects")) == aborted_before


def test_two_instances_choose_the_same_writer(cluster: GaleraCluster, loadstone: Start) -> None:
    config = galera_config(cluster, readers=False)
    first = loadstone(config, env=monitor_env())
    second = loadstone(galera_config(cluster, readers=False), env=monitor_env())
    for ls in (first, second):
        wait_for(lambda ls=ls: active(ls) == "db1", timeout=10, what="db1 active")


def test_desync_takes_the_writer_out_and_closes_its_sessions(
    cluster: GaleraCluster, loadstone: Start
) -> None:
    ls, port = start_galera(loadstone, cluster, readers=False)
    idle = connect(port)
    with idle.cursor() as cur:
        cur.execute("SELECT @@wsrep_node_name")
        assert cur.fetchone()[0] == "db1"

    cluster["db1"].query("SET GLOBAL wsrep_desync=ON")
    wait_for(lambda: active(ls) == "db2", timeout=5, what="db2 active")
    assert detail(ls, "db1") == "desynced"
    assert node_behind(port) == "db2"
    # db1 is alive, yet the session on it was closed: shutdown-sessions is the
    # writer policy's default (the config does not set on_marked_down).
    with pytest.raises(pymysql.err.OperationalError) as lost, idle.cursor() as cur:
        cur.execute("SELECT 1")
    assert lost.value.args[0] in (2013, 2006)

    cluster["db1"].query("SET GLOBAL wsrep_desync=OFF")
    wait_for(lambda: ls.server("writer", "db1")["state"] == "up", timeout=10, what="db1 up")
    assert active(ls) == "db2"  # no failback
    assert node_behind(port) == "db2"


def test_reject_queries_takes_a_node_out(cluster: GaleraCluster, loadstone: Start) -> None:
    config = galera_config(cluster)
    ls = loadstone(config, env=monitor_env())
    ls.wait_all_up("readers")
    cluster["db2"].query("SET GLOBAL wsrep_reject_queries=ALL")
    wait_for(lambda: ls.server("readers", "db2")["state"] == "down", timeout=5, what="db2 down")
    assert detail(ls, "db2", "readers") == "rejecting queries"
    readers = port_of(config, "readers")
    assert {node_behind(readers) for _ in range(6)} == {"db1", "db3"}
    assert active(ls) == "db1"
    cluster["db2"].query("SET GLOBAL wsrep_reject_queries=NONE")
    ls.wait_all_up("readers")


def test_isolated_node_is_non_primary(cluster: GaleraCluster, loadstone: Start) -> None:
    config = galera_config(cluster)
    ls = loadstone(config, env=monitor_env())
    ls.wait_all_up("readers")
    cluster["db3"].query("SET GLOBAL wsrep_provider_options='gmcast.isolate=1'")
    wait_for(
        lambda: detail(ls, "db3", "readers") == "non-primary", timeout=20, what="db3 non-primary"
    )
    assert ls.server("readers", "db3")["state"] == "down"
    readers = port_of(config, "readers")
    assert {node_behind(readers) for _ in range(6)} == {"db1", "db2"}
    cluster["db3"].query("SET GLOBAL wsrep_provider_options='gmcast.isolate=0'")
    cluster["db3"].wait_synced()
    ls.wait_all_up("readers", timeout=20)


# -- nodes killed ---------------------------------------------------------------------


def test_kill_writer_fails_over_at_once_without_failback(
    cluster: GaleraCluster, loadstone: Start
) -> None:
    ls, port = start_galera(loadstone, cluster)
    twin = loadstone(galera_config(cluster, readers=False), env=monitor_env())
    wait_for(lambda: active(twin) == "db1", timeout=10, what="twin: db1 active")
    idle = connect(port)
    with idle.cursor() as cur:
        cur.execute("CREATE TABLE IF NOT EXISTS app.failover (id INT PRIMARY KEY, node TEXT)")

    killed = time.monotonic()
    cluster["db1"].kill()
    wait_for(lambda: active(ls) == "db2", timeout=5, what="db2 active")
    took = time.monotonic() - killed
    # The monitor connection's end is noticed at once, the login is refused: out
    # in one check, not after fall x interval (6 s with the defaults).
    assert took < 1.0, took
    assert detail(ls, "db1") == "connection refused"
    assert ls.server("writer", "db1")["state"] == "down"
    # The readers listener has its own monitor connection to db1: out as soon
    # (its check ends with the same refused login, within a second, not fall x
    # interval), though not necessarily by the time the writer's has switched.
    wait_for(
        lambda: ls.server("readers", "db1")["state"] == "down", timeout=1.0, what="readers: db1 out"
    )
    wait_for(lambda: active(twin) == "db2", timeout=5, what="twin: db2 active")

    # The session on db1 is gone, new ones reach db2, and a write commits.
    with pytest.raises(pymysql.err.OperationalError), idle.cursor() as cur:
        cur.execute("SELECT 1")
    assert node_behind(port) == "db2"
    conn = connect(port)
    with conn.cursor() as cur:
        cur.execute("INSERT INTO app.failover VALUES (1, @@wsrep_node_name)")
        cur.execute("SELECT node FROM app.failover WHERE id = 1")
        assert cur.fetchone()[0] == "db2"
    conn.close()

    # db1 back and Synced: it is up again, but the writer stays db2.
    cluster["db1"].start()
    cluster["db1"].wait_synced()
    for instance in (ls, twin):
        wait_for(
            lambda i=instance: i.server("writer", "db1")["state"] == "up",
            timeout=15,
            what="db1 up again",
        )
        assert active(instance) == "db2"
    assert node_behind(port) == "db2"
    assert cluster["db1"].query("SELECT node FROM app.failover WHERE id = 1") == [("db2",)]


def test_bank_survives_two_writer_kills(cluster: GaleraCluster, loadstone: Start) -> None:
    ls, port = start_galera(loadstone, cluster, readers=False)
    bank = Bank(port)
    bank.setup(cluster["db1"])
    bank.start()
    try:
        for victim, successor in (("db1", "db2"), ("db2", "db1")):
            before = bank.count
            wait_for(lambda b=before: bank.count >= b + 30, timeout=30, what="transfers")
            cluster[victim].kill()
            wait_for(lambda s=successor: active(ls) == s, timeout=5, what=f"{successor} writer")
            after_kill = bank.count
            wait_for(
                lambda n=after_kill: bank.count >= n + 30,
                timeout=30,
                what=f"transfers after killing {victim}",
            )
            # Back and Synced, so that it can be the writer after the next kill.
            cluster[victim].start()
            cluster[victim].wait_synced()
            wait_for(
                lambda v=victim: ls.server("writer", v)["state"] == "up",
                timeout=15,
                what=f"{victim} up",
            )
        wait_for(lambda: bank.count >= after_kill + 60, timeout=30, what="final transfers")
    finally:
        bank.finish()
    assert all(not t.is_alive() for t in bank.threads)

    db = cluster[active(ls) or "db1"]
    total = db.query("SELECT SUM(balance), COUNT(*) FROM app.accounts")[0]
    assert (int(total[0]), int(total[1])) == (Bank.ACCOUNTS * Bank.START, Bank.ACCOUNTS)
    stored = {row[0] for row in db.query("SELECT id FROM app.transfers")}
    missing = bank.committed - stored
    assert not missing, f"{len(missing)} acknowledged transfers lost"
    # Every node agrees once they are all Synced.
    for node in cluster.nodes:
        node.wait_synced()
        assert node.query("SELECT SUM(balance) FROM app.accounts")[0][0] == total[0]
    assert bank.count > 150
