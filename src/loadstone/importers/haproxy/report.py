"""The import report: one line per directive that was not translated, or a note.

Printed on stderr as `file:line: directive: reason`, in the order of the files.
"""

from __future__ import annotations

from dataclasses import dataclass

from loadstone.importers.haproxy.keywords import Kind
from loadstone.importers.haproxy.parser import Location

__all__ = ["ReportLine", "TranslationError"]


@dataclass(frozen=True, slots=True)
class ReportLine:
    location: Location
    directive: str  # the directive as written (re-quoted), or the part of it concerned
    kind: Kind
    reason: str

    def __str__(self) -> str:
        return f"{self.location}: {self.directive}: {self.reason}"


class TranslationError(Exception):
    """A configuration HAProxy would refuse (a server without an address, ...): exit 2."""

    def __init__(self, location: Location, message: str) -> None:
        self.location = location
        self.message = message
        super().__init__(f"{location}: {message}")
