"""Durations as written in the configuration, turned into float seconds.

Grammar (units are case-sensitive, so `5M` can never be misread as months):

    duration  = number | number-string | part { [" "] part }
    part      = digits [ "." digits ] unit
    unit      = "us" | "ms" | "s" | "m" | "h" | "d"

A bare number is seconds. This differs from HAProxy, where a unitless timeout
is milliseconds: `timeout connect 5000` must become `connect: 5000ms` (or `5s`).
Compound values go from the largest unit to the smallest (`1h30m`, `1m30s`),
which rules out both `30s1m` and `1m1m` without a separate check.

This module knows nothing about YAML paths: it raises `DurationError` with a
message, and the loader prefixes the path of the offending value.
"""

from __future__ import annotations

import math
import re
from typing import Final

__all__ = ["DurationError", "parse_duration"]

# unit -> (multiplier, divisor) to seconds. Sub-second units divide rather than
# multiply by 1e-3: 700 * 1e-3 is 0.7000000000000001 while 700 / 1000 is 0.7.
_UNITS: Final[dict[str, tuple[int, int]]] = {
    "d": (86400, 1),
    "h": (3600, 1),
    "m": (60, 1),
    "s": (1, 1),
    "ms": (1, 1000),
    "us": (1, 1_000_000),
}

_NUMBER = re.compile(r"\d+(?:\.\d+)?")
# "ms" and "us" are tried before "m" and "s" so that "5ms" is five milliseconds.
_PART = re.compile(r"(\d+(?:\.\d+)?)(us|ms|s|m|h|d) *")
_HINT = (
    "use a number of seconds or a number with a unit (us, ms, s, m, h, d), e.g. 250ms, 2s, 1m30s"
)


class DurationError(ValueError):
    """The value is not a duration; the message says why, without a YAML path."""


def parse_duration(value: object) -> float:
    """Return `value` in seconds: an int/float (seconds) or a string such as `250ms`, `1m30s`.

    Negative, infinite and NaN values are refused; zero is accepted here and
    refused by the callers for which it makes no sense (timeouts, intervals).
    """
    # bool is an int subclass: `connect: yes` must not silently become 1 second.
    if isinstance(value, bool):
        raise DurationError(f"expected a duration, got a boolean ({str(value).lower()})")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str):
        seconds = _parse_text(value)
    else:
        kind = "null" if value is None else type(value).__name__
        raise DurationError(f"expected a duration, got {kind}; {_HINT}")
    if math.isnan(seconds) or math.isinf(seconds):
        raise DurationError(f"a duration must be finite, got {value!r}")
    if seconds < 0:
        raise DurationError(f"a duration must not be negative, got {value!r}")
    return seconds


def _parse_text(value: str) -> float:
    text = value.strip()
    if _NUMBER.fullmatch(text):
        return float(text)
    total = 0.0
    position = 0
    previous_scale = math.inf
    while position < len(text):
        match = _PART.match(text, position)
        if match is None:
            raise DurationError(f"invalid duration {value!r}: {_HINT}")
        number, unit = match.groups()
        multiplier, divisor = _UNITS[unit]
        scale = multiplier / divisor
        if scale >= previous_scale:
            raise DurationError(
                f"invalid duration {value!r}: units must go from the largest to the smallest, "
                "each at most once, e.g. 1h30m or 1m30s"
            )
        previous_scale = scale
        total += float(number) * multiplier / divisor
        position = match.end()
    if position == 0:  # empty or blank string
        raise DurationError(f"invalid duration {value!r}: {_HINT}")
    return total
