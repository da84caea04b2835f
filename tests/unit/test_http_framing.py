"""The pure HTTP path's body framing (datapath.http_pure.framing), fed the body
pieces and trailers that llhttp decodes from chunked messages."""

from __future__ import annotations

import ast
import inspect

import httptools
import pytest

from loadstone.datapath.http_pure import framing


class _Decoded:
    """What llhttp hands the path: body pieces, then trailer fields."""

    def __init__(self) -> None:
        self.pieces: list[bytes] = []
        self.trailers: list[tuple[bytes, bytes]] = []
        self.head_done = False
        self.complete = False

    def on_headers_complete(self) -> None:
        self.head_done = True

    def on_header(self, name: bytes, value: bytes) -> None:
        if self.head_done:
            self.trailers.append((name, value))

    def on_body(self, data: bytes) -> None:
        self.pieces.append(data)

    def on_message_complete(self) -> None:
        self.complete = True


def _decode(message: bytes, step: int) -> _Decoded:
    decoded = _Decoded()
    parser = httptools.HttpResponseParser(decoded)
    for i in range(0, len(message), step):
        parser.feed_data(message[i : i + step])
    assert decoded.complete
    return decoded


def _reframe(decoded: _Decoded) -> bytes:
    out: list[bytes] = []
    for data in decoded.pieces:
        out += framing.chunk(data)
    out.append(framing.last_chunk(decoded.trailers))
    return b"".join(out)


HEAD = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"


@pytest.mark.parametrize("step", [1, 3, 7, 1000])
def test_chunks_are_written_afresh_whatever_the_reads(step: int) -> None:
    body = b"5\r\nhello\r\n1A\r\n" + b"x" * 26 + b"\r\n0\r\n\r\n"
    out = _reframe(_decode(HEAD + body, step))
    # Reads split differently give more, smaller chunks: the same data, the same end.
    assert b"".join(_decode(HEAD + out, 1000).pieces) == b"hello" + b"x" * 26
    assert out.endswith(b"\r\n0\r\n\r\n")
    if step == 1000:
        assert out == b"5\r\nhello\r\n1a\r\n" + b"x" * 26 + b"\r\n0\r\n\r\n"


def test_chunk_extensions_are_dropped() -> None:
    body = b"5;name=value\r\nhello\r\n0;last\r\n\r\n"
    assert _reframe(_decode(HEAD + body, 1000)) == b"5\r\nhello\r\n0\r\n\r\n"


def test_trailers_follow_the_last_chunk() -> None:
    body = b"2\r\nok\r\n0\r\nChecksum: abc\r\nX-Done: yes\r\n\r\n"
    out = _reframe(_decode(HEAD + body, 4))
    assert out == b"2\r\nok\r\n0\r\nChecksum: abc\r\nX-Done: yes\r\n\r\n"
    again = _decode(HEAD + out, 1000)
    assert again.trailers == [(b"Checksum", b"abc"), (b"X-Done", b"yes")]


def test_no_trailers_is_the_plain_last_chunk() -> None:
    assert framing.last_chunk(None) == framing.last_chunk([]) == b"0\r\n\r\n"


def test_a_chunk_is_size_data_crlf_in_pieces() -> None:
    assert framing.chunk(b"a" * 255) == (b"ff\r\n", b"a" * 255, b"\r\n")


def test_end_of_a_request_body() -> None:
    assert framing.end_of_body(chunked=True) == b"0\r\n\r\n"
    assert framing.end_of_body(chunked=False) == b""


def test_framing_does_no_io() -> None:
    imported: set[str] = set()
    for node in ast.walk(ast.parse(inspect.getsource(framing))):
        if isinstance(node, ast.Import):
            imported.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module.split(".")[0])
    assert not imported & {"asyncio", "socket", "selectors", "uvloop"}
