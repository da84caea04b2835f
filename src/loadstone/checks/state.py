"""The rise/fall state machine of one checked server: pure logic, no I/O, no clock.

Theory of operation
-------------------
A server is either up or down. Each check result is a success or a failure, and
the machine counts the current run of each:

    up   --(fall consecutive failures)-->  down
    down --(rise consecutive successes)--> up

A success ends the run of failures and a failure ends the run of successes, so a
flapping server (ok, failed, ok, failed, ...) never changes state: that is the
point of rise/fall.

The machine starts "up, unconfirmed", HAProxy's default init-state: a server is
trusted at start so traffic flows at once, but its first failed check takes it
down immediately rather than after `fall` failures, so a dead server does not
receive traffic for `fall` intervals after every start or reload. The first
result, whatever it is, confirms the state. A server that must not take traffic
before a check has vouched for it (a Galera node: writing to a node that is not
Synced loses the write or hangs) starts "down, unconfirmed" instead, and its
first success takes it up at once rather than after `rise` successes.

A definitive failure (the server said no: refused, denied, a forbidden state)
takes an up server down at once whatever `fall` says; `fall` is there to ride
out timeouts and lost packets, not to keep sending traffic to a node that
answered that it cannot take it.

"In transition" means a run has started that would change the state (failures
while up, successes while down). The scheduler checks faster then (`fastinter`)
so that a change is confirmed or refuted sooner, and slower while settled down
(`downinter`), as HAProxy does.
"""

from __future__ import annotations

from loadstone.config.model import CheckConfig


class HealthCounter:
    __slots__ = ("confirmed", "failures", "fall", "healthy", "rise", "successes")

    def __init__(self, rise: int, fall: int, *, healthy: bool = True, confirmed: bool = False):
        if rise < 1 or fall < 1:
            raise ValueError(f"rise and fall must be >= 1, got rise={rise} fall={fall}")
        self.rise = rise
        self.fall = fall
        self.healthy = healthy
        # False until the first result: an unconfirmed up server falls on one failure.
        self.confirmed = confirmed
        self.successes = 0  # current run of consecutive successes
        self.failures = 0  # current run of consecutive failures

    def record(self, ok: bool, definitive: bool = False) -> bool | None:
        """Count one check result; return the new health if it changed, else None.

        `definitive` (failures only): the server itself refused; down at once."""
        changed: bool | None = None
        if ok:
            self.successes += 1
            self.failures = 0
            if not self.healthy and (not self.confirmed or self.successes >= self.rise):
                self.healthy = changed = True
        else:
            self.failures += 1
            self.successes = 0
            if self.healthy and (definitive or not self.confirmed or self.failures >= self.fall):
                self.healthy = changed = False
        self.confirmed = True
        return changed

    @property
    def transitioning(self) -> bool:
        """A run has started that would change the state if it went on."""
        return self.failures > 0 if self.healthy else self.successes > 0

    def interval(self, check: CheckConfig) -> float:
        """How long to wait before the next check, given the state."""
        if self.transitioning:
            return check.fast_interval
        if not self.healthy:
            return check.down_interval
        return check.interval

    def describe(self) -> str:
        """Short progress text for logs: 'UP', 'UP, going down 1/3', 'DOWN, going up 1/2'."""
        if self.healthy:
            if self.failures:
                return f"UP, going down {self.failures}/{self.fall}"
            return "UP"
        if self.successes:
            return f"DOWN, going up {self.successes}/{self.rise}"
        return "DOWN"

    def __repr__(self) -> str:
        confirmed = "" if self.confirmed else ", unconfirmed"
        return f"<HealthCounter {self.describe()}{confirmed} rise={self.rise} fall={self.fall}>"
