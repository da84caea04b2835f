"""The Galera writer policy around the probe: immediate verdicts, start-up down,
the first writer waiting for earlier servers' first checks, the writer as a
fresh pick or a failover (for the peers), closed sessions, credentials and
error details. No MySQL server here (tests/integration/galera)."""

from __future__ import annotations

import asyncio
import errno
import time

import pymysql
import pytest

from loadstone.balance import active_backup
from loadstone.balance.active_backup import ActiveBackup
from loadstone.checks.credentials import read_password
from loadstone.checks.dialogue import Verdict
from loadstone.checks.galera import GaleraProbe
from loadstone.checks.mysql import MysqlProbe, verdict_for_error
from loadstone.checks.probe import Probe
from loadstone.checks.registry import PROBES, make_probe
from loadstone.checks.scheduler import CheckScheduler
from loadstone.checks.state import HealthCounter
from loadstone.config.model import Address, CheckConfig, ListenerConfig, ServerConfig
from loadstone.peers.agreement import writer_to_adopt
from loadstone.peers.channel import own_writer
from loadstone.peers.codec import Writer
from loadstone.server import Pool

GALERA = CheckConfig(type="galera", user="monitor")


class FakeSession:
    bytes_in = 0
    bytes_out = 0

    def __init__(self) -> None:
        self.closed: str | None = None

    def shutdown(self, reason: str) -> None:
        self.closed = reason


def make_pool(
    check: CheckConfig | None = GALERA,
    balance: str = "active-backup",
    names: tuple[str, ...] = ("db1", "db2", "db3"),
    on_marked_down: str = "none",
    backups: tuple[str, ...] = (),
) -> Pool:
    listener = ListenerConfig(
        name="galera",
        bind=(Address("127.0.0.1", 3306),),
        balance=balance,  # type: ignore[arg-type]
        check=check,
        on_marked_down=on_marked_down,  # type: ignore[arg-type]
        servers=tuple(
            ServerConfig(name=n, address=Address("127.0.0.1", 3306 + i), backup=n in backups)
            for i, n in enumerate(names)
        ),
    )
    return Pool(listener)


def report(pool: Pool, name: str, ok: bool, detail: str = "") -> None:
    """What the scheduler does with a check result (first results included)."""
    server = pool.by_name[name]
    server.check_status = "ok" if ok else "failed"
    pool.set_health(server, ok, detail)


# -- HealthCounter -----------------------------------------------------------------


def test_definitive_failure_takes_a_confirmed_server_down_at_once() -> None:
    counter = HealthCounter(2, 3, confirmed=True)
    assert counter.record(False) is None  # a timeout: fall applies
    assert counter.record(True) is None
    assert counter.record(False, definitive=True) is False
    assert not counter.healthy


def test_timeouts_still_need_fall() -> None:
    counter = HealthCounter(2, 3, confirmed=True)
    assert [counter.record(False) for _ in range(3)] == [None, None, False]


def test_definitive_does_not_shortcut_rise() -> None:
    counter = HealthCounter(2, 3, healthy=False, confirmed=True)
    assert [counter.record(True), counter.record(True)] == [None, True]


def test_down_unconfirmed_goes_up_on_first_success() -> None:
    counter = HealthCounter(2, 3, healthy=False, confirmed=False)
    assert counter.record(True) is True
    # Confirmed from now on: fall and rise apply again.
    assert [counter.record(False) for _ in range(3)] == [None, None, False]
    assert [counter.record(True), counter.record(True)] == [None, True]


def test_down_unconfirmed_stays_down_on_failure_then_needs_rise() -> None:
    counter = HealthCounter(2, 3, healthy=False, confirmed=False)
    assert counter.record(False) is None
    assert [counter.record(True), counter.record(True)] == [None, True]


# -- Pool: start-up state and shutdown-sessions --------------------------------------


def test_galera_servers_start_down_and_unchecked() -> None:
    pool = make_pool()
    assert [(s.state, s.check_status) for s in pool.servers] == [("down", "unchecked")] * 3
    assert pool.active is None and pool.pick(None) is None


def test_other_checks_still_start_up() -> None:
    pool = make_pool(CheckConfig(type="tcp"))
    assert [s.state for s in pool.servers] == ["up"] * 3
    assert pool.active is pool.by_name["db1"]


def test_unchecked_server_of_a_galera_listener_is_up() -> None:
    listener = ListenerConfig(
        name="g",
        bind=(Address("127.0.0.1", 3306),),
        balance="active-backup",
        check=GALERA,
        servers=(ServerConfig(name="db1", address=Address("127.0.0.1", 1), check=False),),
    )
    pool = Pool(listener)
    assert pool.servers[0].state == "up" and pool.active is pool.servers[0]


@pytest.mark.parametrize(
    ("balance", "on_marked_down", "closes"),
    [
        ("active-backup", "none", True),  # the writer policy implies it
        ("active-backup", "shutdown-sessions", True),
        ("roundrobin", "none", False),  # readers: on_marked_down as configured
        ("roundrobin", "shutdown-sessions", True),
    ],
)
def test_sessions_of_a_server_marked_down(balance: str, on_marked_down: str, closes: bool) -> None:
    pool = make_pool(balance=balance, on_marked_down=on_marked_down)
    report(pool, "db1", True, "synced")
    session = FakeSession()
    pool.by_name["db1"].session_started(session)
    report(pool, "db1", False, "desynced")
    assert (session.closed == "server marked down") is closes


def test_tcp_active_backup_without_on_marked_down_keeps_sessions() -> None:
    pool = make_pool(CheckConfig(type="tcp"))
    session = FakeSession()
    pool.by_name["db1"].session_started(session)
    pool.set_health(pool.by_name["db1"], False)
    assert session.closed is None


# -- the first writer ----------------------------------------------------------------


def test_first_writer_waits_for_earlier_servers() -> None:
    pool = make_pool()
    # db2's check answers first: no writer yet, db1 may still be eligible.
    report(pool, "db2", True, "synced")
    assert pool.active is None and pool.pick(None) is None
    report(pool, "db3", True, "synced")
    assert pool.active is None
    report(pool, "db1", True, "synced")
    assert pool.active is pool.by_name["db1"]


def test_first_writer_after_earlier_server_fails_its_first_check() -> None:
    pool = make_pool()
    report(pool, "db2", True, "synced")
    # db1 confirmed down: a first verdict that changes no health still settles.
    report(pool, "db1", False, "timeout")
    assert pool.active is pool.by_name["db2"]
    report(pool, "db1", True, "synced")  # back later: no failback
    report(pool, "db1", True, "synced")
    assert pool.active is pool.by_name["db2"]


def test_first_server_eligible_is_chosen_before_the_others_answer() -> None:
    pool = make_pool()
    report(pool, "db1", True, "synced")
    assert pool.active is pool.by_name["db1"]  # no need to wait for db2 and db3


def test_unchecked_later_server_does_not_block() -> None:
    pool = make_pool()
    report(pool, "db1", False, "connection refused")
    report(pool, "db2", True, "synced")
    assert pool.active is pool.by_name["db2"]  # db3 unchecked, but comes after


def test_server_in_maintenance_does_not_block() -> None:
    pool = make_pool()
    pool.set_admin(pool.by_name["db1"], "maint")
    report(pool, "db2", True, "synced")
    assert pool.active is pool.by_name["db2"]


def test_backup_servers_wait_for_every_non_backup() -> None:
    pool = make_pool(names=("db1", "bk", "db2"), backups=("bk",))
    report(pool, "bk", True, "synced")
    report(pool, "db1", False, "connection refused")
    assert pool.active is None  # db2, a non-backup, may still come
    report(pool, "db2", False, "non-primary")
    assert pool.active is pool.by_name["bk"]


@pytest.mark.parametrize(
    "order", [("db1", "db2", "db3"), ("db3", "db2", "db1"), ("db2", "db3", "db1")]
)
def test_same_writer_whatever_order_the_first_checks_answer(order: tuple[str, ...]) -> None:
    pool = make_pool()
    for name in order:
        report(pool, name, name != "db1", "x")
    assert pool.active is pool.by_name["db2"]


# -- the writer as a choice, for the peers' agreement (loadstone.peers) -----------------


class Clock:
    """time.time() for the balancer, moved by the test: picks made in one test
    are microseconds apart, and `since` must order them."""

    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def time(self) -> float:
        self.now += 1.0
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    clock = Clock()
    monkeypatch.setattr(active_backup, "time", clock)
    return clock


def all_up(pool: Pool) -> Pool:
    for name in pool.by_name:
        report(pool, name, True, "synced")
    return pool


def test_a_start_pick_is_fresh_and_a_failover_is_not(clock: Clock) -> None:
    pool = all_up(make_pool())
    started = own_writer(balancer(pool))
    assert started == Writer("db1", 0.0, started.since) and started.since > 0
    report(pool, "db1", False, "non-primary")
    moved = own_writer(balancer(pool))
    assert moved.server == "db2" and moved.chosen == moved.since > started.since


def test_a_pick_after_every_server_was_down_is_fresh(clock: Clock) -> None:
    pool = all_up(make_pool())
    for name in ("db1", "db2", "db3"):  # cut off: db1 first, so db2 and db3 were failovers
        report(pool, name, False, "timeout")
    assert pool.active is None
    report(pool, "db3", True, "synced")  # back: db3's check answers first
    back = own_writer(balancer(pool))
    assert back.server == "db3" and back.chosen == 0.0, back


def test_a_returning_site_joins_the_groups_writer_instead_of_moving_it(clock: Clock) -> None:
    # lb1 and lb2 lose every node while cut off; lb3 stays on db1. Back, their
    # checks rise in another order; the rule, applied both ways, leaves the
    # group on db1. (With "the newest choice wins" the group moved to db3.)
    group = {lb: all_up(make_pool()) for lb in ("lb1", "lb2", "lb3")}
    for lb in ("lb1", "lb2"):
        for name in ("db1", "db2", "db3"):
            report(group[lb], name, False, "timeout")
        for name in ("db3", "db2", "db1"):
            report(group[lb], name, True, "synced")
        assert group[lb].active is group[lb].by_name["db3"]
    for _ in range(2):  # every instance hears every other, twice
        for lb, pool in group.items():
            own = own_writer(balancer(pool))
            peers = [own_writer(balancer(p)) for other, p in group.items() if other != lb]
            chosen = writer_to_adopt(own, peers, [s.name for s in pool.servers if s.usable])
            if chosen is not None and chosen.server is not None:
                assert pool.adopt_active(chosen.server, chosen.chosen, chosen.since)
    assert {lb: p.active.name for lb, p in group.items() if p.active} == dict.fromkeys(group, "db1")


def balancer(pool: Pool) -> ActiveBackup:
    assert isinstance(pool.balancer, ActiveBackup)
    return pool.balancer


def test_readers_spread_as_soon_as_each_is_checked() -> None:
    pool = make_pool(balance="roundrobin")
    assert pool.pick(None) is None
    report(pool, "db2", True, "synced")
    assert pool.pick(None) is pool.by_name["db2"]
    report(pool, "db1", True, "synced")
    report(pool, "db3", True, "synced")
    assert {pool.pick(None).name for _ in range(6)} == {"db1", "db2", "db3"}  # type: ignore[union-attr]


# -- the scheduler: definitive verdicts and wake() -------------------------------------


class Scripted(Probe):
    """Answers from a list; the last answer repeats."""

    def __init__(self, answers: list[Verdict]) -> None:
        self.answers = answers
        self.checks = 0

    async def check(self) -> Verdict:
        self.checks += 1
        return self.answers[min(self.checks, len(self.answers)) - 1]


async def until(predicate: object, what: str, timeout: float = 3.0) -> float:
    start = time.monotonic()
    while not predicate():  # type: ignore[operator]
        if time.monotonic() - start > timeout:
            raise AssertionError(f"not {what} after {timeout}s")
        await asyncio.sleep(0.002)
    return time.monotonic() - start


async def test_definitive_verdict_takes_writer_out_in_one_check() -> None:
    check = CheckConfig(type="galera", user="m", interval=0.02, rise=2, fall=3)
    pool = make_pool(check, names=("db1", "db2"))
    probes = {
        "db1": Scripted([Verdict(True, "synced")] * 3 + [Verdict(False, "desynced", True)]),
        "db2": Scripted([Verdict(True, "synced")]),
    }
    registry = {"galera": lambda c, h, p: probes["db1" if p == 3306 else "db2"]}
    scheduler = CheckScheduler([pool], probes=registry)
    scheduler.start()
    try:
        await until(lambda: pool.active is pool.by_name["db1"], "db1 writer")
        await until(lambda: pool.active is pool.by_name["db2"], "db2 writer")
        # One failed check, not fall = 3.
        assert probes["db1"].checks == 4
        assert pool.by_name["db1"].check_detail == "desynced"
    finally:
        await scheduler.stop()


async def test_probe_wake_checks_at_once() -> None:
    check = CheckConfig(type="galera", user="m", interval=60, rise=1, fall=1)
    pool = make_pool(check, names=("db1",))
    probe = Scripted([Verdict(True, "synced"), Verdict(False, "connection refused", True)])
    scheduler = CheckScheduler([pool], probes={"galera": lambda c, h, p: probe})
    scheduler.start()
    try:
        await until(lambda: pool.active is not None, "db1 up")
        assert probe.wake is not None  # set by the scheduler
        probe.wake()  # what the Galera probe does when its kept connection drops
        took = await until(lambda: pool.active is None, "db1 down")
        assert took < 1.0  # not the 60 s interval
    finally:
        await scheduler.stop()


# -- credentials and details ----------------------------------------------------------


def test_password_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LS_TEST_PW", "s3cret")
    config = CheckConfig(type="galera", user="m", password_env="LS_TEST_PW")
    assert read_password(config) == "s3cret"


def test_password_env_missing_is_a_start_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LS_TEST_PW", raising=False)
    config = CheckConfig(type="galera", user="m", password_env="LS_TEST_PW")
    with pytest.raises(ValueError, match="LS_TEST_PW is not set"):
        make_probe(config, "127.0.0.1", 3306)


def test_password_file_strips_one_newline(tmp_path: object) -> None:
    from pathlib import Path

    path = Path(str(tmp_path)) / "pw"
    path.write_text("s3cret \n")
    config = CheckConfig(type="mysql", user="m", password_file=str(path))
    assert read_password(config) == "s3cret "
    with pytest.raises(ValueError, match="cannot read"):
        read_password(CheckConfig(type="mysql", user="m", password_file=str(path) + ".nope"))


def test_no_password_source_means_empty() -> None:
    assert read_password(CheckConfig(type="mysql", user="m")) == ""


def test_password_never_in_repr(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LS_TEST_PW", "s3cret")
    for kind in ("galera", "mysql"):
        config = CheckConfig(type=kind, user="monitor", password_env="LS_TEST_PW")  # type: ignore[arg-type]
        probe = make_probe(config, "127.0.0.1", 3306)
        assert isinstance(probe, GaleraProbe | MysqlProbe)
        assert "s3cret" not in repr(probe) and "monitor" in repr(probe)
        assert "s3cret" not in repr(config)


def test_registered() -> None:
    assert {"galera", "mysql"} <= set(PROBES)


def _refused() -> BaseException:
    exc = pymysql.err.OperationalError(2003, "Can't connect to MySQL server on '127.0.0.1'")
    exc.__cause__ = ConnectionRefusedError(errno.ECONNREFUSED, "Connection refused")
    return exc


@pytest.mark.parametrize(
    ("exc", "detail", "definitive"),
    [
        (_refused(), "connection refused", True),
        (
            pymysql.err.OperationalError(
                1045, "Access denied for user 'monitor'@'127.0.0.1' (using password: YES)"
            ),
            "access denied",
            True,
        ),
        (pymysql.err.OperationalError(1129, "Host is blocked"), "host blocked", True),
        (pymysql.err.OperationalError(1040, "Too many connections"), "too many connections", False),
        (pymysql.err.OperationalError(2013, "Lost connection"), "connection lost", False),
        (pymysql.err.OperationalError(1047, "WSREP has not yet prepared"), "not ready", True),
        (pymysql.err.OperationalError(1234, "whatever"), "mysql error 1234", False),
        (ConnectionResetError(errno.ECONNRESET, "reset"), "connection reset", False),
        (OSError(errno.EHOSTUNREACH, "No route to host"), "no route to host", True),
    ],
)
def test_error_details(exc: BaseException, detail: str, definitive: bool) -> None:
    assert verdict_for_error(exc) == Verdict(False, detail, definitive)


def test_access_denied_detail_carries_no_message_text() -> None:
    # The server's message names the user and host; the detail stays fixed.
    v = verdict_for_error(pymysql.err.OperationalError(1045, "Access denied for user 'x'"))
    assert v.detail == "access denied"
