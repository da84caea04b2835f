"""Targets for loadstone.tls: the ClientHello reader of SNI passthrough.

Documented errors: `ClientHelloReader.feed` raises `ClientHelloError` (and
nothing else) on bytes that cannot be a ClientHello. Its answer must not
depend on how the reads split the bytes: the whole input at once and the same
input in pieces give the same ClientHello or the same error reason.
"""

from __future__ import annotations

from fuzz.source import Source
from loadstone.tls.clienthello import ClientHello, ClientHelloError, ClientHelloReader


def read(pieces: list[bytes]) -> ClientHello | str | None:
    """The reader's outcome: the ClientHello, an error reason, or None (needs more)."""
    reader = ClientHelloReader()
    try:
        for piece in pieces:
            hello = reader.feed(piece)
            if hello is not None:
                return hello
    except ClientHelloError as exc:
        return exc.reason
    return None


def client_hello(data: bytes) -> None:
    """Whole and split reads agree; a parsed server name is a clean lower-case name."""
    whole = read([data])
    split = read(Source(data).pieces())
    assert whole == split, (whole, split)
    if isinstance(whole, ClientHello):
        name = whole.server_name
        assert name is None or (name == name.lower() and name.isascii() and " " not in name)
        assert whole.size <= len(data)
