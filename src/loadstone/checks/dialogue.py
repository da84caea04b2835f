"""The sans-IO interface of a health-check probe's conversation with a server.

A dialogue is the protocol half of a probe: bytes in, bytes out, and a verdict.
It knows nothing of sockets, event loops or time, so every probe can be tested by
feeding it bytes (tests/unit/test_checks_*.py), and the driver (driver.py) is the
only place that does I/O. This module and the dialogues must not import asyncio.

The driver's contract with a dialogue:
1. after connecting it sends `initial()` (may be empty: the server speaks first);
2. it passes every chunk read to `receive()`, then sends `data_to_send()` if not
   empty (multi-step scripts answer what they read);
3. on a clean end of stream it calls `receive_eof()`;
4. as soon as `verdict` is not None the check is over: the driver closes the
   connection and uses the verdict, even if a send failed meanwhile. Servers such
   as Galera's clustercheck answer at accept and close without reading the
   request, so what the server said matters more than whether it heard us.
A dialogue must set a verdict in `receive_eof()` if it had none; connection
errors before a verdict are turned into details by the driver.

Time, which a dialogue cannot read:
5. a dialogue whose steps have their own timeouts (send-expect) says through
   `step_timeout()` which step it waits in and for how long; the driver starts a
   timer whenever that step changes and calls `receive_timeout()` if it expires;
6. when the check's own timeout cuts a dialogue short, the driver also calls
   `receive_timeout()`, so the detail can say where it was stuck.
Bytes in `data_to_send()` when the verdict is reached (a script ending with a
`QUIT`) are written once, best effort, just before the connection is closed.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Verdict:
    """The result of one check."""

    ok: bool
    detail: str  # short, human, shown in the status API and logs: "HTTP 200", "timeout"
    # A failure the server itself stated (connection refused, access denied, a
    # Galera state that forbids traffic): it takes an up server down at once
    # instead of after `fall` failures, as ProxySQL acts on real errors at once.
    # Timeouts are never definitive: a slow answer may be load, not death.
    definitive: bool = False
    # Passing verdicts of cluster probes (Galera): the members of the Primary
    # Component this server is in, as (host, port) endpoints; None when unknown.
    # The scheduler takes out monitored servers missing from it (checks/membership.py).
    members: frozenset[tuple[str, int]] | None = None


class Dialogue(ABC):
    """One check's conversation; a new instance per check."""

    verdict: Verdict | None = None

    @abstractmethod
    def initial(self) -> bytes:
        """Bytes to send once connected (b"" when the server speaks first)."""

    @abstractmethod
    def receive(self, data: bytes) -> None:
        """Bytes read from the server."""

    @abstractmethod
    def receive_eof(self) -> None:
        """The server closed its side; must leave a verdict."""

    def data_to_send(self) -> bytes:
        """Bytes to send now in answer to what was received; drained by the call."""
        return b""

    def step_timeout(self) -> tuple[int, float] | None:
        """(step number, seconds) of the wait in progress when that step has its
        own timeout; None when only the check's timeout applies."""
        return None

    def receive_timeout(self) -> None:
        """A step's timeout or the check's expired before a verdict; must leave
        one, naming where the dialogue was stuck when that helps."""
        self.verdict = Verdict(False, "timeout")


def printable(data: bytes, limit: int = 60) -> str:
    """Bytes from the wire as a short, safe string for a detail or a log line."""
    text = data[:limit].decode("latin-1")
    shown = repr(text)[1:-1]  # escapes control bytes; drop the quotes repr adds
    return shown + ("..." if len(data) > limit else "")
