"""global.poll_spin: a native worker whose events come close together looks for
more before it sleeps (engine/worker.c poll_events), and one whose events are far
apart, or with the spin at 0, sleeps at once; the adaptive window of
LOADSTONE_POLL_SPIN=auto grows with short gaps and shrinks with long ones."""

from __future__ import annotations

import contextlib
import socket
import time
from collections.abc import Callable, Iterator
from typing import Any, NamedTuple

import pytest

from loadstone.config import ConfigError, parse_config
from tests.unit.test_fastpath import BASE, _relaying

relay = pytest.importorskip("loadstone._fastpath.relay", reason="native data path not built")
native = pytest.importorskip("loadstone.datapath.tcp_native")


@contextlib.contextmanager
def _relayed_exchange(engine: Any) -> Iterator[Callable[[int], None]]:
    """A listener of `engine` relaying to a test server; yields exchange(rounds):
    that many request/answer steps through one connection (opened by the first
    call), each step an event of the worker's."""
    backend = socket.create_server(("127.0.0.1", 0))
    front = socket.create_server(("127.0.0.1", 0))
    front.setblocking(False)
    with contextlib.ExitStack() as stack:
        stack.callback(backend.close)
        stack.callback(front.close)
        _relaying(engine, front, backend.getsockname()[1])
        pair: list[socket.socket] = []

        def exchange(rounds: int) -> None:
            if not pair:
                pair.append(
                    stack.enter_context(
                        socket.create_connection(front.getsockname()[:2], timeout=5)
                    )
                )
                pair.append(stack.enter_context(backend.accept()[0]))
                pair[1].settimeout(5)
            client, peer = pair
            for _ in range(rounds):
                client.sendall(b"ping")
                assert peer.recv(16) == b"ping"
                peer.sendall(b"pong")
                assert client.recv(16) == b"pong"

        yield exchange


def _ping_pong(spin: float, rounds: int) -> tuple[int, int, int]:
    """`rounds` request/answer exchanges through one relayed connection of an
    engine spinning `spin` seconds, each step an event of the worker's; returns
    the engine's poll counts taken meanwhile."""
    engine = relay.Engine(1, "auto")
    engine.set_poll_spin(spin)
    try:
        with _relayed_exchange(engine) as exchange:
            before = engine.poll_stats()
            exchange(rounds)
            after = engine.poll_stats()
    finally:
        engine.close()
    sleeps, spins, hits = (a - b for a, b in zip(after, before, strict=True))
    return sleeps, spins, hits


class SpinStats(NamedTuple):
    """Engine.spin_stats() over a stretch of exchanges (window_us: at its end)."""

    sleeps: int
    spins: int
    hits: int
    spun_us: int
    wasted_us: int
    grows: int
    shrinks: int
    window_us: int


def _exchange_until(
    engine: Any, exchange: Callable[[int], None], done: Callable[[SpinStats], bool]
) -> SpinStats:
    """Exchange in steps of 20 until `done` holds for the counts so far, or 5 s
    (then the caller's assertions fail): how often a worker sleeps, and how
    long, depends on the machine's load, not on a number of rounds."""
    before = engine.spin_stats()
    deadline = time.monotonic() + 5
    while True:
        exchange(20)
        now = engine.spin_stats()
        diff = (a - b for a, b in zip(now[:-1], before[:-1], strict=True))
        stats = SpinStats(*diff, now[-1])
        if done(stats) or time.monotonic() > deadline:
            return stats


def test_a_busy_worker_spins_and_its_spins_find_the_next_event() -> None:
    # The test answers each step within microseconds of the worker's last
    # event, far inside a 5 ms spin: a worker that never spins, or whose spins
    # never see an event, fails.
    _sleeps, spins, hits = _ping_pong(0.005, 200)
    assert spins > 0
    assert hits > 0
    assert hits <= spins


def test_no_spin_at_zero() -> None:
    sleeps, spins, hits = _ping_pong(0, 200)
    assert sleeps > 0  # it slept between the steps instead
    assert (spins, hits) == (0, 0)


def test_adaptive_window_grows_when_events_come_close() -> None:
    # The test answers each step within microseconds, far inside the 5 ms cap:
    # the sleeps end early, so the worker's window grows and its spins catch
    # events. A window that never grows, or spins that never see an event, fail.
    engine = relay.Engine(1, "auto")
    engine.set_poll_spin(0.005, adaptive=True)
    try:
        with _relayed_exchange(engine) as exchange:
            stats = _exchange_until(engine, exchange, lambda s: s.grows > 0 and s.hits > 0)
    finally:
        engine.close()
    assert stats.grows > 0
    assert 0 < stats.window_us <= 5000
    assert 0 < stats.hits <= stats.spins
    assert 0 <= stats.wasted_us <= stats.spun_us


def test_adaptive_window_shrinks_when_events_are_far_apart() -> None:
    # Grown under a 5 ms cap, then capped at 2 us: every gap of the test's
    # exchange is longer than that (a thread's wake-up alone takes longer), so
    # the worker's next sleeps halve the window to nothing.
    engine = relay.Engine(1, "auto")
    engine.set_poll_spin(0.005, adaptive=True)
    try:
        with _relayed_exchange(engine) as exchange:
            grown = _exchange_until(engine, exchange, lambda s: s.window_us > 2)
            engine.set_poll_spin(2e-6, adaptive=True)
            shrunk = _exchange_until(engine, exchange, lambda s: s.shrinks > 0)
    finally:
        engine.close()
    assert grown.window_us > 2
    assert shrunk.shrinks > 0
    assert shrunk.window_us <= 2


def test_adaptive_window_stays_shut_when_events_are_far_apart() -> None:
    # Capped at 1 us from the start: hardly a gap of the exchange is that short
    # (an event landing just as the worker goes to sleep), so the window seldom
    # opens, and the next longer gap shuts it again.
    engine = relay.Engine(1, "auto")
    engine.set_poll_spin(1e-6, adaptive=True)
    try:
        with _relayed_exchange(engine) as exchange:
            stats = _exchange_until(engine, exchange, lambda s: s.sleeps >= 50)
    finally:
        engine.close()
    assert stats.sleeps >= 50
    assert stats.grows <= stats.sleeps // 2
    assert stats.grows - stats.shrinks <= 1  # never left open for good
    assert stats.window_us <= 1


def test_engine_made_by_the_data_path_takes_global_poll_spin() -> None:
    # The configured value reaches the engine; a reload's new value too (the
    # same call, datapath.retune).
    native.set_poll_spin(0)
    try:
        assert native._poll_spin == 0
        native.set_poll_spin(30e-6)
        assert native._poll_spin == 30e-6
    finally:
        native.set_poll_spin(parse_config(BASE).global_.poll_spin)


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


def test_environment_asks_for_the_adaptive_window(monkeypatch: pytest.MonkeyPatch) -> None:
    # LOADSTONE_POLL_SPIN=auto[:CAP], the benchmarks' switch to the adaptive
    # window; a plain duration is the gated spin.
    monkeypatch.setenv("LOADSTONE_POLL_SPIN", "auto")
    assert (native._spin(0.0), native._adaptive(False)) == (native.AUTO_POLL_SPIN, True)
    monkeypatch.setenv("LOADSTONE_POLL_SPIN", "auto:30us")
    assert native._spin(0.0) == pytest.approx(30e-6)
    assert native._adaptive(False)
    monkeypatch.setenv("LOADSTONE_POLL_SPIN", "20us")
    assert not native._adaptive(True)
    monkeypatch.setenv("LOADSTONE_POLL_SPIN", "auto:soon")
    assert (native._spin(30e-6), native._adaptive(False)) == (30e-6, False)
