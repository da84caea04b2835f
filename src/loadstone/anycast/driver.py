"""What the anycast manager asks of a BGP speaker's driver."""

from __future__ import annotations

from typing import Protocol

from loadstone.config.model import AnycastVip


class DriverError(Exception):
    """The speaker could not be told: not running, socket missing, refused, or
    its answer made no sense. The VIP's state is unknown until the next try."""


class Driver(Protocol):
    name: str  # "bird" | "exabgp"

    async def apply(self, vip: AnycastVip, announce: bool) -> None:
        """Make the speaker announce (or withdraw) the VIP; raise DriverError if
        that cannot be confirmed. Called again with the same decision every
        interval, so a speaker that restarted learns it again: idempotent."""
        ...

    async def close(self) -> None: ...

    def status(self) -> dict[str, object]:
        """What the driver knows of its speaker, for the status API."""
        ...
