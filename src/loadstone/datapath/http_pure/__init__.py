"""The pure HTTP data path (mode http): HTTP/1.1 on both sides, parsed by httptools.

See datapath.http_pure.frontend for its parts.
"""

from __future__ import annotations

import asyncio

from loadstone.datapath.http_pure.connection import ClientConnection
from loadstone.datapath.http_pure.frontend import HttpListener


class HttpFrontend(HttpListener):
    """The pure HTTP frontend: a listener whose connections are ClientConnections.

    Defined here, where both are known, so that the listener (frontend.py) and
    the connection (connection.py), which reads the listener, import one way."""

    def _accepted(self) -> asyncio.Protocol:
        return ClientConnection(self)


__all__ = ["HttpFrontend"]
