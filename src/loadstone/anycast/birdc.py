"""BIRD 2's control-socket protocol (what birdc speaks), without I/O.

Theory of operation: the client writes one command per line; BIRD answers with
lines, each opening with a four-digit reply code and a separator:

    CODE "-" text    a line of the reply, more follow
    " " text         a continuation: same code as the line before
    CODE " " text    the last line of the reply

On connecting, BIRD sends a greeting, itself a reply: `0001 BIRD 2.0.12 ready.`.
The code's first digit says what the reply is (BIRD's doc/reply_codes):
0xxx the command's outcome (0009 disabled, 0010 already enabled, 0011 enabled,
0008 already disabled, 0000 end of a table), 1xxx and 2xxx rows and headers of
a table (1002 a protocol, 2002 the protocols' header), 8xxx a runtime error
(8003 no protocols match), 9xxx a refused command (9001 a syntax error, which is
also what a name no protocol has gets).

A line that fits none of these shapes is a protocol error: the caller cannot
know where the next reply starts, so it drops the connection and the state it
believed in ("state unknown"), and tries again later.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

# BIRD cuts its lines well below this; more without a newline is not BIRD.
MAX_LINE: Final = 64 * 1024

_LINE = re.compile(rb"(?P<code>[0-9]{4})(?P<sep>[ -])(?P<text>.*)")

ENABLED: Final = frozenset({"0010", "0011"})  # already enabled, enabled
DISABLED: Final = frozenset({"0008", "0009"})  # already disabled, disabled


class BirdProtocolError(Exception):
    """BIRD's answer is not in its protocol's shape."""


@dataclass(frozen=True, slots=True)
class Reply:
    """One whole reply: its lines as (code, text), the last one's code first."""

    code: str  # the last line's code
    lines: tuple[tuple[str, str], ...]

    @property
    def failed(self) -> bool:
        return self.code[0] in "89"

    def text(self) -> str:
        return "; ".join(text.strip() for _, text in self.lines if text.strip())


class ReplyParser:
    """Bytes from the socket in, whole replies out."""

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._lines: list[tuple[str, str]] = []
        self._replies: list[Reply] = []

    def feed(self, data: bytes) -> None:
        self._buffer += data
        while True:
            end = self._buffer.find(b"\n")
            if end < 0:
                if len(self._buffer) > MAX_LINE:
                    raise BirdProtocolError(f"a line longer than {MAX_LINE} bytes")
                return
            line = bytes(self._buffer[:end])
            del self._buffer[: end + 1]
            self._line(line)

    def _line(self, line: bytes) -> None:
        if line.startswith(b" "):
            if not self._lines:
                raise BirdProtocolError(f"a continuation line opens a reply: {line[:80]!r}")
            self._lines.append((self._lines[-1][0], _text(line[1:])))
            return
        match = _LINE.fullmatch(line)
        if match is None:
            raise BirdProtocolError(f"not a reply line: {line[:80]!r}")
        code = match["code"].decode()
        self._lines.append((code, _text(match["text"])))
        if match["sep"] == b" ":
            self._replies.append(Reply(code, tuple(self._lines)))
            self._lines = []

    def next_reply(self) -> Reply | None:
        return self._replies.pop(0) if self._replies else None


def _text(raw: bytes) -> str:
    try:
        return raw.decode()
    except UnicodeDecodeError:
        raise BirdProtocolError(f"not UTF-8: {raw[:80]!r}") from None


def _quoted(protocol: str) -> str:
    # A quoted name is taken as the name even where it would be a keyword; the
    # configuration allows only letters, digits, '_', '.' and '-' in it.
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", protocol):
        raise ValueError(f"invalid BIRD protocol name {protocol!r}")
    return f'"{protocol}"'


def enable_command(protocol: str) -> bytes:
    return f"enable {_quoted(protocol)}\n".encode()


def disable_command(protocol: str) -> bytes:
    return f"disable {_quoted(protocol)}\n".encode()


def check_greeting(reply: Reply) -> str:
    """BIRD's version from its greeting (`0001 BIRD 2.0.12 ready.`)."""
    text = reply.lines[0][1] if reply.lines else ""
    if reply.code != "0001" or not text.startswith("BIRD "):
        raise BirdProtocolError(f"not BIRD's greeting: {reply.code} {text[:80]!r}")
    return text.split()[1] if len(text.split()) > 1 else "?"


class CommandRefused(Exception):
    """BIRD understood the protocol but refused the command (8xxx, 9xxx)."""


def switch_outcome(reply: Reply, protocol: str, enable: bool) -> bool:
    """Whether `protocol` is now enabled, from the reply to enable/disable.

    A reply naming another outcome than the one asked for (enable answered by
    `disabled`) is a protocol error; a refusal is CommandRefused."""
    if reply.failed:
        raise CommandRefused(f"{reply.code} {reply.text()}")
    wanted = ENABLED if enable else DISABLED
    for code, text in reply.lines:
        if code in wanted and text.split(":", 1)[0] == protocol:
            return enable
    raise BirdProtocolError(
        f"unexpected answer to {'enable' if enable else 'disable'} {protocol}: "
        f"{reply.code} {reply.text()[:120]!r}"
    )
