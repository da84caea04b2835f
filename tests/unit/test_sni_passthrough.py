"""SNI passthrough: the sans-IO ClientHello reader fed real first flights
(Python's ssl, through memory BIOs) whole, byte by byte and re-cut into several
records; its typed errors; the configuration's rules and YAML paths."""

from __future__ import annotations

import ssl
import subprocess
import sys

import pytest

from loadstone.config import ConfigError, parse_config
from loadstone.datapath.sni_passthrough import MAX_NATIVE_POOLS, log_field, native_refusal
from loadstone.tls.clienthello import (
    MAX_RECORD,
    ClientHello,
    ClientHelloError,
    ClientHelloReader,
    version_name,
)


def first_flight(name: str | None, alpn: list[str] | None = None, tls12: bool = False) -> bytes:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    if alpn:
        ctx.set_alpn_protocols(alpn)
    if tls12:
        ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = ctx.wrap_bio(incoming, outgoing, server_hostname=name)
    with pytest.raises(ssl.SSLWantReadError):
        obj.do_handshake()
    return outgoing.read()


def recut(flight: bytes, sizes: list[int]) -> bytes:
    """The same handshake bytes carried by several records of these sizes (the
    last takes the rest), as a client with a large ClientHello sends them."""
    header, body = flight[:5], flight[5:]
    out = b""
    for size in [*sizes, len(body)]:
        piece, body = body[:size], body[size:]
        if piece:
            out += header[:3] + len(piece).to_bytes(2, "big") + piece
    return out


def read(*pieces: bytes) -> ClientHello | None:
    reader = ClientHelloReader()
    result = None
    for piece in pieces:
        result = reader.feed(piece)
    return result


def test_a_whole_client_hello() -> None:
    flight = first_flight("API.Example.test.", ["h2", "http/1.1"])
    hello = read(flight)
    assert hello == ClientHello(
        "api.example.test", ("h2", "http/1.1"), (0x0304, 0x0303), len(flight)
    )
    assert log_field(hello) == "TLSv1.3/passthrough/api.example.test"


def test_no_sni_and_tls12_only() -> None:
    hello = read(first_flight(None))
    assert hello is not None and hello.server_name is None and hello.alpn == ()
    old = read(first_flight("a.test", tls12=True))
    assert old is not None and old.versions == (0x0303,)
    assert log_field(old) == "TLSv1.2/passthrough/a.test"
    assert version_name(0x0A0A) == "0x0a0a"


def test_split_reads_and_records_give_the_same_answer() -> None:
    flight = first_flight("a.test", ["x"])
    whole = read(flight)
    reader = ClientHelloReader()
    for i in range(len(flight) - 1):
        assert reader.feed(flight[i : i + 1]) is None
    split = reader.feed(flight[-1:])
    assert split == whole
    # One ClientHello in four records (the 4-byte handshake header itself split).
    records = recut(flight, [2, 100, 50])
    hello = read(records[:7], records[7:300], records[300:])
    assert hello is not None and hello.server_name == "a.test" and hello.alpn == ("x",)
    assert hello.size == len(records)


def test_need_more_until_the_last_byte() -> None:
    flight = first_flight("a.test")
    assert read(flight[:-1]) is None
    assert read(b"\x16") is None
    assert read(b"\x16\x03\x01\x02") is None


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"GET / HTTP/1.1\r\n", "not TLS (plain text)"),
        (b"G", "not TLS (plain text)"),
        (b"\x00\xff\x00", "not TLS (record type)"),
        (b"\x80\x2e\x01\x00\x02", "SSLv2 hello"),
        (b"\x16\x04", "not TLS (record version)"),
        (b"\x16\x03\x01\x00\x00", "bad record length"),
        (b"\x16\x03\x01" + (MAX_RECORD + 1).to_bytes(2, "big"), "bad record length"),
        # A record holding a ServerHello (type 2), not a ClientHello.
        (b"\x16\x03\x03\x00\x04\x02\x00\x00\x00", "first handshake message is not a ClientHello"),
        # A ClientHello announcing more than the reader keeps.
        (b"\x16\x03\x03\x00\x04\x01\x10\x00\x00", "ClientHello too large"),
        # A body shorter than its fixed fields.
        (b"\x16\x03\x03\x00\x08\x01\x00\x00\x04\x03\x03\x00\x00", "truncated ClientHello field"),
    ],
)
def test_typed_errors(data: bytes, reason: str) -> None:
    with pytest.raises(ClientHelloError) as info:
        read(data)
    assert info.value.reason == reason


def test_an_alert_between_the_records_of_a_client_hello() -> None:
    records = recut(first_flight("a.test"), [100])
    first_record = 5 + 100
    with pytest.raises(ClientHelloError, match="record type"):
        read(records[:first_record] + b"\x15\x03\x03\x00\x02\x02\x28")


def test_the_reader_imports_no_event_loop() -> None:
    code = (
        "import sys, loadstone.tls.clienthello; "
        "sys.exit('asyncio' in sys.modules or 'socket' in sys.modules)"
    )
    assert subprocess.run([sys.executable, "-c", code], timeout=30).returncode == 0


# -- configuration ----------------------------------------------------------------------

PASSTHROUGH = """
listeners:
  web:
    bind: "127.0.0.1:8443"
    sni_passthrough:
      inspect_timeout: 2s
      routes:
        - {names: [a.test, "*.A.test"], pool: a}
        - {names: b.test, pool: default}
    pools:
      a: {servers: [{name: a1, address: "10.0.0.1:443"}]}
"""


def test_configuration() -> None:
    listener = parse_config(PASSTHROUGH).listeners[0]
    passthrough = listener.sni_passthrough
    assert passthrough is not None
    assert passthrough.inspect_timeout == 2.0
    assert passthrough.routes[0].names == ("a.test", "*.a.test")
    assert passthrough.routes[1].names == ("b.test",)
    assert passthrough.default_pool == "default"
    assert [(s.name, s.pool) for s in listener.servers] == [("a1", "a")]


def test_the_native_path_serves_passthrough_up_to_its_pool_count() -> None:
    assert native_refusal(parse_config(PASSTHROUGH).listeners[0]) is None
    pools = "".join(
        f'      p{i}: {{servers: [{{name: s{i}, address: "10.0.1.{i}:443"}}]}}\n'
        for i in range(MAX_NATIVE_POOLS)
    )
    many = parse_config(PASSTHROUGH.replace("    pools:\n", "    pools:\n" + pools))
    assert native_refusal(many.listeners[0]) == (
        f"SNI passthrough with more than {MAX_NATIVE_POOLS} pools (native data path)"
    )


def problems(text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(text)
    return info.value.problems


def test_configuration_errors_name_their_path() -> None:
    bad_pool = PASSTHROUGH.replace("pool: default", "pool: nope")
    assert problems(bad_pool) == [
        "listeners.web.sni_passthrough.routes[1].pool: unknown pool 'nope'; known: a, default"
    ]
    terminating = PASSTHROUGH + "    tls: {certificates: /x.pem}\n"
    assert problems(terminating) == [
        "listeners.web.tls: cannot be used with sni_passthrough, "
        "which passes the client's TLS through"
    ]
    http = PASSTHROUGH.replace("    sni_passthrough:", "    mode: http\n    sni_passthrough:")
    assert "listeners.web.sni_passthrough: only valid for mode tcp" in problems(http)[0]
    no_routing = PASSTHROUGH.split("    sni_passthrough:")[0] + (
        "    servers: [{name: d, address: '10.0.0.2:443'}]\n"
        "    pools: {a: {servers: [{name: a1, address: '10.0.0.1:443'}]}}\n"
    )
    assert problems(no_routing) == [
        "listeners.web.pools: in mode tcp, pools are routed to by sni_passthrough: add it"
    ]
    name = PASSTHROUGH.replace("a.test, ", "'a test', ")
    assert problems(name)[0].startswith("listeners.web.sni_passthrough.routes[0].names[0]: ")


def test_check_tls_on_a_galera_check_is_a_configuration_error() -> None:
    text = """
listeners:
  db:
    bind: "127.0.0.1:3306"
    check: {type: galera, user: haproxy, tls: true}
    servers: [{name: a, address: "10.0.0.1:3306"}]
"""
    assert problems(text) == [
        "listeners.db.check.tls: only valid for types tcp, http, send-expect "
        "(this check is type galera)"
    ]
