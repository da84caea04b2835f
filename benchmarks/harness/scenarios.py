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
    mode: str = "tcp"  # the proxies' mode: tcp, or http (HAProxy with option forwardfor)
    rate: int = 0  # >0: a fixed request rate driven by h2load instead of wrk's flat out


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
        # HTTP mode (issue 6): both proxies parse every request and response, add
        # X-Forwarded-For, and keep server connections alive across requests.
        Scenario(
            "http-keepalive",
            "http mode, keep-alive, ~100 B responses, X-Forwarded-For added, 50 connections",
            SMALL_PATH,
            connections=50,
            mode="http",
        ),
        # A new client connection per request; server connections are reused.
        Scenario(
            "http-close",
            "http mode, one new client connection per request, 20 connections",
            SMALL_PATH,
            connections=20,
            headers=("Connection: close",),
            mode="http",
        ),
        # Latency when not saturated: a fixed 5,000 req/s (h2load --rps), 50 connections.
        Scenario(
            "http-p99",
            "http mode, fixed 5,000 req/s (h2load), 50 keep-alive connections: p99 latency",
            SMALL_PATH,
            connections=50,
            mode="http",
            rate=5000,
        ),
    )
}

# What runs without --scenarios: the TCP comparison this benchmark started with.
# The HTTP-mode ones are asked for by name, or all at once with --scenarios http.
DEFAULT = ("keepalive", "close", "10m")
HTTP = ("http-keepalive", "http-close", "http-p99")


def select(names: str) -> list[Scenario]:
    """Scenarios named in a comma-separated list, in the order given."""
    chosen = [name.strip() for name in names.split(",") if name.strip()]
    groups = {"tcp": DEFAULT, "http": HTTP, "all": tuple(SCENARIOS)}
    chosen = [n for name in chosen for n in groups.get(name, (name,))]
    unknown = [name for name in chosen if name not in SCENARIOS]
    if unknown:
        raise ValueError(f"unknown scenario(s) {', '.join(unknown)}; known: {', '.join(SCENARIOS)}")
    return [SCENARIOS[name] for name in chosen]
