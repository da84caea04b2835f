"""The data path: the native one when it is built and allowed, else the pure twin.

The choice is made once, at import time, as aiohttp does for its parser:
LOADSTONE_NO_EXTENSIONS=1 forces the pure-Python path.
"""

from __future__ import annotations

import os
from typing import Any

from loadstone.datapath.pure import TcpFrontend as PureTcpFrontend

NO_EXTENSIONS = os.environ.get("LOADSTONE_NO_EXTENSIONS", "") not in ("", "0")

TcpFrontend: Any = PureTcpFrontend
IMPLEMENTATION = "pure"

if not NO_EXTENSIONS:
    try:  # the native twin arrives with the fast-path work
        from loadstone._fastpath.relay import TcpFrontend as NativeTcpFrontend
    except ImportError:
        pass
    else:
        TcpFrontend = NativeTcpFrontend
        IMPLEMENTATION = "native"

__all__ = ["IMPLEMENTATION", "NO_EXTENSIONS", "TcpFrontend"]
