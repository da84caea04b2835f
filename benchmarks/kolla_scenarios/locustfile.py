"""OpenStack users for locust: log in to keystone, then read and write with think time.

    locust -f benchmarks/kolla_scenarios/locustfile.py --headless -u 20 -r 20 -t 60s

Every service is reached through the VIP (KOLLA_VIP, 127.0.0.10) on its own
port, as a client does after reading the catalog. Besides locust's own CSV,
each request is appended to KOLLA_REQUEST_LOG (when set) as
`unix time, name, milliseconds, 1|0 success`, from which the runner plots the
run second by second (locust's history CSV averages over a sliding window,
which smears a failover of a few seconds).
"""

from __future__ import annotations

import os
import random
import time
from typing import Any, TextIO

from locust import HttpUser, between, events, task
from locust.stats import CSV_STATS_INTERVAL_SEC

VIP = os.environ.get("KOLLA_VIP", "127.0.0.10")
KEYSTONE = f"http://{VIP}:5000"
NOVA = f"http://{VIP}:8774"
GLANCE = f"http://{VIP}:9292"
NEUTRON = f"http://{VIP}:9696"

_log: TextIO | None = None


def _open_log(environment: Any, **_: Any) -> None:
    global _log
    path = os.environ.get("KOLLA_REQUEST_LOG")
    if path:
        _log = open(path, "a", buffering=1 << 16)  # noqa: SIM115 (closed at quit)


def _log_request(
    name: str, response_time: float, exception: Any, start_time: float | None = None, **_: Any
) -> None:
    if _log is not None:
        _log.write(f"{start_time or 0:.3f},{name},{response_time:.1f},{0 if exception else 1}\n")


def _close_log(**_: Any) -> None:
    if _log is not None:
        _log.close()
    # locust's CSV writer rewrites <prefix>_stats.csv every CSV_STATS_INTERVAL_SEC
    # and is not asked for a last write at exit: the users have stopped by now,
    # so one more interval lets the file catch up with the last requests.
    time.sleep(CSV_STATS_INTERVAL_SEC + 0.3)  # gevent's sleep: locust patches time


# Not decorators: locust's add_listener is untyped.
events.init.add_listener(_open_log)  # type: ignore[no-untyped-call]
events.request.add_listener(_log_request)  # type: ignore[no-untyped-call]
events.quit.add_listener(_close_log)  # type: ignore[no-untyped-call]


class OpenStackUser(HttpUser):
    """A user of the dashboard or the CLI: mostly lists and shows, some creates."""

    host = KEYSTONE
    wait_time = between(0.3, 1.0)

    def on_start(self) -> None:
        self.token = ""
        self.server_ids: list[str] = []
        self.login()

    def login(self) -> None:
        body = {
            "auth": {
                "identity": {
                    "methods": ["password"],
                    "password": {
                        "user": {
                            "name": f"user{random.randrange(1000)}",
                            "domain": {"id": "default"},
                            "password": "secret",
                        }
                    },
                },
                "scope": {"project": {"name": "demo", "domain": {"id": "default"}}},
            }
        }
        with self.client.post(
            f"{KEYSTONE}/v3/auth/tokens", json=body, name="keystone token", catch_response=True
        ) as response:
            if response.status_code == 201:
                self.token = response.headers.get("X-Subject-Token", "")
                response.success()
            else:
                response.failure(f"status {response.status_code}")

    @property
    def headers(self) -> dict[str, str]:
        return {"X-Auth-Token": self.token, "Accept": "application/json"}

    @task(4)
    def list_servers(self) -> None:
        response = self.client.get(
            f"{NOVA}/v2.1/servers/detail", headers=self.headers, name="nova list"
        )
        if response.status_code == 200:
            self.server_ids = [s["id"] for s in response.json()["servers"]][:10]

    @task(3)
    def show_server(self) -> None:
        if not self.server_ids:
            return self.list_servers()
        server = random.choice(self.server_ids)
        self.client.get(f"{NOVA}/v2.1/servers/{server}", headers=self.headers, name="nova show")

    @task(3)
    def list_images(self) -> None:
        self.client.get(f"{GLANCE}/v2/images", headers=self.headers, name="glance image list")

    @task(3)
    def list_ports(self) -> None:
        self.client.get(f"{NEUTRON}/v2.0/ports", headers=self.headers, name="neutron port list")

    @task(1)
    def create_server(self) -> None:
        body = {
            "server": {
                "name": f"vm-{random.randrange(1 << 30)}",
                "imageRef": "00000000-0000-0000-0000-000000000001",
                "flavorRef": "1",
                "networks": "auto",
            }
        }
        self.client.post(
            f"{NOVA}/v2.1/servers", json=body, headers=self.headers, name="nova create"
        )

    @task(1)
    def relogin(self) -> None:
        self.login()
