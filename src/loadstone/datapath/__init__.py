"""The data path: the native one when it is built and allowed, else the pure twin.

The choice is made once, at import time, as aiohttp does for its parser:
LOADSTONE_NO_EXTENSIONS=1 forces the pure-Python path, and so does a build
without the extension (no compiler, not Linux: no epoll/splice).

Mode http is chosen per listener on top of that (`http_frontend`): the native
HTTP path serves a listener whose configuration uses only what it implements
(loadstone.datapath.native_http.refusal), the pure one the others.

A native engine whose llhttp fails its self-test does not start (DataPathError,
raised by `configure`): it never falls back to the pure path silently.
"""

from __future__ import annotations

import os
from typing import Any

from loadstone.config.model import GlobalConfig, ListenerConfig
from loadstone.datapath.http import HttpFrontend as PureHttpFrontend
from loadstone.datapath.pure import TcpFrontend as PureTcpFrontend

NO_EXTENSIONS = os.environ.get("LOADSTONE_NO_EXTENSIONS", "") not in ("", "0")

TcpFrontend: Any = PureTcpFrontend
IMPLEMENTATION = "pure"
BUILD = "none"  # the native build's variant: release | debug; none without it


class DataPathError(Exception):
    """The data path cannot start; the message is one line saying why."""


if not NO_EXTENSIONS:
    try:
        from loadstone.datapath import native, native_http
    except ImportError:
        pass
    else:
        TcpFrontend = native.TcpFrontend
        IMPLEMENTATION = "native"
        BUILD = native.BUILD


def http_frontend(config: ListenerConfig) -> tuple[Any, str, str | None]:
    """The frontend class for an http listener, its path ("native" | "pure") and,
    for the pure one, why the native path does not serve it."""
    if IMPLEMENTATION != "native":
        why = "LOADSTONE_NO_EXTENSIONS=1" if NO_EXTENSIONS else "native data path not built"
        return PureHttpFrontend, "pure", why
    refused = native_http.refusal(config)
    if refused is not None:
        return PureHttpFrontend, "pure", refused
    return native_http.HttpFrontend, "native", None


def configure(global_config: GlobalConfig) -> None:
    """Settings of the data path as a whole (workers, splice), before any listener.

    Raises DataPathError when the native engine cannot serve (its llhttp failed
    the self-test)."""
    if IMPLEMENTATION == "native":
        try:
            native_http.init_llhttp()
        except RuntimeError as exc:
            raise DataPathError(f"native data path: {exc}") from None
        native.configure(global_config)


__all__ = [
    "BUILD",
    "IMPLEMENTATION",
    "NO_EXTENSIONS",
    "DataPathError",
    "TcpFrontend",
    "configure",
    "http_frontend",
]
