"""The small cloud: three controllers' API services, Galera, RabbitMQ and memcached.

The API services of controller N listen on 127.0.0.1N (11-13) on the real
ports; the database nodes, brokers and memcached instances listen where the
test suite's fixtures put them (tests/integration/galera/cluster.py and
tests/integration/peers_amqp/peers.py): Galera on 127.0.0.1 and free ports,
RabbitMQ on 127.0.0.1 and 127.0.0.2 (that fixture's two-node cluster: it does
not make three). The proxy under test is the only way from the services to
them: its listeners on the VIP 127.0.0.10.

`lite` leaves out Galera and RabbitMQ (the smoke test's cloud: a Galera cluster
takes a minute to form on a busy 2-core machine); the services then keep their
servers in memory and cast nothing.
"""

from __future__ import annotations

import contextlib
import functools
import shutil
import signal
import socket
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from tests.integration.galera.cluster import GaleraCluster, missing_software, wait_until
from tests.integration.harness import port_open
from tests.integration.peers_amqp.peers import Memcached, RabbitCluster, missing

from benchmarks.galera_failover import EVS_PROFILES, Clustercheck
from benchmarks.harness.procs import ManagedProcess
from benchmarks.kolla_scenarios.api import CREATE_TABLE, GLANCE, KEYSTONE, NEUTRON, NOVA

VIP = "127.0.0.10"
CONTROLLERS = {"ctl1": "127.0.0.11", "ctl2": "127.0.0.12", "ctl3": "127.0.0.13"}
API_PORTS = {"keystone": KEYSTONE, "nova": NOVA, "glance": GLANCE, "neutron": NEUTRON}


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def listenable(ip: str, port: int) -> bool:
    """Can a server listen there (as the services and proxies do, with SO_REUSEADDR:
    connections of a previous run in TIME_WAIT do not count)?"""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((ip, port))
            s.listen()
        except OSError:
            return False
    return True


class StartError(RuntimeError):
    """A component of the cloud did not start; the message names it."""


@dataclass
class Cloud:
    lite: bool = False
    base: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="kolla-cloud-")))
    apis: dict[str, ManagedProcess] = field(default_factory=dict)
    galera: GaleraCluster | None = None
    clustercheck: Clustercheck | None = None
    rabbit: RabbitCluster | None = None
    memcached: list[Memcached] = field(default_factory=list)

    # -- start -------------------------------------------------------------------

    def start(self) -> Cloud:
        for ip in [VIP, *CONTROLLERS.values()]:
            busy = [p for p in API_PORTS.values() if not listenable(ip, p)]
            if busy:
                raise StartError(f"ports {busy} on {ip} are taken by another program")
        self._step("memcached", self._start_memcached)
        if not self.lite:
            self._step("Galera cluster", self._start_galera)
            self._step("RabbitMQ cluster", self._start_rabbit)
        for name in CONTROLLERS:
            self._step(f"API services of {name}", functools.partial(self.start_api, name))
        return self

    def _step(self, what: str, action: Callable[[], object]) -> None:
        log(f"starting {what}")
        try:
            action()
        except StartError:
            raise
        except Exception as exc:
            raise StartError(f"{what} failed to start: {exc}") from exc

    def _start_memcached(self) -> None:
        why = missing("memcached")
        if why:
            raise StartError(why)
        self.memcached = [Memcached().start() for _ in CONTROLLERS]

    def _start_galera(self) -> None:
        why = missing_software()
        if why:
            raise StartError(why)
        # Galera's failure detector tuned down as in benchmarks/galera_failover.py:
        # with its defaults every commit waits 5 s for an evicted node, whatever
        # the proxy does.
        self.galera = GaleraCluster(provider_options=EVS_PROFILES["fast"])
        self.galera.start()
        self.galera.nodes[0].query(CREATE_TABLE)
        self.clustercheck = Clustercheck(self.galera).start()

    def _start_rabbit(self) -> None:
        why = missing("rabbitmq")
        if why:
            raise StartError(why)
        (self.base / "rabbit").mkdir()
        self.rabbit = RabbitCluster(self.base / "rabbit")
        self.rabbit.start()
        if not self.rabbit.clustered:
            log("RabbitMQ: the two nodes did not form a cluster; two independent brokers")

    def start_api(self, name: str) -> None:
        ip = CONTROLLERS[name]
        argv = [sys.executable, "-m", "benchmarks.kolla_scenarios.api", "--ip", ip, "--vip", VIP]
        if not self.lite:
            argv += ["--db", "--amqp"]
        old = self.apis.get(name)
        if old is not None:
            old.stop()
        proc = ManagedProcess(f"api-{name}", argv, self.base / f"api-{name}.log")
        self.apis[name] = proc

        def up() -> bool:
            proc.check_alive()
            return all(port_open(ip, port) for port in API_PORTS.values())

        wait_until(up, 30, f"API services of {name}", interval=0.1)

    # -- faults --------------------------------------------------------------------

    def api_alive(self, name: str) -> bool:
        proc = self.apis.get(name)
        return proc is not None and proc._popen.poll() is None

    def kill_api(self, name: str) -> None:
        """kill -9 of every API service of one controller."""
        proc = self.apis[name]
        proc._popen.send_signal(signal.SIGKILL)
        proc._popen.wait(10)

    def require_galera(self) -> GaleraCluster:
        if self.galera is None:
            raise RuntimeError("no Galera cluster in this cloud (lite)")
        return self.galera

    def require_rabbit(self) -> RabbitCluster:
        if self.rabbit is None:
            raise RuntimeError("no RabbitMQ cluster in this cloud (lite)")
        return self.rabbit

    # -- restore and stop ----------------------------------------------------------

    def restore(self) -> None:
        """Every component running again, for the next run."""
        for name in CONTROLLERS:
            if not self.api_alive(name):
                self.start_api(name)
        if self.galera is not None:
            self.galera.restore()
        if self.rabbit is not None:
            for node in self.rabbit.nodes:
                if node.proc is None or node.proc.poll() is not None:
                    node.start()
            for node in self.rabbit.nodes:
                node.wait_started()

    def stop(self) -> None:
        for proc in self.apis.values():
            with contextlib.suppress(Exception):
                proc.stop(5)
        if self.clustercheck is not None:
            with contextlib.suppress(Exception):
                self.clustercheck.stop()
        if self.rabbit is not None:
            with contextlib.suppress(Exception):
                self.rabbit.stop()
        if self.galera is not None:
            with contextlib.suppress(Exception):
                self.galera.stop()
        for server in self.memcached:
            with contextlib.suppress(Exception):
                server.stop()
        shutil.rmtree(self.base, ignore_errors=True)
