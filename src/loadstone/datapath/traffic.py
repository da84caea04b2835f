"""A listener's traffic metrics: the request-duration and connect-time histograms
and the HTTP responses by code, per listener and per server.

Both data paths count the same fixed buckets and codes: the pure path here, one
`observe`/`count` per request or connect; the native path in the engine's
workers (src/_fastpath/engine/metrics.c, whose lists a unit test keeps equal to
these), read in bulk at scrape time. /metrics renders a `TrafficSnapshot`
whichever path made it (loadstone.metrics).
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field

# Upper bounds of the histograms' buckets, in seconds: from a loopback connect
# (well under a millisecond) to a slow API call (a minute).
BUCKETS: tuple[float, ...] = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
)

# The status codes counted one by one; the others are counted per class as
# code="other" (so an odd backend cannot grow the number of series).
TRACKED_CODES: tuple[int, ...] = (
    100, 101, 200, 201, 202, 204, 206, 301, 302, 303, 304, 307,
    308, 400, 401, 403, 404, 405, 408, 409, 410, 413, 414, 415,
    421, 422, 429, 431, 500, 501, 502, 503, 504, 505,
)  # fmt: skip
CLASSES: tuple[str, ...] = ("1xx", "2xx", "3xx", "4xx", "5xx", "other")
# A code row: the tracked codes, then each class's "other" counter.
ROW_LABELS: tuple[tuple[str, str], ...] = tuple(
    (str(code), f"{code // 100}xx") for code in TRACKED_CODES
) + tuple(("other", cls) for cls in CLASSES)

_ROW_OF = {code: i for i, code in enumerate(TRACKED_CODES)}


def code_row_index(status: int) -> int:
    """Where a status is counted in a code row (engine/metrics.c's code_index)."""
    i = _ROW_OF.get(status)
    if i is not None:
        return i
    return len(TRACKED_CODES) + (status // 100 - 1 if 100 <= status < 600 else 5)


def empty_row() -> list[int]:
    return [0] * len(ROW_LABELS)


def by_class(row: list[int] | None) -> dict[str, int]:
    """A code row summed by class: {"1xx": n, ..., "5xx": n, "other": n}."""
    totals = dict.fromkeys(CLASSES, 0)
    for (_, cls), count in zip(ROW_LABELS, row or empty_row(), strict=True):
        totals[cls] += count
    return totals


@dataclass
class Histogram:
    """Per-bucket counts (not cumulative; the last one is above every bound)
    and the sum of the observations in seconds."""

    counts: list[int] = field(default_factory=lambda: [0] * (len(BUCKETS) + 1))
    total: float = 0.0

    def observe(self, seconds: float) -> None:
        self.counts[bisect.bisect_left(BUCKETS, seconds)] += 1
        self.total += seconds


@dataclass
class TrafficSnapshot:
    """What /metrics renders for one listener."""

    request: Histogram
    connect: Histogram
    codes: list[int]  # the listener's code row
    server_codes: dict[str, list[int]]  # by server name


class TrafficCounters:
    """The pure path's counters of one listener, kept across reloads."""

    def __init__(self) -> None:
        self.request = Histogram()
        self.connect = Histogram()
        self.codes = empty_row()
        self.server_codes: dict[str, list[int]] = {}

    def response(self, server: str | None, status: int, seconds: float) -> None:
        """An HTTP request ended with `status` after `seconds` (server None: none reached)."""
        k = code_row_index(status)
        self.codes[k] += 1
        self.request.observe(seconds)
        if server is not None:
            row = self.server_codes.get(server)
            if row is None:
                row = self.server_codes[server] = empty_row()
            row[k] += 1

    def snapshot(self) -> TrafficSnapshot:
        return TrafficSnapshot(self.request, self.connect, self.codes, self.server_codes)
