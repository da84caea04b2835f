"""What a probe is: the interface of the checks of one server, and the failure
details they report.

A `Probe` checks one server again and again (one instance per checked server).
Most probes connect for each check and run a sans-IO dialogue over the
connection (loadstone.checks.driver.DialogueProbe: tcp, http, send-expect); a
probe may instead keep a connection open between checks (the Galera probe keeps
one MySQL session per server, so a check costs one query and not a login that
the server counts against max_connect_errors). Probes are registered per check
type in loadstone.checks.registry.

This module is what the probe modules build on, and it imports none of them:
the registry sits above the probes, the probes above this module.

Timeouts are not the probe's business: `run_check` (loadstone.checks.driver)
bounds a whole check (resolution and connect included) with the check timeout
and cancels the probe when it expires, so a probe must leave itself reusable
when cancelled (close what it was using).

Failure details are short and stable, for operators reading the status API:
"connection refused", "timeout", "cannot resolve db1: Name or service not known".
"""

from __future__ import annotations

import errno
from abc import ABC, abstractmethod
from collections.abc import Callable

from loadstone.checks.dialogue import Verdict
from loadstone.config.model import CheckConfig


class CheckFailed(Exception):
    """A probe's way to end a check with a failed verdict from deep inside."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class Probe(ABC):
    """Checks one server; `check` is never called concurrently on one probe."""

    # Set by the scheduler: call it to have the server checked now (rate-limited),
    # e.g. when a connection kept open between checks is closed by the server.
    wake: Callable[[], None] | None = None
    # Set by the scheduler to the check timeout: how long the kernel may keep a
    # connection whose peer went silent (checks/sockopts.py).
    silence_timeout: float = 2.0

    @abstractmethod
    async def check(self) -> Verdict:
        """One check. May raise (CheckFailed, OSError, ...): `run_check` turns
        exceptions into failed verdicts. May be cancelled at any await."""

    async def close(self) -> None:  # noqa: B027 - most probes hold nothing between checks
        """Release what the probe keeps between checks."""

    def timed_out(self) -> Verdict:
        """The verdict of a check the check timeout cut short, called after the
        cancellation: "timeout", or where the probe was stuck."""
        return Verdict(False, "timeout")


ProbeFactory = Callable[[CheckConfig, str, int], Probe]
"""Builds the probe of one server: (check config, host, port) -> Probe.

Raises ValueError when the configuration cannot make a valid probe."""


_ERRNO_DETAILS = {
    errno.ECONNREFUSED: "connection refused",
    errno.ECONNRESET: "connection reset",
    errno.ECONNABORTED: "connection aborted",
    errno.EPIPE: "broken pipe",
    errno.EHOSTUNREACH: "no route to host",
    errno.ENETUNREACH: "network unreachable",
    errno.EHOSTDOWN: "host is down",
    errno.ETIMEDOUT: "connection timed out",  # the kernel's, not our check timeout
    errno.EADDRNOTAVAIL: "address not available",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",  # a local firewall rule
}


def describe_error(exc: BaseException) -> str:
    """A short detail for an error raised while checking."""
    if isinstance(exc, CheckFailed):
        return exc.detail
    if isinstance(exc, OSError):
        if exc.errno in _ERRNO_DETAILS:
            return _ERRNO_DETAILS[exc.errno]
        if exc.strerror:
            return exc.strerror.lower()
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
