"""Controllers of the namespace bed with a backend, loadstone and keepalived
each, and a client probing through the VIP.

keepalived runs from the shipped configs/keepalived/keepalived.conf, rendered
per host as its header says; loadstone's admin API is on each host's own
loopback (a namespace has its own), which is where `loadstone ctl` looks.
"""

from __future__ import annotations

import json
import string
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from tests.integration.harness import BACKEND, LOADSTONE, ROOT, wait_for
from tests.netbed.bed import NetBed
from tests.netbed.peers import peers_section
from tests.netbed.prober import outage

KEEPALIVED_CONF = ROOT / "configs" / "keepalived" / "keepalived.conf"
PROBER = ROOT / "tests" / "netbed" / "prober.py"
VIP = "198.18.0.250"
SERVICE_PORT = 8000
BACKEND_PORT = 8080
PEERS_PORT = 6957
ADMIN = "http://127.0.0.1:6956"
VRRP_INSTANCE = "loadstone_internal_vip_51"  # as the shipped file names it


# The vrrp_script either way configs/keepalived/keepalived.conf offers it.
CTL_HEALTH = f"{LOADSTONE} ctl --url {ADMIN} health --timeout 2 --hold 0.6"  # the default
CURL_HEALTH = f"/usr/bin/curl -sf --max-time 2 -o /dev/null {ADMIN}/api/v1/health?hold=0.8"


def render_keepalived(
    bed: NetBed, host: str, controllers: list[str], advert_int: float, health: str
) -> str:
    me = bed.host(host)
    peers = [bed.host(c).address for c in controllers if c != host]
    text = string.Template(KEEPALIVED_CONF.read_text()).substitute(
        INTERFACE="eth0",
        VIRTUAL_ROUTER_ID="51",
        # The first controller highest, as kolla orders them; nopreempt keeps
        # the VIP where it is once it moved. High, as the shipped file advises:
        # a short takeover after a priority-0 advert.
        PRIORITY=str(250 - controllers.index(host)),
        ADVERT_INT=f"{advert_int:g}",
        SRC_IP=me.address,
        PEER_IPS="\n        ".join(peers),
        VIP=VIP,
        AUTH_PASS="lstest01",
        LOADSTONE_CTL=f"{LOADSTONE} ctl --url {ADMIN}",
        HEALTH_CHECK=health,
    )
    if advert_int < 1:
        # Sub-second adverts need VRRPv3 (keepalived ignores the PASS
        # authentication there, with a warning); a vrrp_script's interval is
        # whole seconds (1 to 4294).
        text = text.replace("global_defs {\n", "global_defs {\n    vrrp_version 3\n", 1)
        text = text.replace(f"    interval {advert_int:g}\n", "    interval 1\n", 1)
    return text


def admin_get(bed: NetBed, host: str, path: str) -> Any:
    """The admin API of a host's loadstone (curl inside its namespace)."""
    return json.loads(bed.run(host, ["curl", "-sf", "--max-time", "2", f"{ADMIN}{path}"]))


@dataclass
class Pair:
    """Controllers with backend + loadstone + keepalived, and a client host."""

    bed: NetBed
    tmp: Path
    controllers: list[str]
    advert_int: float = 1.0
    health: str = CURL_HEALTH
    loadstone_extra: dict[str, Any] = field(default_factory=dict)
    balance: str = "roundrobin"  # active-backup: the backends stand in for Galera nodes
    peers_key: Path | None = None  # set: the instances are peers (global.peers)
    loadstones: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    backends: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def start(self) -> Pair:
        for host in self.controllers:
            self.backends[host] = self.start_backend(host)
            self.start_loadstone(host)
        for host in self.controllers:
            self.start_keepalived(host)
        return self

    def start_backend(self, host: str) -> subprocess.Popen[bytes]:
        argv = [sys.executable, str(BACKEND), "--name", host, "--port", str(BACKEND_PORT)]
        argv += ["--host", self.bed.host(host).address]
        proc = self.bed.spawn(host, argv, stdout=subprocess.PIPE)
        assert proc.stdout is not None and proc.stdout.readline().strip() == b"ready"
        return proc

    def loadstone_config(self, host: str) -> dict[str, Any]:
        servers = [
            {"name": c, "address": f"{self.bed.host(c).address}:{BACKEND_PORT}"}
            for c in self.controllers
        ]
        extra = dict(self.loadstone_extra)
        if self.peers_key is not None:
            extra["peers"] = peers_section(self.bed, host, self.controllers, self.peers_key)
        return {
            "global": {"admin": {"bind": ADMIN.removeprefix("http://")}, **extra},
            "listeners": {
                "api": {
                    "bind": [f"{VIP}:{SERVICE_PORT}"],
                    "freebind": True,  # the VIP is on one host at a time
                    "mode": "http",
                    "balance": self.balance,
                    "check": {"type": "http", "path": "/health", "interval": "500ms"},
                    "servers": servers,
                }
            },
        }

    def start_loadstone(self, host: str) -> None:
        path = self.tmp / f"loadstone-{host}.yaml"
        path.write_text(yaml.safe_dump(self.loadstone_config(host)))
        err = (self.tmp / f"loadstone-{host}.err").open("wb")
        proc = self.bed.spawn(
            host,
            [str(LOADSTONE), "run", str(path), "--log-level", "debug"],
            stdout=subprocess.DEVNULL,
            stderr=err,
        )
        err.close()
        self.loadstones[host] = proc
        wait_for(lambda: self.healthy(host), timeout=20, what=f"loadstone on {host} healthy")

    def healthy(self, host: str) -> bool:
        argv = [str(LOADSTONE), "ctl", "--url", ADMIN, "health"]
        return (
            subprocess.run(self.bed.host(host).exec_args(argv), capture_output=True).returncode == 0
        )

    def start_keepalived(self, host: str) -> None:
        conf = self.tmp / f"keepalived-{host}.conf"
        conf.write_text(
            render_keepalived(self.bed, host, self.controllers, self.advert_int, self.health)
        )
        conf.chmod(0o644)
        run = self.tmp / host
        run.mkdir(exist_ok=True)
        log = (self.tmp / f"keepalived-{host}.log").open("wb")
        argv = ["keepalived", "-n", "-l", "-G", "-P", "-D", "-f", str(conf)]
        argv += ["-p", str(run / "k.pid"), "-r", str(run / "vrrp.pid"), "-i", host]
        self.bed.spawn(host, argv, stdout=log, stderr=subprocess.STDOUT)
        log.close()

    def vip_holders(self) -> list[str]:
        return [
            host
            for host in self.controllers
            if f"inet {VIP}/" in self.bed.run(host, ["ip", "-4", "addr", "show", "dev", "eth0"])
        ]

    def wait_vip(self, timeout: float = 20, away_from: str | None = None) -> str:
        """The one host holding the VIP (another than `away_from`)."""

        def holder() -> str | None:
            holders = self.vip_holders()
            return holders[0] if len(holders) == 1 and holders[0] != away_from else None

        return str(wait_for(holder, timeout=timeout, what="the VIP on one host"))

    def start_prober(
        self, client: str, interval: float = 0.02, timeout: float = 0.5, keep_alive: bool = False
    ) -> tuple[Path, Any]:
        """keep_alive: the requests share one connection (prober.py keepalive)."""
        out = self.tmp / ("prober-keepalive.out" if keep_alive else "prober.out")
        out.write_text("")
        url = f"http://{VIP}:{SERVICE_PORT}/"
        argv = [sys.executable, str(PROBER), url, str(out), str(interval), str(timeout)]
        proc = self.bed.spawn(client, argv + (["keepalive"] if keep_alive else []))
        wait_for(
            lambda: "ok" in out.read_text(),
            timeout=10,
            what="the client's first answer through the VIP",
        )
        return out, proc

    def active(self, host: str, listener: str = "api") -> str | None:
        doc = admin_get(self.bed, host, "/api/v1/status")
        return doc["listeners"][listener]["active"]  # type: ignore[no-any-return]

    def is_master(self, host: str) -> bool:
        """Has keepalived's notify hook told the host's loadstone it is MASTER?"""
        vrrp = admin_get(self.bed, host, "/api/v1/status")["vrrp"]
        return bool(vrrp.get(VRRP_INSTANCE, {}).get("state") == "MASTER")


def measured_outage(
    out: Path, timeout: float = 20, after: float | None = None
) -> tuple[float, int]:
    """Once the prober has failed and then succeeded again: (outage, failed).
    With `after` (a fault's CLOCK_MONOTONIC time), 20 answers after it and no
    failure at all also end the wait: a failover no request noticed, (0.0, 0)."""

    def ended() -> tuple[float, int] | None:
        lines = out.read_text().splitlines()
        found = outage(lines)
        if found is not None or after is None:
            return found
        later = [line.split()[1] for line in lines if float(line.split()[0]) > after]
        if len(later) >= 20 and "fail" not in later:
            return (0.0, 0)
        return None

    result: tuple[float, int] | None = wait_for(
        ended, timeout=timeout, what="the end of the outage"
    )
    assert result is not None  # wait_for returns only a truthy value
    return result
