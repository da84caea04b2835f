"""keepalived moves the VIP between loadstone instances (three controllers and a
client in network namespaces), with `loadstone ctl health` as its vrrp_script
and `loadstone ctl notify` as its notify hook.

The outage is what a client through the VIP sees: a request on a new
connection every 20 ms, from the first that fails to the first that succeeds
again. The figures are printed (pytest -s) for docs/high-availability.md.
"""

from __future__ import annotations

import shutil
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.ha.pair import Pair, measured_outage
from tests.integration.harness import wait_for
from tests.netbed.bed import NetBed
from tests.netbed.prober import slowest

CONTROLLERS = ["ctl1", "ctl2", "ctl3"]

pytestmark = pytest.mark.skipif(
    shutil.which("keepalived") is None, reason="keepalived is not installed (scripts/test)"
)


@pytest.fixture
def bed() -> Iterator[NetBed]:
    with NetBed([*CONTROLLERS, "client"]) as b:
        yield b


def test_vip_moves_when_the_masters_loadstone_is_killed(bed: NetBed, tmp_path: Path) -> None:
    pair = Pair(bed, tmp_path, CONTROLLERS, advert_int=1.0).start()
    master = pair.wait_vip()
    wait_for(lambda: pair.is_master(master), what="the notify hook telling loadstone MASTER")
    out, _ = pair.start_prober("client")

    bed.kill(pair.loadstones[master])  # kill -9

    new_master = pair.wait_vip(away_from=master)
    seconds, failed = measured_outage(out)
    print(
        f"\nkill -9 of the master's loadstone, advert_int 1: outage {seconds:.3f}s, "
        f"{failed} failed requests"
    )
    # The target is 1.5 s; measured 1.2-1.9 s on a 2-core machine under
    # other builds, where a Python start (the backends' checks, the prober) lags.
    assert seconds <= 1.5 + 1.0
    wait_for(lambda: pair.is_master(new_master), what="the notify hook on the new master")


def test_a_killed_loadstone_is_noticed_at_once(bed: NetBed, tmp_path: Path) -> None:
    """advert_int 0.1: the held health check (?hold=) fails the moment the
    process dies, where a check run once a second left the VIP unserved for up
    to a second (outage 1.2-1.6 s, a SYN retransmission included)."""
    pair = Pair(bed, tmp_path, CONTROLLERS, advert_int=0.1).start()
    master = pair.wait_vip()
    out, _ = pair.start_prober("client")

    killed_at = time.monotonic()  # the prober's stamps are CLOCK_MONOTONIC too
    bed.kill(pair.loadstones[master])

    pair.wait_vip(away_from=master)
    seconds, failed = measured_outage(out, after=killed_at)
    print(f"\nkill -9, advert_int 0.1: outage {seconds:.3f}s, {failed} failed requests")
    # The target is 0.5 s; the margin is for a loaded 2-core machine.
    # Without the hold, a SYN retransmission alone makes it 1 s or more.
    assert seconds < 0.9


def test_vip_moves_when_the_masters_link_is_cut(bed: NetBed, tmp_path: Path) -> None:
    """The master's host vanishes from the wire: no reset reaches anyone, the
    peers notice the missing adverts (3 x advert_int + skew) and one takes over."""
    pair = Pair(bed, tmp_path, CONTROLLERS, advert_int=1.0).start()
    master = pair.wait_vip()
    out, _ = pair.start_prober("client")

    bed.cut_link(master)

    # The cut host still holds the VIP in its own namespace (it cannot know);
    # the others see one holder among themselves.
    def survivor() -> str | None:
        held = [h for h in pair.vip_holders() if h != master]
        return held[0] if len(held) == 1 else None

    wait_for(survivor, timeout=20, what="a surviving controller taking the VIP")
    seconds, failed = measured_outage(out)
    print(
        f"\nlink cut of the master, advert_int 1: outage {seconds:.3f}s, {failed} failed requests"
    )
    assert seconds <= 3 * 1.0 + 1.0 + 1.0  # 3 missed adverts, the skew, the load's margin


def test_planned_stop_moves_the_vip_before_draining(bed: NetBed, tmp_path: Path) -> None:
    pair = Pair(
        bed,
        tmp_path,
        CONTROLLERS,
        advert_int=1.0,
        loadstone_extra={"stop_delay": "6s"},
    ).start()
    master = pair.wait_vip()
    # A client's usual patience: a SYN sent while no host holds the VIP (the
    # new master waits its skew time after the old one's priority-0 advert) is
    # answered on a retransmission (after 1 s, then 2 s more on a loaded machine).
    out, _ = pair.start_prober("client", timeout=5.0)
    # A client of the API with a connection pool: during stop_delay every
    # answer closes its connection, so its next request opens one to wherever
    # the VIP is by then rather than die with the connection in the drain.
    kept, _ = pair.start_prober("client", timeout=5.0, keep_alive=True)

    pair.loadstones[master].send_signal(signal.SIGTERM)

    # Health fails at once, keepalived gives the VIP up, loadstone still serves.
    wait_for(lambda: pair.vip_holders() not in ([], [master]), timeout=10, what="the VIP moving")
    assert pair.loadstones[master].wait(15) == 0
    lines = out.read_text().splitlines()
    wait_for(lambda: len(out.read_text().splitlines()) > len(lines) + 20, what="more requests")
    failed = [line for line in out.read_text().splitlines() if " fail " in line]
    print(
        f"\nplanned stop (stop_delay 6s), advert_int 1: {len(failed)} failed requests, "
        f"slowest {slowest(out.read_text().splitlines()):.3f}s"
    )
    # 0 failed but for the race below (the one request in flight while the old
    # holder loses the address, a timeout): seen once in a fresh-clone run on a
    # quiet machine. A refused or reset request would fail this.
    assert len(failed) <= 1 and all("TimeoutError" in line for line in failed), failed
    kept_lines = kept.read_text().splitlines()
    kept_failed = [line for line in kept_lines if " fail " in line]
    # 0 failed, but for one race the Connection: close cannot remove: a request
    # in flight while the old holder loses the address gets no answer (its
    # reply cannot leave from an address no longer local) and times out; seen
    # in 1 of 3 runs. A request on a connection kept across the move is reset
    # by the new holder (ConnectionResetError): that is what this test rules out.
    assert len(kept_failed) <= 1 and all("TimeoutError" in line for line in kept_failed), (
        kept_failed
    )
    # It went on being answered after the old master's loadstone exited.
    assert kept_lines[-1].split()[1] == "ok"
