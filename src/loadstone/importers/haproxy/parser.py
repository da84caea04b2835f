"""HAProxy's configuration language -> sections of directives, each with file:line.

Theory of operation
-------------------
Sans-IO: `parse_text(text, filename)` takes the text of one file and returns its
sections; `parse_files` takes (filename, text) pairs in the order HAProxy loads
them (files in argument order, a directory's `*.cfg` in lexical order; the
caller reads them) and concatenates the sections, as HAProxy does: a section
ends where the next section keyword starts or its file ends, and later proxies
inherit the last `defaults` seen, in any earlier file.

A line is cut into words as HAProxy's `parse_line()` does (haproxy/src/tools.c):

    word       = 1*( plain / escaped / "'" *any "'" / DQUOTE *( escaped / var / any ) DQUOTE )
    separators = SP / HTAB (any run of them; leading ones are indentation)
    "#"        = starts a comment, unless quoted or escaped
    escaped    = "\" ( SP / "#" / "\" / "'" / DQUOTE / "$" / "r" / "n" / "t" / "x" 2HEXDIG )
    var        = "$" NAME / "${" NAME "}"   (unquoted or in double quotes; an unset one is "")

Single quotes protect everything, double quotes protect spaces and `#` but not
escapes and variables. A quote that is not closed on its line is an error.

Which words start a section is fixed (SECTION_KEYWORDS); every other line
belongs to the section above it. What a directive means is not known here:
that is `translate` with the table in `keywords`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

__all__ = [
    "SECTION_KEYWORDS",
    "Directive",
    "Location",
    "ParseError",
    "Section",
    "parse_files",
    "parse_text",
    "split_words",
]

# Sections HAProxy 2.x/3.x knows. Proxies (listen/frontend/backend) and defaults
# are translated; the others are kept so that their directives can be reported.
SECTION_KEYWORDS = frozenset(
    {
        "global",
        "defaults",
        "listen",
        "frontend",
        "backend",
        "peers",
        "userlist",
        "resolvers",
        "mailers",
        "cache",
        "program",
        "http-errors",
        "ring",
        "log-forward",
        "fcgi-app",
        "crt-store",
        "traces",
        "acme",
    }
)


@dataclass(frozen=True, slots=True)
class Location:
    file: str
    line: int  # counted from 1

    def __str__(self) -> str:
        return f"{self.file}:{self.line}"


@dataclass(frozen=True, slots=True)
class Directive:
    words: tuple[str, ...]  # the directive's words after unquoting; never empty
    location: Location
    indented: bool  # the line started with a space or a tab

    @property
    def keyword(self) -> str:
        return self.words[0]

    @property
    def args(self) -> tuple[str, ...]:
        return self.words[1:]

    @property
    def text(self) -> str:
        """The directive as written again (quoted where a word needs it), for reports."""
        return " ".join(_requote(word) for word in self.words)


@dataclass(frozen=True, slots=True)
class Section:
    kind: str  # one of SECTION_KEYWORDS
    name: str  # "" for global and an anonymous defaults
    args: tuple[str, ...]  # the header's words after the name (`from X`, a listen address)
    location: Location
    directives: tuple[Directive, ...]


class ParseError(Exception):
    """A file no HAProxy version accepts; the message starts with file:line."""

    def __init__(self, location: Location, message: str) -> None:
        self.location = location
        self.message = message
        super().__init__(f"{location}: {message}")


_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_SIMPLE_ESCAPES = {" ": " ", "#": "#", "\\": "\\", "'": "'", '"': '"', "$": "$"}
_LETTER_ESCAPES = {"r": "\r", "n": "\n", "t": "\t"}


def split_words(line: str, location: Location, env: Mapping[str, str]) -> list[str]:
    """Cut one line into words (see the module grammar); [] for a blank or comment line."""
    words: list[str] = []
    word: list[str] = []
    in_word = False  # a word was started (so '' written as "" is a word)
    quote = ""  # the open quote character, or ""
    i, n = 0, len(line)
    while i < n:
        c = line[i]
        # Inside quotes a character stands for itself, except escapes and
        # variables inside double quotes (handled below, as outside quotes).
        if quote == "'" or (quote == '"' and c not in "\\$"):
            if c == quote:
                quote = ""
            else:
                word.append(c)
            i += 1
            continue
        if c == "\\" and i + 1 < n:
            nxt = line[i + 1]
            if nxt in _SIMPLE_ESCAPES:
                word.append(_SIMPLE_ESCAPES[nxt])
                i += 2
            elif nxt in _LETTER_ESCAPES:
                word.append(_LETTER_ESCAPES[nxt])
                i += 2
            elif nxt == "x" and re.fullmatch(r"[0-9A-Fa-f]{2}", line[i + 2 : i + 4]):
                word.append(chr(int(line[i + 2 : i + 4], 16)))
                i += 4
            else:
                # HAProxy keeps an unknown escape as written (regexes rely on it: `\.`)
                word.append(c)
                i += 1
            in_word = True
            continue
        if c == "$" and (i + 1 < n):
            braced = line[i + 1] == "{"
            m = _NAME.match(line, i + 2 if braced else i + 1)
            if m and (not braced or line[m.end() : m.end() + 1] == "}"):
                word.append(env.get(m.group(), ""))
                i = m.end() + (1 if braced else 0)
                in_word = True
                continue
        if c in "'\"" and not quote:
            quote = c
            in_word = True
            i += 1
            continue
        if c in " \t\r\n":
            if in_word:
                words.append("".join(word))
                word, in_word = [], False
            i += 1
            continue
        if c == "#":
            break
        word.append(c)
        in_word = True
        i += 1
    if quote:
        raise ParseError(location, f"unterminated {quote} quote")
    if in_word:
        words.append("".join(word))
    return words


def parse_text(
    text: str, filename: str, env: Mapping[str, str] | None = None
) -> tuple[list[Directive], list[Section]]:
    """One file -> (directives before its first section, which are an error, its sections)."""
    env = env if env is not None else {}
    leading: list[Directive] = []
    sections: list[Section] = []
    header: tuple[str, str, tuple[str, ...], Location] | None = None
    body: list[Directive] = []

    def close() -> None:
        if header is not None:
            kind, name, args, loc = header
            sections.append(Section(kind, name, args, loc, tuple(body)))

    blocks = _ConditionalBlocks(env)
    for number, raw in enumerate(text.splitlines(), start=1):
        location = Location(filename, number)
        words = split_words(raw, location, env)
        if not words or blocks.consume(words, location):
            continue
        if words[0] in SECTION_KEYWORDS:
            close()
            header = _section_header(words, location)
            body = []
            continue
        directive = Directive(tuple(words), location, indented=raw[:1] in (" ", "\t"))
        (body if header is not None else leading).append(directive)
    close()
    blocks.finish(Location(filename, len(text.splitlines())))
    return leading, sections


class _ConditionalBlocks:
    """HAProxy 2.4+'s `.if COND` / `.elif COND` / `.else` / `.endif` and the
    `.diag/.notice/.warning/.alert` messages inside them.

    Conditions understood: a number (non-zero is true), `defined(NAME)`,
    `streq(a,b)`, `strneq(a,b)`, each optionally negated with `!`. Others
    (`feature()`, `version_atleast()`, ...) depend on the HAProxy binary and are
    errors: the importer cannot know which branch the operator's HAProxy takes."""

    _CALL = re.compile(r"(!?)(defined|streq|strneq)\((.*)\)")

    def __init__(self, env: Mapping[str, str]) -> None:
        self.env = env
        # per open block: (this branch is read, some branch was taken, where it opened)
        self.stack: list[tuple[bool, bool, Location]] = []

    @property
    def active(self) -> bool:
        return all(reading for reading, _, _ in self.stack)

    def consume(self, words: list[str], location: Location) -> bool:
        """True when the line is a directive of the blocks, or inside a branch not read."""
        keyword = words[0]
        if keyword == ".if":
            outer = self.active
            value = outer and self._condition(words[1:], location)
            self.stack.append((value, value or not outer, location))
        elif keyword in (".elif", ".else"):
            if not self.stack:
                raise ParseError(location, f"'{keyword}' without '.if'")
            _, taken, opened = self.stack.pop()
            outer = self.active
            value = not taken and outer
            if keyword == ".elif" and value:
                value = self._condition(words[1:], location)
            self.stack.append((value, taken or value, opened))
        elif keyword == ".endif":
            if not self.stack:
                raise ParseError(location, "'.endif' without '.if'")
            self.stack.pop()
        elif keyword in (".diag", ".notice", ".warning"):
            pass  # messages HAProxy prints while it reads the file
        elif keyword == ".alert":
            if self.active:
                raise ParseError(location, f"the file stops HAProxy: {' '.join(words[1:])}")
        else:
            return not self.active
        return True

    def _condition(self, words: list[str], location: Location) -> bool:
        text = " ".join(words)
        if re.fullmatch(r"!?-?\d+", text):
            return (int(text.lstrip("!")) != 0) != text.startswith("!")
        m = self._CALL.fullmatch(text)
        if m is None:
            raise ParseError(location, f"cannot evaluate '.if {text}' outside HAProxy")
        negate, function, argument = m.groups()
        if function == "defined":
            value = argument in self.env
        else:
            left, sep, right = argument.partition(",")
            if not sep:
                raise ParseError(location, f"'{function}' takes two arguments")
            value = (left == right) == (function == "streq")
        return value != bool(negate)

    def finish(self, location: Location) -> None:
        if self.stack:
            raise ParseError(self.stack[-1][2], "'.if' without '.endif'")


def _section_header(
    words: list[str], location: Location
) -> tuple[str, str, tuple[str, ...], Location]:
    kind = words[0]
    if kind == "global":
        return kind, "", tuple(words[1:]), location
    if kind == "defaults":
        # `defaults [NAME] [from OTHER]`
        if len(words) > 1 and words[1] != "from":
            return kind, words[1], tuple(words[2:]), location
        return kind, "", tuple(words[1:]), location
    if len(words) < 2:
        raise ParseError(location, f"'{kind}' needs a name")
    return kind, words[1], tuple(words[2:]), location


def parse_files(
    files: Iterable[tuple[str, str]], env: Mapping[str, str] | None = None
) -> list[Section]:
    """(filename, text) pairs in HAProxy's load order -> every section, in order.

    Each file starts outside any section (HAProxy parses every file afresh), but
    `defaults` seen in one file still apply to the proxies of the next."""
    sections: list[Section] = []
    for filename, text in files:
        leading, file_sections = parse_text(text, filename, env)
        if leading:
            first = leading[0]
            raise ParseError(first.location, f"unknown keyword '{first.keyword}' out of section")
        sections.extend(file_sections)
    return sections


_NEEDS_QUOTES = re.compile(r"[\s#'\"\\$]")


def _requote(word: str) -> str:
    if word and not _NEEDS_QUOTES.search(word):
        return word
    return "'" + word.replace("'", "'\\''") + "'"
