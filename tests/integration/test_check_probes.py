"""Probes and the scheduler against real loopback servers, on asyncio and uvloop.

Every peer is started in-test on a free port. Nothing waits on a bare sleep:
conditions are polled against a deadline (`until`).
"""

from __future__ import annotations

import asyncio
import errno
import socket
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from typing import Any, TypeVar

import pytest
import uvloop
from aiohttp import web

from loadstone.balance.base import Balancer
from loadstone.checks import CheckScheduler, Verdict, run_probe
from loadstone.config.model import Address, CheckConfig, ListenerConfig, ServerConfig, Timeouts
from loadstone.server import Pool, ServerRuntime

pytestmark = pytest.mark.integration

T = TypeVar("T")
Run = Callable[[Coroutine[Any, Any, T]], T]

LOOPS: dict[str, Callable[[], asyncio.AbstractEventLoop]] = {
    "asyncio": asyncio.new_event_loop,
    "uvloop": uvloop.new_event_loop,
}

HTTP = CheckConfig(type="http", path="/healthcheck")
TCP = CheckConfig(type="tcp")
CLUSTERCHECK_503 = (
    b"HTTP/1.1 503 Service Unavailable\r\n"
    b"Content-Type: text/plain\r\n"
    b"Connection: close\r\n"
    b"Content-Length: 36\r\n"
    b"\r\n"
    b"Galera cluster node is not synced.\r\n"
)
CLUSTERCHECK_200 = (
    b"HTTP/1.1 200 OK\r\n"
    b"Content-Type: text/plain\r\n"
    b"Connection: close\r\n"
    b"Content-Length: 32\r\n"
    b"\r\n"
    b"Galera cluster node is synced.\r\n"
)


@pytest.fixture(params=sorted(LOOPS))
def run(request: pytest.FixtureRequest) -> Iterator[Run[Any]]:
    """Run a scenario to completion on a fresh loop of the parametrized kind."""

    def runner(coro: Coroutine[Any, Any, T]) -> T:
        with asyncio.Runner(loop_factory=LOOPS[request.param]) as loop_runner:
            return loop_runner.run(coro)

    yield runner


async def until(predicate: Callable[[], bool], what: str, timeout: float = 3.0) -> float:
    """Poll `predicate` until true; return the time it took, fail after `timeout`."""
    start = time.monotonic()
    while not predicate():
        if time.monotonic() - start > timeout:
            raise AssertionError(f"not {what} after {timeout}s")
        await asyncio.sleep(0.002)
    return time.monotonic() - start


# -- peers ----------------------------------------------------------------------


async def start_stream_server(
    handler: Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]],
    port: int = 0,
    host: str = "127.0.0.1",
) -> tuple[asyncio.Server, int]:
    server = await asyncio.start_server(handler, host, port)
    return server, server.sockets[0].getsockname()[1]


async def accept_and_hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Accept, read, never answer; close when the client does."""
    try:
        await reader.read()
    finally:
        writer.close()


async def start_http(
    seen: list[web.Request] | None = None,
) -> tuple[web.AppRunner, int]:
    async def handle(request: web.Request) -> web.Response:
        if seen is not None:
            seen.append(request)
        status = {"/healthcheck": 200, "/down": 503, "/auth": 401}.get(request.path, 404)
        return web.Response(status=status, text="{}")

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    return runner, runner.addresses[0][1]


class Clustercheck:
    """Galera's clustercheck as xinetd runs it: answer at accept, never read, close.

    `wait_for_request`: answer only once the request has arrived (unread), so the
    close sends a RST after the response, as when the script's reply follows the
    client's request on the wire.
    """

    def __init__(self, response: bytes, wait_for_request: bool = False) -> None:
        self.response = response
        self.wait_for_request = wait_for_request
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(16)
        self.listener.setblocking(False)
        self.port: int = self.listener.getsockname()[1]
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Clustercheck:
        self._task = asyncio.create_task(self._serve())
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)
        self.listener.close()

    async def _serve(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            conn, _ = await loop.sock_accept(self.listener)
            with conn:
                if self.wait_for_request:
                    # Readable means the request is here; leave it unread.
                    readable: asyncio.Future[None] = loop.create_future()

                    def wake(readable: asyncio.Future[None] = readable) -> None:
                        if not readable.done():
                            readable.set_result(None)

                    loop.add_reader(conn.fileno(), wake)
                    try:
                        await readable
                    finally:
                        loop.remove_reader(conn.fileno())
                conn.send(self.response)


@pytest.fixture
def closed_port() -> Iterator[int]:
    """A port that refuses connects: bound (so nobody else takes it), not listening."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    try:
        yield sock.getsockname()[1]
    finally:
        sock.close()


# -- tcp probes -----------------------------------------------------------------


def test_tcp_up(run: Run[Any]) -> None:
    async def scenario() -> Verdict:
        server, port = await start_stream_server(accept_and_hold)
        async with server:
            return await run_probe(TCP, "127.0.0.1", port, 1.0)

    assert run(scenario()) == Verdict(True, "connected")


def test_tcp_refused(run: Run[Any], closed_port: int) -> None:
    verdict = run(run_probe(TCP, "127.0.0.1", closed_port, 1.0))
    assert verdict == Verdict(False, "connection refused")


def test_tcp_timeout_on_full_backlog(run: Run[Any]) -> None:
    # A listener with backlog 0 and its accept queue filled drops further SYNs:
    # the connect hangs as with a blackholed host.
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    fillers = []
    try:
        for _ in range(4):
            filler = socket.socket()
            filler.setblocking(False)
            err = filler.connect_ex(("127.0.0.1", port))
            assert err in (0, errno.EINPROGRESS, errno.EAGAIN)
            fillers.append(filler)

        async def scenario() -> tuple[Verdict, float]:
            start = time.monotonic()
            verdict = await run_probe(TCP, "127.0.0.1", port, 0.2)
            return verdict, time.monotonic() - start

        verdict, took = run(scenario())
        if verdict.ok:
            pytest.skip("this network stack accepted a connect past a full backlog")
        assert verdict == Verdict(False, "timeout")
        assert 0.19 <= took < 1.0
    finally:
        for filler in fillers:
            filler.close()
        listener.close()


def test_name_is_resolved_at_check_time(run: Run[Any]) -> None:
    # "localhost" may resolve to ::1 first; the server is only on 127.0.0.1, so
    # the probe must try the next address.
    async def scenario() -> Verdict:
        server, port = await start_stream_server(accept_and_hold)
        async with server:
            return await run_probe(TCP, "localhost", port, 2.0)

    assert run(scenario()) == Verdict(True, "connected")


def test_unresolvable_name(run: Run[Any]) -> None:
    verdict = run(run_probe(TCP, "nonexistent.invalid", 80, 5.0))
    if verdict.detail == "timeout":
        pytest.skip("the resolver did not answer")
    assert not verdict.ok
    assert verdict.detail.startswith("cannot resolve nonexistent.invalid: "), verdict


def test_ipv6_loopback(run: Run[Any]) -> None:
    if not socket.has_ipv6:
        pytest.skip("no IPv6")

    async def scenario() -> Verdict:
        try:
            server, port = await start_stream_server(accept_and_hold, host="::1")
        except OSError:
            pytest.skip("no IPv6 loopback")
        async with server:
            return await run_probe(HTTP, "::1", port, 0.1)

    # Connected, then nobody answers: this only proves the connect over IPv6.
    assert run(scenario()) == Verdict(False, "timeout")


# -- http probes ------------------------------------------------------------------


def test_http_statuses_and_request(run: Run[Any]) -> None:
    seen: list[web.Request] = []

    async def scenario() -> list[Verdict]:
        runner, port = await start_http(seen)
        try:
            configs = [
                HTTP,
                CheckConfig(type="http", path="/down"),
                CheckConfig(type="http", path="/auth", expect_status=(200, 401)),
                CheckConfig(
                    type="http",
                    method="HEAD",
                    path="/healthcheck",
                    host="keystone.example",
                    headers=(("User-Agent", "osa-healthcheck"), ("X-Check", "1")),
                ),
            ]
            return [await run_probe(c, "127.0.0.1", port, 2.0) for c in configs]
        finally:
            await runner.cleanup()

    assert run(scenario()) == [
        Verdict(True, "HTTP 200"),
        Verdict(False, "HTTP 503 (expected 200)"),
        Verdict(True, "HTTP 401"),
        Verdict(True, "HTTP 200"),
    ]
    first, head = seen[0], seen[3]
    assert first.method == "GET"
    assert first.headers["User-Agent"] == "loadstone-check"
    assert first.headers["Host"] == f"127.0.0.1:{first.url.port}"
    assert first.headers["Connection"] == "close"
    assert head.method == "HEAD"
    assert head.headers["Host"] == "keystone.example"
    assert head.headers["User-Agent"] == "osa-healthcheck"
    assert head.headers["X-Check"] == "1"


def test_http_timeout_when_server_never_answers(run: Run[Any]) -> None:
    async def scenario() -> tuple[Verdict, float]:
        server, port = await start_stream_server(accept_and_hold)
        async with server:
            start = time.monotonic()
            verdict = await run_probe(HTTP, "127.0.0.1", port, 0.2)
            return verdict, time.monotonic() - start

    verdict, took = run(scenario())
    assert verdict == Verdict(False, "timeout")
    assert 0.19 <= took < 1.0  # uvloop's clock has a millisecond resolution


def test_http_closed_without_answer(run: Run[Any]) -> None:
    async def read_then_close(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await reader.readuntil(b"\r\n\r\n")  # read it all: the close is a clean FIN
        finally:
            writer.close()

    async def scenario() -> Verdict:
        server, port = await start_stream_server(read_then_close)
        async with server:
            return await run_probe(HTTP, "127.0.0.1", port, 2.0)

    assert run(scenario()) == Verdict(False, "connection closed before status line")


def test_http_against_a_mysql_port_fails_fast(run: Run[Any]) -> None:
    async def greet(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # The first bytes of a MariaDB handshake, then silence with the connection open.
        writer.write(b"\x5b\x00\x00\x00\x0a11.4.2-MariaDB\x00")
        try:
            await reader.read()
        finally:
            writer.close()

    async def scenario() -> tuple[Verdict, float]:
        server, port = await start_stream_server(greet)
        async with server:
            start = time.monotonic()
            verdict = await run_probe(HTTP, "127.0.0.1", port, 5.0)
            return verdict, time.monotonic() - start

    verdict, took = run(scenario())
    assert verdict == Verdict(False, "bad status line: [\\x00\\x00\\x00")
    assert took < 2.0  # judged on the bytes, not at the timeout


@pytest.mark.parametrize("wait_for_request", [False, True], ids=["at-accept", "after-request"])
@pytest.mark.parametrize(
    ("response", "expected"),
    [
        (CLUSTERCHECK_503, Verdict(False, "HTTP 503 (expected 200)")),
        (CLUSTERCHECK_200, Verdict(True, "HTTP 200")),
    ],
    ids=["503", "200"],
)
def test_clustercheck_answers_without_reading(
    run: Run[Any], response: bytes, expected: Verdict, wait_for_request: bool
) -> None:
    async def scenario() -> list[Verdict]:
        async with Clustercheck(response, wait_for_request) as peer:
            # Repeat: the answer/reset race must go the right way every time.
            return [
                await run_probe(CheckConfig(type="http", port=9200), "127.0.0.1", peer.port, 2.0)
                for _ in range(20)
            ]

    assert run(scenario()) == [expected] * 20


# -- the scheduler ----------------------------------------------------------------


class FirstUsable(Balancer):
    name = "first-usable"

    def pick(
        self, client_ip: str | None, exclude: Any = ()
    ) -> ServerRuntime | None:  # pragma: no cover - no traffic in these tests
        return next(iter(self.candidates), None)


def make_pool(port: int, check: CheckConfig, timeouts: Timeouts | None = None) -> Pool:
    listener = ListenerConfig(
        name="api",
        bind=(Address("127.0.0.1", 0),),
        check=check,
        timeouts=timeouts or Timeouts(),
        servers=(ServerConfig(name="ctl1", address=Address("127.0.0.1", port)),),
    )
    return Pool(listener, balancer_factory=FirstUsable)


def test_scheduler_marks_down_then_up(run: Run[Any]) -> None:
    timeout = 0.2
    check = CheckConfig(type="tcp", interval=0.1, rise=2, fall=2, timeout=timeout)

    async def scenario() -> None:
        server, port = await start_stream_server(accept_and_hold)
        pool = make_pool(port, check)
        ctl1 = pool.servers[0]
        transitions: list[tuple[bool, int, int]] = []  # healthy, checks_total, failed
        pool.subscribe(
            lambda _pool, s: (
                transitions.append((s.healthy, s.checks_total, s.checks_failed))
                if s is not None
                else None
            )
        )
        scheduler = CheckScheduler([pool])
        scheduler.start()
        try:
            await until(lambda: ctl1.check_status == "ok", "checked once")
            assert ctl1.healthy
            assert ctl1.check_detail == "connected"

            server.close()
            await server.wait_closed()
            took = await until(lambda: not ctl1.healthy, "marked down")
            # fall failed checks, fastinter (= interval) apart, each bounded by the timeout.
            assert took < check.interval * check.fall + timeout + 0.3
            assert ctl1.check_status == "failed"
            assert ctl1.check_detail == "connection refused"
            healthy, total, failed = transitions[-1]
            assert (healthy, failed) == (False, check.fall)

            server, _ = await start_stream_server(accept_and_hold, port=port)
            await until(lambda: ctl1.healthy, "marked up again")
            healthy, total_up, failed_up = transitions[-1]
            assert healthy
            assert failed_up == failed  # no failure in the run that brought it up
            assert total_up - total >= check.rise
            assert scheduler.checks[ctl1].counter.successes == check.rise
        finally:
            await scheduler.stop()
            server.close()
            await server.wait_closed()
        assert pool.on_connect_failure is None

    run(scenario())


def test_scheduler_first_failure_takes_unconfirmed_server_down(
    run: Run[Any], closed_port: int
) -> None:
    check = CheckConfig(type="tcp", interval=5.0, rise=2, fall=3, timeout=1.0)

    async def scenario() -> None:
        pool = make_pool(closed_port, check)
        ctl1 = pool.servers[0]
        scheduler = CheckScheduler([pool])
        scheduler.start()
        try:
            await until(lambda: not ctl1.healthy, "marked down")  # not after fall x 5 s
            assert (ctl1.checks_total, ctl1.checks_failed) == (1, 1)
            assert ctl1.check_detail == "connection refused"
        finally:
            await scheduler.stop()

    run(scenario())


def test_scheduler_http_check_uses_listener_check_timeout(run: Run[Any]) -> None:
    # No timeout in the check: the listener's timeouts.check applies.
    check = CheckConfig(type="http", interval=5.0, fall=1)

    async def scenario() -> None:
        server, port = await start_stream_server(accept_and_hold)
        pool = make_pool(port, check, Timeouts(check=0.1))
        ctl1 = pool.servers[0]
        scheduler = CheckScheduler([pool])
        scheduler.start()
        try:
            await until(lambda: ctl1.checks_total == 1, "checked", timeout=2.0)
            assert (ctl1.healthy, ctl1.check_detail) == (False, "timeout")
            assert 0.09 <= ctl1.check_duration < 1.0
        finally:
            await scheduler.stop()
            server.close()
            await server.wait_closed()

    run(scenario())


def test_connect_failure_triggers_immediate_recheck(run: Run[Any]) -> None:
    check = CheckConfig(type="http", path="/healthcheck", interval=30.0, rise=1, fall=1)

    async def scenario() -> None:
        runner, port = await start_http()
        stopped = False
        pool = make_pool(port, check)
        ctl1 = pool.servers[0]
        scheduler = CheckScheduler([pool])
        scheduler.start()
        try:
            await until(lambda: ctl1.checks_total == 1, "checked once")
            assert (ctl1.healthy, ctl1.check_detail) == (True, "HTTP 200")
            await runner.cleanup()
            stopped = True
            pool.connect_failed(ctl1)  # what the data path does on a refused connect
            took = await until(lambda: not ctl1.healthy, "re-checked and marked down")
            assert took < 1.0  # not the 30 s interval
            assert ctl1.checks_total == 2
            assert ctl1.check_detail == "connection refused"
        finally:
            await scheduler.stop()
            if not stopped:
                await runner.cleanup()

    run(scenario())
