"""`transparent` (IP_TRANSPARENT, HAProxy's `bind ... transparent`) on the
listening socket: set, and an address of no interface of this host bound with
it. IP_TRANSPARENT needs CAP_NET_ADMIN: the test command runs as root."""

from __future__ import annotations

import socket

import pytest

from loadstone.config import parse_config
from loadstone.config.model import ListenerConfig
from loadstone.listeners.binding import IP_TRANSPARENT, IPV6_TRANSPARENT, BindError, bind_address
from tests.integration.harness import free_port


def listener(bind: str, transparent: bool) -> ListenerConfig:
    return parse_config(
        f"listeners:\n  vip:\n    bind: '{bind}'\n    transparent: {str(transparent).lower()}\n"
        "    servers: [{name: a, address: '127.0.0.1:1'}]\n"
    ).listeners[0]


@pytest.mark.parametrize(
    ("bind", "level", "option"),
    [
        ("198.18.77.1:{port}", socket.IPPROTO_IP, IP_TRANSPARENT),
        ("[2001:db8::77]:{port}", socket.IPPROTO_IPV6, IPV6_TRANSPARENT),
    ],
)
def test_transparent_binds_a_foreign_address(bind: str, level: int, option: int) -> None:
    config = listener(bind.format(port=free_port()), True)
    sock = bind_address(config.bind[0], config)
    try:
        assert sock.getsockopt(level, option) == 1
        assert sock.getsockname()[0] == config.bind[0].host  # on no interface of this host
    finally:
        sock.close()


def test_without_it_the_foreign_address_is_refused() -> None:
    config = listener(f"198.18.77.1:{free_port()}", False)
    with pytest.raises(BindError, match="address not available on this host"):
        bind_address(config.bind[0], config)
