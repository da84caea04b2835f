"""Which proxies a run compares: the loadstone builds and the peers, from the options.

The peers are the proxies a user would pick instead of loadstone that Debian
packages: HAProxy, nginx and Caddy. One or more loadstone builds (`--loadstone
[LABEL=]PATH`, repeatable) are the candidates; the report gives each build's ratio
to every peer and, from the second build on, to the first.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from benchmarks.harness.proxies import default_loadstone_binary

LOADSTONE = "loadstone"
PEERS = ("haproxy", "nginx", "caddy")
# Everything --proxies may name, in the default order of the rows.
PROXIES = (LOADSTONE, *PEERS)


@dataclass(frozen=True, slots=True)
class Build:
    """One loadstone build under test."""

    name: str  # "loadstone", or "loadstone-LABEL" for a labelled build
    binary: Path


def parse_build(text: str) -> Build:
    """`PATH` or `LABEL=PATH` (a label has no '/', so a path holding '=' still works)."""
    label, sep, path = text.partition("=")
    if not sep or "/" in label:
        return Build(LOADSTONE, Path(text))
    if not label or not path:
        raise ValueError(f"--loadstone {text!r}: expected LABEL=PATH")
    return Build(f"{LOADSTONE}-{label}", Path(path))


def parse_builds(values: list[str] | None) -> list[Build]:
    """The builds named by --loadstone (none given: the one next to this Python)."""
    if not values:
        return [Build(LOADSTONE, default_loadstone_binary())]
    builds = [parse_build(value) for value in values]
    names = [b.name for b in builds]
    if len(set(names)) != len(names):
        raise ValueError(
            "--loadstone given more than once needs a distinct LABEL=PATH each "
            f"(got {', '.join(names)})"
        )
    return builds


def parse_proxies(text: str) -> tuple[str, ...]:
    """A comma-separated selection of PROXIES, in the order given."""
    chosen = tuple(dict.fromkeys(name.strip() for name in text.split(",") if name.strip()))
    unknown = [name for name in chosen if name not in PROXIES]
    if unknown or not chosen:
        raise ValueError(
            f"unknown proxy {', '.join(unknown) or '(none)'}; known: {', '.join(PROXIES)}"
        )
    return chosen
