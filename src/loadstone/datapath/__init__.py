"""The data path: the native one when it is built and allowed, else the pure twin.

The choice is made once, at import time, as aiohttp does for its parser:
LOADSTONE_NO_EXTENSIONS=1 forces the pure-Python path, and so does a build
without the extension (no compiler, not Linux: no epoll/splice).
"""

from __future__ import annotations

import os
from typing import Any

from loadstone.config.model import GlobalConfig
from loadstone.datapath.pure import TcpFrontend as PureTcpFrontend

NO_EXTENSIONS = os.environ.get("LOADSTONE_NO_EXTENSIONS", "") not in ("", "0")

TcpFrontend: Any = PureTcpFrontend
IMPLEMENTATION = "pure"
BUILD = "none"  # the native build's variant: release | debug; none without it

if not NO_EXTENSIONS:
    try:
        from loadstone.datapath import native
    except ImportError:
        pass
    else:
        TcpFrontend = native.TcpFrontend
        IMPLEMENTATION = "native"
        BUILD = native.BUILD


def configure(global_config: GlobalConfig) -> None:
    """Settings of the data path as a whole (workers, splice), before any listener."""
    if IMPLEMENTATION == "native":
        native.configure(global_config)


__all__ = ["BUILD", "IMPLEMENTATION", "NO_EXTENSIONS", "TcpFrontend", "configure"]
