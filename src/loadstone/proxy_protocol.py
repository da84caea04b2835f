"""The PROXY protocol (HAProxy's proxy-protocol.txt, versions 1 and 2), sans-IO.

A proxy that relays a TCP connection prepends one header to the bytes it sends,
telling the receiver the original client's address and the address the client
reached. Version 1 is a text line, version 2 a binary block:

    v1:  "PROXY" SP ( "TCP4" | "TCP6" ) SP src-ip SP dst-ip SP src-port SP dst-port CRLF
         "PROXY UNKNOWN" [ anything ] CRLF            (at most 107 bytes in all)

    v2:  \\r\\n\\r\\n\\0\\r\\nQUIT\\n   12-byte signature
         ver_cmd (1 byte)       0x2_ : version 2; _0 LOCAL, _1 PROXY
         fam (1 byte)           0x11 TCP over IPv4, 0x21 TCP over IPv6, 0x00 UNSPEC
         len (2 bytes, network order): the bytes that follow
         addresses              IPv4: src(4) dst(4) sport(2) dport(2);
                                IPv6: src(16) dst(16) sport(2) dport(2)
         TLVs                   the rest of `len`; skipped here

`parse` takes the bytes received so far and returns the header and its length,
None while more bytes are needed, or raises ProxyHeaderError for bytes that can
never become a valid header. `encode` builds the header a proxy sends. Nothing
here touches a socket or an event loop (datapath.proxy_gate does that).
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass
from typing import Final, Literal

Version = Literal["v1", "v2"]
Endpoint = tuple[str, int]  # (IP literal, port)

V2_SIGNATURE: Final = b"\r\n\r\n\x00\r\nQUIT\n"
V1_PREFIX: Final = b"PROXY "
V1_MAX: Final = 107  # the specification's bound on a v1 line, CRLF included
_V2_FIXED: Final = 16  # signature, ver_cmd, fam, len
_V2_IPV4: Final = struct.Struct("!4s4sHH")
_V2_IPV6: Final = struct.Struct("!16s16sHH")


class ProxyHeaderError(ValueError):
    """Bytes that are not (the start of) a valid PROXY header; the text says why."""


@dataclass(frozen=True, slots=True)
class ProxyHeader:
    version: Version
    # None for v1 UNKNOWN and v2 LOCAL or UNSPEC: the receiver keeps the
    # connection's own addresses (a health check of the sending proxy, say).
    source: Endpoint | None
    destination: Endpoint | None


def could_start_header(data: bytes) -> bool:
    """Could `data` (the first bytes of a connection) be the start of a header?"""
    n = min(len(data), len(V1_PREFIX))
    if data[:n] == V1_PREFIX[:n]:
        return True
    n = min(len(data), len(V2_SIGNATURE))
    return data[:n] == V2_SIGNATURE[:n]


def parse(data: bytes) -> tuple[ProxyHeader, int] | None:
    """The header at the start of `data` and its length in bytes, or None when
    `data` is a valid beginning that needs more bytes.

    Raises ProxyHeaderError when `data` cannot be the start of a header."""
    if not data:
        return None
    if data[0] == V2_SIGNATURE[0]:
        return _parse_v2(data)
    return _parse_v1(data)


def _parse_v1(data: bytes) -> tuple[ProxyHeader, int] | None:
    end = data.find(b"\r\n", 0, V1_MAX)
    if end < 0:
        n = min(len(data), len(V1_PREFIX))
        if data[:n] != V1_PREFIX[:n]:
            raise ProxyHeaderError("not a PROXY protocol header")
        if len(data) >= V1_MAX:
            raise ProxyHeaderError(f"v1 header without CRLF in its first {V1_MAX} bytes")
        if b"\n" in data or b"\r" in data[:-1]:
            raise ProxyHeaderError("v1 header with a bare CR or LF")
        return None
    line = data[:end]
    if not line.startswith(V1_PREFIX):
        raise ProxyHeaderError("not a PROXY protocol header")
    words = line.split(b" ")
    if words[1] == b"UNKNOWN":
        return ProxyHeader("v1", None, None), end + 2
    if len(words) != 6 or words[1] not in (b"TCP4", b"TCP6"):
        raise ProxyHeaderError("v1 header: expected PROXY TCP4|TCP6 SRC DST SPORT DPORT")
    family = 4 if words[1] == b"TCP4" else 6
    source = _v1_endpoint(words[2], words[4], family)
    destination = _v1_endpoint(words[3], words[5], family)
    return ProxyHeader("v1", source, destination), end + 2


def _v1_endpoint(ip: bytes, port: bytes, family: int) -> Endpoint:
    try:
        address = ipaddress.ip_address(ip.decode("ascii"))
    except (UnicodeDecodeError, ValueError):
        raise ProxyHeaderError(f"v1 header: bad address {ip[:48]!r}") from None
    if address.version != family:
        raise ProxyHeaderError(f"v1 header: {address} is not TCP{family}")
    # Ports are 0-65535 in decimal with no leading zero (the specification).
    if not port.isdigit() or len(port) > 5 or (len(port) > 1 and port[0:1] == b"0"):
        raise ProxyHeaderError(f"v1 header: bad port {port[:8]!r}")
    number = int(port)
    if number > 65535:
        raise ProxyHeaderError(f"v1 header: bad port {number}")
    return str(address), number


def _parse_v2(data: bytes) -> tuple[ProxyHeader, int] | None:
    n = min(len(data), len(V2_SIGNATURE))
    if data[:n] != V2_SIGNATURE[:n]:
        raise ProxyHeaderError("not a PROXY protocol header")
    if len(data) < _V2_FIXED:
        return None
    ver_cmd, fam, length = struct.unpack_from("!BBH", data, 12)
    if ver_cmd >> 4 != 2:
        raise ProxyHeaderError(f"v2 header: version {ver_cmd >> 4}")
    command = ver_cmd & 0x0F
    if command > 1:
        raise ProxyHeaderError(f"v2 header: unknown command {command}")
    total = _V2_FIXED + length
    if len(data) < total:
        return None
    if command == 0 or fam == 0x00:
        return ProxyHeader("v2", None, None), total  # LOCAL, or UNSPEC: no addresses
    if fam == 0x11:
        layout, version = _V2_IPV4, 4
    elif fam == 0x21:
        layout, version = _V2_IPV6, 6
    else:
        raise ProxyHeaderError(f"v2 header: unsupported address family 0x{fam:02x}")
    if length < layout.size:
        raise ProxyHeaderError(f"v2 header: {length} bytes cannot hold IPv{version} addresses")
    src, dst, sport, dport = layout.unpack_from(data, _V2_FIXED)
    source = (str(ipaddress.ip_address(src)), sport)
    destination = (str(ipaddress.ip_address(dst)), dport)
    return ProxyHeader("v2", source, destination), total


def encode(version: Version, source: Endpoint | None, destination: Endpoint | None) -> bytes:
    """The header telling a server that `source` connected to `destination`.

    Without both addresses (a client gone before we asked, a unix socket) the
    header says so: v1 UNKNOWN, v2 LOCAL. Mixed families (an IPv4 client on an
    IPv6 socket) are sent as IPv6, the IPv4 address mapped (::ffff:a.b.c.d)."""
    pair = _same_family(source, destination)
    if version == "v1":
        if pair is None:
            return b"PROXY UNKNOWN\r\n"
        (src, sport), (dst, dport), family = pair
        proto = "TCP4" if family == 4 else "TCP6"
        return f"PROXY {proto} {src} {dst} {sport} {dport}\r\n".encode("ascii")
    if pair is None:
        return V2_SIGNATURE + b"\x20\x00\x00\x00"  # LOCAL, UNSPEC, no address block
    (src, sport), (dst, dport), family = pair
    if family == 4:
        block = _V2_IPV4.pack(_packed(src), _packed(dst), sport, dport)
        return V2_SIGNATURE + struct.pack("!BBH", 0x21, 0x11, len(block)) + block
    block = _V2_IPV6.pack(_packed(src), _packed(dst), sport, dport)
    return V2_SIGNATURE + struct.pack("!BBH", 0x21, 0x21, len(block)) + block


def _packed(ip: str) -> bytes:
    return ipaddress.ip_address(ip).packed


def _same_family(
    source: Endpoint | None, destination: Endpoint | None
) -> tuple[Endpoint, Endpoint, int] | None:
    if source is None or destination is None:
        return None
    try:
        src = ipaddress.ip_address(source[0].partition("%")[0])
        dst = ipaddress.ip_address(destination[0].partition("%")[0])
    except ValueError:
        return None
    if src.version == dst.version:
        return (str(src), source[1]), (str(dst), destination[1]), src.version
    if isinstance(src, ipaddress.IPv4Address):
        src6 = ipaddress.IPv6Address(f"::ffff:{src}")
        return (str(src6), source[1]), (str(dst), destination[1]), 6
    dst6 = ipaddress.IPv6Address(f"::ffff:{dst}")
    return (str(src), source[1]), (str(dst6), destination[1]), 6
