"""Wire constants: status lines, the answers the proxy makes itself, chunk framing.

RFC 9112 section 4 (status line):  HTTP-version SP status-code SP [ reason-phrase ]
RFC 9112 section 7.1 (chunked):    chunk = chunk-size [ chunk-ext ] CRLF chunk-data CRLF
                                   last-chunk = 1*("0") [ chunk-ext ] CRLF
                                   chunked-body = *chunk last-chunk trailer-section CRLF
"""

from __future__ import annotations

from http import HTTPStatus
from typing import Final

CRLF: Final = b"\r\n"
LAST_CHUNK: Final = b"0\r\n\r\n"


def _reason(code: int) -> bytes:
    try:
        return HTTPStatus(code).phrase.encode("ascii")
    except ValueError:
        return b"Unknown"


# The status line sent to clients, by code: the proxy always speaks HTTP/1.1 to
# clients (as HAProxy does). The server's own reason phrase is not kept: it is
# optional and clients must ignore it (RFC 9112 section 4).
STATUS_LINES: Final[dict[int, bytes]] = {
    code: b"HTTP/1.1 %d %s\r\n" % (code, _reason(code)) for code in range(100, 600)
}


def chunk(data: bytes) -> bytes:
    """One chunk carrying `data` (which must not be empty: that is the last chunk)."""
    return b"%x\r\n%s\r\n" % (len(data), data)


_ANSWER_TEXT: Final[dict[int, str]] = {
    400: "Your browser sent an invalid request.",
    403: "Request forbidden by administrative rules.",
    405: "Method not allowed.",
    408: "Your browser didn't send a complete request in time.",
    413: "Request entity too large.",
    431: "The request header fields are too large.",
    500: "An internal server error occurred.",
    501: "Not implemented.",
    502: "The server returned an invalid or incomplete response.",
    503: "No server is available to handle this request.",
    504: "The server didn't respond in time.",
}


def answer(status: int, *, close: bool = True) -> bytes:
    """A complete response the proxy sends itself, HAProxy style (small HTML body)."""
    reason = _reason(status).decode()
    text = _ANSWER_TEXT.get(status, reason)
    body = f"<html><body><h1>{status} {reason}</h1>\n{text}\n</body></html>\n".encode()
    head = STATUS_LINES[status] + (
        b"content-length: %d\r\ncache-control: no-cache\r\ncontent-type: text/html\r\n" % len(body)
    )
    if close:
        head += b"connection: close\r\n"
    return head + CRLF + body


def redirect(code: int, location: bytes) -> bytes:
    """A redirect the proxy sends itself (`redirect: https`); the connection closes."""
    return (
        STATUS_LINES[code]
        + b"location: %s\r\ncontent-length: 0\r\ncache-control: no-cache\r\n" % location
        + b"connection: close\r\n"
        + CRLF
    )


# Prebuilt, so that an overloaded proxy does not format its refusals.
ANSWERS: Final[dict[int, bytes]] = {code: answer(code) for code in _ANSWER_TEXT}

CONTINUE_100: Final = b"HTTP/1.1 100 Continue\r\n\r\n"
