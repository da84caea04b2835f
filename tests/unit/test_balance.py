"""Balancing algorithms, driven through Pool as the checkers and admin API drive them."""

from __future__ import annotations

import itertools
import json
import os
import random
import subprocess
import sys
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from typing import get_args

import pytest

from loadstone.balance import BALANCERS, make_balancer
from loadstone.balance.active_backup import ActiveBackup
from loadstone.balance.base import Balancer
from loadstone.balance.first import First
from loadstone.balance.leastconn import LeastConn
from loadstone.balance.roundrobin import RoundRobin
from loadstone.balance.source import SourceHash
from loadstone.config.model import Address, Balance, ListenerConfig, ServerConfig
from loadstone.server import Pool, ServerRuntime

NAMES = "abcdefghij"


class FakeSession:
    bytes_in = 0
    bytes_out = 0

    def shutdown(self, reason: str) -> None:
        pass


def server(
    name: str, weight: int = 1, backup: bool = False, maxconn: int | None = None
) -> ServerConfig:
    return ServerConfig(
        name=name,
        address=Address(f"{name}.example.test", 8080),
        weight=weight,
        backup=backup,
        maxconn=maxconn,
    )


def pool(balance: str, *servers: ServerConfig) -> Pool:
    listener = ListenerConfig(
        name="test",
        bind=(Address("127.0.0.1", 5000),),
        balance=balance,  # type: ignore[arg-type]
        servers=servers,
    )
    return Pool(listener)


def weighted(balance: str, weights: Sequence[int]) -> Pool:
    return pool(balance, *(server(NAMES[i], w) for i, w in enumerate(weights)))


def names(p: Pool, n: int, client_ip: str | None = None) -> list[str]:
    out = []
    for _ in range(n):
        s = p.pick(client_ip)
        out.append(s.name if s is not None else "-")
    return out


def hold(p: Pool, n: int) -> Counter[str]:
    """Pick n times, each pick opening a session that stays open."""
    counts: Counter[str] = Counter()
    for _ in range(n):
        s = p.pick(None)
        assert s is not None
        s.session_started(FakeSession())
        counts[s.name] += 1
    return counts


def open_sessions(s: ServerRuntime, n: int) -> list[FakeSession]:
    sessions = [FakeSession() for _ in range(n)]
    for session in sessions:
        s.session_started(session)
    return sessions


def random_ips(n: int, seed: int = 1) -> list[str]:
    rng = random.Random(seed)
    v4 = [
        f"{rng.randrange(1, 224)}.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(1, 255)}"
        for _ in range(n // 2)
    ]
    v6 = [
        f"2001:db8:{rng.randrange(65536):x}::{rng.randrange(1, 65536):x}" for _ in range(n - n // 2)
    ]
    return v4 + v6


def mapping(p: Pool, ips: Sequence[str]) -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for ip in ips:
        s = p.pick(ip)
        out[ip] = s.name if s is not None else None
    return out


def max_run(seq: Sequence[str]) -> int:
    return max(len(list(g)) for _, g in itertools.groupby(seq))


# -- make_balancer -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("balance", "cls"),
    [
        ("roundrobin", RoundRobin),
        ("leastconn", LeastConn),
        ("source", SourceHash),
        ("first", First),
        ("active-backup", ActiveBackup),
    ],
)
def test_make_balancer(balance: str, cls: type[Balancer]) -> None:
    p = pool(balance, server("a"), server("b"))
    assert type(p.balancer) is cls
    assert p.balancer.name == balance
    assert type(make_balancer(balance, p.servers)) is cls


def test_every_configurable_balance_has_a_balancer() -> None:
    assert set(BALANCERS) == set(get_args(Balance))


ALL = ["roundrobin", "leastconn", "source", "first", "active-backup"]


@pytest.mark.parametrize("balance", ALL)
def test_no_server_gives_none(balance: str) -> None:
    p = pool(balance)
    assert p.pick("192.0.2.1") is None
    assert p.pick(None) is None


@pytest.mark.parametrize("balance", ALL)
@pytest.mark.parametrize("how", ["down", "maint", "drain"])
def test_all_unusable_gives_none_then_recovers(balance: str, how: str) -> None:
    p = pool(balance, server("a"), server("b"), server("c", backup=True))
    for s in p.servers:
        if how == "down":
            p.set_health(s, False)
        else:
            p.set_admin(s, how)  # type: ignore[arg-type]
    assert p.pick("192.0.2.1") is None
    assert p.pick(None) is None
    if how == "down":
        p.set_health(p.by_name["b"], True)
    else:
        p.set_admin(p.by_name["b"], "ready")
    assert p.pick("192.0.2.1") is p.by_name["b"]
    assert p.pick(None) is p.by_name["b"]


@pytest.mark.parametrize("balance", ["roundrobin", "leastconn", "source", "first"])
def test_backups_only_when_all_primaries_down(balance: str) -> None:
    p = pool(
        balance,
        server("a"),
        server("b"),
        server("x", backup=True),
        server("y", backup=True),
    )
    ips = random_ips(200)
    used = set(mapping(p, ips).values())
    assert used <= {"a", "b"}
    p.set_health(p.by_name["a"], False)
    assert set(mapping(p, ips).values()) == {"b"}
    p.set_admin(p.by_name["b"], "maint")
    used = set(mapping(p, ips).values())
    # `first` fills x before y by design; the others share over both backups.
    assert used == ({"x"} if balance == "first" else {"x", "y"})
    p.set_health(p.by_name["x"], False)
    assert set(mapping(p, ips).values()) == {"y"}
    p.set_admin(p.by_name["b"], "ready")
    assert set(mapping(p, ips).values()) == {"b"}


@pytest.mark.parametrize("balance", ALL)
def test_all_excluded_retries_rather_than_gives_up(balance: str) -> None:
    # The data path passes the servers whose connect failed; with none other
    # left it must get one of them back to spend its remaining retries on
    # (HAProxy retries the same server), not "no server".
    p = pool(balance, server("a"), server("b"))
    a, b = p.servers
    p.set_health(b, False)
    assert p.pick("192.0.2.1", [a]) is a
    assert p.pick(None, (a,)) is a
    p.set_health(b, True)
    assert p.pick("192.0.2.1", [a, b]) is not None


# -- roundrobin ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "weights", [(1,), (1, 1), (1, 1, 1), (5, 1, 1), (3, 2), (1, 2, 3, 4), (256, 1), (7, 3, 0, 2)]
)
@pytest.mark.parametrize("cycles", [1, 3])
def test_rr_exactly_proportional(weights: tuple[int, ...], cycles: int) -> None:
    p = weighted("roundrobin", weights)
    total = sum(weights)
    picks = names(p, total * cycles)
    assert Counter(picks) == {NAMES[i]: w * cycles for i, w in enumerate(weights) if w}
    # Every full cycle is exact on its own, not just the sum.
    for c in range(cycles):
        window = Counter(picks[c * total : (c + 1) * total])
        assert window == {NAMES[i]: w for i, w in enumerate(weights) if w}


def test_rr_smooth_like_nginx() -> None:
    p = weighted("roundrobin", (5, 1, 1))
    assert names(p, 14) == list("aabacaa" * 2)


@pytest.mark.parametrize(("weights", "longest"), [((5, 1, 1), 4), ((3, 1), 3), ((2, 2), 1)])
def test_rr_no_bursts(weights: tuple[int, ...], longest: int) -> None:
    # 5,1,1 repeats a a b a c a a, so across a cycle boundary 'a' runs 4 long,
    # never 5; equal weights strictly alternate.
    p = weighted("roundrobin", weights)
    assert max_run(names(p, sum(weights) * 10)) == longest


def test_rr_equal_weights_alternate() -> None:
    p = weighted("roundrobin", (1, 1, 1))
    assert names(p, 7) == list("abcabca")


@pytest.mark.parametrize("balance", ["roundrobin", "leastconn", "source"])
def test_weight_zero_gets_nothing(balance: str) -> None:
    p = weighted(balance, (0, 2, 0, 1))
    got: Counter[str] = Counter()
    for ip in random_ips(600):
        s = p.pick(ip)
        assert s is not None
        s.session_started(FakeSession())  # so that leastconn spreads too
        got[s.name] += 1
    assert set(got) == {"b", "d"}
    assert set(hold(p, 30)) == {"b", "d"}


@pytest.mark.parametrize("balance", ["roundrobin", "leastconn", "source"])
def test_all_weights_zero_gives_none(balance: str) -> None:
    p = weighted(balance, (0, 0))
    assert p.pick("192.0.2.1") is None
    assert p.pick(None) is None


def test_rr_down_and_up() -> None:
    p = weighted("roundrobin", (2, 1, 1))
    b = p.by_name["b"]
    p.set_health(b, False)
    assert Counter(names(p, 30)) == {"a": 20, "c": 10}
    p.set_health(b, True)
    assert Counter(names(p, 400)) == pytest.approx({"a": 200, "b": 100, "c": 100}, abs=2)


def test_rr_drain_stops_new_sessions() -> None:
    p = weighted("roundrobin", (1, 1))
    p.set_admin(p.by_name["a"], "drain")
    assert set(names(p, 10)) == {"b"}


def test_rr_set_weight_applies() -> None:
    p = weighted("roundrobin", (1, 1))
    p.set_weight(p.by_name["a"], 3)
    assert Counter(names(p, 400)) == pytest.approx({"a": 300, "b": 100}, abs=2)
    p.set_weight(p.by_name["a"], 0)
    assert set(names(p, 10)) == {"b"}


def test_rr_state_persists_across_refresh() -> None:
    plain = weighted("roundrobin", (5, 1, 1))
    refreshed = pool(
        "roundrobin",
        server("a", 5),
        server("b", 1),
        server("c", 1),
        server("z", 0),  # flips of these two must not disturb the sequence
        server("y", 1, backup=True),
    )
    expected = names(plain, 35)
    got = []
    for i in range(35):
        refreshed.balancer.refresh()
        flip = refreshed.by_name["z" if i % 2 else "y"]
        refreshed.set_health(flip, not flip.healthy)
        got.extend(names(refreshed, 1))
    assert got == expected


def test_rr_stays_proportional_after_churn() -> None:
    # Values carried over while others come and go must not bias the long run.
    p = weighted("roundrobin", (4, 3, 2, 1))
    rng = random.Random(7)
    for _ in range(500):
        s = p.servers[rng.randrange(4)]
        p.set_health(s, not s.healthy)
        names(p, rng.randrange(5))
    for s in p.servers:
        p.set_health(s, True)
    counts = Counter(names(p, 1000))
    assert counts == pytest.approx({"a": 400, "b": 300, "c": 200, "d": 100}, abs=4)


@pytest.mark.parametrize("as_type", [tuple, list, set, frozenset, iter])
def test_rr_exclude(as_type: type) -> None:
    p = weighted("roundrobin", (1, 1, 1))
    a, b, c = p.servers
    for _ in range(10):
        assert p.pick(None, as_type([a])) in (b, c)
    assert p.pick(None, as_type([a, c])) is b
    # All excluded: the turn it would have had anyway (see test_all_excluded_retries...).
    assert p.pick(None, as_type([a, b, c])) is a


def test_rr_exclude_keeps_proportions() -> None:
    # A redispatch to another server must not push the excluded one's turn away
    # for good: it still gets its share afterwards.
    p = weighted("roundrobin", (1, 1))
    a, b = p.servers
    assert p.pick(None, (a,)) is b
    assert Counter(names(p, 100)) == {"a": 50, "b": 50}


# -- leastconn -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("sessions", "expected"),
    [((3, 1, 2), "b"), ((0, 5, 5), "a"), ((4, 4, 0), "c"), ((10, 9, 10), "b")],
)
def test_lc_picks_least_loaded(sessions: tuple[int, ...], expected: str) -> None:
    p = weighted("leastconn", (1,) * len(sessions))
    for s, n in zip(p.servers, sessions, strict=True):
        open_sessions(s, n)
    assert names(p, 3) == [expected] * 3


@pytest.mark.parametrize("n", [2, 3, 5])
def test_lc_ties_alternate(n: int) -> None:
    p = weighted("leastconn", (1,) * n)
    # No session registered between picks: a burst of connections still spreads.
    assert names(p, 3 * n) == list(NAMES[:n] * 3)


def test_lc_ties_alternate_among_least_only() -> None:
    p = weighted("leastconn", (1, 1, 1, 1))
    open_sessions(p.by_name["b"], 2)
    assert names(p, 6) == list("acdacd")


@pytest.mark.parametrize("weights", [(3, 1), (1, 2, 3), (5, 1, 1), (2, 2)])
def test_lc_respects_weights(weights: tuple[int, ...]) -> None:
    p = weighted("leastconn", weights)
    k = 10
    assert hold(p, sum(weights) * k) == {NAMES[i]: w * k for i, w in enumerate(weights)}


@pytest.mark.parametrize(
    ("weights", "sessions", "expected"),
    [
        # load after taking the session: a (4+1)/2=2.5, b (2+1)/1=3
        ((2, 1), (4, 2), "a"),
        # a (6+1)/2=3.5, b (2+1)/1=3
        ((2, 1), (6, 2), "b"),
        # idle: the heavier server first
        ((1, 3), (0, 0), "b"),
    ],
)
def test_lc_weighted_choice(
    weights: tuple[int, ...], sessions: tuple[int, ...], expected: str
) -> None:
    p = weighted("leastconn", weights)
    for s, n in zip(p.servers, sessions, strict=True):
        open_sessions(s, n)
    assert p.pick(None) is p.by_name[expected]


def test_lc_follows_sessions_ending() -> None:
    p = weighted("leastconn", (1, 1))
    a, b = p.servers
    opened = open_sessions(a, 3)
    open_sessions(b, 2)
    assert p.pick(None) is b
    for session in opened[:2]:
        a.session_ended(session)
    assert p.pick(None) is a


def test_lc_exclude() -> None:
    p = weighted("leastconn", (1, 1, 1))
    a, b, c = p.servers
    open_sessions(b, 1)
    open_sessions(c, 2)
    assert p.pick(None, (a,)) is b
    assert p.pick(None, [a, b]) is c
    assert p.pick(None, {a, b, c}) is a


def test_lc_down_server_skipped_then_back() -> None:
    p = weighted("leastconn", (1, 1, 1))
    p.set_health(p.by_name["b"], False)
    assert names(p, 4) == list("acac")
    p.set_health(p.by_name["b"], True)
    assert sorted(names(p, 3)) == ["a", "b", "c"]


# -- source --------------------------------------------------------------------------


def test_source_same_ip_same_server() -> None:
    p = weighted("source", (1, 1, 1, 1))
    for ip in random_ips(500):
        first = p.pick(ip)
        assert first is not None
        assert all(p.pick(ip) is first for _ in range(3))


@pytest.mark.parametrize(
    "weights", [(1, 1, 1, 1, 1), (1, 2, 3), (3, 1), (10, 10, 20), (1,) * 10, (100, 50)]
)
@pytest.mark.parametrize("seed", [1, 2])
def test_source_distribution_follows_weights(weights: tuple[int, ...], seed: int) -> None:
    p = weighted("source", weights)
    n = 10_000
    counts = Counter(mapping(p, random_ips(n, seed)).values())
    total = sum(weights)
    for i, w in enumerate(weights):
        share = n * w / total
        assert abs(counts[NAMES[i]] - share) <= 0.15 * share, (NAMES[i], counts)


@pytest.mark.parametrize("victim", range(5))
@pytest.mark.parametrize("how", ["down", "drain", "maint"])
def test_source_only_the_lost_servers_clients_move(victim: int, how: str) -> None:
    p = weighted("source", (1, 1, 1, 1, 1))
    ips = random_ips(10_000)
    before = mapping(p, ips)
    gone = p.servers[victim]
    if how == "down":
        p.set_health(gone, False)
    else:
        p.set_admin(gone, how)  # type: ignore[arg-type]
    during = mapping(p, ips)
    moved = {ip for ip in ips if during[ip] != before[ip]}
    assert moved == {ip for ip in ips if before[ip] == gone.name}
    assert moved  # the victim did have clients
    # They spread over the others rather than all landing on one neighbour.
    assert len({during[ip] for ip in moved}) == 4
    if how == "down":
        p.set_health(gone, True)
    else:
        p.set_admin(gone, "ready")
    assert mapping(p, ips) == before


def test_source_two_servers_down_then_back() -> None:
    p = weighted("source", (1, 2, 1, 3, 1))
    ips = random_ips(5000)
    before = mapping(p, ips)
    lost = {"b", "d"}
    for name in lost:
        p.set_health(p.by_name[name], False)
    during = mapping(p, ips)
    for ip in ips:
        if before[ip] in lost:
            assert during[ip] not in lost
        else:
            assert during[ip] == before[ip]
    for name in lost:
        p.set_health(p.by_name[name], True)
    assert mapping(p, ips) == before


def test_source_exclude_behaves_like_down() -> None:
    p = weighted("source", (1, 1, 1, 1))
    ips = random_ips(2000)
    before = mapping(p, ips)
    c = p.by_name["c"]
    p.set_health(c, False)
    down = mapping(p, ips)
    p.set_health(c, True)
    for ip in ips:
        s = p.pick(ip, (c,))
        assert s is not None
        assert s.name == down[ip]
        assert before[ip] == "c" or s.name == before[ip]
    assert all(p.pick(ip, p.servers) is p.by_name[str(before[ip])] for ip in ips[:100])


def test_source_independent_instances_agree() -> None:
    ips = random_ips(3000)
    first = weighted("source", (1, 2, 3, 1))
    second = weighted("source", (1, 2, 3, 1))
    assert mapping(first, ips) == mapping(second, ips)


def test_source_agrees_across_processes() -> None:
    # str hashes are salted per process; a second interpreter with another seed
    # is how two loadstone instances differ.
    ips = random_ips(300)
    code = (
        "import json, sys\n"
        "from loadstone.config.model import Address, ListenerConfig, ServerConfig\n"
        "from loadstone.server import Pool\n"
        "servers = tuple(ServerConfig(n, Address('10.0.0.1', 80 + i), weight=i + 1)"
        " for i, n in enumerate('abcd'))\n"
        "p = Pool(ListenerConfig('t', (Address('127.0.0.1', 1),), balance='source',"
        " servers=servers))\n"
        "print(json.dumps({ip: p.pick(ip).name for ip in json.loads(sys.stdin.read())}))\n"
    )
    env = dict(os.environ, PYTHONHASHSEED="12345")
    out = subprocess.run(
        [sys.executable, "-c", code],
        input=json.dumps(ips),
        capture_output=True,
        text=True,
        env=env,
        check=True,
    )
    here = pool("source", *(server(n, i + 1) for i, n in enumerate("abcd")))
    assert json.loads(out.stdout) == mapping(here, ips)


def test_source_mapping_is_pinned() -> None:
    # Instances of different versions run side by side during an upgrade; a
    # change of hash, key format or point count would split clients between
    # them. Change these values only on purpose, with a release note.
    p = weighted("source", (1, 1, 1))
    assert mapping(p, list(PINNED)) == PINNED


PINNED: dict[str, str | None] = {
    "192.0.2.1": "c",
    "192.0.2.2": "b",
    "198.51.100.7": "b",
    "2001:db8::1": "a",
    "10.1.2.3": "b",
    "203.0.113.9": "a",
    "2001:db8:1::42": "b",
}


def test_source_ipv4_mapped_hashes_as_ipv4() -> None:
    p = weighted("source", (1, 1, 1, 1))
    for ip in random_ips(400)[:200]:
        assert p.pick(f"::ffff:{ip}") is p.pick(ip)


def test_source_without_client_ip_round_robins() -> None:
    p = weighted("source", (2, 1))
    assert names(p, 6) == list("abaaba")


def test_source_ring_rebuilt_only_on_weight_change() -> None:
    p = weighted("source", (1, 1, 1))
    balancer = p.balancer
    assert isinstance(balancer, SourceHash)
    ring = balancer._ring
    p.set_health(p.by_name["a"], False)
    p.set_admin(p.by_name["b"], "drain")
    p.set_health(p.by_name["a"], True)
    p.set_admin(p.by_name["b"], "ready")
    assert balancer._ring is ring
    p.set_weight(p.by_name["a"], 2)
    assert balancer._ring is not ring


def test_source_weight_raise_moves_clients_only_to_that_server() -> None:
    p = weighted("source", (1, 1, 1))
    ips = random_ips(5000)
    before = mapping(p, ips)
    p.set_weight(p.by_name["a"], 2)
    after = mapping(p, ips)
    moved = [ip for ip in ips if after[ip] != before[ip]]
    assert moved
    assert all(after[ip] == "a" for ip in moved)


def test_source_backup_group_is_its_own_ring() -> None:
    p = pool(
        "source",
        server("a"),
        server("b"),
        server("x", backup=True),
        server("y", backup=True),
        server("z", backup=True),
    )
    ips = random_ips(3000)
    for name in "ab":
        p.set_health(p.by_name[name], False)
    on_backups = mapping(p, ips)
    assert set(on_backups.values()) == {"x", "y", "z"}
    p.set_health(p.by_name["y"], False)
    without_y = mapping(p, ips)
    assert all(without_y[ip] == on_backups[ip] for ip in ips if on_backups[ip] != "y")
    p.set_health(p.by_name["y"], True)
    assert mapping(p, ips) == on_backups
    # The primaries return to exactly their former clients.
    p.set_health(p.by_name["a"], True)
    p.set_health(p.by_name["b"], True)
    fresh = pool("source", server("a"), server("b"))
    assert mapping(p, ips) == mapping(fresh, ips)


# -- first ---------------------------------------------------------------------------


def test_first_fills_in_order() -> None:
    p = pool("first", server("a", maxconn=2), server("b", maxconn=3), server("c"))
    assert list(hold(p, 10).elements()) == list("aabbbccccc")


def test_first_without_maxconn_takes_everything() -> None:
    p = pool("first", server("a"), server("b", maxconn=1))
    assert hold(p, 20) == {"a": 20}


def test_first_all_full_gives_none() -> None:
    p = pool("first", server("a", maxconn=1), server("b", maxconn=2))
    hold(p, 3)
    assert p.pick(None) is None
    assert p.balancer.candidates  # full, not empty: the caller may queue


def test_first_freed_slot_goes_back_to_earlier_server() -> None:
    p = pool("first", server("a", maxconn=2), server("b"))
    a = p.by_name["a"]
    sessions = open_sessions(a, 2)
    assert p.pick(None) is p.by_name["b"]
    a.session_ended(sessions[0])
    assert p.pick(None) is a


@pytest.mark.parametrize("how", ["down", "drain", "maint"])
def test_first_skips_unusable(how: str) -> None:
    p = pool("first", server("a"), server("b"), server("c"))
    if how == "down":
        p.set_health(p.by_name["a"], False)
    else:
        p.set_admin(p.by_name["a"], how)  # type: ignore[arg-type]
    assert p.pick(None) is p.by_name["b"]


def test_first_exclude_and_weight_ignored() -> None:
    p = pool("first", server("a", weight=0), server("b"), server("c"))
    a, b, c = p.servers
    assert p.pick(None) is a  # `first` is not weighted
    assert p.pick(None, (a,)) is b
    assert p.pick(None, (a, b)) is c
    assert p.pick(None, (a, b, c)) is a


def test_first_excluded_server_with_room_beats_none() -> None:
    p = pool("first", server("a", maxconn=1), server("b", maxconn=1))
    a, b = p.servers
    open_sessions(b, 1)
    assert p.pick(None, (a,)) is a  # b is full: retry a rather than give up
    open_sessions(a, 1)
    assert p.pick(None, (a,)) is None


# -- active-backup -------------------------------------------------------------------


def galera(*extra: ServerConfig) -> Pool:
    return pool("active-backup", server("db1"), server("db2"), server("db3"), *extra)


def active(p: Pool) -> str | None:
    return p.active.name if p.active is not None else None


@pytest.mark.parametrize(
    ("down", "expected"),
    [
        ((), "db1"),
        (("db1",), "db2"),
        (("db1", "db2"), "db3"),
        (("db2",), "db1"),
        (("db1", "db2", "db3"), None),
    ],
)
def test_ab_first_usable(down: tuple[str, ...], expected: str | None) -> None:
    p = galera()
    for name in down:
        p.set_health(p.by_name[name], False)
    # Servers failing in the other order lead to the same writer here: none of
    # them was active when it failed except in the order that makes it so.
    p2 = galera()
    for name in reversed(down):
        p2.set_health(p2.by_name[name], False)
    for x in (p, p2):
        assert active(x) == expected
        assert x.pick("192.0.2.1") is x.active


def test_ab_no_failback() -> None:
    p = galera()
    db1, db2, _ = p.servers
    p.set_health(db1, False)
    assert p.active is db2
    p.set_health(db1, True)
    assert p.active is db2
    assert all(p.pick(ip) is db2 for ip in random_ips(50))
    p.set_health(db2, False)
    assert p.active is db1  # first usable in order again, not "next after db2"


@pytest.mark.parametrize("how", ["down", "drain", "maint"])
def test_ab_moves_when_active_unusable(how: str) -> None:
    p = galera()
    db1, db2, _ = p.servers
    if how == "down":
        p.set_health(db1, False)
    else:
        p.set_admin(db1, how)  # type: ignore[arg-type]
    assert p.active is db2
    assert p.pick(None) is db2


def test_ab_other_changes_do_not_move_active() -> None:
    p = galera()
    db1, db2, db3 = p.servers
    p.set_health(db1, False)
    p.set_health(db3, False)
    p.set_health(db3, True)
    p.set_admin(db1, "maint")
    p.set_health(db1, True)
    p.set_admin(db1, "ready")
    p.set_weight(db1, 100)
    assert p.active is db2


def test_ab_backup_servers_come_after_all_primaries() -> None:
    p = pool(
        "active-backup",
        server("db1"),
        server("bk1", backup=True),
        server("db2"),
        server("bk2", backup=True),
    )
    db1, bk1, db2, _ = p.servers
    assert p.active is db1
    p.set_health(db1, False)
    assert p.active is db2  # a non-backup server later in the list beats bk1
    p.set_health(db2, False)
    assert p.active is bk1
    p.set_health(db1, True)
    assert p.active is bk1  # no failback, from a backup either
    p.set_health(bk1, False)
    assert p.active is db1


def test_ab_exclude_ignored() -> None:
    p = galera()
    db1 = p.by_name["db1"]
    assert p.pick(None, (db1,)) is db1
    assert p.pick("192.0.2.1", p.servers) is db1


def test_ab_weight_irrelevant() -> None:
    p = pool("active-backup", server("db1", weight=0), server("db2"))
    assert active(p) == "db1"


def test_ab_none_then_first_back_becomes_active() -> None:
    p = galera()
    for s in p.servers:
        p.set_health(s, False)
    assert p.active is None
    p.set_health(p.by_name["db3"], True)
    assert active(p) == "db3"
    p.set_health(p.by_name["db1"], True)
    assert active(p) == "db3"


@pytest.mark.parametrize(
    ("previous", "down", "expected"),
    [
        ("db2", (), "db2"),
        ("db3", ("db1",), "db3"),
        ("db2", ("db2",), "db1"),  # not usable: normal rule
        ("db2", ("db1", "db2"), "db3"),
        (None, (), "db1"),
        ("gone", (), "db1"),  # removed from the configuration by the reload
    ],
)
def test_ab_restore_active(previous: str | None, down: tuple[str, ...], expected: str) -> None:
    p = galera()
    for name in down:
        p.set_health(p.by_name[name], False)
    balancer = p.balancer
    assert isinstance(balancer, ActiveBackup)
    restored = balancer.restore_active(previous)
    assert restored is p.active
    assert active(p) == expected
    # Then the usual rule holds from there: no failback.
    for name in down:
        p.set_health(p.by_name[name], True)
    assert active(p) == expected


def test_ab_restore_active_drained_server_is_not_restored() -> None:
    p = galera()
    p.set_admin(p.by_name["db2"], "drain")
    balancer = p.balancer
    assert isinstance(balancer, ActiveBackup)
    assert balancer.restore_active("db2") is p.by_name["db1"]


def test_ab_same_history_same_writer() -> None:
    rng = random.Random(3)
    history = [(rng.randrange(3), rng.random() < 0.5) for _ in range(300)]
    pools = [galera(), galera()]
    for i, healthy in history:
        for p in pools:
            p.set_health(p.servers[i], healthy)
        assert active(pools[0]) == active(pools[1])


# -- Pool drives refresh -------------------------------------------------------------


class Counting(RoundRobin):
    def __init__(self, servers: Sequence[ServerRuntime]) -> None:
        self.refreshes = 0
        super().__init__(servers)

    def refresh(self) -> None:
        self.refreshes += 1
        super().refresh()


@pytest.fixture
def counted() -> Iterator[tuple[Pool, Counting]]:
    listener = ListenerConfig(
        name="test", bind=(Address("127.0.0.1", 5000),), servers=(server("a"), server("b"))
    )
    p = Pool(listener, balancer_factory=Counting)
    assert isinstance(p.balancer, Counting)
    p.balancer.refreshes = 0
    yield p, p.balancer


@pytest.mark.parametrize(
    ("change", "refreshes"),
    [
        (lambda p: p.set_health(p.servers[0], False), 1),
        (lambda p: p.set_health(p.servers[0], True), 0),  # already up: nothing changed
        (lambda p: p.set_admin(p.servers[0], "drain"), 1),
        (lambda p: p.set_admin(p.servers[0], "maint"), 1),
        (lambda p: p.set_admin(p.servers[0], "ready"), 0),
        (lambda p: p.set_weight(p.servers[0], 5), 1),
        (lambda p: p.set_weight(p.servers[0], 1), 0),
    ],
)
def test_pool_changes_refresh_balancer(
    counted: tuple[Pool, Counting], change: Callable[[Pool], None], refreshes: int
) -> None:
    p, balancer = counted
    change(p)
    assert balancer.refreshes == refreshes


@pytest.mark.parametrize("balance", ["roundrobin", "leastconn", "source", "first"])
def test_pool_changes_reach_every_algorithm(balance: str) -> None:
    p = pool(balance, server("a"), server("b"))
    a, b = p.servers
    p.set_health(a, False)
    assert list(p.balancer.candidates) == [b]
    p.set_health(a, True)
    p.set_admin(b, "drain")
    assert list(p.balancer.candidates) == [a]
    p.set_admin(b, "ready")
    assert list(p.balancer.candidates) == [a, b]
    p.set_weight(a, 0)
    # `first` is not a weighted algorithm; the others stop using a.
    assert {p.pick(ip) for ip in random_ips(100)} == ({a} if balance == "first" else {b})
