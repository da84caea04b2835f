"""AMQP 0-9-1 (RabbitMQ) health checks, the protocol half: sans-IO.

`AmqpHeaderDialogue` is `check: {type: amqp, level: header}`: send the protocol
header, expect a well-formed Connection.Start on channel 0, close. It proves
that an AMQP broker accepts connections on the port, without credentials.
`alarm_verdict` reads RabbitMQ's local-alarms health check (`alarms: true`).
The I/O (the login through aiormq, the management API request) is in
amqp_probe.py.

Closing after Connection.Start
------------------------------
After Start the protocol lets the client do one thing, Start-Ok (the login). A
Connection.Close at that point is not polite but a protocol error: RabbitMQ
3.10 logs `[error] ... handshake_error ... "unexpected method in connection
state starting"` and resets the connection. So the check closes the socket
right after reading Start (a FIN: nothing is left unread, so no reset),
exactly as a client that gives up before logging in. RabbitMQ logs that as
`[warning] closing AMQP connection ... client unexpectedly closed TCP
connection`, after an `[info] accepting AMQP connection` line: three log lines
per check. The quieter choices are the plain `tcp` check (a connection closed
with no bytes sent is logged at debug level only) and `level: login`, whose
clean Connection.Close logs four info lines but no warning.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Mapping
from typing import Final

from loadstone.checks.dialogue import Dialogue, Verdict, printable

# AMQP 0-9-1 §4.2.2, protocol header:
#     protocol-header = literal-AMQP protocol-id protocol-version
#     literal-AMQP    = %d65.77.81.80    ; "AMQP"
#     protocol-id     = %d0
#     protocol-version = %d0.9.1
# A server that does not speak this version "MUST ... write a valid protocol
# header to the open socket ... and then close the socket connection".
PROTOCOL_HEADER: Final = b"AMQP\x00\x00\x09\x01"

# §4.2.3, general frame format:
#     0      1         3             7                  size+7 size+8
#     +------+---------+-------------+  +------------+  +-----------+
#     | type | channel |    size     |  |  payload   |  | frame-end |
#     +------+---------+-------------+  +------------+  +-----------+
#      octet   short       long          size octets      octet
#     frame-end = %xCE
# All integers are in network byte order. Frame types (§4.2.3 and the spec's
# constants): 1 method, 2 content header, 3 content body, 8 heartbeat.
_FRAME_HEADER: Final = struct.Struct(">BHI")
FRAME_END: Final = 0xCE
FRAME_METHOD: Final = 1
FRAME_TYPES: Final = {1: "method", 2: "content header", 3: "content body", 8: "heartbeat"}

# §4.2.4, method payload:
#     0          2           4
#     +----------+-----------+-------------- - -
#     | class-id | method-id | arguments...
#     +----------+-----------+-------------- - -
#        short      short    ...
# Connection.Start (class 10, method 10) arguments, in order:
#     version-major octet, version-minor octet (0 and 9),
#     server-properties peer-properties (a field table),
#     mechanisms longstr (e.g. "PLAIN AMQPLAIN"), locales longstr (e.g. "en_US").
# Connection.Close (10, 50): reply-code short, reply-text shortstr, class-id
# short, method-id short.
_METHOD: Final = struct.Struct(">HH")
CONNECTION_START: Final = (10, 10)
CONNECTION_CLOSE: Final = (10, 50)

# The spec only bounds frames before Connection.Tune from below: both peers
# "MUST accept frames of up to frame-min-size" (4096) octets. RabbitMQ 3.10's
# Start is about 500 bytes. The bound is 16 x frame-min-size, far above any
# broker's Start (server_properties can be extended by configuration), and low
# enough that a peer whose first bytes happen to parse as a huge frame is judged
# at once instead of at the timeout.
MAX_START_PAYLOAD: Final = 65536

# How much of a peer's answer a "not AMQP" detail shows. The verdict waits for
# one byte more (or the end of the stream, or the timeout), so that the detail
# does not depend on how the answer was split into reads.
SHOWN: Final = 40

# §4.2.5.5 field tables, as RabbitMQ (and every broker since the 0-9-1 errata)
# encodes them:
#     field-table = long-uint *field-value-pair
#     field-value-pair = field-name field-value    ; field-name = shortstr
#     field-value = type-octet value
# The size of each value type, to step over the ones that are not wanted.
# 's' is a 16-bit integer in RabbitMQ's reading (a shortstr in the spec's
# grammar, which no broker follows).
_FIXED_SIZES: Final = {
    ord("t"): 1, ord("b"): 1, ord("B"): 1,
    ord("s"): 2, ord("u"): 2, ord("U"): 2,
    ord("I"): 4, ord("i"): 4, ord("f"): 4,
    ord("l"): 8, ord("L"): 8, ord("d"): 8, ord("T"): 8,
    ord("D"): 5, ord("V"): 0,
}  # fmt: skip
_LONG_PREFIXED: Final = frozenset(b"SxAF")  # long string, byte array, array, table
_STRINGS: Final = frozenset(b"Sx")


def read_properties(table: bytes) -> dict[str, bytes]:
    """The string fields at the top level of a field table (without its size).

    Stops at a value type it cannot size: the check needs the broker's name and
    version for its detail, not a full decoder, and a server that sends an odd
    type is still an AMQP broker."""
    fields: dict[str, bytes] = {}
    pos = 0
    while pos < len(table):
        name_len = table[pos]
        name = table[pos + 1 : pos + 1 + name_len].decode("utf-8", "replace")
        pos += 1 + name_len
        if pos >= len(table):
            break
        kind = table[pos]
        pos += 1
        if kind in _FIXED_SIZES:
            pos += _FIXED_SIZES[kind]
        elif kind in _LONG_PREFIXED and pos + 4 <= len(table):
            (size,) = struct.unpack_from(">I", table, pos)
            if kind in _STRINGS and pos + 4 + size <= len(table):
                fields[name] = table[pos + 4 : pos + 4 + size]
            pos += 4 + size
        else:
            break
    return fields


def describe_broker(properties: Mapping[str, object]) -> str | None:
    """'RabbitMQ 3.10.8' from the server-properties, when the broker says so.

    Takes the raw fields of `read_properties` or a client's decoded ones."""
    words = []
    for key in ("product", "version"):
        value = properties.get(key)  # RabbitMQ sends both; others may send neither
        if isinstance(value, str):
            value = value.encode("utf-8", "replace")
        if isinstance(value, bytes) and value:
            words.append(printable(value, 30))
    return " ".join(words) or None


def describe_header(header: bytes) -> str:
    """The protocol a broker's own header names: 'AMQP 0-9-1', 'AMQP 1.0', ..."""
    if header[:4] != b"AMQP" or len(header) != 8:
        return f"'{printable(header)}'"
    if header[4] == 0 and header[5] == 0:  # AMQP 0-9-1 and 0-10 style: 0 0 major minor
        return f"AMQP 0-{header[6]}-{header[7]}"
    if header[4] == 1 and header[5] == 1:  # 0-8 and earlier: 1 1 major minor
        return f"AMQP {header[6]}-{header[7]}"
    # AMQP 1.0 (ISO/IEC 19464 §2.2): "AMQP" id major minor revision; id 0 is
    # AMQP, 2 TLS, 3 SASL.
    return f"AMQP {header[5]}.{header[6]}.{header[7]} (protocol id {header[4]})"


class AmqpHeaderDialogue(Dialogue):
    """Protocol header out, Connection.Start in; ok iff Start is well-formed."""

    def __init__(self) -> None:
        self.verdict: Verdict | None = None
        self._buffer = bytearray()

    def initial(self) -> bytes:
        return PROTOCOL_HEADER

    def receive(self, data: bytes) -> None:
        if self.verdict is not None:
            return
        self._buffer += data
        self._parse()

    def receive_eof(self) -> None:
        if self.verdict is not None:
            return
        got = len(self._buffer)
        if not got:
            self._fail("connection closed before Connection.Start")
        elif self._foreign():
            self._not_amqp()
        elif self._buffer[:1] == b"A":
            # A protocol header shorter than 8 bytes.
            self._fail(f"truncated protocol header (got '{printable(bytes(self._buffer))}')")
        elif got < _FRAME_HEADER.size:
            self._fail(f"truncated frame header ({got} of {_FRAME_HEADER.size} bytes)")
        else:
            _, _, size = _FRAME_HEADER.unpack_from(self._buffer)
            whole = _FRAME_HEADER.size + size + 1
            self._fail(f"truncated Connection.Start ({got} of {whole} bytes)")

    def receive_timeout(self) -> None:
        if self.verdict is None and self._foreign():
            self._not_amqp()  # a short greeting, and then silence
        else:
            super().receive_timeout()

    def _fail(self, detail: str) -> None:
        self.verdict = Verdict(False, detail)
        self._buffer.clear()

    def _foreign(self) -> bool:
        """The first bytes start neither a frame nor a protocol header."""
        buf = self._buffer
        return bool(buf) and buf[0] not in FRAME_TYPES and not b"AMQP".startswith(buf[:4])

    def _not_amqp(self) -> None:
        # An HTTP server's 400, an SSH or MySQL greeting, Redis' -ERR: the first
        # bytes are the best clue for the operator.
        self._fail(f"not AMQP (got '{printable(bytes(self._buffer), SHOWN)}')")

    def _parse(self) -> None:
        buf = self._buffer
        if not buf:
            return
        if self._foreign():
            if len(buf) > SHOWN:  # else wait for enough to show (see SHOWN)
                self._not_amqp()
            return
        if buf[:1] == b"A":
            self._header_back()
            return
        if len(buf) < _FRAME_HEADER.size:
            return
        kind, channel, size = _FRAME_HEADER.unpack_from(buf)
        if kind != FRAME_METHOD or channel != 0:
            head = printable(bytes(buf[: _FRAME_HEADER.size]))
            self._fail(
                f"expected Connection.Start, got a {FRAME_TYPES[kind]} frame "
                f"on channel {channel} ('{head}')"
            )
            return
        if size > MAX_START_PAYLOAD:
            self._fail(f"oversize frame: {size} bytes (limit {MAX_START_PAYLOAD})")
            return
        end = _FRAME_HEADER.size + size
        if len(buf) <= end:
            return
        if buf[end] != FRAME_END:
            self._fail(f"bad frame end 0x{buf[end]:02x} (expected 0x{FRAME_END:02x})")
            return
        self._method(bytes(buf[_FRAME_HEADER.size : end]))

    def _header_back(self) -> None:
        """The broker answered with a protocol header: it wants another version."""
        buf = bytes(self._buffer)
        if len(buf) >= len(PROTOCOL_HEADER):
            offered = describe_header(buf[: len(PROTOCOL_HEADER)])
            self._fail(f"broker refused AMQP 0-9-1 (it offers {offered})")

    def _method(self, payload: bytes) -> None:
        if len(payload) < _METHOD.size:
            self._fail(f"malformed method frame ({len(payload)} bytes)")
            return
        method = _METHOD.unpack_from(payload)
        if method == CONNECTION_CLOSE:
            self._fail(f"broker closed the connection: {describe_close(payload)}")
            return
        if method != CONNECTION_START:
            self._fail(f"expected Connection.Start (10, 10), got method {method[0]}, {method[1]}")
            return
        if len(payload) < 6:
            self._fail("malformed Connection.Start: no version")
            return
        major, minor = payload[4], payload[5]
        if (major, minor) != (0, 9):
            self._fail(f"broker speaks AMQP {major}-{minor} (expected 0-9)")
            return
        pos = 6
        properties = b""
        for name in ("server-properties", "mechanisms", "locales"):
            if pos + 4 > len(payload):
                self._fail(f"malformed Connection.Start: no {name}")
                return
            (size,) = struct.unpack_from(">I", payload, pos)
            pos += 4 + size
            if pos > len(payload):
                self._fail(f"malformed Connection.Start: {name} longer than the frame")
                return
            if name == "server-properties":
                properties = payload[pos - size : pos]
        broker = describe_broker(read_properties(properties))
        self.verdict = Verdict(True, f"AMQP 0-9-1 ({broker})" if broker else "AMQP 0-9-1")
        self._buffer.clear()


def describe_close(payload: bytes) -> str:
    """'320 CONNECTION_FORCED - ...' from a Connection.Close method payload."""
    if len(payload) < 7:
        return "(malformed Connection.Close)"
    (code,) = struct.unpack_from(">H", payload, 4)
    text = payload[7 : 7 + payload[6]]
    return f"{code} {printable(text)}"


# -- alarms: RabbitMQ's management API ---------------------------------------------

# GET on the node's management port. 200 {"status":"ok"} when the node has no
# alarm; 503 {"status":"failed","reason":...,"alarms":[{"node":...,
# "resource":"memory"|"disk space"}]} otherwise (RabbitMQ 3.8.10 and later).
LOCAL_ALARMS_PATH: Final = "/api/health/checks/local-alarms"
MAX_ALARM_BODY: Final = 65536  # the answer is ~150 bytes; read no more than this
# The answer nests three deep. A body with more brackets than this is not it,
# and is not decoded: json.loads recurses once per level and a body of
# brackets would raise RecursionError (CPython 3.11 can then fail later, far
# away, with "AST constructor recursion depth mismatch").
MAX_ALARM_BRACKETS: Final = 256


def alarm_verdict(status: int, body: bytes) -> Verdict:
    """Judge the local-alarms health check's answer."""
    if status == 200:
        return Verdict(True, "no alarm")
    if status in (401, 403):
        return Verdict(False, f"management API: access refused (HTTP {status})")
    if status == 404:
        return Verdict(False, "management API: no local-alarms check (RabbitMQ < 3.8.10?)")
    if status != 503:
        return Verdict(False, f"management API: HTTP {status}")
    resources: set[str] = set()
    try:
        if body.count(b"[") + body.count(b"{") > MAX_ALARM_BRACKETS:
            raise ValueError("not the local-alarms answer")
        answer = json.loads(body)
        alarms = answer.get("alarms", []) if isinstance(answer, dict) else []
        for alarm in alarms if isinstance(alarms, list) else []:
            resource = alarm.get("resource") if isinstance(alarm, dict) else None
            if isinstance(resource, str):
                resources.add(resource)
    except ValueError:  # not JSON: the status alone says there is an alarm
        pass
    memory = "memory" in resources
    disk = any(r.startswith("disk") for r in resources)  # "disk space" in 3.10
    if memory and disk:
        return Verdict(False, "memory and disk alarms")
    if memory:
        return Verdict(False, "memory alarm")
    if disk:
        return Verdict(False, "disk alarm")
    return Verdict(False, "resource alarm")
