"""The rise/fall state machine, as tables of check results."""

from __future__ import annotations

import pytest

from loadstone.checks.state import HealthCounter
from loadstone.config.model import CheckConfig


def run(counter: HealthCounter, results: str) -> list[bool | None]:
    """Feed 'S' (success) / 'F' (failure) results; the list of record() returns."""
    return [counter.record(r == "S") for r in results]


@pytest.mark.parametrize(
    ("rise", "fall", "results", "returns", "healthy"),
    [
        # Unconfirmed start: the first failure takes the server down at once.
        (2, 3, "F", [False], False),
        # A first success confirms; then `fall` consecutive failures are needed.
        (2, 3, "SFF", [None, None, None], True),
        (2, 3, "SFFF", [None, None, None, False], False),
        # A success breaks the run of failures: flapping never goes down.
        (2, 3, "SFFSFFSFF", [None] * 9, True),
        # Down: `rise` consecutive successes bring it up.
        (2, 3, "FS", [False, None], False),
        (2, 3, "FSS", [False, None, True], True),
        # A failure breaks the run of successes.
        (2, 3, "FSFSS", [False, None, None, None, True], True),
        # Staying down or up reports no change.
        (2, 3, "FFFF", [False, None, None, None], False),
        (2, 3, "SSSS", [None] * 4, True),
        # After coming back up, the server is confirmed: fall failures again.
        (2, 3, "FSSFF", [False, None, True, None, None], True),
        (2, 3, "FSSFFF", [False, None, True, None, None, False], False),
        # rise = fall = 1: every change of result is a transition.
        (1, 1, "SFSF", [None, False, True, False], False),
        (3, 2, "FSSS", [False, None, None, True], True),
    ],
)
def test_transitions(
    rise: int, fall: int, results: str, returns: list[bool | None], healthy: bool
) -> None:
    counter = HealthCounter(rise, fall)
    assert run(counter, results) == returns
    assert counter.healthy is healthy


def test_confirmed_start_needs_fall_failures() -> None:
    counter = HealthCounter(2, 3, confirmed=True)
    assert run(counter, "FFF") == [None, None, False]


def test_start_down_needs_rise_successes() -> None:
    # A server carried over a reload while down.
    counter = HealthCounter(2, 3, healthy=False, confirmed=True)
    assert run(counter, "FSS") == [None, None, True]


def test_first_result_confirms() -> None:
    counter = HealthCounter(2, 3)
    assert not counter.confirmed
    counter.record(True)
    assert counter.confirmed


@pytest.mark.parametrize(("rise", "fall"), [(0, 1), (1, 0), (-1, 3)])
def test_rejects_non_positive_thresholds(rise: int, fall: int) -> None:
    with pytest.raises(ValueError, match="rise and fall"):
        HealthCounter(rise, fall)


CHECK = CheckConfig(interval=2.0, fastinter=0.5, downinter=5.0, rise=2, fall=3)


@pytest.mark.parametrize(
    ("results", "transitioning", "interval", "described"),
    [
        ("", False, 2.0, "UP"),  # settled up (unconfirmed)
        ("S", False, 2.0, "UP"),
        ("SF", True, 0.5, "UP, going down 1/3"),  # going down: fastinter
        ("SFF", True, 0.5, "UP, going down 2/3"),
        ("SFFF", False, 5.0, "DOWN"),  # settled down: downinter
        ("F", False, 5.0, "DOWN"),
        ("FS", True, 0.5, "DOWN, going up 1/2"),  # going up: fastinter
        ("FSS", False, 2.0, "UP"),
        ("FSF", False, 5.0, "DOWN"),  # the run of successes ended
        ("SFS", False, 2.0, "UP"),
    ],
)
def test_interval_selection(
    results: str, transitioning: bool, interval: float, described: str
) -> None:
    counter = HealthCounter(CHECK.rise, CHECK.fall)
    run(counter, results)
    assert counter.transitioning is transitioning
    assert counter.interval(CHECK) == interval
    assert counter.describe() == described


def test_intervals_default_to_interval() -> None:
    check = CheckConfig(interval=1.5)
    counter = HealthCounter(2, 3)
    assert counter.interval(check) == 1.5
    run(counter, "SF")
    assert counter.interval(check) == 1.5  # no fastinter configured
    run(counter, "FF")
    assert not counter.healthy
    assert counter.interval(check) == 1.5  # no downinter configured


def test_repr_shows_state() -> None:
    assert repr(HealthCounter(2, 3)) == "<HealthCounter UP, unconfirmed rise=2 fall=3>"
