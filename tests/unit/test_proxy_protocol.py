"""The PROXY protocol codec (loadstone.proxy_protocol), fed bytes: headers built
and read back, read a byte at a time, and the bytes it refuses."""

from __future__ import annotations

import ast
import struct
from pathlib import Path

import pytest

import loadstone.proxy_protocol as pp
from loadstone.proxy_protocol import ProxyHeader, ProxyHeaderError, encode, parse


def test_codec_imports_no_io() -> None:
    tree = ast.parse(Path(pp.__file__).read_text())
    imported: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module.split(".")[0])
    assert not imported & {"asyncio", "socket", "selectors", "ssl", "uvloop"}


def test_v1_text_is_the_specification_s() -> None:
    header = encode("v1", ("192.0.2.10", 56324), ("198.18.0.1", 443))
    assert header == b"PROXY TCP4 192.0.2.10 198.18.0.1 56324 443\r\n"
    header6 = encode("v1", ("2001:db8::1", 1), ("2001:db8::2", 2))
    assert header6 == b"PROXY TCP6 2001:db8::1 2001:db8::2 1 2\r\n"


def test_v2_bytes_are_the_specification_s() -> None:
    header = encode("v2", ("192.0.2.10", 56324), ("198.18.0.1", 443))
    assert header[:12] == b"\r\n\r\n\x00\r\nQUIT\n"
    assert header[12:16] == b"\x21\x11\x00\x0c"  # v2 PROXY, TCP over IPv4, 12 bytes
    assert header[16:] == bytes([192, 0, 2, 10, 198, 18, 0, 1]) + struct.pack("!HH", 56324, 443)


@pytest.mark.parametrize("version", ["v1", "v2"])
@pytest.mark.parametrize(
    ("source", "destination", "seen"),
    [
        (("127.0.0.5", 40000), ("127.0.0.1", 3306), None),
        (("::1", 1), ("::1", 65535), None),
        # An IPv4 client of an IPv6 socket: both sent as IPv6, the IPv4 one mapped.
        (("192.0.2.1", 5), ("2001:db8::9", 6), (("::ffff:c000:201", 5), ("2001:db8::9", 6))),
    ],
)
def test_round_trip_whole_and_byte_by_byte(
    version: pp.Version,
    source: pp.Endpoint,
    destination: pp.Endpoint,
    seen: tuple[pp.Endpoint, pp.Endpoint] | None,
) -> None:
    header = encode(version, source, destination)
    expected = ProxyHeader(version, *(seen or (source, destination)))
    assert parse(header + b"payload") == (expected, len(header))
    for cut in range(len(header)):
        assert parse(header[:cut]) is None, cut  # a valid beginning: more bytes needed


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_without_addresses(version: pp.Version) -> None:
    header = encode(version, None, ("127.0.0.1", 80))
    assert header in (b"PROXY UNKNOWN\r\n", b"\r\n\r\n\x00\r\nQUIT\n\x20\x00\x00\x00")
    assert parse(header) == (ProxyHeader(version, None, None), len(header))


def test_v2_tlvs_are_skipped() -> None:
    block = bytes([10, 0, 0, 1, 10, 0, 0, 2]) + struct.pack("!HH", 1000, 2000)
    tlv = b"\x04\x00\x03abc"  # PP2_TYPE_NOOP
    header = pp.V2_SIGNATURE + struct.pack("!BBH", 0x21, 0x11, len(block) + len(tlv)) + block + tlv
    parsed = parse(header + b"rest")
    assert parsed == (ProxyHeader("v2", ("10.0.0.1", 1000), ("10.0.0.2", 2000)), len(header))


@pytest.mark.parametrize(
    ("data", "why"),
    [
        (b"GET / HTTP/1.1\r\n", "not a PROXY"),
        (b"PROXY TCP4 1.2.3.4 nonsense\r\n", "expected PROXY"),
        (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 99999\r\n", "bad port"),
        (b"PROXY TCP4 1.2.3.4 5.6.7.8 01 2\r\n", "bad port"),
        (b"PROXY TCP6 1.2.3.4 5.6.7.8 1 2\r\n", "is not TCP6"),
        (b"PROXY TCP4 ::1 ::1 1 2\r\n", "is not TCP4"),
        (b"PROXY TCP4 " + b"1" * 120, "without CRLF"),
        (b"PROXY TCP4 1.2.3.4\n", "bare CR or LF"),
        (b"\r\n\r\n\x00\r\nQUIX\n", "not a PROXY"),
        (pp.V2_SIGNATURE + b"\x11\x11\x00\x00", "version 1"),
        (pp.V2_SIGNATURE + b"\x22\x11\x00\x00", "unknown command"),
        (pp.V2_SIGNATURE + b"\x21\x31\x00\x00", "unsupported address family"),
        (pp.V2_SIGNATURE + b"\x21\x21\x00\x0c" + bytes(12), "cannot hold IPv6"),
    ],
)
def test_refused(data: bytes, why: str) -> None:
    with pytest.raises(ProxyHeaderError, match=why):
        parse(data)


def test_could_start_header() -> None:
    assert pp.could_start_header(b"PRO")
    assert pp.could_start_header(b"\r\n\r\n\x00")
    assert not pp.could_start_header(b"GET ")
    assert not pp.could_start_header(b"\x16\x03\x01")  # a TLS ClientHello
