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
