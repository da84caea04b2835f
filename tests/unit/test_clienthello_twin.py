"""The engine's ClientHello reader (engine/clienthello.c) is the twin of
loadstone.tls.clienthello: over the same bytes, cut into the same reads, both
give the same ClientHello (server name, ALPN, versions, size), the same error
reason, or both ask for more. SNI passthrough routes and refuses alike on both
data paths because of it.

The vectors: the fuzz corpus of the Python reader (fuzz/corpus/client_hello),
real first flights of Python's ssl (SNI or not, ALPN, TLS 1.2 only), each
truncated at every length, cut into one-byte reads, split across records and
mutated at fixed-seed random positions (a length field, a type, a byte), plus
hand-made ones for each refusal reason and the size limits."""

from __future__ import annotations

import random
import struct
from pathlib import Path

import pytest

from loadstone.tls.clienthello import (
    MAX_CLIENT_HELLO,
    ClientHello,
    ClientHelloError,
    ClientHelloReader,
)
from tests.unit.test_sni_passthrough import first_flight

relay = pytest.importorskip("loadstone._fastpath.relay", reason="native data path not built")

CORPUS = Path(__file__).resolve().parents[2] / "fuzz" / "corpus" / "client_hello"

Outcome = tuple[object, ...]


def python_outcome(pieces: list[bytes]) -> Outcome:
    """The Python reader's answer in read_client_hello's shape."""
    reader = ClientHelloReader()
    try:
        for piece in pieces:
            hello = reader.feed(piece)
            if hello is not None:
                return _shape(hello)
    except ClientHelloError as exc:
        return ("error", exc.reason)
    return ("more",)


def _shape(hello: ClientHello) -> Outcome:
    return ("hello", hello.server_name, hello.alpn, hello.versions, hello.size)


def assert_twins(pieces: list[bytes]) -> Outcome:
    expected = python_outcome(pieces)
    got = relay.read_client_hello(pieces)
    assert got == expected, (pieces[:3], got, expected)
    return expected


FLIGHTS = {
    "sni": first_flight("A.Example.TEST."),
    "no-sni": first_flight(None),
    "alpn": first_flight("api.test", ["h2", "http/1.1"]),
    "tls12": first_flight("old.test", tls12=True),
}


def records(body: bytes, sizes: list[int]) -> bytes:
    """A handshake message split into handshake records of these fragment sizes."""
    out, at = b"", 0
    for size in sizes:
        out += b"\x16\x03\x01" + struct.pack("!H", size) + body[at : at + size]
        at += size
    assert at == len(body)
    return out


def hello_body(
    extensions: bytes = b"",
    *,
    session_id: bytes = b"",
    suites: bytes = b"\x13\x01",
    compression: bytes = b"\x00",
    with_extensions: bool = True,
) -> bytes:
    body = b"\x03\x03" + bytes(32) + bytes([len(session_id)]) + session_id
    body += struct.pack("!H", len(suites)) + suites + bytes([len(compression)]) + compression
    if with_extensions:
        body += struct.pack("!H", len(extensions)) + extensions
    return b"\x01" + len(body).to_bytes(3, "big") + body


def ext(kind: int, data: bytes) -> bytes:
    return struct.pack("!HH", kind, len(data)) + data


def sni(*names: tuple[int, bytes]) -> bytes:
    listed = b"".join(bytes([t]) + struct.pack("!H", len(n)) + n for t, n in names)
    return ext(0, struct.pack("!H", len(listed)) + listed)


def one_record(message: bytes) -> bytes:
    return records(message, [len(message)])


def hello_with(*extensions: bytes) -> bytes:
    return one_record(hello_body(b"".join(extensions)))


HANDMADE = {
    "plain-http": b"GET / HTTP/1.1\r\n\r\n",
    "one-letter": b"G",
    "header-start": b"\x16\x03",
    "sslv2": b"\x80\x2e\x01\x00\x02",
    "record-type": b"\x17\x03\x03\x00\x05hello",
    "record-version": b"\x16\x02\x00\x00\x05",
    "record-length-0": b"\x16\x03\x01\x00\x00",
    "record-length-big": b"\x16\x03\x01\x40\x01",
    "not-hello": one_record(b"\x02\x00\x00\x00"),
    "too-large": one_record(b"\x01\x01\x00\x01"),
    "session-id": one_record(hello_body(session_id=bytes(33))),
    "suites-odd": one_record(hello_body(suites=b"\x13")),
    "no-compression": one_record(hello_body(compression=b"")),
    "no-extensions": one_record(hello_body(with_extensions=False)),
    "twice": hello_with(ext(5, b""), ext(5, b"")),
    "two-hosts": hello_with(sni((0, b"a"), (0, b"b"))),
    "other-type": hello_with(sni((1, b"x"), (0, b"Ok.Test"))),
    "bad-host": hello_with(sni((0, b"a b"))),
    "non-ascii": hello_with(sni((0, b"\xc3\xa9.test"))),
    "dot": hello_with(sni((0, b"."))),
    "sni-trailing": hello_with(ext(0, b"\x00\x00\x00")),
    "alpn-empty": hello_with(ext(16, b"\x00\x01\x00")),
    "alpn-none": hello_with(ext(16, b"\x00\x00")),
    "versions-odd": hello_with(ext(43, b"\x03\x03\x04\x03")),
    "versions-grease": hello_with(ext(43, b"\x04\x0a\x0a\x03\x04"), ext(16, b"\x00\x03\x02h2")),
    "truncated-field": one_record(b"\x01\x00\x00\x05\x03\x03\x00\x00\x00"),
}


def corpus() -> list[bytes]:
    return [p.read_bytes() for p in sorted(CORPUS.iterdir()) if p.is_file()]


def test_the_corpus_and_handmade_vectors_give_equal_outcomes() -> None:
    seen = set()
    for data in [*corpus(), *HANDMADE.values(), *FLIGHTS.values()]:
        outcome = assert_twins([data])
        seen.add(outcome[0] if outcome[0] != "error" else outcome[1])
        # one read per byte: the C reader resumes where it stopped, as Python's does
        assert assert_twins([data[i : i + 1] for i in range(len(data))]) == outcome
    # every outcome and every reason the readers have (but the engine's own:
    # the timeout, out of memory)
    reasons = set(relay.SNI_REASONS) - {"sni-inspect-timeout", "out of memory"}
    assert seen >= {"hello", "more"} | reasons, ({"hello", "more"} | reasons) - seen


def test_real_first_flights_truncated_at_every_length() -> None:
    assert assert_twins([FLIGHTS["sni"]])[1] == "a.example.test"
    assert assert_twins([FLIGHTS["alpn"]])[2] == ("h2", "http/1.1")
    for data in FLIGHTS.values():
        for n in range(len(data)):
            assert assert_twins([data[:n]]) == ("more",)


def test_a_hello_split_across_records_and_reads() -> None:
    whole = FLIGHTS["alpn"]
    body = whole[5:]
    rng = random.Random(13)
    for _ in range(50):
        sizes, left = [], len(body)
        while left:
            sizes.append(min(left, rng.randint(1, 300)))
            left -= sizes[-1]
        data = records(body, sizes) + b"\x17\x03\x03\x00\x01x"  # early data after it: not looked at
        cuts = sorted(rng.sample(range(1, len(data)), 5))
        pieces = [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)], strict=True)]
        outcome = assert_twins(pieces)
        assert outcome[:2] == ("hello", "api.test") and outcome[4] == len(body) + 5 * len(sizes)


def test_mutated_flights() -> None:
    rng = random.Random(7)
    for data in FLIGHTS.values():
        for _ in range(400):
            mutated = bytearray(data)
            for _ in range(rng.randint(1, 3)):
                at = rng.randrange(min(len(mutated), 200) if rng.random() < 0.7 else len(mutated))
                mutated[at] = rng.randrange(256)
            cut = rng.randrange(1, len(mutated))
            assert_twins([bytes(mutated)])
            assert_twins([bytes(mutated[:cut]), bytes(mutated[cut:])])


def test_size_limits() -> None:
    # The largest hello accepted (a padding extension fills it), carried in full
    # records; one byte more is refused as soon as its header is read.
    base = len(hello_body(ext(21, b""))) - 4
    for length, outcome in ((MAX_CLIENT_HELLO, "hello"), (MAX_CLIENT_HELLO + 1, "error")):
        message = hello_body(ext(21, bytes(length - base)))
        assert len(message) - 4 == length
        sizes = [min(16384, len(message) - at) for at in range(0, len(message), 16384)]
        got = assert_twins([records(message, sizes)])
        assert got[0] == outcome, got[:2]
    # Handshake bytes and a pending record beyond the limit before the hello is whole.
    first = records(bytes([1, 0, 0xFF, 0xFF]) + bytes(16380), [16384])
    full = records(bytes(16384), [16384])
    many = first + full * 3 + b"\x16\x03\x01\x40\x00" + bytes(100)
    assert assert_twins([many]) == ("error", "ClientHello too large")
    assert assert_twins([many[:65536], many[65536:]]) == ("error", "ClientHello too large")
