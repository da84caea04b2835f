"""Whether to announce a VIP, and the flap damping that holds a decision.

A VIP is announced while this instance serves it: every listener of the VIP
listens and has a server up, the instance is not leaving (planned stop or
drain), and its last configuration load was accepted. What each of those is
lives in the runtime, which hands over the list of problems (empty: serve);
this module only turns that list into a decision that does not flap.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Damper:
    """A decision changes at most once per `hold_down` seconds.

    A backend that flaps every second would otherwise make the VIP's route
    come and go as often, and every withdraw/announce moves flows between
    instances at the routers (each move breaks established connections where
    the router's hashing is not resilient). Held, the VIP keeps its last
    decision until the hold ends, then takes the current one.

    `force` bypasses the hold: a planned stop withdraws at once, that being
    the point of withdrawing first.
    """

    hold_down: float
    announce: bool = False
    changed_at: float | None = None  # time of the last change; None: never decided
    held: bool = False  # the wanted decision differs and waits for the hold to end

    def update(self, wanted: bool, now: float, force: bool = False) -> bool:
        if wanted == self.announce:
            self.held = False  # (the withdrawn state before the first announce holds nothing)
            return self.announce
        if force or self.changed_at is None or now - self.changed_at >= self.hold_down:
            self.announce = wanted
            self.changed_at = now
            self.held = False
        else:
            self.held = True
        return self.announce
