"""The peers' message, sans-IO: bytes in, a verified Report out, or the reason
it is refused.

A datagram is MAGIC, a 32-byte HMAC-SHA256 of the body under the group's
shared key, then the body, JSON:
    {"from": "ctl1", "boot": "9f2c...", "seq": 42, "sent": 1733520000.5,
     "writers": {"galera": {"server": "db2", "chosen": 1733519990.1, "since": 1733519990.1}}}
`boot` is drawn at each start and `seq` counts up within it, so a replayed
datagram (same boot, a seq already seen) is refused, and `sent` bounds how old
a datagram may be (MAX_AGE), so one recorded before a restart is refused too.
Nothing in a refused datagram is ever used.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import math
from dataclasses import dataclass, field

MAGIC = b"LSP1"
MAC_SIZE = 32
MAX_SIZE = 60_000  # under a UDP datagram's limit, far above any real report
# How old (or how far ahead: clocks drift) a datagram may be. Peers share NTP
# as Galera nodes do; a few seconds covers the send interval and the jitter.
MAX_AGE = 10.0


class Refused(Exception):
    """A datagram not to be used; `reason` is a metric label."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason  # garbage | bad-key | replayed | stale


@dataclass(frozen=True, slots=True)
class Writer:
    server: str | None  # None: no eligible server
    chosen: float  # wall-clock time of the failover that chose it; 0.0: a fresh pick
    # When the choice was made (wall clock), which ranks fresh picks: the older
    # stands (peers/agreement.py). An older loadstone sends none: read as 0.0,
    # the oldest, which is how its own rule ranked its fresh picks.
    since: float = 0.0


@dataclass(frozen=True, slots=True)
class Report:
    sender: str
    boot: str
    seq: int
    sent: float
    writers: dict[str, Writer] = field(default_factory=dict)


def encode(report: Report, key: bytes) -> bytes:
    body = json.dumps(
        {
            "from": report.sender,
            "boot": report.boot,
            "seq": report.seq,
            "sent": report.sent,
            "writers": {
                name: {"server": w.server, "chosen": w.chosen, "since": w.since}
                for name, w in report.writers.items()
            },
        },
        separators=(",", ":"),
    ).encode()
    return MAGIC + hmac.digest(key, body, hashlib.sha256) + body


def decode(data: bytes, key: bytes) -> Report:
    """The report in `data`, authenticated; Refused otherwise. Not checked here:
    replay and age (ReplayGuard), and listener names (the agreement)."""
    if len(data) > MAX_SIZE or not data.startswith(MAGIC) or len(data) < len(MAGIC) + MAC_SIZE:
        raise Refused("garbage", "not a loadstone peers datagram")
    mac, body = data[len(MAGIC) : len(MAGIC) + MAC_SIZE], data[len(MAGIC) + MAC_SIZE :]
    if not hmac.compare_digest(mac, hmac.digest(key, body, hashlib.sha256)):
        raise Refused("bad-key", "HMAC does not match the shared key")
    # Authenticated from here: a malformed body is a peer's bug, still refused whole.
    try:
        doc = json.loads(body)
        writers = {
            str(name): Writer(_server(w["server"]), _time(w["chosen"]), _time(w.get("since", 0.0)))
            for name, w in _mapping(doc["writers"]).items()
        }
        report = Report(
            _text(doc["from"]), _text(doc["boot"]), _count(doc["seq"]), _time(doc["sent"]), writers
        )
    except (ValueError, KeyError, TypeError) as exc:
        raise Refused("garbage", f"malformed body: {exc}") from None
    return report


def _mapping(value: object) -> dict[str, dict[str, object]]:
    if not isinstance(value, dict) or not all(isinstance(w, dict) for w in value.values()):
        raise TypeError("writers must map listener names to objects")
    return value


def _text(value: object) -> str:
    if not isinstance(value, str) or not value:
        raise TypeError(f"expected a non-empty string, got {value!r}")
    return value


def _server(value: object) -> str | None:
    return None if value is None else _text(value)


def _count(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise TypeError(f"expected a count, got {value!r}")
    return value


def _time(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise TypeError(f"expected a time, got {value!r}")
    return float(value)


class ReplayGuard:
    """Refuses what was seen already or is too old, per sender."""

    def __init__(self, max_age: float = MAX_AGE) -> None:
        self.max_age = max_age
        # sender -> (boot, highest seq, latest sent) of what was accepted
        self._last: dict[str, tuple[str, int, float]] = {}

    def check(self, report: Report, now: float) -> None:
        if abs(now - report.sent) > self.max_age:
            raise Refused("stale", f"sent {now - report.sent:+.1f}s from now")
        last = self._last.get(report.sender)
        if last is not None:
            boot, seq, sent = last
            if boot == report.boot and report.seq <= seq:
                raise Refused("replayed", f"seq {report.seq} of boot {boot} seen already")
            # Another boot is a restart of the peer; one sent before what we
            # have is an older boot's datagram played again (or very late).
            if report.sent < sent:
                raise Refused("replayed", "older than the last accepted report")
        self._last[report.sender] = (report.boot, report.seq, report.sent)
