"""Admission at maxconn, the queue and idle waiters of the pure frontends
(datapath.accept), driven with stand-in connections instead of sockets."""

from __future__ import annotations

import asyncio
import io

from loadstone.config import parse_config
from loadstone.datapath.accept import AcceptingFrontend
from loadstone.server import Pool
from loadstone.sessionlog import SessionLog


class Conn:
    """A client connection as admission sees it; it records what it is told."""

    def __init__(self, frontend: Frontend) -> None:
        self.frontend = frontend
        self.queue_timer: asyncio.TimerHandle | None = None
        self.bytes_in = 0
        self.bytes_out = 0
        self.closed = False
        self.events: list[str] = []

    def hold(self) -> None:
        self.events.append("hold")

    def admitted(self, waited: bool) -> None:
        self.events.append("admitted after waiting" if waited else "admitted")

    def queue_expired(self) -> None:
        self.queue_timer = None
        self.events.append("queue-timeout")
        self.close()

    def shutdown(self, reason: str) -> None:
        self.events.append(f"shutdown ({reason})")
        self.close()

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.frontend.connection_finished(self)


class Frontend(AcceptingFrontend[Conn]):
    def _accepted(self) -> asyncio.Protocol:
        raise AssertionError("no socket in these tests")

    def _account(self, conn: Conn) -> None:
        self.bytes_in_done += conn.bytes_in


def frontend(maxconn: int, queue: str = "30s") -> Frontend:
    config = parse_config(
        f"""
listeners:
  api:
    bind: ["127.0.0.1:18080"]
    maxconn: {maxconn}
    timeouts: {{queue: {queue}}}
    servers: [{{name: a, address: "127.0.0.1:18081"}}]
"""
    ).listeners[0]
    return Frontend(config, Pool(config), SessionLog(stream=io.StringIO()))


async def test_over_maxconn_connections_wait_in_order() -> None:
    f = frontend(maxconn=1)
    first, second, third = Conn(f), Conn(f), Conn(f)
    for conn in (first, second, third):
        f.admit(conn)
    assert first.events == ["admitted"]
    assert second.events == third.events == ["hold"]
    assert (f.current_sessions, f.queued_count, f.sessions_total) == (3, 2, 3)
    first.close()
    assert second.events == ["hold", "admitted after waiting"]
    assert second.queue_timer is None  # its queue timeout no longer runs
    assert third.events == ["hold"]
    assert f.queued_count == 1


async def test_a_queued_connection_that_closed_gives_its_turn_to_the_next() -> None:
    f = frontend(maxconn=1)
    first, gone, waiting = Conn(f), Conn(f), Conn(f)
    for conn in (first, gone, waiting):
        f.admit(conn)
    gone.close()
    first.close()
    assert gone.events == ["hold"]
    assert waiting.events == ["hold", "admitted after waiting"]


async def test_the_queue_has_a_timeout() -> None:
    f = frontend(maxconn=1, queue="10ms")
    first, waiting = Conn(f), Conn(f)
    f.admit(first)
    f.admit(waiting)
    await asyncio.sleep(0.05)
    assert waiting.events == ["hold", "queue-timeout"]
    assert f.queued_count == 0


async def test_a_reload_that_raises_maxconn_admits_waiting_connections() -> None:
    f = frontend(maxconn=1)
    conns = [Conn(f) for _ in range(3)]
    for conn in conns:
        f.admit(conn)
    f.reconfigure(frontend(maxconn=3).config, f.pool)
    assert [c.events[-1] for c in conns] == ["admitted"] + ["admitted after waiting"] * 2


async def test_wait_idle_returns_once_nothing_is_active_or_queued() -> None:
    f = frontend(maxconn=1)
    active, queued = Conn(f), Conn(f)
    f.admit(active)
    f.admit(queued)
    active.bytes_in = 5
    idle = asyncio.ensure_future(f.wait_idle())
    await asyncio.sleep(0)
    active.close()
    await asyncio.sleep(0)
    assert not idle.done()  # the queued one took the slot
    f.shutdown_all("test")
    await asyncio.wait_for(idle, 1)
    assert queued.events[-1] == "shutdown (test)"
    assert f.bytes_in == 5
