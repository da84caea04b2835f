"""HTTP health check: send one request, judge the server by its status code alone.

Only the status line is parsed: headers and body say nothing a check needs, and
stopping at the status line lets the check end as soon as the verdict is known.
The request asks for `Connection: close`; the driver closes after the verdict
anyway.

Galera's clustercheck (port 9200) writes its response as soon as it accepts and
closes without reading the request; this dialogue takes the verdict from
whatever arrives and does not care whether the request was delivered.
"""

from __future__ import annotations

import re

from loadstone.checks.dialogue import Dialogue, Verdict, printable
from loadstone.config.model import CheckConfig

USER_AGENT = "loadstone-check"

# The most we buffer before the final status line (interim 1xx heads included).
# A real status line is a few dozen bytes; a peer sending more without a line
# end is not an HTTP server, and must not make us grow a buffer.
MAX_HEAD = 8192

# RFC 9110 §5.6.2: token = 1*tchar
_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
# Request-target and field values may hold no CTL (a CR or LF would let a
# configured path or header inject request lines).
_CTL = re.compile(rb"[\x00-\x1f\x7f]")

# RFC 9112 §4 (status line):
#     status-line = HTTP-version SP status-code SP [ reason-phrase ]
#     status-code = 3DIGIT
#     reason-phrase = 1*( HTAB / SP / VCHAR / obs-text )
# RFC 9112 §2.3:
#     HTTP-version = HTTP-name "/" DIGIT "." DIGIT
#     HTTP-name = %s"HTTP"
# Leniency, as §4 allows a client to be: the SP after the status code is
# optional (some servers send "HTTP/1.1 200" and nothing else), and the reason
# phrase is not looked at ("A client SHOULD ignore the reason-phrase content").
_STATUS_LINE = re.compile(rb"HTTP/(\d)\.(\d) (\d{3})(?: [\t\x20-\x7e\x80-\xff]*)?")
_HTTP_NAME = b"HTTP/"


def _expected_text(codes: tuple[int, ...]) -> str:
    texts = [str(c) for c in codes]
    if len(texts) <= 1:
        return "".join(texts)
    return ", ".join(texts[:-1]) + " or " + texts[-1]


def build_request(config: CheckConfig, host_header: str) -> bytes:
    """The request bytes; configured headers replace defaults of the same name."""
    if not _TOKEN.fullmatch(config.method.encode("latin-1", "replace")):
        raise ValueError(f"check method {config.method!r} is not an HTTP token")
    if not config.path.isascii():
        raise ValueError(f"check path {config.path!r} must be ASCII (percent-encode it)")
    target = config.path.encode("ascii")
    if not target or b" " in target or _CTL.search(target):
        raise ValueError(f"check path {config.path!r} is not a valid request target")
    fields: dict[str, tuple[str, str]] = {}  # lower-case name -> (name, value), in order
    for name, value in (
        ("Host", host_header),
        ("User-Agent", USER_AGENT),
        ("Connection", "close"),
        *config.headers,
    ):
        raw_name = name.encode("latin-1", "replace")
        if not _TOKEN.fullmatch(raw_name):
            raise ValueError(f"check header name {name!r} is not an HTTP token")
        if _CTL.search(value.encode("latin-1", "replace").replace(b"\t", b" ")):
            raise ValueError(f"check header {name!r} has a control character in its value")
        fields[name.lower()] = (name, value)
    head = [f"{config.method} {config.path} HTTP/1.1"]
    head += [f"{name}: {value}" for name, value in fields.values()]
    return ("\r\n".join(head) + "\r\n\r\n").encode("latin-1", "replace")


class HttpCheckDialogue(Dialogue):
    """GET/HEAD/... one path; ok iff the final status code is in `expect_status`."""

    def __init__(self, config: CheckConfig, host_header: str) -> None:
        self.verdict: Verdict | None = None
        self._request = build_request(config, host_header)
        self._expect = frozenset(config.expect_status)
        self._expected = _expected_text(config.expect_status)
        self._buffer = bytearray()
        self._consumed = 0  # bytes of interim (1xx) heads already parsed
        self._interim = False  # inside the header section of a 1xx response

    def initial(self) -> bytes:
        return self._request

    def receive(self, data: bytes) -> None:
        if self.verdict is not None:
            return
        self._buffer += data
        self._parse()

    def receive_eof(self) -> None:
        if self.verdict is None:
            self._fail("connection closed before status line")

    def _fail(self, detail: str) -> None:
        self.verdict = Verdict(False, detail)
        self._buffer.clear()

    def _parse(self) -> None:
        while self.verdict is None:
            end = self._buffer.find(b"\n")
            length = end if end >= 0 else len(self._buffer)
            if self._consumed + length > MAX_HEAD:
                self._fail(f"status line longer than {MAX_HEAD} bytes")
                return
            if end < 0:
                # Judge a peer that is not HTTP on its first bytes (a MySQL greeting,
                # an SSH banner) instead of waiting for a line end that may never come.
                start = bytes(self._buffer[: len(_HTTP_NAME)])
                if not self._interim and not _HTTP_NAME.startswith(start):
                    self._fail(f"bad status line: {printable(bytes(self._buffer))}")
                return
            # RFC 9112 §2.2: a recipient MAY recognize a single LF as a line
            # terminator and ignore any preceding CR.
            line = bytes(self._buffer[:end]).removesuffix(b"\r")
            del self._buffer[: end + 1]
            self._consumed += end + 1
            if self._interim:
                # Header fields of a 1xx response end at the empty line; the final
                # status line follows (RFC 9110 §15.2).
                if not line:
                    self._interim = False
                continue
            self._status_line(line)

    def _status_line(self, line: bytes) -> None:
        match = _STATUS_LINE.fullmatch(line)
        if match is None or match[1] != b"1":
            self._fail(f"bad status line: {printable(line)}")
            return
        status = int(match[3])
        # RFC 9110 §15: "Values outside the range 100..599 are invalid."
        if not 100 <= status <= 599:
            self._fail(f"bad status line: {printable(line)}")
            return
        if 100 <= status <= 199 and status != 101:
            # Interim response (103 Early Hints, a stray 100 Continue): the final
            # one follows. 101 ends the exchange and is judged as it is.
            self._interim = True
            return
        if status in self._expect:
            self.verdict = Verdict(True, f"HTTP {status}")
        else:
            self.verdict = Verdict(False, f"HTTP {status} (expected {self._expected})")
        self._buffer.clear()
