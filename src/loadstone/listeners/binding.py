"""Listening sockets: created here, before any protocol code sees them.

We create the sockets ourselves rather than let the event loop do it, for
options the loop does not offer: IP_FREEBIND (bind a VIP that keepalived has not
moved to this host yet), IPV6_V6ONLY (so "[::]:80" and "0.0.0.0:80" coexist),
and so that a reload can hand a socket that stays over to the new configuration.
"""

from __future__ import annotations

import errno
import os
import socket

from loadstone.config.model import Address, ListenerConfig

# Linux values; the socket module names them only on some Python builds.
IP_FREEBIND = getattr(socket, "IP_FREEBIND", 15)
IPV6_FREEBIND = 78
IP_TRANSPARENT = getattr(socket, "IP_TRANSPARENT", 19)
IPV6_TRANSPARENT = 75
TCP_DEFER_ACCEPT = getattr(socket, "TCP_DEFER_ACCEPT", 9)
# How long the kernel holds a connection that has sent nothing (defer_accept): it
# is then accepted all the same (Linux since 2.6.32), so a client that waits for
# the server to speak first is late by about this much, not lost. HAProxy's value.
DEFER_ACCEPT_SECONDS = 1


class BindError(Exception):
    """A listening address could not be bound; the message is one line."""


def _family_and_host(address: Address) -> tuple[socket.AddressFamily, str]:
    host = address.host
    if host in ("*", ""):
        return socket.AF_INET, "0.0.0.0"
    if ":" in host:
        return socket.AF_INET6, host
    try:
        socket.inet_pton(socket.AF_INET, host)
        return socket.AF_INET, host
    except OSError:
        pass
    try:
        info = socket.getaddrinfo(host, address.port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise BindError(f"cannot resolve {host!r}: {exc.strerror}") from None
    family, _, _, _, sockaddr = info[0]
    return socket.AddressFamily(family), str(sockaddr[0])


def bind_listener(config: ListenerConfig) -> list[socket.socket]:
    """Bind every address of a listener, or none: on error the ones bound are closed."""
    sockets: list[socket.socket] = []
    try:
        for i, address in enumerate(config.bind):
            try:
                sockets.append(bind_address(address, config))
            except BindError as exc:
                raise BindError(f"listeners.{config.name}.bind[{i}]: {exc}") from None
    except BaseException:
        for sock in sockets:
            sock.close()
        raise
    return sockets


def set_defer_accept(sock: socket.socket, config: ListenerConfig) -> None:
    """TCP_DEFER_ACCEPT on a listening socket as `defer_accept` says (also on the
    sockets a reload keeps): the kernel completes the accept only once the client's
    first bytes are in, so the proxy wakes once per connection for its accept and
    its first read together."""
    seconds = DEFER_ACCEPT_SECONDS if config.defer_accept else 0
    sock.setsockopt(socket.IPPROTO_TCP, TCP_DEFER_ACCEPT, seconds)


def bind_address(address: Address, config: ListenerConfig) -> socket.socket:
    family, host = _family_and_host(address)
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        if config.freebind:
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, IPV6_FREEBIND, 1)
            else:
                sock.setsockopt(socket.IPPROTO_IP, IP_FREEBIND, 1)
        if config.transparent:
            # HAProxy's `bind ... transparent`: a non-local address, and connections
            # to other hosts' addresses diverted here by TPROXY. EPERM without
            # CAP_NET_ADMIN, reported as such below.
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, IPV6_TRANSPARENT, 1)
            else:
                sock.setsockopt(socket.IPPROTO_IP, IP_TRANSPARENT, 1)
        sock.bind((host, address.port))
        sock.listen(config.backlog)
        set_defer_accept(sock, config)
        sock.setblocking(False)
    except OSError as exc:
        sock.close()
        reason = os.strerror(exc.errno).lower() if exc.errno else str(exc)
        if exc.errno == errno.EADDRINUSE:
            reason = "address already in use"
        elif exc.errno == errno.EADDRNOTAVAIL:
            reason = "address not available on this host (set freebind: true for a VIP)"
        elif exc.errno == errno.EPERM and config.transparent:
            reason = "transparent (IP_TRANSPARENT) needs CAP_NET_ADMIN"
        raise BindError(f"cannot bind {address}: {reason}") from None
    return sock
