"""The request counters both HTTP paths show in the status API: responses by status class."""

from __future__ import annotations


def status_class(status: int) -> int:
    """Index of a status in the [other, 1xx, 2xx, 3xx, 4xx, 5xx] counters."""
    return status // 100 if 100 <= status < 600 else 0


def responses_by_class(counts: list[int]) -> dict[str, int]:
    """The status API's response counters from [other, 1xx, 2xx, 3xx, 4xx, 5xx]."""
    return {
        "1xx": counts[1],
        "2xx": counts[2],
        "3xx": counts[3],
        "4xx": counts[4],
        "5xx": counts[5],
        "other": counts[0],
    }
