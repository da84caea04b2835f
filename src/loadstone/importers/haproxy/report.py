"""The import report: one line per directive that was not translated, or a note.

Printed on stderr as `file:line: directive: reason`, in the order of the files.
"""

from __future__ import annotations

from dataclasses import dataclass

from loadstone.importers.haproxy.keywords import Entry, Kind
from loadstone.importers.haproxy.parser import Directive, Location

__all__ = ["Report", "ReportLine", "TranslationError"]


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


class Report:
    """The lines collected while translating, in the order found."""

    def __init__(self) -> None:
        self.lines: list[ReportLine] = []

    def add(self, location: Location, what: str, kind: Kind, reason: str) -> None:
        self.lines.append(ReportLine(location, what, kind, reason))

    def note(self, directive: Directive, entry: Entry, what: str | None = None) -> None:
        """`directive` (or the part of it named by `what`) is not translated: `entry` says why."""
        self.add(directive.location, what or directive.text, entry.kind, entry.reason)

    def unsupported(self, directive: Directive, reason: str, what: str | None = None) -> None:
        self.note(directive, Entry(Kind.UNSUPPORTED, reason), what)

    def in_file_order(self, files: list[str]) -> list[ReportLine]:
        """One line per (place, directive, reason), by file in load order, then line."""
        unique: dict[tuple[str, str, str], ReportLine] = {}
        for line in self.lines:
            unique.setdefault((str(line.location), line.directive, line.reason), line)
        order = {name: i for i, name in enumerate(files)}
        return sorted(
            unique.values(), key=lambda r: (order.get(r.location.file, -1), r.location.line)
        )
