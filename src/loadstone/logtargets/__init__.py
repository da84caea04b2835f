"""Where log lines go: standard streams, syslog (local socket, UDP, TCP) or a file.

A destination is written in the configuration as one string:

    stdout | stderr                      the process's streams (journald-aware)
    syslog | syslog:/dev/log             a local syslog daemon's datagram socket
    syslog+udp://HOST[:PORT]             a syslog server over UDP (port 514)
    syslog+tcp://HOST[:PORT]             a syslog server over TCP (port 514)
    file:/var/log/loadstone/access.log   a file, reopened on SIGUSR1

`parse_destination` validates that string (the configuration loader calls it,
so a typo is a `loadstone check` error); `loadstone.logtargets.sinks` writes to
the destination without ever blocking the event loop.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Final, Literal
from urllib.parse import urlsplit

DestinationKind = Literal["stdout", "stderr", "unix", "udp", "tcp", "file"]

DEFAULT_SYSLOG_SOCKET: Final = "/dev/log"
DEFAULT_SYSLOG_PORT: Final = 514


@dataclass(frozen=True, slots=True)
class Destination:
    kind: DestinationKind
    path: str | None = None  # unix, file
    host: str | None = None  # udp, tcp
    port: int | None = None  # udp, tcp

    @property
    def is_syslog(self) -> bool:
        return self.kind in ("unix", "udp", "tcp")

    def __str__(self) -> str:
        if self.kind in ("stdout", "stderr"):
            return self.kind
        if self.kind == "file":
            return f"file:{self.path}"
        if self.kind == "unix":
            return f"syslog:{self.path}"
        host = f"[{self.host}]" if self.host and ":" in self.host else self.host
        return f"syslog+{self.kind}://{host}:{self.port}"


def parse_destination(text: str) -> Destination:
    """The destination `text` names; ValueError with a message saying what is
    expected when it names none."""
    if text in ("stdout", "stderr"):
        return Destination(text)  # type: ignore[arg-type]
    if text == "syslog":
        return Destination("unix", path=DEFAULT_SYSLOG_SOCKET)
    if text.startswith("syslog:") and not text.startswith("syslog://"):
        path = text.removeprefix("syslog:")
        if not path.startswith("/"):
            raise ValueError(f"syslog:PATH needs an absolute socket path, got {text!r}")
        return Destination("unix", path=path)
    if text.startswith("file:"):
        path = text.removeprefix("file:")
        if not path.startswith("/"):
            raise ValueError(f"file:PATH needs an absolute path, got {text!r}")
        return Destination("file", path=path)
    if text.startswith(("syslog+udp://", "syslog+tcp://")):
        parts = urlsplit(text)
        try:
            port = parts.port
        except ValueError:
            raise ValueError(f"port must be 1-65535 in {text!r}") from None
        host = parts.hostname
        if not host or parts.path not in ("", "/") or parts.query or parts.username:
            raise ValueError(f"expected syslog+udp://HOST[:PORT] or syslog+tcp://..., got {text!r}")
        if ":" in host:
            ipaddress.IPv6Address(host)  # brackets held something else: ValueError
        kind: DestinationKind = "udp" if parts.scheme == "syslog+udp" else "tcp"
        return Destination(kind, host=host, port=port or DEFAULT_SYSLOG_PORT)
    raise ValueError(
        "expected stdout, stderr, syslog[:/dev/log], syslog+udp://HOST[:PORT], "
        f"syslog+tcp://HOST[:PORT] or file:/PATH, got {text!r}"
    )
