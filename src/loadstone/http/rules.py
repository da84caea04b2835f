"""Header rules (set / add / delete, applied in the order written) and Location
rewriting, over header lists of (name, value) byte pairs as the parser gives them.

Header names compare case-insensitively (RFC 9110 section 5.1); values are kept
byte for byte. The lists are small (tens of fields), so a rule is one linear
pass; rules are compiled once per listener into lower-cased byte names.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

from loadstone.config.model import HeaderRule, LocationRewrite

Headers = list[tuple[bytes, bytes]]

_SET: Final = 0
_ADD: Final = 1
_DELETE: Final = 2
_ACTIONS: Final = {"set": _SET, "add": _ADD, "delete": _DELETE}


class HeaderRules:
    """Compiled rules: `apply(headers)` edits the list in place."""

    __slots__ = ("deleted", "rules")

    def __init__(self, rules: Sequence[HeaderRule]) -> None:
        self.rules: tuple[tuple[int, bytes, bytes, bytes], ...] = tuple(
            (
                _ACTIONS[r.action],
                r.name.lower().encode("ascii"),
                r.name.encode("ascii"),
                r.value.encode("latin-1"),
            )
            for r in rules
        )
        # Lower-cased names a set or delete removes: lets a caller skip work on
        # headers that are about to go anyway.
        self.deleted: frozenset[bytes] = frozenset(
            lower for action, lower, _, _ in self.rules if action != _ADD
        )

    def __bool__(self) -> bool:
        return bool(self.rules)

    def apply(self, headers: Headers) -> None:
        for action, lower, name, value in self.rules:
            if action != _ADD:
                headers[:] = [h for h in headers if h[0].lower() != lower]
            if action != _DELETE:
                headers.append((name, value))


class LocationRewriter:
    """Location and Content-Location: a value starting with `prefix` gets `replacement`.

    This is what puppet-tripleo does with `rspirep ^Location:\\ http://(.*)
    Location:\\ https://\\1` for services behind a TLS-terminating proxy that
    build absolute redirects from the plain-HTTP request they see.
    """

    __slots__ = ("prefix", "replacement")

    NAMES: Final = frozenset({b"location", b"content-location"})

    def __init__(self, config: LocationRewrite) -> None:
        self.prefix = config.prefix.encode("latin-1")
        self.replacement = config.replacement.encode("latin-1")

    def rewrite(self, value: bytes) -> bytes:
        prefix = self.prefix
        if value[: len(prefix)].lower() == prefix.lower():
            return self.replacement + value[len(prefix) :]
        return value
