"""A Primary Component member's list of members takes out the monitored servers
missing from it (host death without a reset): the rule, its parsing, and the
scheduler acting on it over scripted probes. The real thing, a Galera node
frozen so that nothing resets, is tests/integration/galera/test_host_death.py."""

from __future__ import annotations

import socket

import pytest

from loadstone.checks.dialogue import Verdict
from loadstone.checks.galera_rules import WsrepPolicy, WsrepStatus, judge
from loadstone.checks.membership import endpoint, outside_component, parse_members
from loadstone.checks.probe import Probe
from loadstone.checks.scheduler import CheckScheduler
from loadstone.checks.sockopts import watch_for_silence
from loadstone.config.model import CheckConfig
from tests.unit.test_checks_scheduler import make_pool, until

A, B, C = ("10.0.0.0", 5000), ("10.0.0.1", 5000), ("10.0.0.2", 5000)
ALL = "10.0.0.0:5000,10.0.0.1:5000,10.0.0.2:5000"


def test_parse_members() -> None:
    assert parse_members(ALL, 3) == {A, B, C}
    assert parse_members("[fd00::0001]:3306,10.0.0.1:3306", 2) == {
        ("fd00::1", 3306),
        ("10.0.0.1", 3306),
    }


@pytest.mark.parametrize(
    ("text", "size"),
    [
        (None, 3),
        ("", 0),
        (ALL, None),
        (ALL, 4),  # the list and the size disagree: a member is still starting
        ("10.0.0.0:5000,AUTO:5000,10.0.0.2:5000", 3),
        ("10.0.0.0:5000,,10.0.0.2:5000", 3),
        ("10.0.0.0,10.0.0.1:5000", 2),  # no port
        ("10.0.0.0:5000,10.0.0.0:5000", 2),  # duplicates
    ],
)
def test_untrusted_lists_are_none(text: str | None, size: int | None) -> None:
    assert parse_members(text, size) is None


def test_outside_component() -> None:
    monitored = {"db1": A, "db2": B, "db3": C}
    assert outside_component(B, frozenset({B, C}), monitored) == ["db1"]
    assert outside_component(B, frozenset({A, B, C}), monitored) == []
    # The reporter is not in its own list: addresses not comparable, nobody out.
    assert outside_component(endpoint("db2.example", 5000), frozenset({B, C}), monitored) == []


def test_endpoint_normalises() -> None:
    assert endpoint("[FD00:0::1]", 1) == ("fd00::1", 1)
    assert endpoint("DB1", 1) == ("db1", 1)


def _status(incoming: str | None, size: int | None) -> WsrepStatus:
    rows = [
        ("WSREP_LOCAL_STATE", "4"),
        ("WSREP_CLUSTER_STATUS", "Primary"),
        ("WSREP_READY", "ON"),
        ("WSREP_CONNECTED", "ON"),
        ("WSREP_CLUSTER_SIZE", str(size)),
        ("WSREP_INCOMING_ADDRESSES", incoming),
    ]
    return WsrepStatus.from_rows(rows)


def test_status_carries_the_member_list() -> None:
    status = _status(ALL, 3)
    assert judge(status, WsrepPolicy()).ok
    assert parse_members(status.incoming_addresses, status.cluster_size) == {A, B, C}


class Member(Probe):
    """A Galera node as the scheduler sees it: a verdict with a member list."""

    def __init__(self, host: str) -> None:
        self.host = host
        self.members: frozenset[tuple[str, int]] | None = frozenset({A, B, C})
        self.ok = True

    async def check(self) -> Verdict:
        return Verdict(self.ok, "synced" if self.ok else "timeout", members=self.members)


async def test_scheduler_takes_out_a_server_missing_from_the_component() -> None:
    # fall 3 at a 30 s interval: without the member list, db1 would stay up.
    slow = CheckConfig(type="tcp", interval=0.02, rise=2, fall=3, timeout=0.5)
    pool = make_pool(slow, n=3)
    probes: dict[str, Member] = {}

    def factory(config: CheckConfig, host: str, port: int) -> Probe:
        probes[host] = Member(host)
        return probes[host]

    scheduler = CheckScheduler([pool], probes={"tcp": factory})
    scheduler.start()
    s0, s1, s2 = pool.servers
    try:
        await until(lambda: all(s.checks_total >= 2 for s in pool.servers), "checked")
        assert all(s.healthy for s in pool.servers)
        # s0's host vanishes: its own check would time out; s1 and s2 evicted it.
        probes["10.0.0.0"].ok = False
        probes["10.0.0.0"].members = None
        probes["10.0.0.1"].members = probes["10.0.0.2"].members = frozenset({B, C})
        await until(lambda: not s0.healthy, "s0 out")
        assert s0.checks_failed < 3  # not by fall: by its peers' report
        assert s0.check_detail.startswith("outside the primary component (per s")
        assert s1.healthy and s2.healthy
        # It comes back, rejoins: its own successes take it up, the list agrees.
        probes["10.0.0.0"].ok = True
        probes["10.0.0.0"].members = probes["10.0.0.1"].members = frozenset({A, B, C})
        probes["10.0.0.2"].members = frozenset({A, B, C})
        await until(lambda: s0.healthy, "s0 back")
    finally:
        await scheduler.stop()


def test_monitor_sockets_notice_silence() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        watch_for_silence(sock, 1.5)
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT) == 1500
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE) == 1
