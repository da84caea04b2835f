"""The peers' message codec and replay guard (sans-IO), and the adoption rule."""

from __future__ import annotations

import hashlib
import hmac

import pytest

from loadstone.peers.agreement import writer_to_adopt
from loadstone.peers.codec import (
    MAGIC,
    MAX_AGE,
    Refused,
    ReplayGuard,
    Report,
    Writer,
    decode,
    encode,
)

KEY = b"0123456789abcdef-shared"
NOW = 1_800_000_000.0


def report(seq: int = 1, sent: float = NOW, boot: str = "b1", **writers: Writer) -> Report:
    return Report("ctl1", boot, seq, sent, dict(writers))


def test_a_report_round_trips() -> None:
    sent = report(galera=Writer("db2", NOW - 30), other=Writer(None, 0.0))
    assert decode(encode(sent, KEY), KEY) == sent
    fresh = report(galera=Writer("db1", 0.0, NOW - 5))
    assert decode(encode(fresh, KEY), KEY) == fresh


def test_a_report_without_since_reads_as_the_oldest_choice() -> None:
    # What an instance from before `since` sends: its fresh picks ranked as
    # the oldest, which is what 0.0 meant to it.
    writers = b'"writers":{"g":{"server":"db1","chosen":0.0}}'
    body = b'{"from":"a","boot":"b","seq":1,"sent":1.0,' + writers + b"}"
    data = MAGIC + hmac.digest(KEY, body, hashlib.sha256) + body
    assert decode(data, KEY).writers == {"g": Writer("db1", 0.0, 0.0)}


@pytest.mark.parametrize(
    "data",
    [b"", b"hello", MAGIC, MAGIC + b"x" * 31, b"\x00" * 100, b"LSP2" + b"x" * 64],
)
def test_garbage_is_refused(data: bytes) -> None:
    with pytest.raises(Refused) as refused:
        decode(data, KEY)
    assert refused.value.reason == "garbage"


def test_a_wrong_key_or_a_changed_byte_is_refused() -> None:
    data = encode(report(galera=Writer("db2", NOW)), KEY)
    with pytest.raises(Refused) as refused:
        decode(data, b"another key of the group")
    assert refused.value.reason == "bad-key"
    tampered = data.replace(b"db2", b"db1")
    with pytest.raises(Refused) as refused:
        decode(tampered, KEY)
    assert refused.value.reason == "bad-key"


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b"[]",
        b'{"from": "ctl1"}',
        b'{"from": "", "boot": "b", "seq": 1, "sent": 1.0, "writers": {}}',
        b'{"from": "a", "boot": "b", "seq": -1, "sent": 1.0, "writers": {}}',
        b'{"from": "a", "boot": "b", "seq": true, "sent": 1.0, "writers": {}}',
        b'{"from": "a", "boot": "b", "seq": 1, "sent": NaN, "writers": {}}',
        b'{"from": "a", "boot": "b", "seq": 1, "sent": 1.0, "writers": []}',
        b'{"from": "a", "boot": "b", "seq": 1, "sent": 1.0, "writers": {"g": {"server": 3}}}',
    ],
)
def test_an_authenticated_but_malformed_body_is_refused_whole(body: bytes) -> None:
    data = MAGIC + hmac.digest(KEY, body, hashlib.sha256) + body
    with pytest.raises(Refused) as refused:
        decode(data, KEY)
    assert refused.value.reason == "garbage"


def test_replayed_and_stale_reports_are_refused() -> None:
    guard = ReplayGuard()
    guard.check(report(seq=5), NOW)
    for again in (report(seq=5), report(seq=4)):
        with pytest.raises(Refused) as refused:
            guard.check(again, NOW + 1)
        assert refused.value.reason == "replayed"
    guard.check(report(seq=6, sent=NOW + 1), NOW + 1)
    with pytest.raises(Refused) as refused:
        guard.check(report(seq=7, sent=NOW - MAX_AGE - 1), NOW)
    assert refused.value.reason == "stale"
    with pytest.raises(Refused) as refused:
        guard.check(report(seq=7, sent=NOW + MAX_AGE + 1), NOW)
    assert refused.value.reason == "stale"


def test_a_restarted_peer_is_heard_and_its_old_boot_cannot_be_replayed() -> None:
    guard = ReplayGuard()
    guard.check(report(seq=900, sent=NOW, boot="old"), NOW)
    guard.check(report(seq=1, sent=NOW + 2, boot="new"), NOW + 2)  # restarted: seq from 1
    with pytest.raises(Refused) as refused:
        guard.check(report(seq=901, sent=NOW + 1, boot="old"), NOW + 2)
    assert refused.value.reason == "replayed"


ORDER = ["db1", "db2", "db3"]


def test_a_fresh_start_adopts_the_peers_failed_over_writer() -> None:
    # A failed over from db1 to db2 at NOW; B starts and picks db1 afresh (0.0).
    assert writer_to_adopt(Writer("db1", 0.0), [Writer("db2", NOW)], ORDER) == Writer("db2", NOW)


def test_a_writer_not_eligible_here_is_not_adopted() -> None:
    assert writer_to_adopt(Writer("db1", 0.0), [Writer("db2", NOW)], ["db1", "db3"]) is None
    assert writer_to_adopt(Writer("db1", 0.0), [Writer(None, NOW)], ORDER) is None


def test_an_older_or_equal_choice_does_not_replace_a_newer_one() -> None:
    own = Writer("db3", NOW + 5)
    assert writer_to_adopt(own, [Writer("db2", NOW)], ORDER) is None
    assert writer_to_adopt(Writer("db1", 0.0), [Writer("db2", 0.0)], ORDER) is None  # both fresh
    assert writer_to_adopt(Writer("db2", NOW), [Writer("db2", NOW + 9)], ORDER) is None  # same


def test_disagreeing_peers_the_newest_choice_wins_then_configuration_order() -> None:
    reports = [Writer("db1", NOW), Writer("db3", NOW + 3), Writer("db2", NOW + 3)]
    assert writer_to_adopt(Writer("db1", 0.0), reports, ORDER) == Writer("db2", NOW + 3)
    # The newest one not eligible here: the next newest eligible one.
    assert writer_to_adopt(Writer("db1", 0.0), reports, ["db1", "db3"]) == Writer("db3", NOW + 3)


def test_no_peer_reports_keeps_the_own_rule() -> None:
    assert writer_to_adopt(Writer("db1", 0.0), [], ORDER) is None


def fresh(server: str | None, since: float) -> Writer:
    """A pick made with no usable writer before it (at start, or after every
    server was down): no failure behind it."""
    return Writer(server, 0.0, since)


def failover(server: str, at: float) -> Writer:
    return Writer(server, at, at)


# (own, reported, eligible here, adopted or None): the rule as a table.
CASES = {
    "the writer failed at a peer first: follow its failover": (
        fresh("db1", NOW - 100),
        [failover("db2", NOW), fresh("db1", NOW - 100)],
        ORDER,
        failover("db2", NOW),
    ),
    "the instance that cannot reach the writer keeps its failover": (
        failover("db2", NOW),
        [fresh("db1", NOW - 100), fresh("db1", NOW - 100)],
        ["db2", "db3"],
        None,
    ),
    "a newer failover replaces an older one": (
        failover("db2", NOW),
        [failover("db3", NOW + 5)],
        ORDER,
        failover("db3", NOW + 5),
    ),
    "an older failover does not replace a newer one": (
        failover("db3", NOW + 5),
        [failover("db2", NOW)],
        ORDER,
        None,
    ),
    "returning site: its fresh pick joins the group's standing writer": (
        fresh("db2", NOW),  # every node was down while cut off; db2 rose first
        [fresh("db1", NOW - 100), fresh("db3", NOW + 1)],
        ORDER,
        fresh("db1", NOW - 100),
    ),
    "returning site: the group's side does not move": (
        fresh("db1", NOW - 100),
        [fresh("db2", NOW), fresh("db3", NOW + 1)],
        ORDER,
        None,
    ),
    "returning site: the group's earlier failover stands": (
        fresh("db1", NOW),
        [failover("db2", NOW - 50)],
        ORDER,
        failover("db2", NOW - 50),
    ),
    "a fresh pick, however old, never outranks a failover": (
        failover("db2", NOW - 1000),
        [fresh("db1", NOW - 5000)],
        ORDER,
        None,
    ),
    "a restart's pick in order joins the group's older pick": (
        fresh("db1", NOW),  # db1 was down when the group started on db2
        [fresh("db2", NOW - 100)],
        ORDER,
        fresh("db2", NOW - 100),
    ),
    "a copy ranks as its original: nothing to do": (
        fresh("db1", NOW - 100),
        [fresh("db1", NOW - 100)],
        ORDER,
        None,
    ),
    "equal failovers: configuration order": (
        fresh("db1", NOW - 100),
        [failover("db3", NOW), failover("db2", NOW)],
        ORDER,
        failover("db2", NOW),
    ),
    "equal fresh picks: configuration order, own included": (
        fresh("db2", NOW),
        [fresh("db1", NOW)],
        ORDER,
        fresh("db1", NOW),
    ),
    "equal fresh picks: the own earlier in order stays": (
        fresh("db1", NOW),
        [fresh("db2", NOW)],
        ORDER,
        None,
    ),
    "the strongest not eligible here: the strongest that is": (
        fresh("db1", NOW - 100),
        [failover("db2", NOW + 3), failover("db3", NOW)],
        ["db1", "db3"],
        failover("db3", NOW),
    ),
    "no writer yet (waiting for a first check): any eligible choice": (
        Writer(None, 0.0),
        [fresh("db2", NOW - 100)],
        ["db2", "db3"],
        fresh("db2", NOW - 100),
    ),
    "an older peer's fresh pick (no since) counts as the oldest": (
        fresh("db1", NOW),
        [Writer("db2", 0.0)],
        ORDER,
        Writer("db2", 0.0),
    ),
}


@pytest.mark.parametrize(("own", "reported", "eligible", "adopted"), CASES.values(), ids=CASES)
def test_the_rule(
    own: Writer, reported: list[Writer], eligible: list[str], adopted: Writer | None
) -> None:
    assert writer_to_adopt(own, reported, eligible) == adopted
