"""Target for the PROXY protocol codec (loadstone.proxy_protocol).

Documented error: ProxyHeaderError. Properties: reading the bytes as they
arrive in pieces (each read re-parsing all that came so far, as
datapath.proxy_gate does) reaches the same header, or the same refusal, as
reading them at once; a header read is encoded again into one that reads back
the same.
"""

from __future__ import annotations

from fuzz.source import Source
from loadstone.proxy_protocol import ProxyHeader, ProxyHeaderError, encode, parse


def _outcome(data: bytes) -> tuple[ProxyHeader, int] | str | None:
    try:
        return parse(data)
    except ProxyHeaderError:
        return "refused"


def _as_received(pieces: list[bytes]) -> tuple[ProxyHeader, int] | str | None:
    received = b""
    for piece in pieces:
        received += piece
        outcome = _outcome(received)
        if outcome is not None:
            return outcome
    return None


def proxy_header(data: bytes) -> None:
    whole = _outcome(data)
    split = _as_received(Source(data).pieces())
    assert whole == split, (whole, split)
    if isinstance(whole, tuple):
        header, length = whole
        assert 0 < length <= len(data)
        again = encode(header.version, header.source, header.destination)
        parsed = parse(again)
        assert parsed is not None and parsed[0] == header, (header, parsed)
