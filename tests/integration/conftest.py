from __future__ import annotations

import importlib.util
import resource
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.harness import Backend, Loadstone, free_port, start_backends, stop_backends


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
        started.extend(new)  # stopped at the end even if one fails to start
        return start_backends(new)

    yield start
    stop_backends(started)


@pytest.fixture(params=["uvloop", "asyncio"])
def event_loop_name(request: pytest.FixtureRequest) -> str:
    """The pure data path is tested on both event loops."""
    return str(request.param)


NATIVE_BUILT = importlib.util.find_spec("loadstone._fastpath.relay") is not None


@pytest.fixture(params=["native", "pure"])
def datapath(request: pytest.FixtureRequest) -> str:
    """The tcp- and http-mode suites run on both data paths; a test module opts in with
    `pytest.mark.usefixtures("datapath")` and the `loadstone` fixture then starts
    the proxy on that path (LOADSTONE_NO_EXTENSIONS in its environment)."""
    if request.param == "native" and not NATIVE_BUILT:
        pytest.skip("the native data path is not built here")
    return str(request.param)


@pytest.fixture
def loadstone(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Callable[..., Loadstone]]:
    started: list[Loadstone] = []
    path = request.getfixturevalue("datapath") if "datapath" in request.fixturenames else None

    def start(config: dict[str, Any], wait: bool = True, **kw: Any) -> Loadstone:
        if path is not None:
            env = dict(kw.pop("env", None) or {})
            env["LOADSTONE_NO_EXTENSIONS"] = "1" if path == "pure" else "0"
            kw["env"] = env
        ls = Loadstone(tmp_path, config, **kw)
        started.append(ls)
        ls.start(wait=wait)
        if wait and path is not None:
            status = ls.status()
            assert status["datapath"] == path
            for listener in status["listeners"].values():
                if listener["mode"] == "http":
                    # An http listener is native unless it uses what only the pure
                    # HTTP path implements (cookies, routing, header rules...).
                    native = path == "native" and "not implemented" not in str(
                        listener.get("data_path_reason")
                    )
                    assert listener["data_path"] == ("native" if native else "pure"), listener
        return ls

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
