from __future__ import annotations

import resource
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.harness import Backend, Loadstone, free_port


@pytest.fixture(scope="session", autouse=True)
def _raise_fd_limit() -> None:
    # 1,000 concurrent connections need more than the usual soft limit of 1,024.
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


@pytest.fixture
def backends() -> Iterator[Callable[..., list[Backend]]]:
    """Start n backend subprocesses: backends(3, mode="echo") -> [Backend, ...]."""
    started: list[Backend] = []

    def start(n: int, mode: str = "http", prefix: str = "s", **kw: Any) -> list[Backend]:
        new = [
            Backend(f"{prefix}{len(started) + i + 1}", free_port(), mode, **kw) for i in range(n)
        ]
        for backend in new:
            started.append(backend.start())
        return new

    yield start
    for backend in started:
        backend.stop()


@pytest.fixture(params=["uvloop", "asyncio"])
def event_loop_name(request: pytest.FixtureRequest) -> str:
    """The pure data path is tested on both event loops."""
    return str(request.param)


@pytest.fixture
def loadstone(tmp_path: Path) -> Iterator[Callable[..., Loadstone]]:
    started: list[Loadstone] = []

    def start(config: dict[str, Any], wait: bool = True, **kw: Any) -> Loadstone:
        ls = Loadstone(tmp_path, config, **kw)
        started.append(ls)
        return ls.start(wait=wait)

    yield start
    for ls in started:
        ls.stop()


def listener_config(
    servers: list[Backend], port: int | None = None, **options: Any
) -> dict[str, Any]:
    """A one-listener configuration in front of `servers`."""
    listener: dict[str, Any] = {
        "bind": [f"127.0.0.1:{port or free_port()}"],
        "mode": "tcp",
        "balance": "roundrobin",
        "servers": [{"name": b.name, "address": b.address} for b in servers],
    }
    listener.update(options)
    return {
        "global": {"grace": "5s"},
        "defaults": {"timeouts": {"connect": "1s", "check": "500ms"}},
        "listeners": {"web": listener},
    }
