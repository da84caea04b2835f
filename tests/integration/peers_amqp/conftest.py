from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.peers_amqp.peers import RabbitCluster, missing


@pytest.fixture(scope="package")
def rabbit(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RabbitCluster]:
    """Two RabbitMQ nodes (clustered when possible), started once: a node boots
    in seconds, not milliseconds. Tests that change a node put it back.
    Package scope: the nodes are gone before the rest of the suite runs, whose
    load tests should not share two cores with idle Erlang VMs."""
    why = missing("rabbitmq")
    if why:
        pytest.skip(why)
    cluster = RabbitCluster(tmp_path_factory.mktemp("rabbitmq"))
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def redis_base(tmp_path: Path) -> Path:
    why = missing("redis")
    if why:
        pytest.skip(why)
    return tmp_path


@pytest.fixture
def memcached_ok() -> None:
    why = missing("memcached")
    if why:
        pytest.skip(why)
