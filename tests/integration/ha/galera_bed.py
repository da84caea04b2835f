"""A 3-node Galera cluster inside the namespace bed, one node per controller
host, with loadstone and keepalived on each controller and the bank workload
on the client host.

The cluster is the loopback one (tests/integration/galera/cluster.py) placed
on the bed's hosts: each node binds its host's address, runs in its host's
namespace, and is administered through its Unix socket (reachable from the
test's namespace). Galera's failure detector is tuned down as in the loopback
tests (evs.suspect_timeout 1 s, inactive_check_period 0.25 s): a host whose
link is cut is evicted after ~1.25 s.
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.integration.galera.bank import Bank
from tests.integration.galera.cluster import MONITOR_PASSWORD, MONITOR_USER, GaleraCluster
from tests.integration.galera.conftest import TEST_PROVIDER_OPTIONS
from tests.integration.ha.pair import ADMIN, VIP, Pair
from tests.integration.harness import ROOT, wait_for
from tests.netbed.bed import NetBed, stop_processes

DB_PORT = 3306  # on the VIP, as kolla serves it

# Galera's own eviction time with TEST_PROVIDER_OPTIONS.
EVICTION = 1.0 + 0.25


def start_cluster(bed: NetBed, controllers: list[str]) -> GaleraCluster:
    cluster = GaleraCluster(size=len(controllers), provider_options=TEST_PROVIDER_OPTIONS)
    for node, name in zip(cluster.nodes, controllers, strict=True):
        host = bed.host(name)
        node.host = host.address
        node.exec_prefix = ["ip", "netns", "exec", host.netns]
    return cluster.boot()


def writer_listener(
    cluster: GaleraCluster, tmp: Path, vip: str, check_interval: str = "500ms"
) -> dict[str, Any]:
    """An active-backup listener on vip:3306 over the cluster's nodes, checked
    `type: galera` (the monitor's password in a file under `tmp`)."""
    password = tmp / "monitor.password"
    password.write_text(MONITOR_PASSWORD)
    password.chmod(0o600)
    return {
        "bind": [f"{vip}:{DB_PORT}"],
        "mode": "tcp",
        "balance": "active-backup",
        "timeouts": {"client": "90m", "server": "90m"},
        "check": {
            "type": "galera",
            "user": MONITOR_USER,
            "password_file": str(password),
            "interval": check_interval,
            "timeout": "2s",
            "rise": 2,
            "fall": 3,
        },
        "servers": [{"name": n.name, "address": n.address} for n in cluster.nodes],
    }


@dataclass
class GaleraPair(Pair):
    """Pair whose listener is a Galera writer on VIP:3306 (no stand-in backends)."""

    cluster: GaleraCluster | None = None
    check_interval: str = "500ms"
    _first_proc: int = 0

    def start(self, vip_on: str | None = None) -> GaleraPair:
        """vip_on: that host's keepalived starts first and takes the VIP (the
        others join as backups: nopreempt keeps it there)."""
        self._first_proc = len(self.bed.procs)
        for host in self.controllers:
            self.start_loadstone(host)
        if vip_on is not None:
            self.start_keepalived(vip_on)
            self.wait_vip()
        for host in self.controllers:
            if host != vip_on:
                self.start_keepalived(host)
        return self

    def loadstone_config(self, host: str) -> dict[str, Any]:
        assert self.cluster is not None
        listener = writer_listener(self.cluster, self.tmp, VIP, self.check_interval)
        return {
            "global": {"admin": {"bind": ADMIN.removeprefix("http://")}, "grace": "1s"},
            "listeners": {"writer": {**listener, "freebind": True}},
        }

    def writer(self, host: str) -> str | None:
        return self.active(host, "writer")

    def stop(self) -> None:
        """Stop what start() started (the bed and its cluster outlive a test)."""
        stop_processes(self.bed.procs[self._first_proc :])


class BankClient:
    """bank_client.py on the client host, through the VIP (the pair's, or `vip`)."""

    def __init__(self, bed: NetBed, client: str, out: Path, vip: str = VIP) -> None:
        self.out = out
        argv = [sys.executable, "-m", "tests.integration.ha.bank_client", vip, str(DB_PORT)]
        self.proc = bed.spawn(client, [*argv, str(out)], stdin=subprocess.PIPE, cwd=ROOT)

    def state(self) -> dict[str, Any]:
        try:
            doc: dict[str, Any] = json.loads(self.out.read_text())
        except (OSError, ValueError):
            return {"committed": [], "times": [], "ids": [], "errors": {}, "failure": None}
        if doc["failure"]:
            raise AssertionError(f"a bank worker failed: {doc['failure']}")
        return doc

    def count(self) -> int:
        return len(self.state()["committed"])

    def wait_more(self, more: int, timeout: float = 60) -> None:
        start = self.count()
        wait_for(lambda: self.count() >= start + more, timeout=timeout, what=f"{more} transfers")

    def finish(self) -> dict[str, Any]:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        self.proc.wait(60)
        return self.state()


def setup_bank(cluster: GaleraCluster) -> None:
    Bank(0).setup(cluster.nodes[0])


def lost_commits(cluster: GaleraCluster, node: str, committed: list[str]) -> set[str]:
    """Acknowledged transfers missing from `node`, and the money check."""
    db = cluster[node]
    total = db.query("SELECT SUM(balance), COUNT(*) FROM app.accounts")[0]
    assert (int(total[0]), int(total[1])) == (Bank.ACCOUNTS * Bank.START, Bank.ACCOUNTS)
    stored = {row[0] for row in db.query("SELECT id FROM app.transfers")}
    return set(committed) - stored
