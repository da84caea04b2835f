"""HAProxy with a deployer's configuration and loadstone with its import, side by side.

The kolla-ansible corpus files (an http frontend/backend pair, keystone, and the
tcp Galera load balancer, mariadb) are rewritten to loopback: controllers
198.18.0.1N become 127.0.0.1N (each backend listens on the same port on its
own address, so `check port` keeps its meaning), the VIP becomes 127.0.0.10
for HAProxy and 127.0.0.20 for loadstone, and each service port a free one.
Both proxies then run against the same backends: the same requests must reach
the same servers with the same answers, and a killed server must go down and
come back in both. The one intended difference, failback, is asserted too.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from loadstone.importers.haproxy import import_haproxy
from tests.importer.sidebyside import (
    HAPROXY,
    HAProxy,
    http_get,
    loadstone_states,
    tcp_who,
)
from tests.integration.harness import (
    Backend,
    Loadstone,
    free_port_on,
    port_open,
    start_backends,
    stop_backends,
    wait_for,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]

CORPUS = Path(__file__).parent / "corpus" / "kolla-ansible"
CONTROLLERS = {"ctl1": "11", "ctl2": "12", "ctl3": "13"}


def loopback_config(vip: str, fronts: dict[int, int], servers: dict[int, int]) -> str:
    """The defaults of kolla's haproxy.cfg plus its keystone and mariadb services, on loopback:
    service port P is bound at vip:fronts[P], and served by 127.0.0.1N:servers[P]."""
    main = (CORPUS / "haproxy.cfg").read_text()
    defaults = main[main.index("defaults") : main.index("listen stats")]
    services = "\n".join(
        (CORPUS / "services.d" / name).read_text() for name in ("keystone.cfg", "mariadb.cfg")
    )
    # Only the internal keystone pair: the external one binds another VIP.
    services = (
        services[: services.index("frontend keystone_external_front")]
        + services[services.index("frontend mariadb_external_lb_front") :]
    )
    text = defaults + services
    for service_port in fronts:
        text = text.replace(f"198.18.0.10:{service_port}", f"{vip}:{fronts[service_port]}")
        for n in CONTROLLERS.values():
            text = text.replace(
                f"198.18.0.{n}:{service_port}", f"127.0.0.{n}:{servers[service_port]}"
            )
        text = text.replace(f"port {service_port} ", f"port {servers[service_port]} ")
    assert "198.18." not in text
    # Checked every 500 ms rather than kolla's 2 s, in both proxies alike: a kill
    # is seen after 2.5 s (fall 5) rather than 10 s; the transitions still must match.
    assert text.count(" inter 2000 ") == 6
    return text.replace(" inter 2000 ", " inter 500 ")


@pytest.fixture
def side_by_side(tmp_path: Path) -> Iterator[dict[str, Any]]:
    if HAPROXY is None:
        pytest.fail("haproxy is not installed (scripts/test installs it)")
    hosts = [f"127.0.0.{n}" for n in CONTROLLERS.values()]
    http_port, tcp_port = free_port_on(*hosts), free_port_on(*hosts)
    fronts = {5000: free_port_on("127.0.0.10", "127.0.0.20"),
              3306: free_port_on("127.0.0.10", "127.0.0.20")}  # fmt: skip
    backends: list[Backend] = []
    for name, n in CONTROLLERS.items():
        backends.append(Backend(name, http_port, "http", host=f"127.0.0.{n}"))
        backends.append(Backend(name, tcp_port, "echo", host=f"127.0.0.{n}"))
    start_backends(backends)
    servers = {5000: http_port, 3306: tcp_port}
    (tmp_path / "ls").mkdir()
    import_src = tmp_path / "ls" / "haproxy.cfg"
    import_src.write_text(loopback_config("127.0.0.20", fronts, servers))
    result = import_haproxy([str(import_src)], "http", env={})
    haproxy_text = loopback_config("127.0.0.10", fronts, servers)
    haproxy = HAProxy(tmp_path, haproxy_text)
    ls = Loadstone(tmp_path, yaml.safe_load(result.yaml)).start()
    try:
        wait_for(lambda: port_open("127.0.0.10", fronts[5000]), what="haproxy bound")
        yield {
            "haproxy": haproxy,
            "loadstone": ls,
            "backends": backends,
            "http": (f"127.0.0.10:{fronts[5000]}", f"127.0.0.20:{fronts[5000]}"),
            "tcp": (fronts[3306],),
            "report": [str(line) for line in result.report],
        }
    finally:
        ls.stop()
        haproxy.stop()
        stop_backends(backends)


def both_up(ctx: dict[str, Any]) -> bool:
    ha, ls = ctx["haproxy"], ctx["loadstone"]
    return (
        set(ha.states("keystone_internal_back").values()) == {"UP"}
        and set(ha.states("mariadb_external_lb_back").values()) == {"UP"}
        and set(loadstone_states(ls, "keystone_internal_front").values()) == {"UP"}
        and set(loadstone_states(ls, "mariadb_external_lb_front").values()) == {"UP"}
    )


def test_same_requests_reach_the_same_servers_with_the_same_answers(
    side_by_side: dict[str, Any],
) -> None:
    ctx = side_by_side
    wait_for(lambda: both_up(ctx), timeout=20, what="every server up in both proxies")
    ha_http, ls_http = ctx["http"]
    # Round robin over three servers: six requests, two each, in both.
    counts = []
    for address in (ha_http, ls_http):
        names = [http_get(address, "/")[1].decode().strip() for _ in range(6)]
        counts.append(Counter(names))
    assert counts[0] == counts[1] == Counter({"ctl1": 2, "ctl2": 2, "ctl3": 2})
    # The same answer to the same request, and the same changes to its head:
    # X-Forwarded-For added (option forwardfor), X-Forwarded-Proto from the
    # client removed (http-request del-header).
    answers = []
    for address in (ha_http, ls_http):
        status, body = http_get(address, "/echo?x=1", {"X-Forwarded-Proto": "https"})
        doc = json.loads(body)
        headers = {k.lower(): v for k, v in doc["headers"]}
        answers.append(
            (status, doc["method"], doc["target"], headers.get("x-forwarded-for"),
             "x-forwarded-proto" in headers)
        )  # fmt: skip
    assert answers[0] == answers[1] == (200, "GET", "/echo?x=1", "127.0.0.1", False)
    # TCP: the single writer takes every session in both.
    (tcp_port,) = ctx["tcp"]
    assert {tcp_who("127.0.0.10", tcp_port) for _ in range(4)} == {"ctl1"}
    assert {tcp_who("127.0.0.20", tcp_port) for _ in range(4)} == {"ctl1"}


def test_health_transitions_match_and_only_failback_differs(side_by_side: dict[str, Any]) -> None:
    ctx = side_by_side
    ha, ls = ctx["haproxy"], ctx["loadstone"]
    wait_for(lambda: both_up(ctx), timeout=20, what="every server up in both proxies")
    by_key = {(b.name, b.mode): b for b in ctx["backends"]}
    http_ctl2, tcp_ctl1 = by_key[("ctl2", "http")], by_key[("ctl1", "echo")]
    http_ctl2.kill()
    tcp_ctl1.kill()

    def down_in_both() -> bool:
        return (
            ha.states("keystone_internal_back")["ctl2"] == "DOWN"
            and loadstone_states(ls, "keystone_internal_front")["ctl2"] == "DOWN"
            and ha.states("mariadb_external_lb_back")["ctl1"] == "DOWN"
            and loadstone_states(ls, "mariadb_external_lb_front")["ctl1"] == "DOWN"
        )

    # inter 500 fall 5: about 2.5 s in both
    wait_for(down_in_both, timeout=30, what="the killed servers down in both")
    ha_http, ls_http = ctx["http"]
    for address in (ha_http, ls_http):
        names = {http_get(address, "/")[1].decode().strip() for _ in range(6)}
        assert names == {"ctl1", "ctl3"}
    (tcp_port,) = ctx["tcp"]
    assert tcp_who("127.0.0.10", tcp_port) == tcp_who("127.0.0.20", tcp_port) == "ctl2"

    for backend in (http_ctl2, tcp_ctl1):
        assert backend.proc is not None and backend.proc.stdout is not None
        backend.proc.stdout.close()  # the killed process's pipe; start() opens a new one
        backend.start()
    wait_for(lambda: both_up(ctx), timeout=30, what="the servers back up in both")
    for address in (ha_http, ls_http):
        names = {http_get(address, "/")[1].decode().strip() for _ in range(6)}
        assert names == {"ctl1", "ctl2", "ctl3"}
    # The difference the import reports: HAProxy fails back to ctl1, loadstone's
    # active-backup keeps the writer it moved to.
    assert any("no failback" in line for line in ctx["report"])
    assert tcp_who("127.0.0.10", tcp_port) == "ctl1"
    assert tcp_who("127.0.0.20", tcp_port) == "ctl2"
