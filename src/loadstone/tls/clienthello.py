"""The first flight of a TLS client, read without terminating: SNI, ALPN, versions.

Sans-IO, in h11's manner: a `ClientHelloReader` is fed the bytes a client sends,
as they arrive, and answers each feed with the parsed `ClientHello`, or None
while it needs more, or raises `ClientHelloError` (its `reason` is one short
word-list for the counters and the session log). It never changes the bytes:
the caller forwards them, unchanged, to the server it picks (SNI passthrough,
HAProxy's `req.ssl_sni` after `tcp-request inspect-delay`).

Theory of operation
-------------------
The ClientHello is one handshake message carried by one or more records; a
client may split it across records (large post-quantum key shares do) and the
network splits the records across reads. So the reader works in two layers:

    records   -> handshake bytes  (strip each 5-byte record header, append the
                                   fragment; every record before the ClientHello
                                   is complete must be a handshake record)
    handshake -> ClientHello      (once the 4-byte handshake header's length is
                                   all there, parse the body in one go)

The wire layout (RFC 8446 section 5.1 and 4.1.2; RFC 5246 section 7.4.1.2):

    TLSPlaintext: ContentType type (22 = handshake); ProtocolVersion
                  legacy_record_version (0x0301..0x0304); uint16 length
                  (<= 2^14); opaque fragment[length]
    Handshake:    HandshakeType msg_type (1 = client_hello); uint24 length
    ClientHello:  ProtocolVersion legacy_version; Random random (32 bytes);
                  opaque legacy_session_id<0..32>;
                  CipherSuite cipher_suites<2..2^16-2>;
                  opaque legacy_compression_methods<1..2^8-1>;
                  Extension extensions<0..2^16-1>    (absent in old clients)
    Extension:    uint16 extension_type; opaque extension_data<0..2^16-1>

and the extensions read (RFC 6066 section 3, RFC 7301 section 3.1, RFC 8446
section 4.2.1):

    server_name (0):         ServerName server_name_list<1..2^16-1>, each
                             NameType name_type (0 = host_name) + opaque<1..2^16-1>
    alpn (16):               ProtocolName protocol_name_list<2..2^16-1>, each opaque<1..2^8-1>
    supported_versions (43): ProtocolVersion versions<2..254>

Anything after the ClientHello (early data, a second message) is not looked at.
"""

from __future__ import annotations

from dataclasses import dataclass

# Record and handshake constants (RFC 8446 appendix B).
RECORD_HEADER = 5
HANDSHAKE_HEADER = 4
CONTENT_HANDSHAKE = 22
HANDSHAKE_CLIENT_HELLO = 1
MAX_RECORD = 1 << 14  # TLSPlaintext.length
EXT_SERVER_NAME = 0
EXT_ALPN = 16
EXT_SUPPORTED_VERSIONS = 43
NAME_TYPE_HOST = 0

# A ClientHello larger than this is refused: real ones are a few hundred bytes,
# a few kilobytes with post-quantum key shares; the bound keeps what one
# connection may make us buffer small.
MAX_CLIENT_HELLO = 64 * 1024

VERSION_NAMES = {
    0x0300: "SSLv3",
    0x0301: "TLSv1",
    0x0302: "TLSv1.1",
    0x0303: "TLSv1.2",
    0x0304: "TLSv1.3",
}


@dataclass(frozen=True, slots=True)
class ClientHello:
    """What routing and logging need of a client's first message."""

    # host_name of server_name, lower case without a trailing dot; None: no SNI
    server_name: str | None
    alpn: tuple[str, ...]  # protocol names offered, in the client's order (latin-1)
    # Versions offered: supported_versions when present (TLS 1.3 clients), else
    # legacy_version alone; as numbers (0x0303 = TLS 1.2).
    versions: tuple[int, ...]
    size: int  # bytes of the records that carried the ClientHello


class ClientHelloError(Exception):
    """The client's first bytes are not a ClientHello loadstone can read."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class ClientHelloReader:
    """Feed it a client's first bytes; it answers once the ClientHello is whole."""

    __slots__ = ("_handshake", "_pending", "_records_size", "done")

    def __init__(self) -> None:
        self._pending = b""  # bytes of a record not yet whole
        self._handshake = bytearray()  # fragments of the handshake records so far
        self._records_size = 0
        self.done = False

    def feed(self, data: bytes) -> ClientHello | None:
        """The ClientHello once these bytes complete it, else None (more needed).

        Raises ClientHelloError when the bytes cannot be a ClientHello; after a
        result or an error the reader must not be fed again."""
        if self.done:
            raise RuntimeError("the ClientHello was already read")
        buffer = self._pending + data
        offset = 0
        while len(buffer) - offset >= RECORD_HEADER:
            self._check_record_header(buffer[offset : offset + RECORD_HEADER])
            length = int.from_bytes(buffer[offset + 3 : offset + 5])
            end = offset + RECORD_HEADER + length
            if end > len(buffer):
                break
            self._handshake += buffer[offset + RECORD_HEADER : end]
            self._records_size += RECORD_HEADER + length
            offset = end
            hello = self._hello_if_whole()
            if hello is not None:
                self.done = True
                return hello
        # A record header not yet whole is judged on the bytes it has: what
        # already cannot be TLS (plain HTTP, an SSLv2 hello) is refused now, not
        # at the timeout, however the reads fell.
        self._pending = buffer[offset:]
        self._check_record_header(self._pending)
        if len(self._pending) + len(self._handshake) > MAX_CLIENT_HELLO:
            self.done = True
            raise ClientHelloError("ClientHello too large")
        return None

    def _check_record_header(self, header: bytes) -> None:
        """Refuse a record header (or the start of one) that cannot carry a ClientHello."""
        if not header:
            return
        if header[0] != CONTENT_HANDSHAKE:
            self.done = True
            raise ClientHelloError(_not_a_handshake(header))
        if len(header) >= 2 and header[1] != 3:
            self.done = True
            raise ClientHelloError("not TLS (record version)")
        if len(header) >= RECORD_HEADER:
            length = int.from_bytes(header[3:5])
            if length == 0 or length > MAX_RECORD:
                self.done = True
                raise ClientHelloError("bad record length")

    def _hello_if_whole(self) -> ClientHello | None:
        handshake = self._handshake
        if len(handshake) < HANDSHAKE_HEADER:
            return None
        if handshake[0] != HANDSHAKE_CLIENT_HELLO:
            self.done = True
            raise ClientHelloError("first handshake message is not a ClientHello")
        length = int.from_bytes(handshake[1:4])
        if length > MAX_CLIENT_HELLO:
            self.done = True
            raise ClientHelloError("ClientHello too large")
        if len(handshake) < HANDSHAKE_HEADER + length:
            return None
        body = bytes(handshake[HANDSHAKE_HEADER : HANDSHAKE_HEADER + length])
        try:
            return parse_client_hello(body, self._records_size)
        except ClientHelloError:
            self.done = True
            raise


def _not_a_handshake(data: bytes) -> str:
    if data[:1] and data[0] & 0x80:
        return "SSLv2 hello"  # a two-byte header with the high bit set (RFC 6101 appendix E)
    if data[:1].isalpha():
        return "not TLS (plain text)"
    return "not TLS (record type)"


class _Cursor:
    """Reads the length-prefixed vectors of a TLS structure; a short read is an error."""

    __slots__ = ("data", "pos")

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def remaining(self) -> int:
        return len(self.data) - self.pos

    def take(self, n: int) -> bytes:
        if n > len(self.data) - self.pos:
            raise ClientHelloError("truncated ClientHello field")
        chunk = self.data[self.pos : self.pos + n]
        self.pos += n
        return chunk

    def number(self, size: int) -> int:
        return int.from_bytes(self.take(size))

    def vector(self, length_size: int) -> _Cursor:
        return _Cursor(self.take(self.number(length_size)))


def parse_client_hello(body: bytes, size: int = 0) -> ClientHello:
    """A ClientHello from its handshake body (after the 4-byte handshake header)."""
    hello = _Cursor(body)
    legacy_version = hello.number(2)
    hello.take(32)  # random
    if len(hello.vector(1).data) > 32:
        raise ClientHelloError("session id longer than 32 bytes")
    suites = hello.vector(2)
    if suites.remaining() < 2 or suites.remaining() % 2:
        raise ClientHelloError("bad cipher suite list")
    if not hello.vector(1).data:
        raise ClientHelloError("no compression method")
    server_name: str | None = None
    alpn: tuple[str, ...] = ()
    versions: tuple[int, ...] = (legacy_version,)
    if hello.remaining():
        extensions = hello.vector(2)
        seen: set[int] = set()
        while extensions.remaining():
            kind = extensions.number(2)
            data = extensions.vector(2)
            if kind in seen:
                raise ClientHelloError("extension sent twice")  # RFC 8446 section 4.2
            seen.add(kind)
            if kind == EXT_SERVER_NAME:
                server_name = _server_name(data)
            elif kind == EXT_ALPN:
                alpn = _alpn(data)
            elif kind == EXT_SUPPORTED_VERSIONS:
                versions = _versions(data)
    return ClientHello(server_name, alpn, versions, size)


def _server_name(data: _Cursor) -> str | None:
    names = data.vector(2)
    if data.remaining():
        raise ClientHelloError("bad server_name extension")
    host: str | None = None
    while names.remaining():
        name_type = names.number(1)
        name = names.vector(2).data
        if name_type != NAME_TYPE_HOST:
            continue  # no other type is defined; skip rather than guess
        if host is not None:
            raise ClientHelloError("two host names in server_name")  # RFC 6066 section 3
        if not name or not name.isascii() or any(c <= 0x20 or c == 0x7F for c in name):
            raise ClientHelloError("bad host name in server_name")
        host = name.decode("ascii").lower().removesuffix(".")
    return host


def _alpn(data: _Cursor) -> tuple[str, ...]:
    protocols = data.vector(2)
    if data.remaining() or not protocols.remaining():
        raise ClientHelloError("bad alpn extension")
    names = []
    while protocols.remaining():
        name = protocols.vector(1).data
        if not name:
            raise ClientHelloError("empty alpn protocol name")
        names.append(name.decode("latin-1"))
    return tuple(names)


def _versions(data: _Cursor) -> tuple[int, ...]:
    listed = data.vector(1)
    if data.remaining() or not listed.remaining() or listed.remaining() % 2:
        raise ClientHelloError("bad supported_versions extension")
    return tuple(listed.number(2) for _ in range(listed.remaining() // 2))


def version_name(version: int) -> str:
    """0x0303 -> "TLSv1.2"; GREASE and unknown values as hex."""
    return VERSION_NAMES.get(version, f"0x{version:04x}")
