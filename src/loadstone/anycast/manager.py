"""The anycast loop: take each VIP's decision, tell the driver, report both.

Every `interval` the manager asks the runtime what stands in the way of
serving each VIP, damps the answer into a decision (decision.Damper) and
applies it through the driver. Driver calls are bounded by `timeout`; when the
driver fails, the VIPs' announced state becomes unknown (None), the failure is
logged once per distinct error and counted, and the next attempt waits a
back-off doubling from `interval` up to `retry_max`. Nothing here raises into
the runtime: a BGP speaker that is down costs the announcements, never the
proxy.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from loadstone.anycast.bird import BirdDriver
from loadstone.anycast.decision import Damper
from loadstone.anycast.driver import Driver, DriverError
from loadstone.anycast.exabgp import ExabgpDriver
from loadstone.config.model import AnycastConfig, AnycastVip

log = logging.getLogger("loadstone.anycast")


@dataclass
class VipState:
    vip: AnycastVip
    damper: Damper
    problems: list[str] = field(default_factory=list)
    announced: bool | None = None  # what the speaker confirmed; None: unknown


def make_driver(config: AnycastConfig) -> Driver:
    if config.driver == "bird":
        return BirdDriver(config.socket, config.timeout)
    return ExabgpDriver(config.socket, config.timeout)


class AnycastManager:
    def __init__(
        self,
        config: AnycastConfig,
        problems: Callable[[AnycastVip], list[str]],
        driver: Driver | None = None,
    ) -> None:
        self.config = config
        self.problems = problems  # why this instance cannot serve the VIP now
        self.driver = driver if driver is not None else make_driver(config)
        self.vips = [VipState(vip, Damper(config.hold_down)) for vip in config.vips]
        self.driver_up: bool | None = None  # None: not tried yet
        self.error: str | None = None
        self.errors = 0
        self.backoff = 0.0
        self._next_try = 0.0
        self._withdrawing = False  # a planned stop: decisions are forced to withdraw
        self._task: asyncio.Task[None] | None = None
        # One pass at a time: withdraw_all (SIGTERM) may come while the loop's
        # pass waits for the driver, and both would talk on one connection.
        self._pass = asyncio.Lock()

    async def start(self) -> None:
        if isinstance(self.driver, ExabgpDriver):
            try:
                await self.driver.start()
            except OSError as exc:
                # Its apply() then fails ("no feed connected"): reported and retried.
                log.error("anycast: cannot listen on %s: %s", self.config.socket, exc.strerror)
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        while True:
            try:
                await self.step()
            except Exception:  # a bug here must cost the announcements, not the loop
                log.exception("anycast: unexpected error; retrying")
                self._failed("unexpected error (see the log)", time.monotonic())
            await asyncio.sleep(self.config.interval)

    def decide(self, now: float) -> None:
        for state in self.vips:
            state.problems = ["withdrawing: planned stop"] if self._withdrawing else []
            state.problems += self.problems(state.vip)
            state.damper.update(not state.problems, now, force=self._withdrawing)

    async def step(self) -> None:
        """One pass: decide, and tell the driver unless it is backing off."""
        async with self._pass:
            await self._step()

    async def _step(self) -> None:
        now = time.monotonic()
        self.decide(now)
        if now < self._next_try:
            return
        for state in self.vips:
            try:
                await self.driver.apply(state.vip, state.damper.announce)
            except DriverError as exc:
                self._failed(str(exc), now)
                return
            if state.announced != state.damper.announce:
                log.info(
                    "anycast: %s %s (%s)",
                    "announced" if state.damper.announce else "withdrew",
                    state.vip.prefix,
                    state.vip.name if state.damper.announce else "; ".join(state.problems),
                )
            state.announced = state.damper.announce
        if self.driver_up is not True:
            log.info("anycast: %s driver up", self.driver.name)
        self.driver_up, self.error, self.backoff, self._next_try = True, None, 0.0, 0.0

    def _failed(self, error: str, now: float) -> None:
        if error != self.error:
            log.error("anycast: %s driver: %s (keeps serving; retrying)", self.driver.name, error)
        self.driver_up, self.error = False, error
        self.errors += 1
        for state in self.vips:
            state.announced = None
        self.backoff = min(max(self.backoff * 2, self.config.interval), self.config.retry_max)
        self._next_try = now + self.backoff

    async def withdraw_all(self) -> None:
        """The first step of a planned stop: withdraw every VIP now, past the
        hold and the back-off, and keep them withdrawn."""
        self._withdrawing = True
        self._next_try = 0.0
        await self.step()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self.driver.close()

    def status(self) -> dict[str, Any]:
        now = time.monotonic()
        return {
            "driver": {
                "name": self.driver.name,
                "up": self.driver_up,
                "error": self.error,
                "errors": self.errors,
                "retry_in": round(max(0.0, self._next_try - now), 3) if self.error else None,
                **self.driver.status(),
            },
            "vips": {
                s.vip.name: {
                    "prefix": s.vip.prefix,
                    "listeners": list(s.vip.listeners),
                    "decision": "announce" if s.damper.announce else "withdraw",
                    "held": s.damper.held,
                    "announced": s.announced,
                    "problems": s.problems,
                }
                for s in self.vips
            },
        }
