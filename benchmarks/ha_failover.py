"""VIP failover and Galera host death in the namespace bed, loadstone beside HAProxy.

    .venv/bin/python -m benchmarks.ha_failover [--json OUT] [--faults kill,cut,stop]
        [--advert 1,0.1] [--proxies loadstone,haproxy] [--no-galera]

Every scenario builds a fresh bed (tests/netbed/bed.py): three controller
hosts, each with an HTTP backend, the proxy and keepalived (the shipped
configs/keepalived/keepalived.conf, unicast peers, nopreempt, as kolla
configures it), and a client host with two clients through the VIP, a request
every 20 ms each:

- `new`: a new connection per request (prober.py);
- `keep-alive`: one HTTP/1.1 connection, opened again after a failure.

A request's patience is 3 s (a SYN lost while no host answers for the VIP is
retransmitted after 1 s). The figures per client: the outage from the first
failed request to the first good one after it (0 when none failed), twice: to
the sending of that good request (the issue's reading) and to its answer; and
the failed requests. A request sent while no host answers for the VIP can
still succeed on a SYN retransmission one second later: the answered outage
counts that second, the sent one and the failed requests do not.

Faults, on the VIP holder:
- kill: kill -9 of the proxy;
- cut: its switch port goes down (no RST, no ICMP reaches anyone);
- stop: a planned stop. loadstone: SIGTERM with global.stop_delay 3 s (its
  health fails first, keepalived moves the VIP, then it drains). HAProxy:
  SIGUSR1, its graceful soft-stop.

Each with advert_int 1 (keepalived's default) and 0.1 (VRRPv3; the
vrrp_script still runs every second, its minimum). Priorities 250-248 on
either proxy (a short takeover after a priority-0 advert).

The proxies:
- loadstone: roundrobin over the three backends, http check every 500 ms;
  keepalived's vrrp_script asks /api/v1/health?hold=0.8 with curl (held: it
  fails the moment loadstone dies, docs/high-availability.md);
- HAProxy as the OpenStack HA guide runs it: `option httpchk`, `check inter
  2000 rise 2 fall 5`, `option redispatch`, `retries 3`, bound to the VIP
  through net.ipv4.ip_nonlocal_bind=1 (as kolla sets it); keepalived's
  vrrp_script connects to its stats socket (kolla's check_alive_haproxy asks
  the same socket `show info`).

Host death with Galera (unless --no-galera): a 3-node MariaDB/Galera cluster
in the bed (one node per controller, evs.suspect_timeout 1 s +
inactive_check_period 0.25 s), the VIP held by ctl3 and the writer db1 on
ctl1; the bank workload (four threads of transfers) on the client host
through VIP:3306; ctl1's link is cut. Figures: the first commit acknowledged
through the VIP after the cut, and the acknowledged commits not found
afterwards. loadstone: active-backup with the galera check (interval 500 ms,
timeout 2 s, fall 3). HAProxy as the HA guide: db2 and db3 `backup`, `option
mysql-check`, `check inter 2000 rise 2 fall 5`.

The machine this runs on is usually shared: compare the two proxies within
one run, not against other runs.
"""

from __future__ import annotations

import argparse
import json
import math
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.integration.galera.cluster import GaleraCluster, missing_software
from tests.integration.ha.galera_bed import (
    DB_PORT,
    EVICTION,
    BankClient,
    GaleraPair,
    lost_commits,
    setup_bank,
    start_cluster,
)
from tests.integration.ha.pair import BACKEND_PORT, PROBER, SERVICE_PORT, VIP, Pair
from tests.integration.harness import wait_for
from tests.netbed.bed import NetBed

CONTROLLERS = ["ctl1", "ctl2", "ctl3"]
STATS = "127.0.0.1:9999"  # HAProxy's stats socket on each host's own loopback
HAPROXY_HEALTH = f"/usr/bin/socat -u OPEN:/dev/null TCP:{STATS}"
HA_GUIDE_CHECK = "check inter 2000 rise 2 fall 5"
PATIENCE = 3.0  # a request's timeout, connect included
INTERVAL = 0.02
STOP_DELAY = "3s"


def haproxy_global() -> str:
    return f"""global
    stats socket ipv4@{STATS} level admin
    maxconn 4000

defaults
    log global
    option redispatch
    retries 3
    timeout http-request 10s
    timeout queue 1m
    timeout connect 10s
    timeout client 1m
    timeout server 1m
    timeout check 10s
"""


@dataclass
class HaproxyPair(Pair):
    """Pair with HAProxy in loadstone's place (HA guide settings)."""

    def haproxy_config(self, host: str) -> str:
        servers = "\n".join(
            f"    server {c} {self.bed.host(c).address}:{BACKEND_PORT} {HA_GUIDE_CHECK}"
            for c in self.controllers
        )
        return (
            haproxy_global()
            + f"""
listen api
    bind {VIP}:{SERVICE_PORT}
    mode http
    balance roundrobin
    option httpchk GET /health
{servers}
"""
        )

    def start_loadstone(self, host: str) -> None:
        start_haproxy(self, host, self.haproxy_config(host))

    def healthy(self, host: str) -> bool:
        argv = HAPROXY_HEALTH.split()
        return subprocess.run(self.bed.host(host).exec_args(argv)).returncode == 0


def start_haproxy(pair: Pair, host: str, config: str) -> None:
    path = pair.tmp / f"haproxy-{host}.cfg"
    path.write_text(config)
    # kolla sets it on the hosts: HAProxy binds the VIP it does not hold yet.
    pair.bed.run(host, ["sysctl", "-qw", "net.ipv4.ip_nonlocal_bind=1"])
    err = (pair.tmp / f"haproxy-{host}.err").open("wb")
    # -db: one foreground process, no master: kill -9 takes the proxy down.
    proc = pair.bed.spawn(host, ["haproxy", "-db", "-f", str(path)], stderr=err)
    err.close()
    pair.loadstones[host] = proc
    wait_for(lambda: pair.healthy(host), timeout=20, what=f"haproxy on {host}")


# -- VIP failover -----------------------------------------------------------------------


def start_clients(pair: Pair) -> dict[str, Path]:
    outs = {}
    url = f"http://{VIP}:{SERVICE_PORT}/"
    for kind in ("new", "keep-alive"):
        out = pair.tmp / f"client-{kind}.out"
        out.write_text("")
        argv = [sys.executable, str(PROBER), url, str(out), str(INTERVAL), str(PATIENCE)]
        if kind == "keep-alive":
            argv.append("keepalive")
        pair.bed.spawn("client", argv)
        outs[kind] = out
    wait_for(
        lambda: all(" ok " in o.read_text() for o in outs.values()),
        timeout=15,
        what="a first answer on both clients",
    )
    return outs


def client_figures(lines: list[str], since: float) -> dict[str, Any]:
    """Outage and failed requests after `since`. The outage runs from the
    sending of the first failed request to the answer of the first good one
    after it: a request sent while no host answered for the VIP may still
    succeed a second later, on a SYN retransmission, and the client waited."""
    first_fail = end = sent = None
    failed = 0
    for line in lines:
        stamp, verdict, took = line.split()[:3]
        if float(stamp) < since:
            continue
        if verdict == "fail":
            failed += 1
            first_fail = float(stamp) if first_fail is None else first_fail
        elif first_fail is not None and end is None:
            sent, end = float(stamp), float(stamp) + float(took)
    if first_fail is None:
        return {"outage_s": 0.0, "outage_sent_s": 0.0, "failed": 0}
    return {
        "outage_s": round(end - first_fail, 3) if end is not None else math.inf,
        # The reading: from the first failed to the first good request
        # sent (what tests/netbed/prober.outage() measures).
        "outage_sent_s": round(sent - first_fail, 3) if sent is not None else math.inf,
        "failed": failed,
    }


def vip_scenario(proxy: str, advert_int: float, fault: str) -> dict[str, Any]:
    with (
        tempfile.TemporaryDirectory(prefix="ha-failover-") as tmp,
        NetBed([*CONTROLLERS, "client"]) as bed,
    ):
        cls = HaproxyPair if proxy == "haproxy" else Pair
        pair = cls(bed, Path(tmp), CONTROLLERS, advert_int=advert_int)
        if proxy == "haproxy":
            pair.health = HAPROXY_HEALTH
        elif fault == "stop":
            pair.loadstone_extra = {"stop_delay": STOP_DELAY}
        pair.start()
        master = pair.wait_vip()
        outs = start_clients(pair)
        t0 = time.monotonic()
        if fault == "kill":
            bed.kill(pair.loadstones[master])
        elif fault == "cut":
            bed.cut_link(master)
        else:
            pair.loadstones[master].send_signal(
                signal.SIGUSR1 if proxy == "haproxy" else signal.SIGTERM
            )

        def moved() -> bool:
            return any(h != master for h in pair.vip_holders())

        wait_for(moved, timeout=30, what="the VIP on another host")
        moved_after = time.monotonic() - t0
        # Good answers on both clients for a while after the move.
        deadline = time.monotonic() + 2.0
        wait_for(
            lambda: all(_good_after(o, deadline, 5) for o in outs.values()),
            timeout=30,
            what="answers again on both clients",
        )
        row: dict[str, Any] = {
            "proxy": proxy,
            "advert_int": advert_int,
            "fault": fault,
            "vip_moved_s": round(moved_after, 3),
        }
        for kind, out in outs.items():
            row[kind] = client_figures(out.read_text().splitlines(), t0 - 0.05)
        return row


def _good_after(out: Path, since: float, count: int) -> bool:
    good = 0
    for line in out.read_text().splitlines():
        stamp, verdict = line.split()[:2]
        if float(stamp) >= since and verdict == "ok":
            good += 1
    return good > count


# -- Galera host death --------------------------------------------------------------------


@dataclass
class HaproxyGaleraPair(GaleraPair):
    def start_loadstone(self, host: str) -> None:
        assert self.cluster is not None
        nodes = self.cluster.nodes
        servers = "\n".join(
            f"    server {n.name} {n.address} {HA_GUIDE_CHECK}" + (" backup" if i else "")
            for i, n in enumerate(nodes)
        )
        config = (
            haproxy_global()
            + f"""
listen galera_cluster
    bind {VIP}:{DB_PORT}
    mode tcp
    timeout client 90m
    timeout server 90m
    option mysql-check user haproxy
{servers}
"""
        )
        start_haproxy(self, host, config)

    def healthy(self, host: str) -> bool:
        argv = HAPROXY_HEALTH.split()
        return subprocess.run(self.bed.host(host).exec_args(argv)).returncode == 0

    def writer(self, host: str) -> str | None:
        out = self.bed.run(
            host,
            ["/bin/sh", "-c", f"echo 'show stat' | socat stdio TCP:{STATS}"],
        )
        # The first server that is UP, backups after the primary, as HAProxy picks.
        for line in out.splitlines():
            fields = line.split(",")
            if (
                len(fields) > 17
                and fields[0] == "galera_cluster"
                and fields[17] == "UP"
                and fields[1] not in ("FRONTEND", "BACKEND")
            ):
                return fields[1]
        return None


def host_death(proxy: str, bed: NetBed, cluster: GaleraCluster, tmp: Path) -> dict[str, Any]:
    cls = HaproxyGaleraPair if proxy == "haproxy" else GaleraPair
    pair = cls(bed, tmp, CONTROLLERS, cluster=cluster)
    if proxy == "haproxy":
        pair.health = HAPROXY_HEALTH
    pair.start(vip_on="ctl3")
    try:
        wait_for(lambda: pair.writer("ctl3") == "db1", timeout=20, what="db1 the writer")
        setup_bank(cluster)
        bank = BankClient(bed, "client", tmp / f"bank-{proxy}.json")
        try:
            bank.wait_more(30)
            cut = time.monotonic()
            bed.cut_link("ctl1")
            wait_for(
                lambda: any(t > cut + 0.1 for t in bank.state()["times"]),
                timeout=90,
                what="a commit after the cut",
            )
            first = min(t for t in bank.state()["times"] if t > cut + 0.1) - cut
            bank.wait_more(30, timeout=90)
        finally:
            state = bank.finish()
    finally:
        bed.restore_link("ctl1")
        pair.stop()
    cluster["db1"].wait_synced(180)
    lost = lost_commits(cluster, "db2", state["committed"])
    return {
        "proxy": proxy,
        "fault": "galera writer host link cut",
        "first_commit_s": round(first, 3),
        "galera_eviction_s": EVICTION,
        "acknowledged": len(state["committed"]),
        "lost": len(lost),
        "client_errors": state["errors"],
    }


def galera_runs(proxies: list[str], record: Callable[[dict[str, Any]], None]) -> None:
    if missing_software() is not None:
        print(f"Galera skipped: {missing_software()}", file=sys.stderr)
        return
    with (
        tempfile.TemporaryDirectory(prefix="ha-galera-") as tmp,
        NetBed([*CONTROLLERS, "client"]) as bed,
    ):
        cluster = start_cluster(bed, CONTROLLERS)
        try:
            # HAProxy's mysql-check logs in as this user, without a password.
            cluster["db1"].query("CREATE USER IF NOT EXISTS 'haproxy'@'%'")
            for proxy in proxies:
                record(host_death(proxy, bed, cluster, Path(tmp)))
        finally:
            cluster.stop()


# -- the run ------------------------------------------------------------------------------


def table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| fault | advert_int | proxy | VIP moved | new conn: outage (sent / answered), failed "
        "| keep-alive: outage (sent / answered), failed |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        if "vip_moved_s" not in r:
            continue
        new, ka = r["new"], r["keep-alive"]
        lines.append(
            f"| {r['fault']} | {r['advert_int']:g} | {r['proxy']} | {r['vip_moved_s']:.2f} s "
            f"| {_client_cell(new)} | {_client_cell(ka)} |"
        )
    galera = [r for r in rows if "first_commit_s" in r]
    if galera:
        lines += [
            "",
            "| fault | proxy | first commit after the cut | acknowledged | lost |",
            "|---|---|---|---|---|",
        ]
        for r in galera:
            lines.append(
                f"| {r['fault']} | {r['proxy']} | {r['first_commit_s']:.2f} s "
                f"| {r['acknowledged']} | {r['lost']} |"
            )
    return "\n".join(lines)


def _client_cell(figures: dict[str, Any]) -> str:
    return f"{figures['outage_sent_s']:.2f} / {figures['outage_s']:.2f} s, {figures['failed']}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, help="write the rows here")
    parser.add_argument("--faults", default="kill,cut,stop")
    parser.add_argument("--advert", default="1,0.1")
    parser.add_argument("--proxies", default="loadstone,haproxy")
    parser.add_argument("--no-galera", action="store_true")
    args = parser.parse_args(argv)
    proxies = args.proxies.split(",")
    rows: list[dict[str, Any]] = []

    def record(row: dict[str, Any]) -> None:
        # Written after every scenario: a run cut short keeps what it measured.
        rows.append(row)
        print(json.dumps(row), flush=True)
        if args.json:
            args.json.write_text(json.dumps(rows, indent=1))

    failed = 0
    for fault in filter(None, args.faults.split(",")):  # --faults '': Galera only
        for advert in (float(a) for a in args.advert.split(",")):
            for proxy in proxies:
                try:
                    record(vip_scenario(proxy, advert, fault))
                except Exception as exc:  # reported, and the run goes on
                    failed += 1
                    print(f"{proxy} {fault} advert_int {advert:g}: {exc!r}", file=sys.stderr)
    if not args.no_galera:
        try:
            galera_runs(proxies, record)
        except Exception as exc:
            failed += 1
            print(f"galera host death: {exc!r}", file=sys.stderr)
    print(table(rows))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
