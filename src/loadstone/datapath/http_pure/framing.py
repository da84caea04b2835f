"""Message framing of the pure HTTP path, sans I/O: a body that llhttp decoded,
framed again for the other side.

Framing is never copied from one side to the other: llhttp decodes a body and
it is written again, as it came when its length is known (Content-Length, or
until the server closes) or as fresh chunks, so the two sides cannot disagree
on where a message ends (the root of request smuggling). Chunk extensions are
dropped on the way; a response's trailer fields are passed on after the last
chunk; a request's are dropped (loadstone.http.request).

RFC 9112, section 7.1, the grammar written here:

    chunked-body    = *chunk last-chunk trailer-section CRLF
    chunk           = chunk-size [ chunk-ext ] CRLF chunk-data CRLF
    chunk-size      = 1*HEXDIG
    last-chunk      = 1*("0") [ chunk-ext ] CRLF
    trailer-section = *( field-line CRLF )

These are plain functions over bytes, called from the parser callbacks on the
hot path; tests/unit/test_http_framing.py feeds them what llhttp decodes.
"""

from __future__ import annotations

from typing import Final

from loadstone.http.message import LAST_CHUNK

__all__ = ["LAST_CHUNK", "chunk", "end_of_body", "last_chunk"]

_CRLF: Final = b"\r\n"
_chunk_size = b"%x\r\n".__mod__  # chunk-size CRLF, lowercase hex as HAProxy writes it


def chunk(data: bytes) -> tuple[bytes, bytes, bytes]:
    """One chunk carrying `data`, as the pieces of one write (never copied into one).

    `data` is not empty: llhttp hands no empty body piece, and an empty chunk
    would be the last-chunk."""
    return (_chunk_size(len(data)), data, _CRLF)


def last_chunk(trailers: list[tuple[bytes, bytes]] | None = None) -> bytes:
    """The end of a chunked body: last-chunk, the trailer fields, the final CRLF."""
    if not trailers:
        return LAST_CHUNK
    parts = [b"0\r\n"]
    for name, value in trailers:
        parts += (name, b": ", value, _CRLF)
    parts.append(_CRLF)
    return b"".join(parts)


def end_of_body(chunked: bool) -> bytes:
    """What ends a request body re-framed as `chunked` (its trailers dropped), or
    nothing when its length was told by Content-Length."""
    return LAST_CHUNK if chunked else b""
