"""The check scheduler over scripted probes: no network, short intervals."""

from __future__ import annotations

import asyncio
import itertools
import logging
import threading
import time
from collections.abc import Callable, Iterable

import pytest

from loadstone.balance.base import Balancer
from loadstone.checks.dialogue import Verdict
from loadstone.checks.probe import Probe, ProbeFactory
from loadstone.checks.scheduler import CheckScheduler
from loadstone.config.model import Address, CheckConfig, ListenerConfig, ServerConfig, Timeouts
from loadstone.server import Pool, ServerRuntime


class FirstUsable(Balancer):
    def pick(
        self, client_ip: str | None, exclude: Iterable[ServerRuntime] = ()
    ) -> ServerRuntime | None:  # pragma: no cover - no traffic here
        return next(iter(self.candidates), None)


class Switch(Probe):
    """Answers `ok`; records when it was called; may raise or hang."""

    def __init__(self, host: str) -> None:
        self.host = host
        self.ok = True
        self.error: Exception | None = None
        self.calls: list[float] = []
        self.closed = False

    async def check(self) -> Verdict:
        self.calls.append(time.monotonic())
        if self.error is not None:
            raise self.error
        return Verdict(self.ok, "fine" if self.ok else "broken")

    async def close(self) -> None:
        self.closed = True


class Probes:
    """A registry handing out Switch probes, kept by host for the test to flip."""

    def __init__(self) -> None:
        self.by_host: dict[str, Switch] = {}
        self.made: list[tuple[CheckConfig, str, int]] = []

    def factory(self, config: CheckConfig, host: str, port: int) -> Probe:
        probe = self.by_host[host] = Switch(host)
        self.made.append((config, host, port))
        return probe

    @property
    def registry(self) -> dict[str, ProbeFactory]:
        return {"tcp": self.factory, "http": self.factory}


def make_pool(
    check: CheckConfig | None,
    n: int = 1,
    name: str = "api",
    unchecked: tuple[int, ...] = (),
    timeouts: Timeouts | None = None,
) -> Pool:
    servers = tuple(
        ServerConfig(name=f"s{i}", address=Address(f"10.0.0.{i}", 5000), check=i not in unchecked)
        for i in range(n)
    )
    listener = ListenerConfig(
        name=name,
        bind=(Address("127.0.0.1", 0),),
        check=check,
        servers=servers,
        timeouts=timeouts or Timeouts(),
    )
    return Pool(listener, balancer_factory=FirstUsable)


async def until(predicate: Callable[[], bool], what: str, timeout: float = 3.0) -> float:
    start = time.monotonic()
    while not predicate():
        if time.monotonic() - start > timeout:
            raise AssertionError(f"not {what} after {timeout}s")
        await asyncio.sleep(0.002)
    return time.monotonic() - start


FAST = CheckConfig(type="tcp", interval=0.01, rise=2, fall=3, timeout=0.5)
SLOW = CheckConfig(type="tcp", interval=30.0, rise=1, fall=1, timeout=0.5)


@pytest.fixture
def probes() -> Probes:
    return Probes()


async def test_first_result_is_published(probes: Probes) -> None:
    pool = make_pool(SLOW)
    server = pool.servers[0]
    assert server.check_status == "unchecked"
    scheduler = CheckScheduler([pool], probes=probes.registry)
    scheduler.start()
    try:
        await until(lambda: server.checks_total == 1, "checked")
        assert (server.check_status, server.check_detail, server.healthy) == ("ok", "fine", True)
        assert server.checks_failed == 0
        assert server.check_duration >= 0
    finally:
        await scheduler.stop()
    assert probes.by_host["10.0.0.0"].closed


async def test_fall_and_rise(probes: Probes) -> None:
    pool = make_pool(FAST)
    server = pool.servers[0]
    seen: list[tuple[bool, int, int]] = []
    pool.subscribe(
        lambda _p, s: seen.append((s.healthy, s.checks_total, s.checks_failed)) if s else None
    )
    scheduler = CheckScheduler([pool], probes=probes.registry)
    scheduler.start()
    probe = probes.by_host["10.0.0.0"]
    try:
        await until(lambda: server.checks_total >= 2, "checked twice")
        probe.ok = False
        await until(lambda: not server.healthy, "down")
        healthy, total, failed = seen[-1]
        assert (healthy, failed) == (False, 3)  # confirmed: fall failures
        assert server.check_detail == "broken"
        probe.ok = True
        await until(lambda: server.healthy, "up")
        healthy, total_up, failed_up = seen[-1]
        assert healthy
        assert (total_up - total, failed_up) == (2, 3)  # rise successes, no failure between
    finally:
        await scheduler.stop()


async def test_probe_exception_is_a_failed_check(probes: Probes) -> None:
    pool = make_pool(FAST)
    server = pool.servers[0]
    scheduler = CheckScheduler([pool], probes=probes.registry)
    probes.by_host["10.0.0.0"].error = RuntimeError("boom")
    scheduler.start()
    try:
        await until(lambda: server.checks_total >= 3, "still checking after errors")
        assert (server.check_status, server.check_detail) == ("failed", "RuntimeError: boom")
        assert not server.healthy
    finally:
        await scheduler.stop()


async def test_subscriber_error_does_not_stop_checks(
    probes: Probes, caplog: pytest.LogCaptureFixture
) -> None:
    pool = make_pool(FAST)
    server = pool.servers[0]

    def broken_subscriber(_pool: Pool, _server: ServerRuntime | None) -> None:
        raise RuntimeError("subscriber bug")

    pool.subscribe(broken_subscriber)
    scheduler = CheckScheduler([pool], probes=probes.registry)
    probes.by_host["10.0.0.0"].ok = False  # the first failure changes health
    with caplog.at_level(logging.ERROR, logger="loadstone.checks"):
        scheduler.start()
        try:
            await until(lambda: server.checks_total >= 3, "still checking")
        finally:
            await scheduler.stop()
    assert "health check of api/s0 failed unexpectedly" in caplog.text


async def test_trigger_checks_now_and_is_rate_limited(probes: Probes) -> None:
    pool = make_pool(SLOW)
    server = pool.servers[0]
    scheduler = CheckScheduler([pool], probes=probes.registry, retrigger_interval=30.0)
    scheduler.start()
    try:
        await until(lambda: server.checks_total == 1, "checked once")
        pool.connect_failed(server)  # the data path's report
        assert scheduler.checks[server].triggered
        await until(lambda: server.checks_total == 2, "re-checked", timeout=1.0)
        assert not scheduler.checks[server].triggered
        pool.connect_failed(server)  # within the rate limit: ignored
        assert not scheduler.checks[server].triggered
        assert server.connect_errors == 2
    finally:
        await scheduler.stop()


async def test_trigger_from_another_thread(probes: Probes) -> None:
    pool = make_pool(SLOW)
    server = pool.servers[0]
    scheduler = CheckScheduler([pool], probes=probes.registry)
    scheduler.start()
    try:
        await until(lambda: server.checks_total == 1, "checked once")
        thread = threading.Thread(target=scheduler.trigger, args=(server,))
        thread.start()
        thread.join()
        await until(lambda: server.checks_total == 2, "re-checked", timeout=1.0)
    finally:
        await scheduler.stop()


async def test_trigger_is_harmless_when_not_running(probes: Probes) -> None:
    pool = make_pool(SLOW)
    scheduler = CheckScheduler([pool], probes=probes.registry)
    scheduler.trigger(pool.servers[0])  # not started
    stranger = make_pool(SLOW, name="other").servers[0]
    scheduler.start()
    scheduler.trigger(stranger)  # not one of ours
    await scheduler.stop()
    scheduler.trigger(pool.servers[0])  # stopped


async def test_connect_failure_hook_is_set_and_cleared(probes: Probes) -> None:
    checked, unchecked = make_pool(SLOW), make_pool(None, name="plain")
    scheduler = CheckScheduler([checked, unchecked], probes=probes.registry)
    scheduler.start()
    assert checked.on_connect_failure == scheduler.trigger
    assert unchecked.on_connect_failure is None
    await scheduler.stop()
    assert checked.on_connect_failure is None
    await scheduler.stop()  # idempotent


async def test_start_twice_is_an_error(probes: Probes) -> None:
    scheduler = CheckScheduler([make_pool(SLOW)], probes=probes.registry)
    scheduler.start()
    try:
        with pytest.raises(RuntimeError, match="already started"):
            scheduler.start()
    finally:
        await scheduler.stop()


def test_only_checked_servers_get_a_check(probes: Probes) -> None:
    checked = make_pool(SLOW, n=3, unchecked=(1,))
    plain = make_pool(None, n=2, name="plain")
    scheduler = CheckScheduler([checked, plain], probes=probes.registry)
    assert [s.name for s in scheduler.checks] == ["s0", "s2"]
    assert checked.servers[1].check_status == "disabled"
    assert [s.check_status for s in plain.servers] == ["disabled", "disabled"]


def test_unimplemented_type_names_the_listener() -> None:
    pool = make_pool(CheckConfig(type="galera", user="monitor"), name="galera")
    # An empty registry: every type is unimplemented, whichever probes exist today.
    with pytest.raises(NotImplementedError, match="listener galera: check type 'galera'"):
        CheckScheduler([pool], probes={})


def test_invalid_http_config_names_the_listener() -> None:
    pool = make_pool(CheckConfig(type="http", path="/a\r\nb"), name="keystone")
    with pytest.raises(ValueError, match="listener keystone: check path"):
        CheckScheduler([pool])


def test_timeout_comes_from_check_then_listener(probes: Probes) -> None:
    own = make_pool(CheckConfig(timeout=0.3), timeouts=Timeouts(check=4.0))
    inherited = make_pool(CheckConfig(), name="b", timeouts=Timeouts(check=4.0))
    scheduler = CheckScheduler([own, inherited], probes=probes.registry)
    assert scheduler.checks[own.servers[0]].timeout == 0.3
    assert scheduler.checks[inherited.servers[0]].timeout == 4.0


def test_counter_starts_from_server_state(probes: Probes) -> None:
    # A ServerRuntime carried over a reload keeps its health.
    pool = make_pool(FAST, n=2)
    pool.servers[0].healthy = False
    pool.servers[0].check_status = "failed"
    scheduler = CheckScheduler([pool], probes=probes.registry)
    down, fresh = (scheduler.checks[s].counter for s in pool.servers)
    assert (down.healthy, down.confirmed) == (False, True)
    assert (fresh.healthy, fresh.confirmed) == (True, False)


async def test_first_checks_are_spread_over_one_second(probes: Probes) -> None:
    pool = make_pool(SLOW, n=5)
    scheduler = CheckScheduler([pool], probes=probes.registry)
    start = time.monotonic()
    scheduler.start()
    try:
        await until(lambda: all(s.checks_total == 1 for s in pool.servers), "all checked")
    finally:
        await scheduler.stop()
    firsts = sorted(p.calls[0] - start for p in probes.by_host.values())
    # Delays 0, 0.2, ..., 0.8 s: prompt, spread, and within a second despite the 30 s interval.
    assert firsts[0] < 0.1
    assert 0.7 <= firsts[-1] - firsts[0] < 1.2
    assert all(b - a >= 0.15 for a, b in itertools.pairwise(firsts))


async def test_first_checks_spread_within_a_short_interval(probes: Probes) -> None:
    check = CheckConfig(type="tcp", interval=0.2, rise=1, fall=1)
    pool = make_pool(check, n=4)
    scheduler = CheckScheduler([pool], probes=probes.registry)
    start = time.monotonic()
    scheduler.start()
    try:
        await until(lambda: all(s.checks_total >= 1 for s in pool.servers), "all checked")
    finally:
        await scheduler.stop()
    firsts = sorted(p.calls[0] - start for p in probes.by_host.values())
    assert firsts[-1] < 0.2 + 0.1  # within the interval (delays 0, 0.05, 0.1, 0.15)


def test_probes_what_the_data_path_connects_to(probes: Probes) -> None:
    # The runtime resolved "ctl1.example" once at start-up; the probe must check
    # that address, on the check port, and name the server in the Host header.
    check = CheckConfig(type="http", port=9200)
    pool = make_pool(check, n=2)
    named = pool.servers[0]
    named.address = Address("ctl1.example", 5000)
    named.connect_host = "10.0.0.11"
    CheckScheduler([pool], probes=probes.registry)
    (named_config, host, port), (plain_config, plain_host, _) = probes.made
    assert (host, port, named_config.host) == ("10.0.0.11", 9200, "ctl1.example:9200")
    assert (plain_host, plain_config) == ("10.0.0.1", check)  # an IP: config untouched
