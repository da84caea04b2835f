"""Per-connection socket settings of the pure data path, client and server side alike."""

from __future__ import annotations

import asyncio
import socket

from loadstone.config.model import ListenerConfig

WRITE_HIGH_WATER = 256 * 1024  # per-transport write buffer before the peer is paused
WRITE_LOW_WATER = 64 * 1024


def apply_keepalive(transport: asyncio.BaseTransport, cfg: ListenerConfig) -> None:
    ka = cfg.tcp_keepalive
    if ka is None:
        return  # the common case: do not even fetch the socket object
    sock = transport.get_extra_info("socket")
    if sock is None:
        return
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, max(1, int(ka.idle)))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, max(1, int(ka.interval)))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, ka.count)
