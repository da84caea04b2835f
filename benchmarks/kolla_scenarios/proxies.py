"""The proxies under test on the VIP: loadstone and HAProxy, each as deployers ship it.

loadstone runs configs/openstack-controller.yaml with its listeners rewritten
to the loopback cloud: binds on the VIP, servers on the controllers, the
Galera, RabbitMQ and memcached servers where the cloud put them, and only
the listeners this cloud has (keystone, nova, glance, neutron, galera,
rabbitmq, memcached). Checks, timeouts, retries and balancing stay as the
file has them.

HAProxy runs the configuration of kolla-ansible and the OpenStack HA guide for
the same listeners: mode http with `option httpchk` on the health path of each
API, `check inter 2000 rise 2 fall 5`, retries 3 and option redispatch;
Galera in mode tcp with one server and the others `backup`, checked by
`option httpchk` against a clustercheck responder per node (200 iff Synced,
the Percona script kolla runs in its mariadb_clustercheck container) with
on-marked-down shutdown-sessions; RabbitMQ and memcached in mode tcp with a
plain tcp check, one server and the others `backup`. It runs master-worker
(-W) so that a reload is SIGUSR2 to the master, as systemd's reload does.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sys
import urllib.request
from pathlib import Path
from typing import Any

import yaml
from tests.integration.galera.cluster import MONITOR_PASSWORD, wait_until
from tests.integration.harness import free_port

from benchmarks.harness.procs import ManagedProcess
from benchmarks.kolla_scenarios.cloud import API_PORTS, CONTROLLERS, VIP, Cloud

REPO = Path(__file__).resolve().parents[2]
CONTROLLER_CONFIG = REPO / "configs" / "openstack-controller.yaml"
LOADSTONE = Path(sys.executable).parent / "loadstone"
# Listener names of configs/openstack-controller.yaml, by the service behind them.
API_LISTENERS = {
    "keystone": "keystone_public",
    "nova": "nova_api",
    "glance": "glance_api",
    "neutron": "neutron_server",
}
HEALTH_PATHS = {"keystone": "/healthcheck", "nova": "/", "glance": "/healthcheck", "neutron": "/"}


def backend_servers(cloud: Cloud) -> dict[str, list[tuple[str, str]]]:
    """(name, address) of the servers of the tcp listeners, by listener."""
    servers: dict[str, list[tuple[str, str]]] = {
        "memcached": [(f"ctl{i + 1}", m.address) for i, m in enumerate(cloud.memcached)]
    }
    if cloud.galera is not None:
        servers["galera"] = [(n.name, n.address) for n in cloud.galera.nodes]
    if cloud.rabbit is not None:
        servers["rabbitmq"] = [(f"rmq{i + 1}", n.address) for i, n in enumerate(cloud.rabbit.nodes)]
    return servers


class Proxy:
    name = "?"

    def __init__(self, cloud: Cloud, workdir: Path) -> None:
        self.cloud = cloud
        self.workdir = workdir
        self.proc: ManagedProcess | None = None

    def start(self, controllers: list[str]) -> None:
        raise NotImplementedError

    def reload(self, controllers: list[str]) -> None:
        raise NotImplementedError

    def states(self) -> dict[str, dict[str, bool]]:
        """Up or not, by listener and server."""
        raise NotImplementedError

    def active(self, listener: str) -> str:
        """The server an active-backup listener sends new connections to."""
        raise NotImplementedError

    def wait_ready(self, controllers: list[str]) -> None:
        """Every listener has its live servers up (the APIs of `controllers`)."""
        expected = self.expected_up(controllers)

        def ready() -> bool:
            assert self.proc is not None
            self.proc.check_alive()
            states = self.states()
            return all(states.get(lst, {}).get(srv, False) for lst, srv in expected)

        wait_until(ready, 60, f"{self.name}: every server up", interval=0.2)

    def expected_up(self, controllers: list[str]) -> list[tuple[str, str]]:
        pairs = [(API_LISTENERS[s], c) for s in API_PORTS for c in controllers]
        for listener, servers in backend_servers(self.cloud).items():
            pairs += [(listener, name) for name, _ in servers]
        return pairs

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.stop(15)
            self.proc = None


class LoadstoneProxy(Proxy):
    name = "loadstone"

    def config(self, controllers: list[str]) -> dict[str, Any]:
        doc: dict[str, Any] = yaml.safe_load(CONTROLLER_CONFIG.read_text())
        doc["global"]["admin"]["bind"] = f"127.0.0.1:{self.admin}"
        doc["global"]["grace"] = "2s"
        # Error lines only, as the HAProxy beside it logs nothing: a line per
        # request to a pipe would cost loadstone CPU that HAProxy does not spend.
        doc["defaults"]["log"] = "errors"
        tcp = backend_servers(self.cloud)
        listeners: dict[str, Any] = {}
        for service, port in API_PORTS.items():
            listener = doc["listeners"][API_LISTENERS[service]]
            listener["bind"] = [f"{VIP}:{port}"]
            listener["servers"] = [
                {"name": c, "address": f"{CONTROLLERS[c]}:{port}"} for c in controllers
            ]
            listeners[API_LISTENERS[service]] = listener
        for name, servers in tcp.items():
            listener = doc["listeners"][name]
            port = int(listener["bind"][0].rsplit(":", 1)[1])
            listener["bind"] = [f"{VIP}:{port}"]
            listener["servers"] = [{"name": n, "address": a} for n, a in servers]
            if name == "rabbitmq" and self.cloud.rabbit is not None:
                listener["check"]["management_port"] = self.cloud.rabbit.nodes[0].mgmt_port
                listener["check"]["vhost"] = "openstack"
            listeners[name] = listener
        doc["listeners"] = listeners
        return doc

    def write(self, controllers: list[str]) -> Path:
        path = self.workdir / "loadstone.yaml"
        path.write_text(yaml.safe_dump(self.config(controllers), sort_keys=False))
        return path

    def start(self, controllers: list[str]) -> None:
        self.admin = free_port()
        path = self.write(controllers)
        env = {
            **os.environ,
            "GALERA_MONITOR_PASSWORD": MONITOR_PASSWORD,
            "RABBITMQ_MONITOR_PASSWORD": "monitor-pw",
        }
        self.proc = ManagedProcess(
            "loadstone", [str(LOADSTONE), "run", str(path)], self.workdir / "loadstone.log", env=env
        )
        self.wait_ready(controllers)

    def admin_call(self, method: str, path: str) -> Any:
        request = urllib.request.Request(f"http://127.0.0.1:{self.admin}{path}", method=method)
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.loads(response.read())

    def states(self) -> dict[str, dict[str, bool]]:
        listeners = self.admin_call("GET", "/api/v1/status")["listeners"]
        return {
            name: {srv: s["state"] == "up" for srv, s in doc["servers"].items()}
            for name, doc in listeners.items()
        }

    def active(self, listener: str) -> str:
        return str(self.admin_call("GET", "/api/v1/status")["listeners"][listener]["active"])

    def reload(self, controllers: list[str]) -> None:
        self.write(controllers)
        report = self.admin_call("POST", "/api/v1/reload")
        if not report.get("ok", False):
            raise RuntimeError(f"loadstone rejected the reload: {report}")


class HAProxyProxy(Proxy):
    name = "haproxy"

    def config(self, controllers: list[str]) -> str:
        lines = [
            "global",
            "    maxconn 4096",
            f"    stats socket {self.stats} mode 600 level admin",
            "defaults",
            "    log global",
            "    option redispatch",
            "    retries 3",
            "    timeout http-request 10s",
            "    timeout queue 1m",
            "    timeout connect 10s",
            "    timeout client 1m",
            "    timeout server 1m",
            "    timeout check 10s",
            "    balance roundrobin",
            "    maxconn 4000",
        ]
        for service, port in API_PORTS.items():
            lines += [
                f"listen {API_LISTENERS[service]}",
                "    mode http",
                "    option forwardfor except 127.0.0.0/8",
                "    http-request set-header X-Forwarded-Proto http",
                f"    option httpchk GET {HEALTH_PATHS[service]}",
                f"    bind {VIP}:{port}",
            ]
            lines += [
                f"    server {c} {CONTROLLERS[c]}:{port} check inter 2000 rise 2 fall 5"
                for c in controllers
            ]
        tcp = backend_servers(self.cloud)
        for name, servers in tcp.items():
            port = {"galera": 3306, "rabbitmq": 5672, "memcached": 11211}[name]
            lines += [
                f"listen {name}",
                "    mode tcp",
                "    option tcpka",
                f"    bind {VIP}:{port}",
            ]
            if name == "galera":
                assert self.cloud.clustercheck is not None
                lines += ["    timeout client 90m", "    timeout server 90m", "    option httpchk"]
            for i, (server, address) in enumerate(servers):
                extra = " backup" if i else ""
                if name == "galera":
                    assert self.cloud.clustercheck is not None
                    cc_port = self.cloud.clustercheck.ports[server]
                    extra += f" port {cc_port} on-marked-down shutdown-sessions"
                lines.append(f"    server {server} {address} check inter 2000 rise 2 fall 5{extra}")
        return "\n".join(lines) + "\n"

    def write(self, controllers: list[str]) -> Path:
        path = self.workdir / "haproxy.cfg"
        path.write_text(self.config(controllers))
        return path

    def start(self, controllers: list[str]) -> None:
        self.stats = self.workdir / "haproxy.sock"
        path = self.write(controllers)
        self.proc = ManagedProcess(
            "haproxy", ["haproxy", "-W", "-db", "-f", str(path)], self.workdir / "haproxy.log"
        )
        self.wait_ready(controllers)

    def show_stat(self) -> list[list[str]]:
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(5)
            s.connect(str(self.stats))
            s.sendall(b"show stat\n")
            data = b""
            while chunk := s.recv(65536):
                data += chunk
        return [line.split(",") for line in data.decode().splitlines()[1:] if line]

    def states(self) -> dict[str, dict[str, bool]]:
        states: dict[str, dict[str, bool]] = {}
        for row in self.show_stat():
            if row[1] not in ("FRONTEND", "BACKEND"):
                states.setdefault(row[0], {})[row[1]] = row[17].startswith("UP")
        return states

    def active(self, listener: str) -> str:
        """The first server up, the active one before the backups: HAProxy's choice."""
        rows = [
            r for r in self.show_stat() if r[0] == listener and r[1] not in ("FRONTEND", "BACKEND")
        ]
        up = [r for r in rows if r[17].startswith("UP")]
        # Columns: 19 act, 20 bck (1 for the server that has the flag).
        active = [r for r in up if r[19] == "1"] or [r for r in up if r[20] == "1"]
        if not active:
            raise RuntimeError(f"haproxy has no server up in {listener}")
        return active[0][1]

    def reload(self, controllers: list[str]) -> None:
        self.write(controllers)
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGUSR2)


PROXIES: dict[str, type[Proxy]] = {"loadstone": LoadstoneProxy, "haproxy": HAProxyProxy}
