"""Which writer an instance adopts from its peers: a pure rule, no I/O.

Each instance reports, per active-backup listener, its writer and when that
writer was chosen: the wall-clock time of the failover that chose it, or 0.0
for a fresh start's pick (first eligible in configuration order, made without
history). The newest choice is the one made on the latest evidence (a failover
someone saw), so:

- an instance that does not hold the VIP follows its peers continuously: it
  adopts a peer's writer when that choice is newer than its own and the server
  is eligible here (usable by its own checks); adopting keeps the peer's time,
  so an adopted choice never looks newer than the one it copies;
- the instance that holds the VIP keeps its writer (it is the one writing),
  except at the moment it takes the VIP, when it adopts as above;
- peers that disagree: the newest choice among them wins, a tie goes to
  configuration order; no peer reachable, or none with an eligible writer:
  the instance's own rule applies, as without peers (first eligible in
  configuration order, no failback).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from loadstone.peers.codec import Writer


def writer_to_adopt(
    own: Writer,
    reported: Iterable[Writer],
    eligible: Sequence[str],
) -> Writer | None:
    """The peer's writer to adopt instead of `own`, or None to keep `own`.

    `eligible` lists the servers usable here now, in configuration order.
    """
    candidates = [w for w in reported if w.server is not None and w.server in eligible]
    if not candidates:
        return None
    order = {name: i for i, name in enumerate(eligible)}
    # The newest choice; among equally new ones, the earliest in configuration order.
    best = min(candidates, key=lambda w: (-w.chosen, order[w.server or ""]))
    if best.server == own.server or best.chosen <= own.chosen:
        return None
    return best
