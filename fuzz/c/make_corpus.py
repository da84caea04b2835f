"""Writes the seed corpus of the C engine's harness (fuzz/c/corpus/).

Each seed is the harness's input format (see fuzz/c/http_engine_fuzz.c): an
options byte, a split seed, the request stream's length (2 bytes, little
endian), the request stream, the response stream. Run from the repository:
    python fuzz/c/make_corpus.py
"""

# ruff: noqa: E501  (one seed per line: the byte streams read best unbroken)

from __future__ import annotations

import hashlib
import struct
from pathlib import Path

HERE = Path(__file__).parent

OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi"
CLOSE = b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nhi"
CHUNKED = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n0\r\n\r\n"
EOF_BODY = b"HTTP/1.0 200 OK\r\n\r\nuntil the close"
INTERIM = b"HTTP/1.1 100 Continue\r\n\r\n" + OK
UPGRADE = b"HTTP/1.1 101 Switching Protocols\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\nxx"
HEAD_RESP = b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n"
NO_CONTENT = b"HTTP/1.1 204 No Content\r\n\r\n"

SEEDS: list[tuple[int, bytes, bytes]] = [
    (0, b"GET / HTTP/1.1\r\nHost: a\r\n\r\n", OK),
    (
        7,
        b"GET /x?y=1 HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, X-Drop\r\nX-Drop: 1\r\n\r\n",
        OK,
    ),
    (0, b"GET / HTTP/1.1\r\nHost: a\r\n\r\nGET /2 HTTP/1.1\r\nHost: a\r\n\r\n", OK + OK),
    (1, b"POST /p HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello", OK),
    (
        1,
        b"POST /p HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\n0\r\nT: 1\r\n\r\n",
        CHUNKED,
    ),
    (0, b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\nGET / HTTP/1.0\r\n\r\n", OK + EOF_BODY),
    (0, b"HEAD / HTTP/1.1\r\nHost: a\r\n\r\n", HEAD_RESP + NO_CONTENT),
    (
        2,
        b"GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\nframes",
        UPGRADE,
    ),
    (
        0,
        b"POST / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\nx",
        INTERIM,
    ),
    (32, b"GET / HTTP/1.1\r\nHost: a\r\n\r\n", OK),
    (0, b"GET / HTTP/1.1\r\nHost: a\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n", CLOSE + OK),
    (8, b"GET / HTTP/1.1\r\nHost: a\r\nX-Long: " + b"v" * 300 + b"\r\n\r\n", OK),
    (16, b"GET / HTTP/1.1\r\nHost: a\r\nA: 1\r\nB: 2\r\nC: 3\r\nD: 4\r\nE: 5\r\n\r\n", OK),
    # smuggling shapes: each must be refused or forwarded as one message
    (
        0,
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nX",
        OK,
    ),
    (0, b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\n", OK),
    (
        0,
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\n\r\n0\r\n\r\n",
        OK,
    ),
    (0, b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nxy", OK),
    (0, b"GET http://evil.example/x HTTP/1.1\r\nHost: a\r\n\r\n", OK),
    (0, b"GET / HTTP/1.1\nHost: a\n\n", OK),
    (
        0,
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffffffffff\r\n",
        OK,
    ),
    (0, b"GET / HTTP/1.1\r\nHost : a\r\n\r\n", OK),
    (0, b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", OK),
    (0, b"CONNECT a:443 HTTP/1.1\r\nHost: a\r\n\r\n", OK),
    (
        0,
        b"GET / HTTP/1.1\r\nHost: a\r\n\r\n",
        b"HTTP/1.1 200 OK\nContent-Length: 8\n\nab\r\n\r\ncd",
    ),
    (0, b"GET / HTTP/1.1\r\nHost: a\r\n\r\n", b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nbody"),
    # the client's FIN after its last byte (option 128): the complete requests
    # pipelined before it answered, one cut short by it (head, body) not
    (
        128,
        b"GET /1 HTTP/1.1\r\nHost: a\r\n\r\nGET /2 HTTP/1.1\r\nHost: a\r\n\r\nGET /3 HTTP/1.1\r\nHost: a\r\n",
        OK + OK + OK,
    ),
    (
        128,
        b"GET /1 HTTP/1.1\r\nHost: a\r\n\r\nPOST /2 HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhelloPOST /3 HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhe",
        OK + CHUNKED + OK,
    ),
]


def seed(options: int, request: bytes, response: bytes, split: int) -> bytes:
    return struct.pack("<BBH", options, split, len(request)) + request + response


def main() -> None:
    out = HERE / "corpus"
    out.mkdir(exist_ok=True)
    for i, (options, request, response) in enumerate(SEEDS):
        for split in (0, 77):
            data = seed(options, request, response, split)
            name = f"seed-{i:02d}-{split}-" + hashlib.sha1(data).hexdigest()[:8]
            (out / name).write_bytes(data)


if __name__ == "__main__":
    main()
