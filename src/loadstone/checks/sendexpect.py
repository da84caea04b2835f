"""Scripted TCP checks, HAProxy's tcp-check: ordered `send` and `expect` steps, sans-IO.

Theory of operation
-------------------
The script runs top to bottom. Consecutive sends are written together: those at
the top in `initial()`, the others from `data_to_send()` once the expect before
them has matched. The dialogue then waits at the next expect.

An expect looks at the *window*: the bytes read since the previous expect's
match ended (from the start of the connection for the first one). Every chunk
read is appended to the window and the whole window is searched again, so a
match split across reads is found. A match consumes the window up to its end,
so the next expect sees only what followed; a server that already sent the
next answer (pipelined commands) is matched at once, without a read.

An expect fails, and with it the check, when
- the server closes the connection first: nothing more can come;
- its own `timeout` expires: the dialogue cannot read a clock, so it tells the
  driver through `step_timeout()` which step waits and for how long, and the
  driver calls `receive_timeout()` (the check's timeout does the same for the
  steps without one);
- the window grows past MAX_WINDOW without a match (HAProxy: the check buffer
  is full).
The verdict is ok once every step has run. Sends after the last expect are
handed to the driver with the verdict and written best effort (a closing QUIT).

A failure detail names the step as the operator counts the list (from 1) and
shows the start of the window, which is what the server said instead:
    step 5 (expect /role:master/): connection closed;
        got '\\r\\n$412\\r\\n# Replication\\r\\nrole:slave...'
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from loadstone.checks.dialogue import Dialogue, Verdict, printable
from loadstone.config.model import SendExpectStep

# The most bytes an expect waits through without a match; HAProxy's check
# buffer (tune.bufsize) has the same default. The answers scripts look for are
# a few dozen bytes (Redis' INFO replication, a few hundred), and a bound keeps
# a server that streams data from growing the buffer until the timeout.
MAX_WINDOW = 16384


@dataclass(frozen=True, slots=True)
class Step:
    """One step, ready to run: regular expressions compiled once per probe."""

    number: int  # 1-based position in the configured list, for details
    send: bytes | None  # the bytes of a send step; None for an expect
    needle: bytes = b""  # expect: a literal substring ...
    pattern: re.Pattern[bytes] | None = None  # ... or a regular expression over bytes
    timeout: float | None = None  # expect: its own timeout, else the check's

    def describe(self) -> str:
        if self.send is not None:
            return f"send '{printable(self.send, 30)}'"
        if self.pattern is not None:
            return f"expect /{printable(self.pattern.pattern, 30)}/"
        return f"expect '{printable(self.needle, 30)}'"


def compile_steps(steps: Sequence[SendExpectStep]) -> tuple[Step, ...]:
    """The configured steps as a script; ValueError if one cannot run."""
    if not steps:
        raise ValueError("a send-expect check needs at least one step")
    script: list[Step] = []
    for number, step in enumerate(steps, 1):
        if step.action == "send":
            script.append(Step(number, step.data))
        elif step.regex is not None:
            # Compiled over bytes as the loader validated it: the window is bytes,
            # and a server's answer need not be valid UTF-8.
            pattern = re.compile(step.regex.encode())
            script.append(Step(number, None, pattern=pattern, timeout=step.timeout))
        elif step.data:
            script.append(Step(number, None, needle=step.data, timeout=step.timeout))
        else:
            raise ValueError(f"send-expect step {number}: an expect needs bytes or a regex")
    return tuple(script)


class SendExpectDialogue(Dialogue):
    """One run of a script; a new instance per check."""

    def __init__(self, script: Sequence[Step]) -> None:
        self.verdict: Verdict | None = None
        self._script = script
        self._next = 0  # index in _script of the step to run or waiting
        self._window = bytearray()
        self._out = bytearray()
        self._run()

    def initial(self) -> bytes:
        return self.data_to_send()

    def data_to_send(self) -> bytes:
        out = bytes(self._out)
        self._out.clear()
        return out

    def receive(self, data: bytes) -> None:
        if self.verdict is not None:
            return
        self._window += data
        self._run()
        if self.verdict is None and len(self._window) > MAX_WINDOW:
            self._fail(f"no match in {MAX_WINDOW} bytes")

    def receive_eof(self) -> None:
        if self.verdict is None:
            self._fail("connection closed")

    def receive_timeout(self) -> None:
        if self.verdict is None:
            self._fail("timeout")

    def step_timeout(self) -> tuple[int, float] | None:
        if self.verdict is not None or self._next >= len(self._script):
            return None
        step = self._script[self._next]
        return None if step.timeout is None else (step.number, step.timeout)

    # -- the script ------------------------------------------------------------------

    def _run(self) -> None:
        """Run steps until one must wait for bytes, or the script ends."""
        while self._next < len(self._script):
            step = self._script[self._next]
            if step.send is not None:
                self._out += step.send
            elif not self._match(step):
                return
            self._next += 1
        expects = sum(1 for step in self._script if step.send is None)
        plural = "" if expects == 1 else "s"
        self.verdict = Verdict(True, f"script passed ({expects} expect{plural} matched)")
        self._window.clear()

    def _match(self, step: Step) -> bool:
        if step.pattern is not None:
            found = step.pattern.search(self._window)
            if found is None:
                return False
            end = found.end()
        else:
            start = self._window.find(step.needle)
            if start < 0:
                return False
            end = start + len(step.needle)
        del self._window[:end]
        return True

    def _fail(self, why: str) -> None:
        step = self._script[self._next]
        got = f"'{printable(bytes(self._window))}'" if self._window else "nothing"
        self.verdict = Verdict(False, f"step {step.number} ({step.describe()}): {why}; got {got}")
        self._window.clear()
        self._out.clear()  # no closing QUIT after a failure: the server may be wedged
