"""Response heads: framing decisions and the head sent to the client.

Theory of operation
-------------------
The server's head is parsed by llhttp; `ResponsePolicy.prepare` rebuilds it for
the client. It decides how the body is delimited on each side (RFC 9112
section 6.3, in that order):

    no body     HEAD request, 1xx, 204, 304
    chunked     Transfer-Encoding whose last coding is chunked
    length      Content-Length
    close       neither: the body ends when the server closes

and whether the client connection stays open: not when the client asked to
close, nor when the body ends at the server's close (a client cannot tell the
end of such a body from a broken connection otherwise).

Then: hop-by-hop fields go (Connection and every field it names, Keep-Alive,
Proxy-Connection, and Upgrade except on 101), Location and Content-Location are
rewritten when configured, the response rules apply, the persistence cookie is
set (with Cache-Control: private for nocache), and the proxy writes its own
Connection field when the client must be told.
"""

from __future__ import annotations

from typing import Final

from loadstone.config.model import ListenerConfig
from loadstone.http.cookie import CookieJar
from loadstone.http.message import STATUS_LINES
from loadstone.http.rules import HeaderRules, LocationRewriter

Headers = list[tuple[bytes, bytes]]

# Body delimitation of a response, as the server sends it.
BODY_NONE: Final = 0
BODY_LENGTH: Final = 1
BODY_CHUNKED: Final = 2
BODY_CLOSE: Final = 3

_HOP_BY_HOP: Final = frozenset({b"connection", b"keep-alive", b"proxy-connection", b"upgrade"})
_TRANSFER_ENCODING: Final = 1
_CONTENT_LENGTH: Final = 2
_CONNECTION: Final = 3
_LOCATION: Final = 4
_UPGRADE: Final = 5
_SPECIAL: Final = {
    b"transfer-encoding": _TRANSFER_ENCODING,
    b"content-length": _CONTENT_LENGTH,
    b"connection": _CONNECTION,
    b"location": _LOCATION,
    b"content-location": _LOCATION,
    b"upgrade": _UPGRADE,
    b"keep-alive": _CONNECTION,
    b"proxy-connection": _CONNECTION,
}


def status_line(status: int) -> bytes:
    line = STATUS_LINES.get(status)
    return line if line is not None else b"HTTP/1.1 %d Unknown\r\n" % status


class ResponsePolicy:
    """One listener's response-head handling, compiled from its configuration."""

    __slots__ = ("cookie", "location", "rules")

    def __init__(self, config: ListenerConfig) -> None:
        self.rules = HeaderRules(config.response_headers)
        self.location = (
            LocationRewriter(config.rewrite_location)
            if config.rewrite_location is not None
            else None
        )
        self.cookie = CookieJar(config.cookie) if config.cookie is not None else None

    def prepare(
        self,
        status: int,
        headers: Headers,
        *,
        head_request: bool,
        client_keep_alive: bool,
        client_http10: bool,
        set_cookie: bytes | None,
    ) -> tuple[bytes, int, bool]:
        """(head for the client, body delimitation, keep the client connection).

        `set_cookie`: the persistence cookie value to insert, or None.
        """
        kept: Headers = []
        chunked = False
        length = False
        named: list[bytes] | None = None
        location = self.location
        upgrade = status == 101
        for field in headers:
            name, value = field
            special = _SPECIAL.get(name.lower())
            if special is None:
                kept.append(field)
                continue
            if special == _CONNECTION:
                if name.lower() == b"connection":
                    for option in value.lower().split(b","):
                        option = option.strip()
                        if option and option not in (b"close", b"keep-alive", b"upgrade"):
                            named = named or []
                            named.append(option)
                continue
            if special == _TRANSFER_ENCODING:
                chunked = value.rstrip().lower().endswith(b"chunked")
                if client_http10:
                    continue  # the body goes out de-chunked, delimited by our close
            elif special == _CONTENT_LENGTH:
                length = True
            elif special == _LOCATION:
                if location is not None:
                    field = (name, location.rewrite(value))
            elif special == _UPGRADE and not upgrade:
                continue
            kept.append(field)

        if head_request or status < 200 or status == 204 or status == 304:
            body = BODY_NONE
        elif chunked:
            body = BODY_CHUNKED
        elif length:
            body = BODY_LENGTH
        else:
            body = BODY_CLOSE
        keep = (
            client_keep_alive
            and body != BODY_CLOSE
            and not (client_http10 and body == BODY_CHUNKED)
        )
        if named:
            gone = frozenset(named)
            kept = [h for h in kept if h[0].lower() not in gone]
        if self.rules:
            self.rules.apply(kept)
        parts = [status_line(status)]
        for name, value in kept:
            parts += (name, b": ", value, b"\r\n")
        if set_cookie is not None and self.cookie is not None and status >= 200:
            parts += (b"Set-Cookie: ", self.cookie.set_cookie(set_cookie), b"\r\n")
            if self.cookie.nocache:
                parts.append(b"Cache-Control: private\r\n")
        if upgrade:
            parts.append(b"Connection: upgrade\r\n")
        elif status >= 200:
            if not keep:
                parts.append(b"Connection: close\r\n")
            elif client_http10:
                parts.append(b"Connection: keep-alive\r\n")
        parts.append(b"\r\n")
        return b"".join(parts), body, keep


def close_head(data: bytes) -> bytes:
    """A relayed response head (at the start of `data`) made to say Connection: close.

    Used when responses are relayed byte for byte but the client connection will
    be closed after this one (the client asked, or the proxy is stopping) while
    the server's head says keep-alive: the client must be told, or it would send
    its next request into the closing connection. The head was validated by
    llhttp, so its lines end in CRLF; Connection and Keep-Alive lines go.
    """
    # llhttp skips empty lines before a status line (a server that ended the
    # previous body with one CRLF too many): they are not the end of this head.
    lead = len(data) - len(data.lstrip(b"\r\n"))
    if lead:
        return data[:lead] + close_head(data[lead:])
    end = data.find(b"\r\n\r\n")
    if end < 0 or data.startswith(b"HTTP/1.1 1") or data.startswith(b"HTTP/1.0 1"):
        return data  # not all here, or interim responses first: left as it is
    head = _without_connection_fields(data[: end + 2])
    return head + b"Connection: close\r\n\r\n" + data[end + 4 :]


def kept_open_head(data: bytes, client_http10: bool, bodiless: bool) -> bytes | None:
    """A relayed response head (at the start of `data`) whose server closes its
    connection after it (`Connection: close`, or HTTP/1.0), made for a client
    connection that stays open, as HAProxy keeps it: the server's close is its
    own connection's (hop-by-hop), so Connection and Keep-Alive go, the status
    line says HTTP/1.1, and an HTTP/1.0 client is told keep-alive.

    None when the client connection cannot stay open: the body ends at the
    server's close (neither Content-Length nor Transfer-Encoding, and `bodiless`
    false: a relayed body is not re-framed), or the head is not all in `data`.
    """
    lead = len(data) - len(data.lstrip(b"\r\n"))
    end = data.find(b"\r\n\r\n", lead)
    if end < 0 or data.startswith((b"HTTP/1.1 1", b"HTTP/1.0 1"), lead):
        return None  # not all here, or interim responses first
    head = data[lead : end + 2]
    lower = head.lower()
    chunked = b"\r\ntransfer-encoding:" in lower and not head.startswith(b"HTTP/1.0")
    if not (bodiless or chunked or b"\r\ncontent-length:" in lower):
        return None  # the body ends at the server's close
    head = _without_connection_fields(b"HTTP/1.1" + head[8:])
    if client_http10:
        head += b"Connection: keep-alive\r\n"
    return data[:lead] + head + b"\r\n" + data[end + 4 :]


def _without_connection_fields(head: bytes) -> bytes:
    """`head` (a status line and field lines, each ending in CRLF) without its
    Connection and Keep-Alive lines."""
    lower = head.lower()
    cuts: list[tuple[int, int]] = []
    for name in (b"\r\nconnection:", b"\r\nkeep-alive:"):
        at = lower.find(name)
        while at >= 0:
            line_end = lower.find(b"\r\n", at + 2)
            cuts.append((at, line_end))
            at = lower.find(name, line_end)
    if not cuts:
        return head
    cuts.sort()
    parts = []
    start = 0
    for at, line_end in cuts:
        parts.append(head[start:at])
        start = line_end
    parts.append(head[start:])
    return b"".join(parts)
