"""Galera writer failover: kill -9 the writer under a steady write load, loadstone vs HAProxy.

    .venv/bin/python -m benchmarks.galera_failover [--rounds 5] [--evs fast|default] [--json out]

Starts a real 3-node MariaDB Galera cluster on loopback ports (the test
suite's fixture, tests/integration/galera/cluster.py; needs root, mariadb-server,
galera-4, rsync, lsof), then for each proxy in turn:

- loadstone, default check settings: `balance: active-backup` with
  `check: {type: galera}` (interval 2s, rise 2, fall 3, timeout 2s);
- HAProxy as the OpenStack HA guide configures it: mode tcp, db1 plus db2 and
  db3 as `backup`, `option httpchk` against a clustercheck on a port of each
  node, `check inter 2s rise 2 fall 5`, `on-marked-down shutdown-sessions`,
  retries 3 and option redispatch. The clustercheck responders are started
  here, in Python: 200 iff `wsrep_local_state` is 4, 503 otherwise (also when
  the node does not answer), sent at accept without reading the request,
  then the connection is closed, as Percona's script under xinetd does.

Four client threads write through the proxy all the time (autocommit INSERTs,
reconnecting after any error after 10 ms). Each round kills the node the proxy
writes to with SIGKILL and measures the time from the kill to the first commit
acknowledged through the proxy after it, and counts client errors (failed
connects and queries) during the round; then the node is restarted, waits
for Synced (it rejoins by IST from db3, the preferred donor, so the writer is
never turned into a donor) and the proxy is given time to see it up before the
next round. A fifth thread writes straight to db3, bypassing any proxy: its
first commit after the kill is the cluster's own floor (Galera holds every
commit until the dead node is evicted, evs.suspect_timeout), which no proxy
can beat.

`--evs fast` (default) tunes Galera's failure detector down so that the floor
is below a second (evs.suspect_timeout=PT0.7S, ...); `--evs default` keeps
Galera's defaults (suspect timeout 5 s), where every proxy waits ~6 s.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import pymysql
import yaml
from tests.integration.galera.cluster import (
    APP_PASSWORD,
    APP_USER,
    MONITOR_PASSWORD,
    MONITOR_USER,
    GaleraCluster,
    missing_software,
    wait_until,
)

EVS_PROFILES: dict[str, tuple[str, ...]] = {
    "fast": (
        "evs.suspect_timeout=PT0.5S",
        "evs.inactive_timeout=PT1.5S",
        "evs.inactive_check_period=PT0.1S",
        "evs.keepalive_period=PT0.1S",
        "evs.join_retrans_period=PT0.1S",
    ),
    "moderate": (
        "evs.suspect_timeout=PT0.7S",
        "evs.inactive_timeout=PT2S",
        "evs.inactive_check_period=PT0.2S",
        "evs.keepalive_period=PT0.2S",
        "evs.join_retrans_period=PT0.2S",
    ),
    "default": (),
}
WORKERS = 4
LOADSTONE = Path(sys.executable).parent / "loadstone"


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def connect(port: int, **kw: Any) -> Any:
    options: dict[str, Any] = {
        "host": "127.0.0.1",
        "port": port,
        "user": APP_USER,
        "password": APP_PASSWORD,
        "connect_timeout": 5,
        "read_timeout": 30,
        "write_timeout": 30,
        "autocommit": True,
    }
    return pymysql.connect(**{**options, **kw})


# -- clustercheck, as xinetd runs it ------------------------------------------------

OK_RESPONSE = (
    b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nConnection: close\r\n"
    b"Content-Length: 40\r\n\r\nPercona XtraDB Cluster Node is synced.\r\n"
)
DOWN_RESPONSE = (
    b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\nConnection: close\r\n"
    b"Content-Length: 44\r\n\r\nPercona XtraDB Cluster Node is not synced.\r\n"
)


class Clustercheck:
    """One HTTP responder per node on its own port, in a thread with its own loop."""

    def __init__(self, cluster: GaleraCluster) -> None:
        self.cluster = cluster
        self.ports = {node.name: free_port() for node in cluster.nodes}
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.servers: list[asyncio.Server] = []

    def start(self) -> Clustercheck:
        self.thread.start()
        for node in self.cluster.nodes:
            fut = asyncio.run_coroutine_threadsafe(self._serve(node.port, node.name), self.loop)
            self.servers.append(fut.result(10))
        return self

    async def _serve(self, mysql_port: int, name: str) -> asyncio.Server:
        async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            synced = await asyncio.get_running_loop().run_in_executor(
                None, self._synced, mysql_port
            )
            # Answer without reading the request, then close, as clustercheck does.
            writer.write(OK_RESPONSE if synced else DOWN_RESPONSE)
            with contextlib.suppress(OSError):
                await writer.drain()
            writer.close()

        return await asyncio.start_server(answer, "127.0.0.1", self.ports[name])

    @staticmethod
    def _synced(port: int) -> bool:
        # A new login per request, like the script's `mysql -e "SHOW STATUS ..."`.
        try:
            conn = pymysql.connect(
                host="127.0.0.1",
                port=port,
                user=MONITOR_USER,
                password=MONITOR_PASSWORD,
                connect_timeout=10,
                read_timeout=10,
            )
        except pymysql.err.MySQLError:
            return False
        try:
            with conn.cursor() as cur:
                cur.execute("SHOW GLOBAL STATUS LIKE 'wsrep_local_state'")
                row = cur.fetchone()
            return row is not None and str(row[1]) == "4"
        except pymysql.err.MySQLError:
            return False
        finally:
            conn.close()

    def stop(self) -> None:
        for server in self.servers:
            self.loop.call_soon_threadsafe(server.close)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


# -- the proxies ------------------------------------------------------------------------


class Proxy:
    name = "?"

    def __init__(self, cluster: GaleraCluster, workdir: Path) -> None:
        self.cluster = cluster
        self.workdir = workdir
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        raise NotImplementedError

    def sees_up(self, node: str) -> bool:
        raise NotImplementedError

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


class LoadstoneProxy(Proxy):
    name = "loadstone"

    def start(self) -> None:
        self.admin = free_port()
        config = {
            "global": {"grace": "1s", "admin": {"bind": f"127.0.0.1:{self.admin}"}},
            "listeners": {
                "galera": {
                    "bind": [f"127.0.0.1:{self.port}"],
                    "mode": "tcp",
                    "balance": "active-backup",
                    "timeouts": {"client": "90m", "server": "90m"},
                    # Default check settings: interval 2s, rise 2, fall 3, timeout 2s.
                    "check": {
                        "type": "galera",
                        "user": MONITOR_USER,
                        "password_env": "GALERA_MONITOR_PASSWORD",
                    },
                    "on_marked_down": "shutdown-sessions",
                    "servers": [{"name": n.name, "address": n.address} for n in self.cluster.nodes],
                }
            },
        }
        path = self.workdir / "loadstone.yaml"
        path.write_text(yaml.safe_dump(config))
        env = {**os.environ, "GALERA_MONITOR_PASSWORD": MONITOR_PASSWORD}
        with open(self.workdir / "loadstone.log", "ab") as out:
            self.proc = subprocess.Popen(
                [str(LOADSTONE), "run", str(path)], stdout=out, stderr=out, env=env
            )
        wait_until(lambda: self.status()["active"] == "db1", 15, "loadstone: db1 active")

    def status(self) -> dict[str, Any]:
        import urllib.request

        with urllib.request.urlopen(f"http://127.0.0.1:{self.admin}/api/v1/status", timeout=5) as r:
            return json.loads(r.read())["listeners"]["galera"]  # type: ignore[no-any-return]

    def sees_up(self, node: str) -> bool:
        return bool(self.status()["servers"][node]["state"] == "up")


class HAProxyProxy(Proxy):
    name = "haproxy"

    def start(self) -> None:
        self.clustercheck = Clustercheck(self.cluster).start()
        self.stats = self.workdir / "haproxy.sock"
        lines = [
            "global",
            "    maxconn 4096",
            f"    stats socket {self.stats} mode 600 level admin",
            "defaults",
            "    mode tcp",
            "    retries 3",
            "    option redispatch",
            "    timeout connect 10s",
            "    timeout client 90m",
            "    timeout server 90m",
            "    timeout check 10s",
            "listen galera",
            f"    bind 127.0.0.1:{self.port}",
            "    mode tcp",
            "    option tcpka",
            "    option httpchk",
        ]
        for i, node in enumerate(self.cluster.nodes):
            lines.append(
                f"    server {node.name} {node.address} check port "
                f"{self.clustercheck.ports[node.name]} inter 2s rise 2 fall 5 "
                f"on-marked-down shutdown-sessions" + (" backup" if i else "")
            )
        cfg = self.workdir / "haproxy.cfg"
        cfg.write_text("\n".join(lines) + "\n")
        with open(self.workdir / "haproxy.log", "ab") as out:
            self.proc = subprocess.Popen(["haproxy", "-db", "-f", str(cfg)], stdout=out, stderr=out)
        wait_until(lambda: all(self.sees_up(n.name) for n in self.cluster.nodes), 20, "haproxy up")

    def sees_up(self, node: str) -> bool:
        with socket.socket(socket.AF_UNIX) as s:
            s.connect(str(self.stats))
            s.sendall(b"show stat\n")
            data = b""
            while chunk := s.recv(65536):
                data += chunk
        header, *rows = data.decode().splitlines()
        columns = header.lstrip("# ").split(",")
        for row in rows:
            values = dict(zip(columns, row.split(","), strict=False))
            if values.get("pxname") == "galera" and values.get("svname") == node:
                return values.get("status", "").startswith("UP")
        return False

    def stop(self) -> None:
        super().stop()
        self.clustercheck.stop()


# -- the load -------------------------------------------------------------------------


@dataclass
class Load:
    """Writers through the proxy, plus one straight to a survivor (the floor)."""

    proxy_port: int
    direct_port: int
    # (sent, acknowledged, node) of each commit, monotonic: through the proxy, and direct.
    acks: list[tuple[float, float, str]] = field(default_factory=list)
    direct_acks: list[tuple[float, float, str]] = field(default_factory=list)
    errors: list[float] = field(default_factory=list)  # monotonic times of client errors
    stop: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self) -> list[threading.Thread]:
        threads = [
            threading.Thread(target=self._writer, args=(self.proxy_port, self.acks), daemon=True)
            for _ in range(WORKERS)
        ]
        threads.append(
            threading.Thread(
                target=self._writer, args=(self.direct_port, self.direct_acks, False), daemon=True
            )
        )
        for t in threads:
            t.start()
        return threads

    def _writer(
        self, port: int, acks: list[tuple[float, float, str]], count_errors: bool = True
    ) -> None:
        conn = None
        node = "?"
        while not self.stop.is_set():
            try:
                if conn is None:
                    conn = connect(port)
                    with conn.cursor() as cur:
                        cur.execute("SELECT @@wsrep_node_name")
                        node = str(cur.fetchone()[0])
                sent = time.monotonic()
                with conn.cursor() as cur:
                    cur.execute("INSERT INTO bench.t (node) VALUES (@@wsrep_node_name)")
                now = time.monotonic()
                with self.lock:
                    acks.append((sent, now, node))
            except (pymysql.err.MySQLError, OSError):
                if count_errors:
                    with self.lock:
                        self.errors.append(time.monotonic())
                if conn is not None:
                    with contextlib.suppress(Exception):
                        conn.close()
                conn = None
                time.sleep(0.01)
        if conn is not None:
            conn.close()

    def first_after(
        self, series: list[tuple[float, float, str]], t: float, victim: str, timeout: float = 60
    ) -> float:
        """When the first commit sent after `t` to a node other than the victim was
        acknowledged. A commit sent before the kill may be acknowledged just
        after it, by the victim or, its write-set already ordered, by a
        survivor: it proves nothing about the failover."""

        def seen() -> float | None:
            with self.lock:
                later = [a for s, a, node in series[-5000:] if s > t and node != victim]
            return min(later) if later else None

        return float(wait_until(seen, timeout, "a commit after the kill", interval=0.01))

    def current_node(self) -> str:
        with self.lock:
            recent = [node for _, _, node in self.acks[-50:]]
        return max(set(recent), key=recent.count)

    def errors_between(self, start: float, end: float) -> int:
        with self.lock:
            return sum(1 for e in self.errors if start <= e <= end)


@dataclass
class Round:
    killed: str
    failover_s: float  # kill -> first commit acknowledged through the proxy
    floor_s: float  # kill -> first commit straight to db3 (Galera's own stall)
    errors: int  # client errors between the kill and that first commit + 1 s


def grew(acks: list[tuple[float, float, str]], count: int) -> bool:
    return len(acks) > count


def run_proxy(proxy: Proxy, cluster: GaleraCluster, rounds: int) -> list[Round]:
    proxy.start()
    load = Load(proxy.port, cluster["db3"].port)
    threads = load.start()
    results: list[Round] = []
    try:
        wait_until(lambda: len(load.acks) > 200, 30, "steady load")
        for i in range(rounds):
            before = len(load.acks)
            wait_until(functools.partial(grew, load.acks, before + 100), 30, "load before the kill")
            # The node the load is on. Not "where a new connection goes": after
            # HAProxy fails back to db1, new connections go to db1 while the
            # pooled ones stay on db2 (two writers, the reason for no failback).
            victim = cluster[load.current_node()]
            killed_at = time.monotonic()
            victim.kill()
            first = load.first_after(load.acks, killed_at, victim.name)
            floor = load.first_after(load.direct_acks, killed_at, victim.name)
            time.sleep(1.0)  # errors of the reconnect storm right after the first commit
            errors = load.errors_between(killed_at, first + 1.0)
            results.append(Round(victim.name, first - killed_at, floor - killed_at, errors))
            log(
                f"{proxy.name} round {i + 1}: killed {victim.name}, first commit after "
                f"{first - killed_at:.3f}s (cluster floor {floor - killed_at:.3f}s), "
                f"{errors} client errors"
            )
            victim.start()
            victim.wait_synced(120)
            wait_until(
                functools.partial(proxy.sees_up, victim.name), 60, f"{proxy.name} sees it up"
            )
            # Every node synced again before the next kill (db3 donated to it).
            for node in cluster.nodes:
                node.wait_synced(60)
    finally:
        load.stop.set()
        for t in threads:
            t.join(30)
        proxy.stop()
    return results


def summary(rounds: list[Round]) -> dict[str, Any]:
    times = [r.failover_s for r in rounds]
    return {
        "rounds": len(rounds),
        "median_s": statistics.median(times),
        "max_s": max(times),
        "floor_median_s": statistics.median(r.floor_s for r in rounds),
        "client_errors": sum(r.errors for r in rounds),
        "detail": [asdict(r) for r in rounds],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5, help="writer kills per proxy (>= 1)")
    parser.add_argument("--evs", choices=sorted(EVS_PROFILES), default="fast")
    parser.add_argument("--only", choices=["loadstone", "haproxy"])
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args(argv)

    why = missing_software()
    if why is not None:
        log(f"cannot run: {why}")
        return 2
    workdir = Path(tempfile.mkdtemp(prefix="galera-failover-"))
    log(f"starting a 3-node Galera cluster (evs profile {args.evs}) in {workdir}")
    cluster = GaleraCluster(provider_options=EVS_PROFILES[args.evs])
    results: dict[str, Any] = {"evs": args.evs, "rounds": args.rounds}
    try:
        cluster.start()
        cluster["db1"].query("CREATE DATABASE IF NOT EXISTS bench")
        cluster["db1"].query(
            "CREATE TABLE bench.t (id BIGINT AUTO_INCREMENT PRIMARY KEY, node VARCHAR(16))"
        )
        proxies: list[type[Proxy]] = [LoadstoneProxy, HAProxyProxy]
        for kind in proxies:
            if args.only and kind.name != args.only:
                continue
            log(f"== {kind.name}")
            results[kind.name] = summary(run_proxy(kind(cluster, workdir), cluster, args.rounds))
    finally:
        cluster.stop()

    print(f"Galera writer failover, {args.rounds} kill -9 of the writer, evs profile {args.evs}")
    print(f"{'proxy':<10} {'median':>8} {'max':>8} {'errors':>7} {'floor':>8}")
    for name in ("loadstone", "haproxy"):
        if name in results:
            r = results[name]
            print(
                f"{name:<10} {r['median_s']:>7.3f}s {r['max_s']:>7.3f}s "
                f"{r['client_errors']:>7} {r['floor_median_s']:>7.3f}s"
            )
    if "loadstone" in results and "haproxy" in results:
        ratio = results["haproxy"]["median_s"] / results["loadstone"]["median_s"]
        results["speedup"] = ratio
        print(f"loadstone median is {ratio:.1f}x faster than HAProxy's")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        signal.signal(signal.SIGTERM, lambda *a: sys.exit(1))
        sys.exit(main())
