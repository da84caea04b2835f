"""Which writer an instance adopts from its peers: a pure rule, no I/O.

The Galera policy moves the writer only when the writer fails, and never
back. Between instances that means: a choice that a failure caused outranks
the choice it replaced; a choice that no failure caused must not move anyone.

Each instance reports, per active-backup listener, its writer as a choice
(codec.Writer) of one of two kinds:

- a failover: the writer it was using failed and it moved on; `chosen` is the
  wall-clock time of that failover, the evidence a failure was seen;
- a fresh pick (`chosen` 0.0): made with no usable previous writer, at start
  or after every server was down (an instance cut off from its site sees them
  all fail). It is the first eligible server in configuration order, or the
  first to come back; no failure of the group's writer is behind it. `since`
  is when it was made.

Adopting a choice copies it whole (`chosen` and `since`), so a copy ranks
exactly as its original and the group settles. The ranking, strongest first:

1. failovers, the newest first: the one made on the latest evidence. This is
   how a writer failing at one instance first moves the others before their
   own checks see it, and how an instance that cannot reach the writer while
   the others can moves them too (one writer for all beats the best writer
   for some);
2. fresh picks, the oldest first: the longest-standing choice holds, so an
   instance that restarted, or came back from isolation and chose afresh, joins
   the writer the group has been standing on instead of moving the group;
3. on equal terms, configuration order.

Applied as follows:

- an instance that does not hold the VIP follows its peers continuously: it
  adopts the strongest peer choice whose server is eligible here (usable by its
  own checks) when that outranks its own; with no writer yet (a start waiting
  for a first check) any eligible peer choice does;
- the instance that holds the VIP keeps its writer (it is the one writing),
  except at the moment it takes the VIP, when it adopts as above;
- no peer reachable, or none with an eligible writer: the instance's own rule
  applies, as without peers (first eligible in configuration order, no
  failback).

Known limit: a failover made while partitioned from the group, away from a
fresh pick the group never stood on, still outranks the group's choice when
the partition heals (the report says that a writer failed, not which one).
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
    order = {name: i for i, name in enumerate(eligible)}
    candidates = [w for w in reported if w.server in order]
    if not candidates:
        return None
    best = min(candidates, key=lambda w: rank(w, order))
    if best.server == own.server:
        return None
    if own.server is not None and rank(own, order) <= rank(best, order):
        return None
    return best


def rank(writer: Writer, order: dict[str, int]) -> tuple[int, float, int]:
    """Sort key of a choice, the strongest smallest (module docstring)."""
    position = order.get(writer.server or "", len(order))
    if writer.chosen > 0.0:  # a failover: the newest first
        return (0, -writer.chosen, position)
    return (1, writer.since, position)  # a fresh pick: the oldest first
