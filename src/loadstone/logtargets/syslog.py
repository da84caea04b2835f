"""Syslog messages, sans-IO: one log line -> the bytes a syslog receiver takes.

RFC 5424 (section 6):
    SYSLOG-MSG = HEADER SP STRUCTURED-DATA [SP MSG]
    HEADER     = PRI VERSION SP TIMESTAMP SP HOSTNAME SP APP-NAME SP PROCID SP MSGID
    PRI        = "<" PRIVAL ">"            PRIVAL = facility * 8 + severity
e.g. `<134>1 2026-12-06T21:16:33.123456Z ctl1 loadstone 4242 session - text`.

RFC 3164 (section 4.1), the BSD format HAProxy writes by default:
    <PRI>Mmm dd hh:mm:ss HOSTNAME TAG[PID]: MSG
with the day space-padded (`Dec  6`) and local time. On the local socket
(/dev/log) the hostname is left out, as glibc's syslog(3) does: the local daemon
adds its own.

Over TCP (RFC 6587) a message is framed: RFC 5424 ones by octet counting
(`LEN SP MSG`, so a line may hold anything), RFC 3164 ones by a trailing LF.
Datagram transports (UDP, /dev/log) carry one message per datagram, unframed.
"""

from __future__ import annotations

import time
from typing import Final, Literal

SyslogProtocol = Literal["rfc5424", "rfc3164"]

FACILITIES: Final = {
    "kern": 0,
    "user": 1,
    "mail": 2,
    "daemon": 3,
    "auth": 4,
    "syslog": 5,
    "lpr": 6,
    "news": 7,
    "uucp": 8,
    "cron": 9,
    "authpriv": 10,
    "ftp": 11,
    **{f"local{i}": 16 + i for i in range(8)},
}

# Severities (RFC 5424 table 2), also the journald `<N>` line prefixes.
ERR: Final = 3
WARNING: Final = 4
INFO: Final = 6
DEBUG: Final = 7

_MONTHS: Final = (
    "Jan",
    "Feb",
    "Mar",
    "Apr",
    "May",
    "Jun",
    "Jul",
    "Aug",
    "Sep",
    "Oct",
    "Nov",
    "Dec",
)

# RFC 5424 section 6.2.5: APP-NAME is at most 48 printable US-ASCII characters.
MAX_APP_NAME: Final = 48


def severity_of(levelno: int) -> int:
    """A Python logging level -> syslog severity."""
    if levelno >= 40:  # ERROR, CRITICAL
        return ERR
    if levelno >= 30:
        return WARNING
    if levelno >= 20:
        return INFO
    return DEBUG


class SyslogFormatter:
    """Builds messages for one destination: its protocol, facility, tag, host."""

    def __init__(
        self,
        protocol: SyslogProtocol,
        facility: int,
        tag: str,
        hostname: str | None,
        pid: int,
        framed: bool,
    ) -> None:
        self.protocol = protocol
        self.facility = facility
        self.tag = tag[:MAX_APP_NAME]
        self.hostname = hostname  # None: left out (local socket, RFC 3164 only)
        self.pid = pid
        self.framed = framed  # a stream transport: frame each message

    def message(self, line: str, severity: int, msgid: str, now: float | None = None) -> bytes:
        now = time.time() if now is None else now
        pri = self.facility * 8 + severity
        if self.protocol == "rfc5424":
            stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now))
            stamp += f".{int(now % 1 * 1_000_000):06d}Z"
            head = f"<{pri}>1 {stamp} {self.hostname or '-'} {self.tag} {self.pid} {msgid} - "
            body = (head + line).encode("utf-8", "replace")
            return b"%d %s" % (len(body), body) if self.framed else body
        local = time.localtime(now)
        stamp = f"{_MONTHS[local.tm_mon - 1]} {local.tm_mday:2d} {time.strftime('%H:%M:%S', local)}"
        host = f"{self.hostname} " if self.hostname else ""
        body = f"<{pri}>{stamp} {host}{self.tag}[{self.pid}]: {line}".encode("utf-8", "replace")
        return body + b"\n" if self.framed else body
