"""Traffic shapes the proxies are compared on. Add new ones to SCENARIOS."""

from __future__ import annotations

from dataclasses import dataclass

from benchmarks.harness.backends import LARGE_PATH, SMALL_PATH


@dataclass(frozen=True, slots=True)
class Scenario:
    name: str
    summary: str  # one line, for --help and the README
    path: str  # URL path requested from the backends through the proxy
    connections: int  # wrk -c: concurrent client connections
    headers: tuple[str, ...] = ()  # extra request headers, wrk -H


SCENARIOS: dict[str, Scenario] = {
    s.name: s
    for s in (
        # Many small requests over long-lived connections: the per-byte relay cost
        # and event-loop overhead per read/write dominate.
        Scenario(
            "keepalive",
            "keep-alive, ~100 B responses, 50 connections",
            SMALL_PATH,
            connections=50,
        ),
        # Every request opens a new client connection and, through a TCP proxy, a
        # new backend connection: accept, connect, balancing, session setup and
        # teardown (and loadstone's per-session log line) dominate.
        Scenario(
            "close",
            "one new connection per request (Connection: close), 20 connections",
            SMALL_PATH,
            connections=20,
            headers=("Connection: close",),
        ),
        # Few connections moving bulk data: throughput and copies per byte dominate.
        Scenario(
            "10m",
            "10 MiB responses over keep-alive, 4 connections",
            LARGE_PATH,
            connections=4,
        ),
    )
}


def select(names: str) -> list[Scenario]:
    """Scenarios named in a comma-separated list, in the order given."""
    chosen = [name.strip() for name in names.split(",") if name.strip()]
    unknown = [name for name in chosen if name not in SCENARIOS]
    if unknown:
        raise ValueError(f"unknown scenario(s) {', '.join(unknown)}; known: {', '.join(SCENARIOS)}")
    return [SCENARIOS[name] for name in chosen]
