"""The Kolla HA spec's five scenarios, as timelines of actions on the cloud and the proxy.

Each action happens at a fixed fraction of the run, the same for both proxies.
An action whose kind is "fault" breaks something, "restore" mends it and
"change" alters the configuration; a fault that cannot be done (no Galera in
a lite cloud, a process already gone) makes the run "fault not injected".
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from benchmarks.kolla_scenarios.cloud import CONTROLLERS, Cloud
from benchmarks.kolla_scenarios.proxies import Proxy

Action = Callable[[Cloud, Proxy], str]  # returns what it did, for the plot and the log


@dataclass(frozen=True)
class Step:
    at: float  # fraction of the run
    kind: str  # fault | restore | change
    action: Action


@dataclass(frozen=True)
class Scenario:
    name: str
    title: str
    steps: tuple[Step, ...]
    controllers: tuple[str, ...] = tuple(CONTROLLERS)  # API servers the proxy starts with


def _kill_api(name: str) -> Action:
    def act(cloud: Cloud, proxy: Proxy) -> str:
        cloud.kill_api(name)
        return f"kill -9 APIs of {name}"

    return act


def _restart_apis(cloud: Cloud, proxy: Proxy) -> str:
    names = [n for n in CONTROLLERS if not cloud.api_alive(n)]
    for name in names:
        cloud.start_api(name)
    return "restart APIs of " + ", ".join(names)


def _kill_galera_writer(cloud: Cloud, proxy: Proxy) -> str:
    galera = cloud.require_galera()
    writer = proxy.active("galera")
    galera[writer].kill()
    return f"kill -9 Galera writer {writer}"


def _kill_galera_other(cloud: Cloud, proxy: Proxy) -> str:
    galera = cloud.require_galera()
    writer = proxy.active("galera")
    donor = galera.nodes[-1].name  # the donor of rejoining nodes stays
    victim = next(n for n in galera.nodes if n.name not in (writer, donor) and n.alive)
    victim.kill()
    return f"kill -9 Galera non-writer {victim.name}"


def _restart_galera(cloud: Cloud, proxy: Proxy) -> str:
    galera = cloud.require_galera()
    dead = [n for n in galera.nodes if not n.alive]
    for node in dead:
        node.start()
    for node in dead:
        node.wait_synced(120)
    return "restart " + ", ".join(n.name for n in dead) + " (Synced)"


def _stop_broker(cloud: Cloud, proxy: Proxy) -> str:
    rabbit = cloud.require_rabbit()
    active = proxy.active("rabbitmq")
    index = int(active.removeprefix("rmq")) - 1
    rabbit.nodes[index].stop()
    return f"stop RabbitMQ broker {active}"


def _start_broker(cloud: Cloud, proxy: Proxy) -> str:
    rabbit = cloud.require_rabbit()
    stopped = [n for n in rabbit.nodes if n.proc is None or n.proc.poll() is not None]
    for node in stopped:
        node.start()
    for node in stopped:
        node.wait_started()
    return "start the broker again"


def _add_ctl3(cloud: Cloud, proxy: Proxy) -> str:
    if not cloud.api_alive("ctl3"):
        cloud.start_api("ctl3")
    proxy.reload(["ctl1", "ctl2", "ctl3"])
    return "reload: add ctl3's APIs"


def _remove_ctl1(cloud: Cloud, proxy: Proxy) -> str:
    proxy.reload(["ctl2", "ctl3"])
    return "reload: remove ctl1's APIs"


SCENARIOS = {
    s.name: s
    for s in (
        Scenario("baseline", "1. HA environment functioning as expected", ()),
        Scenario(
            "api",
            "2. API services failed (kill -9 ctl1's, then ctl2's)",
            (
                Step(0.25, "fault", _kill_api("ctl1")),
                Step(0.4, "fault", _kill_api("ctl2")),
                Step(0.65, "restore", _restart_apis),
            ),
        ),
        Scenario(
            "galera",
            "3. Galera instances failed (kill -9 the writer, later a non-writer)",
            (
                Step(0.2, "fault", _kill_galera_writer),
                Step(0.4, "restore", _restart_galera),
                Step(0.65, "fault", _kill_galera_other),
                Step(0.8, "restore", _restart_galera),
            ),
        ),
        Scenario(
            "rabbitmq",
            "4. RabbitMQ broker failed (stop the active broker)",
            (Step(0.25, "fault", _stop_broker), Step(0.6, "restore", _start_broker)),
        ),
        Scenario(
            "scale",
            "5. Services added and removed (reload: add ctl3, then remove ctl1)",
            (Step(0.3, "change", _add_ctl3), Step(0.6, "change", _remove_ctl1)),
            controllers=("ctl1", "ctl2"),
        ),
    )
}
