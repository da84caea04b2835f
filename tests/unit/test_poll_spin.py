"""global.poll_spin: a native worker whose events come close together looks for
more before it sleeps (engine/worker.c poll_events), and one whose events are far
apart, or with the spin at 0, sleeps at once."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import pytest

from loadstone import datapath
from loadstone.config import ConfigError, parse_config
from loadstone.config.loader import load_config
from loadstone.runtime import Runtime
from tests.integration.harness import free_port
from tests.unit.test_fastpath import BASE, _relaying

relay = pytest.importorskip("loadstone._fastpath.relay", reason="native data path not built")
native = pytest.importorskip("loadstone.datapath.tcp_native")


def _ping_pong(spin: float, rounds: int) -> tuple[int, ...]:
    """`rounds` request/answer exchanges through one relayed connection of an
    engine spinning `spin` seconds, each step an event of the worker's; returns
    the engine's spin counts taken meanwhile (sleeps, spins, hits, spun_us,
    wasted_us)."""
    engine = relay.Engine(1, "auto")
    engine.set_poll_spin(spin)
    backend = socket.create_server(("127.0.0.1", 0))
    front = socket.create_server(("127.0.0.1", 0))
    front.setblocking(False)
    try:
        _relaying(engine, front, backend.getsockname()[1])
        before = engine.spin_stats()
        client = socket.create_connection(front.getsockname()[:2], timeout=5)
        peer, _ = backend.accept()
        with client, peer:
            peer.settimeout(5)
            for _ in range(rounds):
                client.sendall(b"ping")
                assert peer.recv(16) == b"ping"
                peer.sendall(b"pong")
                assert client.recv(16) == b"pong"
        after = engine.spin_stats()
    finally:
        front.close()
        backend.close()
        engine.close()
    return tuple(a - b for a, b in zip(after, before, strict=True))


def test_a_busy_worker_spins_and_its_spins_find_the_next_event() -> None:
    # The test answers each step within microseconds of the worker's last
    # event, far inside a 5 ms spin: a worker that never spins, or whose spins
    # never see an event, fails.
    _sleeps, spins, hits, spun_us, wasted_us = _ping_pong(0.005, 200)
    assert spins > 0
    assert hits > 0
    assert hits <= spins
    assert spun_us > 0  # the time spinning is counted, and that of spins in vain within it
    assert 0 <= wasted_us <= spun_us


def test_no_spin_at_zero() -> None:
    sleeps, spins, hits, spun_us, wasted_us = _ping_pong(0, 200)
    assert sleeps > 0  # it slept between the steps instead
    assert (spins, hits, spun_us, wasted_us) == (0, 0, 0, 0)


def _config_with_spin(spin: str, port: int) -> str:
    return (
        f"global:\n  poll_spin: {spin}\n"
        f"listeners:\n  web:\n    bind: ['127.0.0.1:{port}']\n"
        f"    servers: [{{name: a, address: '127.0.0.1:{port + 1}'}}]\n"
    )


def test_engine_made_by_the_data_path_takes_global_poll_spin(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The configured value reaches the engine; a reload's new value too (the
    # same call, datapath.retune).
    monkeypatch.delenv("LOADSTONE_POLL_SPIN", raising=False)  # it would override both
    native.set_poll_spin(0)
    try:
        assert native._poll_spin == 0
        native.set_poll_spin(30e-6)
        assert native._poll_spin == 30e-6
    finally:
        native.set_poll_spin(parse_config(BASE).global_.poll_spin)
    if datapath.NO_EXTENSIONS:
        return  # the pure path serves: no engine runs (test_fastpath checks the choice)

    # What the running engine's workers read (relay.Engine.poll_spin, the engine's
    # own field): a runtime started from a configuration with global.poll_spin,
    # then reloaded from one with another value.
    path = tmp_path / "loadstone.yaml"
    port = free_port()
    path.write_text(_config_with_spin("40us", port))

    async def start_and_reload() -> tuple[float, float, bool, bool]:
        runtime = Runtime(load_config(path), config_path=str(path))
        await runtime.start()
        try:
            engine = runtime.listeners["web"].frontend.engine  # type: ignore[attr-defined]
            started = engine.poll_spin
            path.write_text(_config_with_spin("250us", port))
            report = await runtime.reload()
            same = runtime.listeners["web"].frontend.engine is engine  # type: ignore[attr-defined]
            return started, engine.poll_spin, report.ok, same
        finally:
            await runtime.stop(0)

    try:
        started, reloaded, ok, same_engine = asyncio.run(start_and_reload())
    finally:
        native.set_poll_spin(parse_config(BASE).global_.poll_spin)
    assert (started, reloaded, ok, same_engine) == (40e-6, 250e-6, True, True)


@pytest.mark.parametrize(("text", "seconds"), [("30us", 30e-6), ("0", 0.0), ("1ms", 0.001)])
def test_poll_spin_option(text: str, seconds: float) -> None:
    config = parse_config(f"global:\n  poll_spin: {text}\n{BASE}")
    assert config.global_.poll_spin == pytest.approx(seconds)


def test_poll_spin_default_and_bad_values() -> None:
    assert parse_config(BASE).global_.poll_spin == 0.0  # off unless asked for
    with pytest.raises(ConfigError) as err:
        parse_config(f"global:\n  poll_spin: -1us\n{BASE}")
    assert err.value.problems[0].startswith("global.poll_spin:")


def test_environment_overrides_poll_spin(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOADSTONE_POLL_SPIN", "0")
    assert native._spin(30e-6) == 0.0
    monkeypatch.setenv("LOADSTONE_POLL_SPIN", "50us")
    assert native._spin(30e-6) == pytest.approx(50e-6)
    monkeypatch.setenv("LOADSTONE_POLL_SPIN", "soon")
    assert native._spin(30e-6) == 30e-6  # not a duration: the configured value, warned


def test_the_native_spin_budget_holds_in_the_dearest_case() -> None:
    # engine/spin_selftest.c plays out, without a clock, a worker that spins
    # its whole window after every round and never finds an event: it must
    # spin at most a quarter of its rounds' time plus four spins (and use
    # that much). With the budget gone (a window of the whole spin every
    # time, or spins not paid from the credit) it spins 30,000 us where the
    # budget is 2,120, and this fails.
    assert relay.spin_selftest() is None
