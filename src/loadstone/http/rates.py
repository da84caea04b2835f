"""Per-source request and error rates, as HAProxy's stick-table counters
`http_req_rate(period)` and `http_err_rate(period)` tracked by `src`.

Each (source, period) has two fixed windows of `period` seconds, the current
one and the one before, and the rate is HAProxy's estimate of a sliding
window (freq_ctr): the current count plus the previous one weighted by the
part of the previous window still inside the sliding one. A source silent for
two periods is forgotten; the table holds at most `max_sources`, dropping the
least recently seen first, as a stick-table of a given size expires entries.

Errors are what HAProxy counts as HTTP errors: 4xx responses but 401 and 407
(authentication is expected to fail once), and requests the proxy refused as
malformed.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable

REQUESTS = 0
ERRORS = 1


def is_error(status: int) -> bool:
    return 400 <= status < 500 and status not in (401, 407)


class _Counter:
    __slots__ = ("current", "previous", "start")

    def __init__(self, start: float) -> None:
        self.start = start  # beginning of the current window
        self.current = 0
        self.previous = 0

    def roll(self, now: float, period: float) -> None:
        elapsed = now - self.start
        if elapsed < period:
            return
        windows = int(elapsed // period)
        self.previous = self.current if windows == 1 else 0
        self.current = 0
        self.start += windows * period

    def rate(self, now: float, period: float) -> float:
        self.roll(now, period)
        remaining = period - (now - self.start)
        return self.current + self.previous * remaining / period


class RateTable:
    """Counters of the periods some rule asks about, per source address."""

    __slots__ = ("max_sources", "periods", "table")

    def __init__(self, periods: Iterable[float], max_sources: int = 262_144) -> None:
        self.periods = tuple(sorted(set(periods)))
        self.max_sources = max_sources
        # source -> per period: [requests, errors]
        self.table: OrderedDict[str, dict[float, list[_Counter]]] = OrderedDict()

    def _entry(self, source: str, now: float) -> dict[float, list[_Counter]]:
        entry = self.table.get(source)
        if entry is None:
            if len(self.table) >= self.max_sources:
                self.table.popitem(last=False)
            entry = {p: [_Counter(now), _Counter(now)] for p in self.periods}
            self.table[source] = entry
        else:
            self.table.move_to_end(source)
        return entry

    def count(self, source: str | None, kind: int, now: float) -> None:
        if source is None:
            return
        for period, counters in self._entry(source, now).items():
            counter = counters[kind]
            counter.roll(now, period)
            counter.current += 1
        self._expire(now)

    def rate(self, source: str | None, kind: int, period: float, now: float) -> float:
        if source is None:
            return 0.0
        entry = self.table.get(source)
        if entry is None:
            return 0.0
        return entry[period][kind].rate(now, period)

    def _expire(self, now: float) -> None:
        # The least recently seen first: stop at the first one still in use.
        longest = 2 * self.periods[-1]
        while self.table:
            source, entry = next(iter(self.table.items()))
            newest = max(c.start for counters in entry.values() for c in counters)
            if now - newest < longest:
                return
            del self.table[source]
