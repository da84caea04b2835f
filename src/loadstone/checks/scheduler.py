"""One scheduler runs every health check: a task per checked server.

Each task loops: probe (bounded by the check timeout), count the result in the
server's HealthCounter, publish it on the ServerRuntime, tell the pool when the
health changed, then wait. The wait is chosen by the counter (interval when
settled up, fastinter in transition, downinter when down) and measured from the
end of a check, as HAProxy's `inter` is, so a server that times out is not
probed back to back.

The wait is cut short by `trigger(server)`: the data path calls it (through
`Pool.on_connect_failure`) when a connect to the server failed, so a dead
server is confirmed dead in fall x fastinter instead of waiting out a long
interval while clients keep hitting it. Triggers are rate-limited per server.

First checks are staggered over min(interval, 1 s) so a hundred servers are not
probed in the same millisecond after a start or a reload, yet every server is
probed within a second of the start, whatever its interval.

Reload: build a new scheduler over the new pools and stop the old one. A
counter starts from its server's current health, so a ServerRuntime carried
over a reload keeps its state.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import replace
from functools import partial

from loadstone.checks.driver import DialogueProbe, run_check
from loadstone.checks.membership import Endpoint, describe, endpoint, outside_component
from loadstone.checks.probe import Probe, ProbeFactory
from loadstone.checks.registry import PROBES, make_probe
from loadstone.checks.state import HealthCounter
from loadstone.config.model import Address, CheckConfig
from loadstone.server import Pool, ServerRuntime
from loadstone.tls.material import server_context, server_tls
from loadstone.tls.upstream import check_context, server_name

log = logging.getLogger("loadstone.checks")

# The first checks of all servers are spread over at most this many seconds.
MAX_FIRST_SPREAD = 1.0


class ServerCheck:
    """The check state of one server; the admin API may read `counter`."""

    __slots__ = (
        "config",
        "counter",
        "endpoint",
        "excluded",
        "last_trigger",
        "pool",
        "probe",
        "reported",
        "server",
        "task",
        "timeout",
        "wake",
    )

    def __init__(
        self,
        pool: Pool,
        server: ServerRuntime,
        config: CheckConfig,
        probe: Probe,
        endpoint: Endpoint,
    ):
        self.pool = pool
        self.endpoint = endpoint  # what the probe connects to, as cluster members name it
        # Why a cluster member took this server out (None: it did not), shown
        # before the server's own failures until a check of its own passes.
        self.excluded: str | None = None
        self.server = server
        self.config = config
        self.probe = probe
        timeout = config.timeout
        self.timeout = timeout if timeout is not None else pool.listener.timeouts.check
        self.counter = HealthCounter(
            config.rise,
            config.fall,
            healthy=server.healthy,
            confirmed=server.check_status in ("ok", "failed"),
        )
        self.wake = asyncio.Event()  # set by trigger(): check now
        self.last_trigger = float("-inf")  # loop time of the last trigger obeyed
        self.reported = False  # the first result is always passed to the pool
        self.task: asyncio.Task[None] | None = None

    @property
    def triggered(self) -> bool:
        """A trigger is pending: the next check will not wait for its interval."""
        return self.wake.is_set()

    @property
    def label(self) -> str:
        return f"{self.pool.name}/{self.server.name}"


class CheckScheduler:
    """Runs the health checks of the given pools.

    Construction builds every probe and raises NotImplementedError (check type
    without a probe) or ValueError (a configuration the probe cannot use), with
    the listener named, before anything runs.
    """

    def __init__(
        self,
        pools: Iterable[Pool],
        *,
        probes: Mapping[str, ProbeFactory] = PROBES,
        retrigger_interval: float = 0.1,
    ) -> None:
        self.pools = list(pools)
        # At most one trigger-caused check per server in this many seconds: a down
        # server refusing a burst of clients must not be probed once per client.
        self.retrigger_interval = retrigger_interval
        self.checks: dict[ServerRuntime, ServerCheck] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: int | None = None
        for pool in self.pools:
            config = pool.listener.check
            if config is None:
                continue
            for server in pool.servers:
                if not server.config.check:
                    continue
                port = config.port or server.address.port
                # Probe what the data path connects to: the runtime may have
                # resolved a name once at start-up (`connect_host`). The Host header
                # still names the server as configured.
                host = server.connect_host
                probe_config = config
                if config.host is None and host != server.address.host:
                    probe_config = replace(config, host=str(Address(server.address.host, port)))
                try:
                    probe = make_probe(probe_config, host, port, probes)
                except NotImplementedError as exc:
                    raise NotImplementedError(f"listener {pool.name}: {exc}") from exc
                except ValueError as exc:
                    raise ValueError(f"listener {pool.name}: {exc}") from exc
                if config.tls:
                    _use_tls(probe, pool, server)
                # A probe that learns between checks that its server changed (the
                # Galera probe's kept-open connection dropped) asks for a check now.
                probe.wake = partial(self.trigger, server)
                sc = ServerCheck(pool, server, config, probe, endpoint(host, port))
                # The kernel gives up a connection to a silent peer after the
                # check timeout (TCP_USER_TIMEOUT, keepalive; checks/sockopts.py).
                probe.silence_timeout = sc.timeout
                self.checks[server] = sc

    # -- lifecycle -----------------------------------------------------------------

    def start(self) -> None:
        """Start one task per checked server; call from the event loop."""
        if self._loop is not None:
            raise RuntimeError("CheckScheduler already started")
        self._loop = asyncio.get_running_loop()
        self._thread = threading.get_ident()
        for pool in self.pools:
            if pool.listener.check is not None:
                pool.on_connect_failure = self.trigger
        n = len(self.checks)
        for i, sc in enumerate(self.checks.values()):
            delay = i * min(sc.config.interval, MAX_FIRST_SPREAD) / n
            sc.task = self._loop.create_task(self._run(sc, delay), name=f"check {sc.label}")
        log.info("health checks started for %d server(s)", n)

    async def stop(self) -> None:
        """Cancel the checks and close the probes; idempotent."""
        tasks = [sc.task for sc in self.checks.values() if sc.task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for pool in self.pools:
            if pool.on_connect_failure == self.trigger:
                pool.on_connect_failure = None
        for sc in self.checks.values():
            sc.task = None
            try:
                await sc.probe.close()
            except Exception:
                log.warning("closing the probe of %s failed", sc.label, exc_info=True)

    # -- the data path's hint --------------------------------------------------------

    def trigger(self, server: ServerRuntime) -> None:
        """Check `server` now (rate-limited); safe to call from any thread."""
        loop = self._loop
        if loop is None:
            return
        if threading.get_ident() != self._thread:
            # The native data path runs worker threads; asyncio.Event is not
            # thread-safe, so hop to the loop.
            with contextlib.suppress(RuntimeError):  # loop closed: shutting down
                loop.call_soon_threadsafe(self._trigger, server)
            return
        self._trigger(server)

    def _trigger(self, server: ServerRuntime) -> None:
        sc = self.checks.get(server)
        if sc is None or sc.task is None or self._loop is None:
            return
        now = self._loop.time()
        if now - sc.last_trigger < self.retrigger_interval:
            return
        sc.last_trigger = now
        log.debug("check %s triggered by a failed connect", sc.label)
        sc.wake.set()

    # -- the per-server task ---------------------------------------------------------

    async def _run(self, sc: ServerCheck, first_delay: float) -> None:
        await self._wait(sc, first_delay)
        while True:
            # Triggers that came before this check are answered by it; one that
            # comes during it asks for another check right after.
            sc.wake.clear()
            try:
                delay = await self._check_once(sc)
            except Exception:
                # Only a bug gets here (probe errors are verdicts); keep checking.
                log.exception("health check of %s failed unexpectedly", sc.label)
                delay = sc.config.interval
            await self._wait(sc, delay)

    async def _wait(self, sc: ServerCheck, delay: float) -> None:
        if delay <= 0:
            return
        try:
            async with asyncio.timeout(delay):
                await sc.wake.wait()
        except TimeoutError:
            pass

    async def _check_once(self, sc: ServerCheck) -> float:
        """Probe, record, publish; return the delay before the next check."""
        # perf_counter, not loop.time(): uvloop's clock ticks in milliseconds.
        started = time.perf_counter()
        verdict = await run_check(sc.probe, sc.timeout)
        duration = time.perf_counter() - started

        server = sc.server
        previous_status = server.check_status
        server.checks_total += 1
        if not verdict.ok:
            server.checks_failed += 1
        server.check_status = "ok" if verdict.ok else "failed"
        server.check_detail = verdict.detail
        if verdict.ok:
            sc.excluded = None
        elif sc.excluded is not None and not verdict.definitive:
            # A timeout says less than the member's report; a node's own
            # definitive answer ("non-primary") says more.
            server.check_detail = f"{sc.excluded}; {verdict.detail}"
        server.check_duration = duration
        changed = sc.counter.record(verdict.ok, verdict.definitive)

        log.debug(
            "check %s: %s (%.1f ms, %s)",
            sc.label,
            verdict.detail,
            duration * 1e3,
            sc.counter.describe(),
        )
        if (
            changed is None
            and previous_status in ("ok", "failed")
            and (previous_status != server.check_status)
        ):
            # A run that may end in a transition starts (or was cut short): worth
            # a line, unlike every failure of a server that is down for good.
            log.info(
                "check %s %s: %s (%s)",
                sc.label,
                "passed" if verdict.ok else "failed",
                verdict.detail,
                sc.counter.describe(),
            )
        if changed is not None or not sc.reported:
            # Pool.set_health logs the transition and tells balancers/subscribers.
            sc.reported = True
            sc.pool.set_health(server, sc.counter.healthy, verdict.detail)
        if verdict.ok and verdict.members is not None:
            self._take_out_non_members(sc, verdict.members)
        return sc.counter.interval(sc.config)

    def _take_out_non_members(self, reporter: ServerCheck, members: frozenset[Endpoint]) -> None:
        """A Primary Component member listed its members: the pool's servers
        missing from the list are out now, not after `fall` timed-out checks
        (loadstone.checks.membership)."""
        pool = reporter.pool
        monitored = {sc.server: sc.endpoint for sc in self.checks.values() if sc.pool is pool}
        for server in outside_component(reporter.endpoint, members, monitored):
            sc = self.checks[server]
            if not sc.counter.healthy:
                continue
            detail = f"outside the primary component (per {reporter.server.name})"
            sc.excluded = detail
            sc.counter.record(False, definitive=True)
            server.check_status = "failed"
            server.check_detail = detail
            log.info("check %s: %s, members %s", sc.label, detail, describe(members))
            sc.pool.set_health(server, False, detail)


def _use_tls(probe: Probe, pool: Pool, server: ServerRuntime) -> None:
    """check.tls: probe over TLS with the server's TLS settings (or, without any,
    a handshake that does not verify the certificate)."""
    if not isinstance(probe, DialogueProbe):
        raise ValueError(f"listener {pool.name}: check.tls is for tcp, http and send-expect checks")
    listener = pool.listener
    ctx = server_context(listener, server.config)
    settings = server_tls(listener, server.config)
    probe.tls = ctx if ctx is not None else check_context()
    probe.tls_name = server_name(settings, server.config) if settings is not None else None
