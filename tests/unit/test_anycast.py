"""Anycast: the sans-IO BIRD client, the flap damper, the ExaBGP feed's state,
global.anycast's validation, and the manager against a missing or lying socket."""

from __future__ import annotations

import asyncio
import os
import tempfile
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import pytest

from loadstone.anycast import birdc
from loadstone.anycast.decision import Damper
from loadstone.anycast.exabgp_feed import FeedState
from loadstone.anycast.manager import AnycastManager
from loadstone.anycast.metrics import anycast_metrics
from loadstone.config import parse_config
from loadstone.config.model import AnycastConfig, AnycastVip
from loadstone.ctl import anycast_lines
from tests.unit.test_config import doc, problems_of

# -- the BIRD control-socket protocol ------------------------------------------

# Recorded from BIRD 2.0.12 (Debian bookworm's bird2), byte for byte.
GREETING = b"0001 BIRD 2.0.12 ready.\n"
ENABLED = b"0011-vip_web: enabled\n0000 \n"
ALREADY_ENABLED = b"0010-vip_web: already enabled\n0000 \n"
DISABLED = b"0009-vip_web: disabled\n0000 \n"
UNKNOWN_NAME = (
    b"9001 syntax error, unexpected CF_SYM_UNDEFINED, expecting CF_SYM_KNOWN or TEXT or ALL\n"
)
PROTOCOLS = (
    b"2002-Name       Proto      Table      State  Since         Info\n"
    b"1002-device1    Device     ---        up     00:04:21.404  \n"
    b" vip_web    Static     master4    down   00:04:23.493  \n0000 \n"
)


def replies(data: bytes, chunk: int = 0) -> list[birdc.Reply]:
    parser = birdc.ReplyParser()
    pieces = [data[i : i + chunk] for i in range(0, len(data), chunk)] if chunk else [data]
    out = []
    for piece in pieces:
        parser.feed(piece)
        while (reply := parser.next_reply()) is not None:
            out.append(reply)
    return out


def test_greeting_gives_the_version() -> None:
    (reply,) = replies(GREETING)
    assert birdc.check_greeting(reply) == "2.0.12"


@pytest.mark.parametrize("chunk", [0, 1, 7])
def test_replies_are_whole_whatever_the_reads(chunk: int) -> None:
    got = replies(GREETING + ENABLED + PROTOCOLS, chunk)
    assert [r.code for r in got] == ["0001", "0000", "0000"]
    # A continuation line takes the code of the line before it.
    assert got[2].lines[2] == ("1002", "vip_web    Static     master4    down   00:04:23.493  ")


def test_enable_and_disable_outcomes() -> None:
    assert birdc.enable_command("vip_web") == b'enable "vip_web"\n'
    assert birdc.disable_command("vip.web-1") == b'disable "vip.web-1"\n'
    assert birdc.switch_outcome(replies(ENABLED)[0], "vip_web", True) is True
    assert birdc.switch_outcome(replies(ALREADY_ENABLED)[0], "vip_web", True) is True
    assert birdc.switch_outcome(replies(DISABLED)[0], "vip_web", False) is False


def test_a_name_bird_does_not_know_is_a_refusal() -> None:
    with pytest.raises(birdc.CommandRefused, match="9001 syntax error"):
        birdc.switch_outcome(replies(UNKNOWN_NAME)[0], "vip_web", True)


def test_an_answer_about_something_else_is_malformed() -> None:
    # enable answered by "disabled", or by another protocol's line.
    with pytest.raises(birdc.BirdProtocolError):
        birdc.switch_outcome(replies(DISABLED)[0], "vip_web", True)
    with pytest.raises(birdc.BirdProtocolError):
        birdc.switch_outcome(replies(b"0011-vip_db: enabled\n0000 \n")[0], "vip_web", True)


@pytest.mark.parametrize(
    "data",
    [
        b"HTTP/1.1 200 OK\r\n",  # something else listens there
        b"011 short code\n",
        b"0011+bad separator\n",
        b" continuation without a reply\n",
        b"0011-\xff\xfe\n",
        b"0" * (birdc.MAX_LINE + 1),  # never a newline
    ],
)
def test_malformed_lines_are_protocol_errors(data: bytes) -> None:
    with pytest.raises(birdc.BirdProtocolError):
        replies(data)


def test_a_greeting_that_is_not_birds_is_refused() -> None:
    with pytest.raises(birdc.BirdProtocolError):
        birdc.check_greeting(replies(b"0001 NOTBIRD ready.\n")[0])
    with pytest.raises(birdc.BirdProtocolError):
        birdc.check_greeting(replies(ENABLED)[0])


def test_protocol_names_cannot_inject_commands() -> None:
    with pytest.raises(ValueError):
        birdc.enable_command('x"\nshutdown')


# -- flap damping -----------------------------------------------------------------


def test_the_first_announce_is_at_once_then_decisions_hold() -> None:
    damper = Damper(hold_down=5.0)
    assert damper.update(False, 0.0) is False
    assert damper.update(True, 1.0) is True  # nothing decided yet: no hold
    assert damper.update(False, 2.0) is True and damper.held
    assert damper.update(True, 3.0) is True and not damper.held  # flapped back
    assert damper.update(False, 5.9) is True
    assert damper.update(False, 6.0) is False and not damper.held
    assert damper.update(True, 7.0) is False and damper.held
    assert damper.update(True, 11.0) is True


def test_a_planned_stop_withdraws_past_the_hold() -> None:
    damper = Damper(hold_down=60.0)
    damper.update(True, 0.0)
    assert damper.update(False, 1.0, force=True) is False


# -- the ExaBGP feed --------------------------------------------------------------


def test_feed_passes_route_lines_and_withdraws_what_it_announced_when_loadstone_goes() -> None:
    feed = FeedState()
    out = feed.received(b"announce route 198.19.0.1/32 next-hop self\nannounce route 198.1")
    assert out == ["announce route 198.19.0.1/32 next-hop self"]
    out = feed.received(b"9.0.2/32 next-hop self\nshutdown\nwithdraw route 198.19.0.1/32 ne")
    assert out == ["announce route 198.19.0.2/32 next-hop self"]  # `shutdown` is not passed on
    # The cut-off withdraw of .1 never reached ExaBGP: both are still announced.
    assert feed.lost() == [
        "withdraw route 198.19.0.1/32 next-hop self",
        "withdraw route 198.19.0.2/32 next-hop self",
    ]
    assert feed.lost() == []


# -- configuration ----------------------------------------------------------------

ANYCAST = {
    "driver": "bird",
    "socket": "/run/bird/bird.ctl",
    "hold_down": "3s",
    "vips": [{"name": "vip_web", "prefix": "198.51.100.10", "listeners": ["web"]}],
}


def test_anycast_configuration_is_read() -> None:
    config = parse_config(doc(**{"global": {"anycast": ANYCAST}})).global_.anycast
    assert config is not None
    assert config.hold_down == 3.0 and config.interval == 1.0 and config.retry_max == 30.0
    assert config.vips == (AnycastVip("vip_web", "198.51.100.10/32", ("web",)),)
    assert config.vips[0].bird_protocol == "vip_web"


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        ({"driver": "gobgp"}, "global.anycast.driver: must be one of bird, exabgp"),
        ({"socket": None}, "global.anycast.socket:"),
        (
            {"vips": [{"name": "v", "prefix": "300.1.1.1", "listeners": ["web"]}]},
            "global.anycast.vips[0].prefix: invalid network",
        ),
        (
            {"vips": [{"name": "v", "prefix": "198.51.100.10", "listeners": ["web", "nope"]}]},
            "global.anycast.vips[0].listeners[1]: no listener named 'nope'",
        ),
        ({"vips": []}, "global.anycast.vips: must not be empty"),
        ({"hold_down": "soon"}, "global.anycast.hold_down:"),
        ({"bgp": True}, "global.anycast.bgp:"),
    ],
)
def test_bad_anycast_configuration_is_reported_at_its_path(
    change: dict[str, object], problem: str
) -> None:
    anycast = {**ANYCAST, **change}
    problems = problems_of(doc(**{"global": {"anycast": anycast}}))
    assert any(p.startswith(problem) for p in problems), problems


# -- the manager against a socket that is missing or lies -----------------------


def config_at(path: str, **over: float) -> AnycastConfig:
    vip = AnycastVip("vip_web", "198.51.100.10/32", ("web",))
    values = {"hold_down": 0.0, "interval": 0.05, "timeout": 0.5, "retry_max": 0.2, **over}
    return AnycastConfig("bird", path, (vip,), **values)


async def test_missing_bird_socket_is_reported_and_retried_with_back_off() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        manager = AnycastManager(config_at(f"{tmp}/bird.ctl"), lambda vip: [])
        fds = len(os.listdir("/proc/self/fd"))
        await manager.step()
        status = manager.status()
        assert status["driver"]["up"] is False
        assert "cannot connect" in status["driver"]["error"]
        assert status["vips"]["vip_web"] == {
            "prefix": "198.51.100.10/32",
            "listeners": ["web"],
            "decision": "announce",
            "held": False,
            "announced": None,
            "problems": [],
        }
        await manager.step()  # backing off: not tried again yet
        assert manager.errors == 1
        for _ in range(3):
            manager._next_try = 0.0
            await manager.step()
        assert manager.errors == 4 and manager.backoff == 0.2  # capped at retry_max
        metrics = {m.name: m.samples for m in anycast_metrics(manager.status())}
        assert metrics["loadstone_anycast_driver_up"][0].value == 0
        assert metrics["loadstone_vip_state_known"][0].value == 0
        assert metrics["loadstone_vip_decision"][0].value == 1
        await manager.stop()
        assert len(os.listdir("/proc/self/fd")) == fds


@asynccontextmanager
async def lying_bird(answer: Callable[[bytes], bytes]) -> AsyncIterator[str]:
    """A unix socket that greets as BIRD does and answers each command with
    answer(command). Only a stand-in can send the malformed answers real BIRD
    never sends; the real one is driven in tests/integration/anycast/."""
    tmp = tempfile.TemporaryDirectory()
    path = f"{tmp.name}/bird.ctl"

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(GREETING)
        while line := await reader.readline():
            writer.write(answer(line))
        writer.close()

    server = await asyncio.start_unix_server(serve, path)
    try:
        yield path
    finally:
        server.close()
        await server.wait_closed()
        tmp.cleanup()


async def test_malformed_answer_makes_the_state_unknown_then_recovers() -> None:
    answers = [b"garbage\n", ENABLED, b"", DISABLED]

    def answer(command: bytes) -> bytes:
        return answers.pop(0)

    problems: list[str] = []
    async with lying_bird(answer) as path:
        manager = AnycastManager(config_at(path), lambda vip: problems)
        await manager.step()
        assert manager.status()["driver"]["error"].startswith("malformed answer from BIRD")
        assert manager.vips[0].announced is None
        manager._next_try = 0.0
        await manager.step()
        assert manager.driver_up is True and manager.vips[0].announced is True
        problems.append("listener web: no server up")
        await manager.step()  # no answer at all: the timeout, not a hang
        assert "no answer from BIRD" in manager.status()["driver"]["error"]
        manager._next_try = 0.0
        await manager.step()
        assert manager.vips[0].announced is False
        assert manager.status()["vips"]["vip_web"]["problems"] == ["listener web: no server up"]
        await manager.stop()


async def test_a_refused_protocol_name_is_reported() -> None:
    async with lying_bird(lambda command: UNKNOWN_NAME) as path:
        manager = AnycastManager(config_at(path), lambda vip: [])
        await manager.step()
        assert "BIRD refused vip_web: 9001 syntax error" in manager.status()["driver"]["error"]
        await manager.stop()


async def test_withdraw_all_goes_past_the_hold() -> None:
    async with lying_bird(lambda c: ENABLED if c.startswith(b"enable") else DISABLED) as path:
        manager = AnycastManager(config_at(path, hold_down=60.0), lambda vip: [])
        await manager.step()
        assert manager.vips[0].announced is True
        await manager.withdraw_all()
        assert manager.vips[0].announced is False
        assert manager.status()["vips"]["vip_web"]["problems"] == ["withdrawing: planned stop"]
        await manager.stop()


async def test_withdraw_all_while_the_loop_waits_on_bird_does_not_interleave() -> None:
    # The loop's pass may be waiting for BIRD's answer when SIGTERM's
    # withdraw_all comes: the two must take turns on the one connection.
    gate = asyncio.Event()
    served = asyncio.Event()

    async def slow_answers(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(GREETING)
        while line := await reader.readline():
            await gate.wait()
            writer.write(ENABLED if line.startswith(b"enable") else DISABLED)
        writer.close()
        await writer.wait_closed()
        served.set()

    with tempfile.TemporaryDirectory() as tmp:
        path = f"{tmp}/bird.ctl"
        server = await asyncio.start_unix_server(slow_answers, path)
        manager = AnycastManager(config_at(path, interval=0.01), lambda vip: [])
        await manager.start()
        await asyncio.sleep(0.05)  # the loop's first pass is waiting on the gate
        withdrawing = asyncio.ensure_future(manager.withdraw_all())
        await asyncio.sleep(0.05)
        gate.set()
        await withdrawing
        assert manager.vips[0].announced is False and manager.driver_up is True
        assert manager._task is not None and not manager._task.done()
        await manager.stop()
        await served.wait()  # the stand-in's end of the connection closed too
        server.close()
        await server.wait_closed()


def test_ctl_status_shows_the_announcements_and_a_failing_driver() -> None:
    anycast = {
        "driver": {"name": "bird", "up": False, "error": "cannot connect to /run/bird/bird.ctl"},
        "vips": {
            "vip_web": {
                "prefix": "198.51.100.10/32",
                "decision": "withdraw",
                "held": True,
                "announced": None,
                "problems": ["listener web: no server up"],
            }
        },
    }
    assert anycast_lines(anycast) == [
        "vip vip_web 198.51.100.10/32: state unknown, decision withdraw, held by hold_down"
        " (listener web: no server up)",
        "anycast driver bird down: cannot connect to /run/bird/bird.ctl",
    ]
    assert anycast_lines(None) == []
