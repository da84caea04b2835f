"""Request heads: the checks that keep requests from being smuggled, and the head
sent to the server.

Theory of operation
-------------------
llhttp (through httptools) has already refused most malformed input before a
head reaches `RequestPolicy.prepare`: bare LF and bare CR line ends, obs-fold
continuation lines, whitespace before a colon, control characters in values,
invalid or duplicate Content-Length, Content-Length together with
Transfer-Encoding, a Transfer-Encoding whose last coding is not chunked, and
invalid chunk sizes. What it lets through and a proxy must still refuse
(RFC 9112 sections 3.2, 6.1, 6.3; RFC 9110 section 7.2):

- an HTTP version other than 1.0 and 1.1 (HTTP/0.9, or "HTTP/2.0" on a
  text connection);
- no Host in an HTTP/1.1 request, or more than one Host;
- Transfer-Encoding in an HTTP/1.0 request (faulty framing, section 6.1), or
  with any coding but a single "chunked" (the only one proxies must know);
- more header fields, or a bigger head, than the listener allows (431);
- an absolute-form target whose authority is not the Host value (RFC 9112
  section 3.2.2: the server follows the target, loadstone routes by Host):
  refused as HAProxy does.

The head sent on is rebuilt from the parsed fields, never copied as bytes: the
server sees exactly one framing header that agrees with the body the proxy will
write (the body is re-framed by the data path from what llhttp decoded), and
none of the connection's hop-by-hop fields (section 7.6.1 of RFC 9110):
Connection and every field it names (but Host, Content-Length and
Transfer-Encoding: a client naming them must not strip the framing of the
body that follows, nor the Host the request was routed by), Keep-Alive,
Proxy-Connection, TE, and Upgrade except on an upgrade request. The server
connection is kept alive and reused whatever an HTTP/1.1 client does; an
HTTP/1.0 request goes on as HTTP/1.0 with the client's own keep-alive choice.
"""

from __future__ import annotations

from typing import Final

from loadstone.config.model import ListenerConfig
from loadstone.http.cookie import CookieJar
from loadstone.http.rules import HeaderRules

Headers = list[tuple[bytes, bytes]]

# Flags returned by `prepare`.
CHUNKED: Final = 1  # the body is chunked (else Content-Length, or none)
HAS_BODY: Final = 2  # a body follows the head
EXPECT_CONTINUE: Final = 4  # Expect: 100-continue

_HOP_BY_HOP: Final = frozenset(
    {b"connection", b"keep-alive", b"proxy-connection", b"te", b"upgrade", b"http2-settings"}
)
# Names that need a look (a value of ours, a check); anything else is copied.
_HOST: Final = 1
_TRANSFER_ENCODING: Final = 2
_CONTENT_LENGTH: Final = 3
_CONNECTION: Final = 4
_EXPECT: Final = 5
_COOKIE: Final = 6
_UPGRADE: Final = 7
_SPECIAL: Final = {
    b"host": _HOST,
    b"transfer-encoding": _TRANSFER_ENCODING,
    b"content-length": _CONTENT_LENGTH,
    b"connection": _CONNECTION,
    b"expect": _EXPECT,
    b"cookie": _COOKIE,
    b"upgrade": _UPGRADE,
}
# Connection options that are not header names, and the names a client may not
# have removed as hop-by-hop: the server must see the framing of the body the
# proxy sends on, and the Host it was routed by (hop-by-hop abuse: without
# them, a body forwarded as is would be read as the next request).
_CONNECTION_OPTIONS: Final = frozenset(
    {b"close", b"keep-alive", b"upgrade", b"host", b"content-length", b"transfer-encoding"}
)

IDEMPOTENT: Final = frozenset({b"GET", b"HEAD", b"OPTIONS", b"PUT", b"DELETE", b"TRACE"})


def authority_differs(target: bytes, host: bytes) -> bool:
    """True when `target` is absolute-form ("http://authority/path") and its
    authority is not `host`."""
    if not target or target[0] in b"/*":
        return False  # origin-form or asterisk-form: Host alone names the host
    scheme_end = target.find(b"://")
    if scheme_end < 0:
        return False
    authority = target[scheme_end + 3 :]
    for stop in b"/?#":
        cut = authority.find(bytes((stop,)))
        if cut >= 0:
            authority = authority[:cut]
    return not authority or authority.lower() != host.strip(b" \t").lower()


class BadRequest(Exception):
    """The request is refused with `status` (400, 431, 501...) and never forwarded."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


class RequestPolicy:
    """One listener's request-head handling, compiled from its configuration."""

    __slots__ = (
        "cookie",
        "drop",
        "extra_cache",
        "forwardfor_except",
        "forwardfor_name",
        "max_head_size",
        "max_headers",
        "port_header",
        "proto_line",
        "rules",
    )

    def __init__(self, config: ListenerConfig) -> None:
        import ipaddress

        self.max_headers = config.max_headers
        self.max_head_size = config.max_head_size
        self.rules = HeaderRules(config.request_headers)
        self.cookie = CookieJar(config.cookie) if config.cookie is not None else None
        drop = set(_HOP_BY_HOP)
        # The values of these say what the proxy saw: one a client sent is a lie.
        self.proto_line = b""
        scheme = config.forwarded_scheme
        if scheme is not None:
            drop.add(b"x-forwarded-proto")
            self.proto_line = b"X-Forwarded-Proto: %s\r\n" % scheme.encode()
        self.port_header = config.forwarded_port
        if config.forwarded_port:
            drop.add(b"x-forwarded-port")
        self.drop = frozenset(drop)
        ff = config.forwardfor
        self.forwardfor_name = ff.header.encode("ascii") if ff is not None else b""
        self.forwardfor_except = (
            tuple(ipaddress.ip_network(n) for n in ff.except_nets) if ff else ()
        )
        # connection_lines by (client address, local port): a busy listener sees
        # the same few clients (other proxies, the services) over and over.
        self.extra_cache: dict[tuple[str | None, int | None], bytes] = {}

    def connection_lines(self, client_ip: str | None, local_port: int | None) -> bytes:
        """Header lines added to every request of one client connection, computed
        once per connection: X-Forwarded-For, -Port and -Proto."""
        key = (client_ip, local_port)
        cached = self.extra_cache.get(key)
        if cached is not None:
            return cached
        import ipaddress

        lines = b""
        if self.forwardfor_name and client_ip is not None:
            ip = ipaddress.ip_address(client_ip)
            if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
                ip = ip.ipv4_mapped  # a dual-stack listener's view of an IPv4 client
            if not any(ip in net for net in self.forwardfor_except):
                lines += b"%s: %s\r\n" % (self.forwardfor_name, str(ip).encode())
        if self.port_header and local_port is not None:
            lines += b"X-Forwarded-Port: %d\r\n" % local_port
        lines += self.proto_line
        if len(self.extra_cache) >= 4096:
            self.extra_cache.clear()
        self.extra_cache[key] = lines
        return lines

    def prepare(
        self,
        method: bytes,
        target: bytes,
        version: str,
        headers: Headers,
        extra: bytes,
        upgrade: bool,
    ) -> tuple[bytes, bytes | None, bytes | None, int]:
        """Check a parsed request head and build the one to send.

        Returns (head bytes, Host value or None, persistence cookie value or None,
        flags). Raises BadRequest.
        """
        if version != "1.1" and version != "1.0":
            raise BadRequest(400, f"HTTP version {version} not supported")
        if len(headers) > self.max_headers:
            raise BadRequest(431, f"more than {self.max_headers} header fields")
        drop = self.drop
        kept: Headers = []
        host: bytes | None = None
        hosts = 0
        cookie_value: bytes | None = None
        flags = 0
        named: list[bytes] | None = None
        keep_alive = False  # an HTTP/1.0 client's "Connection: keep-alive"
        size = len(method) + len(target) + 12
        for field in headers:
            name, value = field
            size += len(name) + len(value) + 4
            lower = name.lower()
            special = _SPECIAL.get(lower)
            if special is None:
                if lower not in drop:
                    kept.append(field)
                continue
            if special == _HOST:
                host = value
                hosts += 1
            elif special == _CONTENT_LENGTH:
                if value.strip() != b"0":
                    flags |= HAS_BODY
            elif special == _TRANSFER_ENCODING:
                if version == "1.0":
                    raise BadRequest(400, "Transfer-Encoding in an HTTP/1.0 request")
                if value.strip().lower() != b"chunked":
                    raise BadRequest(400, f"unsupported Transfer-Encoding {value!r}")
                flags |= CHUNKED | HAS_BODY
            elif special == _CONNECTION:
                for option in value.lower().split(b","):
                    option = option.strip()
                    if option == b"keep-alive":
                        keep_alive = True
                    elif option and option not in _CONNECTION_OPTIONS:
                        named = named or []
                        named.append(option)
                continue  # hop-by-hop: ours is written below
            elif special == _UPGRADE:
                if not upgrade:
                    continue
            elif special == _EXPECT:
                if value.strip().lower() == b"100-continue":
                    flags |= EXPECT_CONTINUE
            elif special == _COOKIE and self.cookie is not None:
                found, rest = self.cookie.find(value)
                if found is not None:
                    cookie_value = found
                    if rest is not None:
                        if not rest:
                            continue
                        field = (name, rest)
            kept.append(field)
        if size > self.max_head_size:
            raise BadRequest(431, f"request head larger than {self.max_head_size} bytes")
        if hosts > 1:
            raise BadRequest(400, "more than one Host header")
        if hosts == 0 and version == "1.1":
            raise BadRequest(400, "no Host header in an HTTP/1.1 request")
        if host is not None and authority_differs(target, host):
            raise BadRequest(400, "absolute-form target and Host name different hosts")
        if named:
            # Fields the client declared hop-by-hop in Connection go too.
            gone = frozenset(named)
            kept = [h for h in kept if h[0].lower() not in gone]
        if self.rules.rules:
            self.rules.apply(kept)
        http10 = version == "1.0"
        parts = [method, b" ", target, b" HTTP/1.0\r\n" if http10 else b" HTTP/1.1\r\n"]
        for name, value in kept:
            parts += (name, b": ", value, b"\r\n")
        if extra:
            parts.append(extra)
        if upgrade:
            parts.append(b"Connection: upgrade\r\n")
        elif http10 and keep_alive:
            # An HTTP/1.0 request goes on as one, so the server never answers with
            # chunks the client could not read, and with the client's keep-alive:
            # the server's answer then says to the client what it should.
            parts.append(b"Connection: keep-alive\r\n")
        parts.append(b"\r\n")
        return b"".join(parts), host, cookie_value, flags
