"""The peers' channel: UDP datagrams between the instances of an HA group.

Every `interval` this instance sends each peer its writers (codec.Report);
from each datagram that passes the codec, the replay guard and the peer list,
it keeps the sender's latest report, and applies the agreement rule
(agreement.writer_to_adopt) to its active-backup pools.

UDP, not a connection: a report is a whole state, the next one replaces a lost
one, and nothing waits on a peer that is gone. A peer not heard for DOWN_AFTER
intervals is down (status API, /metrics): its reports no longer count, and it
is sent to less and less often (back-off doubling up to MAX_BACKOFF) until it
is heard again.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, cast

from loadstone.balance.active_backup import ActiveBackup
from loadstone.config.model import PeerConfig, PeersConfig
from loadstone.peers.agreement import writer_to_adopt
from loadstone.peers.codec import Refused, ReplayGuard, Report, Writer, decode, encode
from loadstone.server import Pool

log = logging.getLogger("loadstone.peers")

DOWN_AFTER = 3  # intervals without a valid report
MAX_BACKOFF = 30.0


@dataclass
class PeerState:
    config: PeerConfig
    report: Report | None = None
    heard_at: float | None = None  # time.monotonic() of the last valid report
    next_send: float = 0.0
    backoff: float = 0.0  # seconds between sends while it is down; 0 while up

    def up(self, now: float, interval: float) -> bool:
        return self.heard_at is not None and now - self.heard_at <= DOWN_AFTER * interval


@dataclass
class PeerChannel(asyncio.DatagramProtocol):
    config: PeersConfig
    key: bytes
    pools: Callable[[], Mapping[str, Pool]]  # the running listeners' pools, by name
    holds_vip: Callable[[], bool]  # keepalived told us MASTER
    name: str = field(default_factory=socket.gethostname)
    peers: dict[str, PeerState] = field(init=False)
    rejected: Counter[str] = field(default_factory=Counter)
    adopted: int = 0
    _boot: str = field(default_factory=lambda: os.urandom(8).hex())
    _seq: int = 0
    _guard: ReplayGuard = field(default_factory=ReplayGuard)
    _transport: asyncio.DatagramTransport | None = None
    _task: asyncio.Task[None] | None = None

    def __post_init__(self) -> None:
        self.peers = {p.name: PeerState(p) for p in self.config.peers}
        if self.config.name is not None:
            self.name = self.config.name

    # -- lifecycle ---------------------------------------------------------------

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        bind = self.config.bind
        await loop.create_datagram_endpoint(lambda: self, local_addr=(bind.host, bind.port))
        self._task = loop.create_task(self._send_loop())

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's UDP transport is not a subclass of asyncio's, only alike.
        self._transport = cast(asyncio.DatagramTransport, transport)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self._transport is not None:
            self._transport.close()

    # -- sending -----------------------------------------------------------------

    def own_writers(self) -> dict[str, Writer]:
        return {
            name: own_writer(pool.balancer)
            for name, pool in self.pools().items()
            if isinstance(pool.balancer, ActiveBackup)
        }

    async def _send_loop(self) -> None:
        interval = self.config.interval
        while True:
            now = time.monotonic()
            for peer in self.peers.values():
                if now >= peer.next_send:
                    self._send(peer)
                    if peer.up(now, interval):
                        peer.backoff = 0.0
                    else:  # silent: retried, ever less often
                        peer.backoff = min(MAX_BACKOFF, max(interval, peer.backoff * 2))
                    peer.next_send = now + (peer.backoff or interval)
            await asyncio.sleep(interval)

    def _send(self, peer: PeerState) -> None:
        if self._transport is None:
            return
        self._seq += 1
        report = Report(self.name, self._boot, self._seq, time.time(), self.own_writers())
        address = peer.config.address
        self._transport.sendto(encode(report, self.key), (address.host, address.port))

    def error_received(self, exc: Exception) -> None:
        # ICMP port unreachable of an earlier send: the peer's loadstone is not
        # running. It shows as down once it stays silent; nothing else to do.
        log.debug("peers: send error: %s", exc)

    # -- receiving ---------------------------------------------------------------

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        try:
            report = decode(data, self.key)
            peer = self.peers.get(report.sender)
            if peer is None:
                raise Refused("unknown-peer", f"{report.sender!r} is not in global.peers.peers")
            self._guard.check(report, time.time())
        except Refused as refused:
            self.rejected[refused.reason] += 1
            log.warning("peers: ignored a datagram from %s: %s", addr[0], refused)
            return
        known = self.pools()
        for listener in report.writers:
            if listener not in known:
                self.rejected["unknown-listener"] += 1
                log.warning("peers: %s reports unknown listener %r, ignored", peer, listener)
        peer.report = report
        if peer.heard_at is None or peer.backoff:
            log.info("peers: %s is up", report.sender)
            peer.next_send = 0.0  # answer at once instead of after the back-off
        peer.heard_at = time.monotonic()
        peer.backoff = 0.0
        if not self.holds_vip():
            self.agree()

    # -- the agreement ------------------------------------------------------------

    def agree(self) -> None:
        """Adopt the peers' writers where the rule says so (agreement.py). Called on
        each peer report while this instance does not hold the VIP, and when it
        takes the VIP."""
        now = time.monotonic()
        up = [p.report for p in self.peers.values() if p.report and p.up(now, self.config.interval)]
        for listener, pool in self.pools().items():
            if not isinstance(pool.balancer, ActiveBackup):
                continue
            own = own_writer(pool.balancer)
            reported = [r.writers[listener] for r in up if listener in r.writers]
            eligible = [s.name for s in pool.servers if s.usable]
            chosen = writer_to_adopt(own, reported, eligible)
            if chosen is None or chosen.server is None:
                continue
            if pool.adopt_active(chosen.server, chosen.chosen, chosen.since):
                self.adopted += 1
                log.info(
                    "peers: listener %s adopts writer %s (was %s), as its peers chose it",
                    listener,
                    chosen.server,
                    own.server,
                )

    def status(self) -> dict[str, Any]:
        now = time.monotonic()
        return {
            "name": self.name,
            "adopted": self.adopted,
            "rejected": dict(self.rejected),
            "peers": {
                name: {
                    "address": str(p.config.address),
                    "up": p.up(now, self.config.interval),
                    "last_heard": round(now - p.heard_at, 3) if p.heard_at is not None else None,
                    "writers": {
                        listener: {"server": w.server, "chosen": w.chosen, "since": w.since}
                        for listener, w in (p.report.writers if p.report else {}).items()
                    },
                }
                for name, p in self.peers.items()
            },
        }


def own_writer(balancer: ActiveBackup) -> Writer:
    """This instance's writer of an active-backup pool, as its peers see it."""
    active = balancer.active
    return Writer(active.name if active else None, balancer.chosen_at, balancer.since)
