"""The engine writes a session's client address into its log line digit by
digit (engine/addr_text.c) instead of with inet_ntop and snprintf: the text must
stay inet_ntop's, byte for byte, IPv6's zero-run and IPv4-in-IPv6 rules included.
socket.inet_ntop is libc's inet_ntop, the function the engine used before."""

from __future__ import annotations

import itertools
import random
import socket
import struct

import pytest

relay = pytest.importorskip("loadstone._fastpath.relay", reason="native data path not built")


def sockaddr_in(address: str, port: int) -> bytes:
    # struct sockaddr_in: family (host order), port (network order), address, zero pad
    return (
        struct.pack("=H", socket.AF_INET)
        + struct.pack("!H", port)
        + socket.inet_pton(socket.AF_INET, address)
        + bytes(8)
    )


def sockaddr_in6(packed: bytes, port: int) -> bytes:
    # struct sockaddr_in6: family, port, flow info, address, scope id
    return (
        struct.pack("=H", socket.AF_INET6)
        + struct.pack("!HI", port, 0)
        + packed
        + struct.pack("=I", 0)
    )


def expected6(packed: bytes, port: int) -> str:
    return f"[{socket.inet_ntop(socket.AF_INET6, packed)}]:{port}"


IPV6_EDGES = [
    "::",
    "::1",
    "::2",
    "1::",
    "::ffff:0:0",
    "::ffff:0.0.0.0",
    "::ffff:127.0.0.1",
    "::ffff:255.255.255.255",
    "::1.2.3.4",  # IPv4-compatible (deprecated), still written dotted by glibc
    "::0.0.1.0",
    "::0:1.2.3.4",
    "::fffe:1.2.3.4",
    "0:0:0:0:1:ffff:1.2.3.4",
    "::ffff:1:1.2.3.4",
    "1:0:0:1:0:0:0:1",  # the longer zero run wins
    "1:0:0:0:1:0:0:1",
    "1:0:0:1:1:0:0:1",  # a tie: the first run wins
    "1:0:1:1:1:1:1:1",  # a single zero group is not shortened
    "1:2:3:4:5:6:7:8",
    "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
    "fe80::1",
    "2001:db8::17",
    "2001:db8:0:0:1::",
    "0:0:1::",
    "abcd:ef01:2345:6789:abcd:ef01:2345:6789",
    "64:ff9b::192.0.2.33",
]


@pytest.mark.parametrize("port", [0, 1, 80, 9999, 10000, 65535])
@pytest.mark.parametrize(
    "address", ["0.0.0.0", "127.0.0.1", "1.2.3.4", "10.0.0.255", "198.18.100.9", "255.255.255.255"]
)
def test_ipv4_is_inet_ntop_text(address: str, port: int) -> None:
    packed = socket.inet_pton(socket.AF_INET, address)
    assert relay.address_text(sockaddr_in(address, port)) == (
        f"{socket.inet_ntop(socket.AF_INET, packed)}:{port}"
    )


@pytest.mark.parametrize("text", IPV6_EDGES)
def test_ipv6_edge_cases_are_inet_ntop_text(text: str) -> None:
    packed = socket.inet_pton(socket.AF_INET6, text)
    assert relay.address_text(sockaddr_in6(packed, 443)) == expected6(packed, 443)


def test_ipv6_every_zero_pattern_and_random_addresses_are_inet_ntop_text() -> None:
    """Each of the 256 patterns of zero and non-zero groups (the zero-run rule),
    with groups of 1 to 4 hex digits and the ::ffff: / IPv4 tails, then random
    addresses: none differs from inet_ntop."""
    rng = random.Random(5)
    cases = []
    for zeros in itertools.product((True, False), repeat=8):
        for _ in range(4):
            groups = [0 if z else rng.choice((1, 0xF, 0xAB, 0x1C2, 0xFFFF, 0xFFFE)) for z in zeros]
            cases.append(struct.pack("!8H", *groups))
        # the IPv4-mapped prefix in front of this pattern's last two groups
        tail = [0 if z else rng.randrange(1, 0x10000) for z in zeros[6:]]
        groups = [0, 0, 0, 0, 0, 0xFFFF, *tail]
        cases.append(struct.pack("!8H", *groups))
    cases += [rng.randbytes(16) for _ in range(2000)]
    mismatched = [
        packed.hex()
        for packed in cases
        if relay.address_text(sockaddr_in6(packed, 65535)) != expected6(packed, 65535)
    ]
    assert mismatched == [], mismatched[:10]


def test_another_family_is_a_dash() -> None:
    assert relay.address_text(struct.pack("=H", socket.AF_UNIX) + bytes(30)) == "-"
