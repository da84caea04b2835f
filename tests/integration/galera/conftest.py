"""A real 3-node MariaDB Galera cluster for the whole session, and loadstone configs for it.

The cluster starts once (~12 s) and is shared: a test that breaks a node
(kill, desync, isolate, ...) restores it, and an autouse fixture makes sure of
it after every test, so a failed test does not poison the next ones.

Galera's failure detector is tuned down from its defaults (evs.suspect_timeout
5 s -> 1 s, ...): a killed node holds every commit in the cluster until it is
evicted, and with the defaults each kill would cost ~6 s of stalled writes and
an isolated node 5 s before it turns non-Primary. The proxy's behaviour under
test does not depend on these values.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest

from tests.integration.galera.cluster import (
    MONITOR_PASSWORD,
    MONITOR_USER,
    GaleraCluster,
    missing_software,
)
from tests.integration.harness import free_port

# Applied to every node of the test cluster (see the module docstring).
TEST_PROVIDER_OPTIONS = (
    "evs.suspect_timeout=PT1S",
    "evs.inactive_timeout=PT3S",
    "evs.inactive_check_period=PT0.25S",
    "evs.keepalive_period=PT0.25S",
    "evs.join_retrans_period=PT0.25S",
)

PASSWORD_ENV = "GALERA_MONITOR_PASSWORD"


def require_galera_software() -> None:
    """Skip (fail in CI) when a cluster cannot be started here."""
    why = missing_software()
    if why is not None:
        if os.environ.get("CI"):
            pytest.fail(f"Galera cluster unavailable in CI: {why}")
        pytest.skip(f"Galera cluster unavailable: {why} (scripts/test installs it)")


@pytest.fixture(scope="session")
def galera_cluster() -> Iterator[GaleraCluster]:
    require_galera_software()
    cluster = GaleraCluster(provider_options=TEST_PROVIDER_OPTIONS).boot()
    yield cluster
    cluster.stop()


@pytest.fixture
def cluster(galera_cluster: GaleraCluster) -> Iterator[GaleraCluster]:
    """The shared cluster, healthy before the test and restored after it."""
    galera_cluster.restore()
    yield galera_cluster
    galera_cluster.restore()


def galera_config(
    cluster: GaleraCluster,
    *,
    readers: bool = True,
    check: dict[str, Any] | None = None,
    writer_port: int | None = None,
) -> dict[str, Any]:
    """loadstone in front of the cluster: `writer` (active-backup) and `readers`.

    Default check settings (interval 2s, rise 2, fall 3, timeout 2s) unless
    `check` overrides: the failover behaviour under test is that of the defaults."""
    galera_check: dict[str, Any] = {
        "type": "galera",
        "user": MONITOR_USER,
        "password_env": PASSWORD_ENV,
        **(check or {}),
    }
    servers = [{"name": n.name, "address": n.address} for n in cluster.nodes]
    listeners: dict[str, Any] = {
        "writer": {
            "bind": [f"127.0.0.1:{writer_port or free_port()}"],
            "mode": "tcp",
            "balance": "active-backup",
            # on_marked_down deliberately not set: the writer policy implies it.
            "timeouts": {"client": "90m", "server": "90m"},
            "check": galera_check,
            "servers": servers,
        }
    }
    if readers:
        listeners["readers"] = {
            "bind": [f"127.0.0.1:{free_port()}"],
            "mode": "tcp",
            "balance": "roundrobin",
            "check": galera_check,
            "servers": servers,
        }
    return {"global": {"grace": "1s"}, "listeners": listeners}


def monitor_env(password: str = MONITOR_PASSWORD) -> dict[str, str]:
    return {PASSWORD_ENV: password}


def port_of(config: dict[str, Any], listener: str) -> int:
    return int(config["listeners"][listener]["bind"][0].rsplit(":", 1)[1])
