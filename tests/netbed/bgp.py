"""An anycast test bed on top of NetBed: loadstone instances announcing one VIP
by BGP, through a BIRD each, to a router that spreads a client's flows over
them by ECMP.

    client --eth1-- router ==switch== lb1 lb2 lb3 (loadstone + BIRD each), be (backends)

- router: BIRD with one eBGP session per instance (AS 65000 <- AS 65010), BFD
  300 ms x 3 on each, and a kernel protocol with `merge paths on`, so the
  VIP's route is one multipath route with a next hop per announcing instance;
  the kernel hashes flows on the 5-tuple (fib_multipath_hash_policy=1).
- lbN: the VIP on lo, loadstone bound to it, BIRD with the VIP's static route
  declared `disabled`: loadstone enables it while it serves (global.anycast).
- be: the backends (one per port), beside the instances on the switch.
- client: behind the router on a link of its own, with CLIENTS addresses so
  that `balance: source` can be shown per client address.

Sites: `sites` maps instances to a local preference the router gives their
routes (a higher one wins; equal ones are merged), so a site can stand by.

kill -9 of loadstone leaves its BIRD up and the route in place: the instance
then answers the VIP's port with RST. The bed runs each loadstone under a
shell that, when loadstone ends however it ends, disables the VIP's protocol
(`birdc disable`), as systemd's ExecStopPost does in docs/anycast.md. A cut
link is BFD's job: the router drops the session after 3 x 300 ms.
Everything is 198.18.0.0/15 and inside the bed's namespaces.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from tests.integration.harness import BACKEND, LOADSTONE, wait_for
from tests.netbed.bed import Host, NetBed, ip
from tests.netbed.peers import peers_section

FLOWS = Path(__file__).with_name("flows.py")
VIP = "198.19.0.10"
SERVICE_PORT = 8000
BACKEND_PORTS = (8081, 8082, 8083)
ROUTER_AS, LB_AS = 65000, 65010
CLIENT_NET = "198.18.1"  # the client's link: router .1, client .2 and up
CLIENTS = 4  # client addresses, .2 to .5
ADMIN = "http://127.0.0.1:6956"
BFD = "min rx interval 300 ms; min tx interval 300 ms; multiplier 3;"
# Reconnect within a second or two after a fault heals, not BIRD's minutes.
BGP_TIMERS = "connect delay time 1; connect retry time 2; error wait time 1, 4;"


def router_conf(
    router: str, lbs: dict[str, str], prefs: dict[str, int], no_bfd: tuple[str, ...] = ()
) -> str:
    sessions = "".join(
        f"""
protocol bgp {name} from lb {{
  neighbor {address} as {LB_AS};
  {"bfd off;  # ExaBGP speaks no BFD" if name in no_bfd else ""}
  ipv4 {{ import filter {{ bgp_local_pref = {prefs.get(name, 100)}; accept; }}; export none; }};
}}"""
        for name, address in lbs.items()
    )
    return f"""router id {router};
protocol device {{ scan time 1; }}
protocol kernel {{ ipv4 {{ import none; export all; }}; merge paths on; }}
protocol bfd {{ interface "eth0" {{ {BFD} }}; }}
template bgp lb {{
  local {router} as {ROUTER_AS};
  bfd on;
  {BGP_TIMERS}
}}
{sessions}
"""


def exabgp_conf(address: str, router: str, feed_socket: Path) -> str:
    feed = f"{sys.executable} -m loadstone.anycast.exabgp_feed {feed_socket}"
    return f"""process loadstone {{
    run {feed};
    encoder text;
}}
neighbor {router} {{
    router-id {address};
    local-address {address};
    local-as {LB_AS};
    peer-as {ROUTER_AS};
    api {{ processes [ loadstone ]; }}
}}
"""


def instance_conf(address: str, router: str) -> str:
    return f"""router id {address};
protocol device {{ scan time 1; }}
protocol bfd {{ interface "eth0" {{ {BFD} }}; }}
# loadstone enables this while it serves the VIP (global.anycast), disables it otherwise.
protocol static vip_web {{ ipv4; route {VIP}/32 blackhole; disabled; }}
protocol bgp upstream {{
  local {address} as {LB_AS};
  neighbor {router} as {ROUTER_AS};
  bfd on;
  {BGP_TIMERS}
  ipv4 {{ import none; export where proto = "vip_web"; }};
}}
"""


@dataclass
class AnycastBed:
    tmp: Path
    instances: tuple[str, ...] = ("lb1", "lb2", "lb3")
    sites: dict[str, int] = field(default_factory=dict)  # instance -> router's local_pref
    stop_delay: str = "2s"
    peers_key: Path | None = None  # set: the instances are peers (global.peers)
    balance: str = "source"
    exabgp: tuple[str, ...] = ()  # instances announcing through ExaBGP, not BIRD
    extra_hosts: tuple[str, ...] = ()  # more hosts on the switch (Galera nodes)
    bed: NetBed = field(init=False)
    loadstones: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    birds: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.bed = NetBed(["router", *self.instances, "be", *self.extra_hosts])

    # -- building ------------------------------------------------------------------

    def start(self) -> AnycastBed:
        try:
            self._client_link()
            self._routing()
            conf = router_conf(self.router, self.lb_addresses, self.sites, self.exabgp)
            self._start_bird("router", conf)
            self._start_backends()
            for lb in self.instances:
                if lb in self.exabgp:
                    self.start_exabgp(lb)
                else:
                    self._start_bird(lb, instance_conf(self.bed.host(lb).address, self.router))
                self.start_loadstone(lb)
            self.wait_next_hops(set(self.instances) if not self.sites else self.preferred())
        except BaseException:
            self.close()
            raise
        return self

    @property
    def router(self) -> str:
        return self.bed.host("router").address

    @property
    def lb_addresses(self) -> dict[str, str]:
        return {lb: self.bed.host(lb).address for lb in self.instances}

    def preferred(self) -> set[str]:
        best = max(self.sites.get(lb, 100) for lb in self.instances)
        return {lb for lb in self.instances if self.sites.get(lb, 100) == best}

    def _client_link(self) -> None:
        """A host of the bed's own (so that closing the bed removes it) wired to
        the router alone: its traffic to the VIP must cross the router."""
        netns = f"{self.bed.tag}-client"
        ip("netns", "add", netns)
        ip("-n", netns, "link", "set", "lo", "up")
        router = self.bed.host("router").netns
        ip(
            "-n",
            router,
            "link",
            "add",
            "eth1",
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "netns",
            netns,
        )
        ip("-n", router, "addr", "add", f"{CLIENT_NET}.1/24", "dev", "eth1")
        ip("-n", router, "link", "set", "eth1", "up")
        for i in range(CLIENTS):
            ip("-n", netns, "addr", "add", f"{CLIENT_NET}.{2 + i}/24", "dev", "eth0")
        ip("-n", netns, "link", "set", "eth0", "up")
        ip("-n", netns, "route", "add", "default", "via", f"{CLIENT_NET}.1")
        # Not on the switch: no port of its own (never cut or partitioned).
        self.bed.hosts["client"] = Host("client", netns, f"{CLIENT_NET}.2", port="")

    def _routing(self) -> None:
        for key, value in (
            ("net.ipv4.ip_forward", "1"),
            ("net.ipv4.fib_multipath_hash_policy", "1"),  # L4: flows of one client spread
            ("net.ipv4.conf.all.send_redirects", "0"),
        ):
            self.bed.run("router", ["sysctl", "-qw", f"{key}={value}"])
        for lb in self.instances:
            self.bed.run(lb, ["ip", "addr", "add", f"{VIP}/32", "dev", "lo"])
            self.bed.run(lb, ["ip", "route", "add", f"{CLIENT_NET}.0/24", "via", self.router])

    def bird_socket(self, host: str) -> Path:
        return self.tmp / f"bird-{host}.ctl"

    def _start_bird(self, host: str, conf: str) -> None:
        path = self.tmp / f"bird-{host}.conf"
        path.write_text(conf)
        log = (self.tmp / f"bird-{host}.log").open("wb")
        argv = ["bird", "-f", "-c", str(path), "-s", str(self.bird_socket(host))]
        argv += ["-P", str(self.tmp / f"bird-{host}.pid")]
        self.birds[host] = self.bed.spawn(host, argv, stdout=log, stderr=subprocess.STDOUT)
        log.close()
        wait_for(lambda: self.bird_socket(host).exists(), timeout=10, what=f"BIRD on {host}")

    def feed_socket(self, lb: str) -> Path:
        return self.tmp / f"exabgp-{lb}.sock"

    def start_exabgp(self, lb: str) -> None:
        path = self.tmp / f"exabgp-{lb}.conf"
        path.write_text(exabgp_conf(self.bed.host(lb).address, self.router, self.feed_socket(lb)))
        log = (self.tmp / f"exabgp-{lb}.log").open("wb")
        env = {
            **os.environ,
            "exabgp_daemon_user": "root",  # the feed connects to a socket in the test's tmp
            "exabgp_daemon_drop": "false",
            "exabgp_api_cli": "false",  # no named pipes for exabgpcli
            "exabgp_log_destination": "stdout",
        }
        proc = self.bed.spawn(
            lb, ["exabgp", str(path)], stdout=log, stderr=subprocess.STDOUT, env=env
        )
        self.birds[lb] = proc  # its BGP speaker, whichever it is
        log.close()

    def fail_file(self, backend: str) -> Path:
        """Its /health answers 503 while this file exists."""
        return self.tmp / f"fail-{backend}"

    def _start_backends(self) -> None:
        address = self.bed.host("be").address
        for i, port in enumerate(BACKEND_PORTS, start=1):
            argv = [sys.executable, str(BACKEND), "--name", f"be{i}", "--port", str(port)]
            argv += ["--fail-file", str(self.fail_file(f"be{i}"))]
            proc = self.bed.spawn("be", [*argv, "--host", address], stdout=subprocess.PIPE)
            assert proc.stdout is not None and proc.stdout.readline().strip() == b"ready"

    def loadstone_config(self, lb: str) -> dict[str, Any]:
        be = self.bed.host("be").address
        global_: dict[str, Any] = {
            "admin": {"bind": ADMIN.removeprefix("http://")},
            "stop_delay": self.stop_delay,
            "grace": "5s",
            "anycast": {
                "driver": "exabgp" if lb in self.exabgp else "bird",
                "socket": str(self.feed_socket(lb) if lb in self.exabgp else self.bird_socket(lb)),
                "hold_down": "1s",
                "interval": "200ms",
                "retry_max": "1s",
                "vips": [{"name": "vip_web", "prefix": f"{VIP}/32", "listeners": ["web"]}],
            },
        }
        if self.peers_key is not None:
            global_["peers"] = peers_section(self.bed, lb, self.instances, self.peers_key)
        return {
            "global": global_,
            "listeners": {
                "web": {
                    "bind": [f"{VIP}:{SERVICE_PORT}"],
                    "mode": "http",
                    "balance": self.balance,
                    "check": {"type": "http", "path": "/health", "interval": "500ms"},
                    "response_headers": [{"set": "X-Served-By", "value": lb}],
                    "servers": [
                        {"name": f"be{i}", "address": f"{be}:{port}"}
                        for i, port in enumerate(BACKEND_PORTS, start=1)
                    ],
                }
            },
        }

    def start_loadstone(self, lb: str) -> None:
        """loadstone under a shell that withdraws the VIP when loadstone ends,
        however it ends (the bed's stand-in for systemd's ExecStopPost)."""
        path = self.tmp / f"loadstone-{lb}.yaml"
        path.write_text(yaml.safe_dump(self.loadstone_config(lb)))
        err = self.tmp / f"loadstone-{lb}.err"
        script = f"{LOADSTONE} run {path} 2>>{err}"
        if lb not in self.exabgp:  # ExaBGP's feed withdraws by itself
            script += f"; birdc -s {self.bird_socket(lb)} disable vip_web >/dev/null"
        self.loadstones[lb] = self.bed.spawn(lb, ["sh", "-c", script], stdout=subprocess.DEVNULL)
        proc = self.loadstones[lb]

        def announcing() -> bool:
            assert proc.poll() is None, f"loadstone on {lb} ended: {err.read_text()[-2000:]}"
            return self.announced(lb)

        wait_for(announcing, timeout=30, what=f"loadstone on {lb} announcing")

    # -- reading -------------------------------------------------------------------

    def status(self, lb: str) -> dict[str, Any]:
        out = self.bed.run(lb, ["curl", "-sf", "--max-time", "2", f"{ADMIN}/api/v1/status"])
        return json.loads(out)  # type: ignore[no-any-return]

    def metrics(self, lb: str) -> str:
        return self.bed.run(lb, ["curl", "-sf", "--max-time", "2", f"{ADMIN}/metrics"])

    def announced(self, lb: str) -> bool:
        try:
            vip = self.status(lb)["anycast"]["vips"]["vip_web"]
        except Exception:
            return False
        return vip["announced"] is True

    def next_hops(self) -> set[str]:
        """The instances the router's kernel sends the VIP's flows to."""
        # `ip -n`, not `ip netns exec`: no exec of a second program per poll.
        out = ip("-n", self.bed.host("router").netns, "-4", "route", "show", f"{VIP}/32").stdout
        by_address = {a: lb for lb, a in self.lb_addresses.items()}
        words = out.split()
        return {by_address[words[i + 1]] for i, w in enumerate(words) if w == "via"}

    def wait_next_hops(self, expected: set[str], timeout: float = 30) -> float:
        """Wait until the router's route has exactly these next hops; seconds waited."""
        started = time.monotonic()
        wait_for(
            lambda: self.next_hops() == expected,
            timeout=timeout,
            interval=0.01,
            what=f"next hops {sorted(expected)} on the router",
        )
        return time.monotonic() - started

    def birdc(self, host: str, *command: str) -> str:
        return self.bed.run(host, ["birdc", "-s", str(self.bird_socket(host)), *command])

    def loadstone_pid(self, lb: str) -> int:
        """The pid of loadstone itself, the shell's child."""
        shell = self.loadstones[lb].pid
        children = Path(f"/proc/{shell}/task/{shell}/children").read_text().split()
        return int(children[0])

    def start_flows(self, mode: str, workers: int = 4, interval: float = 0.02) -> tuple[Path, Any]:
        """tests/netbed/flows.py from the client, from every client address."""
        out = self.tmp / f"flows-{mode}-{time.monotonic_ns()}.out"
        out.write_text("")
        sources = ",".join(f"{CLIENT_NET}.{2 + i}" for i in range(CLIENTS))
        url = f"http://{VIP}:{SERVICE_PORT}/"
        argv = [sys.executable, str(FLOWS), url, str(out), mode, str(workers), sources]
        proc = self.bed.spawn("client", [*argv, str(interval)], stdout=subprocess.PIPE)
        assert proc.stdout is not None and proc.stdout.readline().strip() == b"ready"
        return out, proc

    def close(self) -> None:
        for lb, shell in self.loadstones.items():
            if shell.poll() is None:
                with contextlib.suppress(OSError, IndexError, ValueError):
                    os.kill(self.loadstone_pid(lb), signal.SIGKILL)
        self.bed.close()

    def __enter__(self) -> AnycastBed:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
