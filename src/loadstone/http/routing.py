"""Routes: the first rule whose host and path conditions all match names the pool.

Host matching (RFC 9110 section 7.2): the Host header lower-cased, without its
port and trailing dot; "*.example.com" matches any name ending in
".example.com" (not example.com itself). Path matching uses the request
target's path, before "?": prefix (a plain string prefix, as HAProxy's
path_beg), exact, or a regular expression matched from the start.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Protocol

from loadstone.config.model import RouteConfig


def host_name(host: bytes | None) -> str:
    """b"API.Example.com:5000" -> "api.example.com"; "[::1]:80" -> "[::1]"."""
    if not host:
        return ""
    text = host.decode("latin-1").strip().lower()
    if text.startswith("["):
        end = text.find("]")
        return text[: end + 1] if end > 0 else text
    return text.partition(":")[0].removesuffix(".")


def target_path(target: bytes) -> str:
    """The path of a request target: origin-form "/a/b?q" or absolute-form."""
    text = target.decode("latin-1")
    if not text.startswith("/"):
        scheme_end = text.find("://")
        if scheme_end >= 0:
            slash = text.find("/", scheme_end + 3)
            text = text[slash:] if slash >= 0 else "/"
    end = len(text)
    for stop in ("?", "#"):
        at = text.find(stop)
        if 0 <= at < end:
            end = at
    return text[:end]


class HostPathConfig(Protocol):
    """The host and path conditions a route and a request rule share."""

    @property
    def hosts(self) -> tuple[str, ...]: ...
    @property
    def path_prefix(self) -> str | None: ...
    @property
    def path_exact(self) -> str | None: ...
    @property
    def path_regex(self) -> str | None: ...


class HostPath:
    """Compiled host and path conditions; `matches` holds when all given do."""

    __slots__ = ("exact_hosts", "path_exact", "path_prefix", "path_regex", "suffixes")

    def __init__(self, config: HostPathConfig) -> None:
        self.exact_hosts = frozenset(h for h in config.hosts if not h.startswith("*."))
        self.suffixes = tuple(h[1:] for h in config.hosts if h.startswith("*."))
        self.path_prefix = config.path_prefix
        self.path_exact = config.path_exact
        self.path_regex = re.compile(config.path_regex) if config.path_regex else None

    @property
    def needs_host(self) -> bool:
        return bool(self.exact_hosts or self.suffixes)

    def matches(self, host: str, path: str) -> bool:
        if (self.exact_hosts or self.suffixes) and not (
            host in self.exact_hosts or (self.suffixes and host.endswith(self.suffixes))
        ):
            return False
        if self.path_prefix is not None and not path.startswith(self.path_prefix):
            return False
        if self.path_exact is not None and path != self.path_exact:
            return False
        return self.path_regex is None or self.path_regex.match(path) is not None


class _Route(HostPath):
    __slots__ = ("pool",)

    def __init__(self, config: RouteConfig) -> None:
        super().__init__(config)
        self.pool = config.pool


class Router:
    """Compiled routes of one listener."""

    __slots__ = ("default", "needs_host", "routes")

    def __init__(self, routes: Sequence[RouteConfig], default: str) -> None:
        self.routes = tuple(_Route(r) for r in routes)
        self.default = default
        self.needs_host = any(r.needs_host for r in self.routes)

    def route(self, host: bytes | None, target: bytes) -> str:
        """The pool name for a request."""
        name = host_name(host) if self.needs_host else ""
        path = target_path(target)
        for route in self.routes:
            if route.matches(name, path):
                return route.pool
        return self.default
