"""The declaration machinery: what a configuration key is, and how the walk reads one.

Theory of operation
-------------------
Each field of a model dataclass that the YAML file may set carries a `Key` in its
dataclass metadata (`field(default=..., metadata=key(Int(1, 64), "doc"))`). The
key holds a `Value`: an object that both reads a YAML node (`parse`) and
describes it in JSON Schema (`json_schema`). So one declaration serves the
loader, which walks it, and `loadstone schema`, which prints it.

`parse` reports a bad value at the YAML path of its `Ctx` and returns `INVALID`;
the walk carries on with the next key, so one run reports every problem. A
value that was present but invalid stays `INVALID` in the mapping of parsed
fields: it neither triggers a second "required" message nor falls back to the
built-in default, and `build` then gives `INVALID` for the whole object.

Rules that span several keys of one object (a route needs a host or a path)
cannot be declared per key: `Ctx.rules` maps a model class to such a function,
run on every object of that class once its keys are read. They live in
`loadstone.config.validate`, which the loader hands in.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import re
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from datetime import date
from typing import Any, Final, get_args

from loadstone.config.durations import DurationError, parse_duration

__all__ = [
    "INVALID",
    "Bool",
    "Choice",
    "Ctx",
    "Duration",
    "Int",
    "Key",
    "ListOf",
    "Nullable",
    "Section",
    "SectionOrWord",
    "Switch",
    "Text",
    "Value",
    "build",
    "declared_keys",
    "got",
    "key",
    "read_mapping",
    "suggest",
    "yaml_text",
]

JsonSchema = dict[str, Any]
# Definitions shared by several places of the schema (`#/$defs/<name>`), filled on the way.
Defs = dict[str, JsonSchema]


class _Invalid:
    """Marks a value that was present but bad (and already reported)."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "<invalid>"


INVALID: Final = _Invalid()
_PLAIN_KEY = re.compile(r"[A-Za-z0-9_-]+")

# A rule over the keys of one object: (where, the mapping as written, the parsed
# fields) -> whether the object may be built. It may also mark fields INVALID.
Rule = Callable[["Ctx", Mapping[str, Any], dict[str, Any]], bool]


class Ctx:
    """Where we are in the document, and where problems go."""

    __slots__ = ("path", "problems", "rules")

    def __init__(
        self, path: str, problems: list[str], rules: Mapping[type, Rule] | None = None
    ) -> None:
        self.path = path
        self.problems = problems
        self.rules: Mapping[type, Rule] = rules or {}

    def key(self, name: str) -> Ctx:
        # Listener names may contain dots; quote such keys so the path stays unambiguous.
        if not _PLAIN_KEY.fullmatch(name):
            return Ctx(f"{self.path}[{name!r}]", self.problems, self.rules)
        return Ctx(f"{self.path}.{name}" if self.path else name, self.problems, self.rules)

    def index(self, i: int) -> Ctx:
        return Ctx(f"{self.path}[{i}]", self.problems, self.rules)

    def error(self, message: str) -> _Invalid:
        """Record a problem here; returns INVALID so a parser can `return ctx.error(...)`."""
        self.problems.append(f"{self.path or '(top level)'}: {message}")
        return INVALID


# --------------------------------------------------------------------------
# Words for messages


# bool before int: bool is an int subclass. YAML reads 2024-01-01 as a date.
_KINDS: Final = (
    (bool, "a boolean"),
    (int, "an integer"),
    (float, "a number"),
    (str, "a string"),
    (list, "a list"),
    (dict, "a mapping"),
    (date, "a date"),
)


def kind(value: object) -> str:
    """The YAML name of a value's type, with its article."""
    if value is None:
        return "null"
    for cls, name in _KINDS:
        if isinstance(value, cls):
            return name
    return f"a {type(value).__name__}"


def yaml_text(value: object) -> str:
    """A scalar as YAML would write it (true, null), not as Python would (True, None)."""
    if value is None:
        return "null"
    return str(value).lower() if isinstance(value, bool) else str(value)


def got(value: object) -> str:
    if value is None or isinstance(value, list | dict):
        return f"got {kind(value)}"
    shown = repr(value) if isinstance(value, str) else yaml_text(value)
    if len(shown) > 40:
        shown = shown[:37] + "..."
    return f"got {kind(value)} ({shown})"


def suggest(word: str, choices: Collection[str]) -> str:
    close = difflib.get_close_matches(word, sorted(choices), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


# --------------------------------------------------------------------------
# Values: how a YAML node is read and how JSON Schema describes it


class Value:
    """One kind of YAML value. `parse` returns the model's value, or INVALID after reporting."""

    def parse(self, ctx: Ctx, node: object) -> Any:
        raise NotImplementedError

    def json_schema(self, defs: Defs) -> JsonSchema:
        raise NotImplementedError


@dataclass(frozen=True, slots=True)
class Int(Value):
    low: int
    high: int | None = None

    def parse(self, ctx: Ctx, node: object) -> Any:
        # bool is an int subclass in Python; in a configuration `true` is never a count.
        if isinstance(node, bool) or not isinstance(node, int):
            return ctx.error(f"expected an integer, {got(node)}")
        if node < self.low or (self.high is not None and node > self.high):
            bounds = f"{self.low}-{self.high}" if self.high is not None else f"at least {self.low}"
            return ctx.error(f"must be {bounds}, got {node}")
        return node

    def json_schema(self, defs: Defs) -> JsonSchema:
        schema: JsonSchema = {"type": "integer", "minimum": self.low}
        if self.high is not None:
            schema["maximum"] = self.high
        return schema


@dataclass(frozen=True, slots=True)
class Bool(Value):
    def parse(self, ctx: Ctx, node: object) -> Any:
        if not isinstance(node, bool):
            return ctx.error(f"expected a boolean (true or false), {got(node)}")
        return node

    def json_schema(self, defs: Defs) -> JsonSchema:
        return {"type": "boolean"}


@dataclass(frozen=True, slots=True)
class Text(Value):
    """A string that is not blank; `pattern` and `invalid` add a syntax and its message."""

    pattern: str | None = None  # a full-match regular expression (also the JSON Schema one)
    invalid: str = ""  # message when the pattern does not match; {text!r} is the value

    def parse(self, ctx: Ctx, node: object) -> Any:
        if not isinstance(node, str):
            return ctx.error(f"expected a string, {got(node)}")
        if not node.strip():
            return ctx.error("must not be empty")
        if self.pattern is not None and not re.fullmatch(self.pattern, node):
            return ctx.error(self.invalid.format(text=node))
        return node

    def json_schema(self, defs: Defs) -> JsonSchema:
        pattern = f"^(?:{self.pattern})$" if self.pattern is not None else r"\S"
        return {"type": "string", "pattern": pattern}


@dataclass(frozen=True, slots=True)
class Choice(Value):
    """One of a model Literal's words; `aliases` accept YAML 1.1 booleans for on/off words."""

    choices: tuple[str, ...]
    aliases: tuple[tuple[bool, str], ...] = ()

    @classmethod
    def of(cls, literal: Any, **aliases: bool) -> Choice:
        return cls(get_args(literal), tuple((flag, word) for word, flag in aliases.items()))

    def parse(self, ctx: Ctx, node: object) -> Any:
        for flag, word in self.aliases:
            if node is flag:  # a bare on/off is a boolean in YAML 1.1
                return word
        if not isinstance(node, str) or node not in self.choices:
            shown = f"got {node!r}" if isinstance(node, str) else got(node)
            hint = suggest(node, self.choices) if isinstance(node, str) else ""
            return ctx.error(f"must be one of {', '.join(self.choices)}; {shown}{hint}")
        return node

    def json_schema(self, defs: Defs) -> JsonSchema:
        return {"enum": [*self.choices, *(flag for flag, _ in self.aliases)]}


# The duration grammar of loadstone.config.durations as a regular expression:
# a bare number, or parts from the largest unit to the smallest, each at most once.
_NUMBER = r"\d+(?:\.\d+)?"
DURATION_PATTERN: Final = (
    rf"^\s*(?:{_NUMBER}|(?=\d)"
    + "".join(rf"(?:{_NUMBER}{unit} *)?" for unit in ("d", "h", "m", "s", "ms", "us"))
    + r")\s*$"
)


@dataclass(frozen=True, slots=True)
class Duration(Value):
    """Seconds as a number, or a string with units (`250ms`, `1m30s`): float seconds."""

    allow_zero: bool = False

    def parse(self, ctx: Ctx, node: object) -> Any:
        try:
            seconds = parse_duration(node)
        except DurationError as err:
            return ctx.error(str(err))
        if seconds == 0 and not self.allow_zero:
            return ctx.error("must be greater than zero")
        return seconds

    def json_schema(self, defs: Defs) -> JsonSchema:
        bound = "minimum" if self.allow_zero else "exclusiveMinimum"
        return {
            "anyOf": [
                {"type": "number", bound: 0},
                {"type": "string", "pattern": DURATION_PATTERN},
            ]
        }


@dataclass(frozen=True, slots=True)
class Nullable(Value):
    """`null` is a value of its own here (an admin server turned off, no token file)."""

    inner: Value

    def parse(self, ctx: Ctx, node: object) -> Any:
        return None if node is None else self.inner.parse(ctx, node)

    def json_schema(self, defs: Defs) -> JsonSchema:
        return {"anyOf": [{"type": "null"}, self.inner.json_schema(defs)]}


@dataclass(frozen=True, slots=True)
class ListOf(Value):
    """A list of `item`; a node of a `single` type stands for a list of one."""

    item: Value
    what: str  # "expected a list of <what>"
    non_empty: bool = True
    single: tuple[type, ...] = ()  # (object,): anything but a list
    # Items whose `unique` key repeats an earlier one are reported (server names).
    unique: str | None = None

    def parse(self, ctx: Ctx, node: object) -> Any:
        if isinstance(node, self.single) and not isinstance(node, list):
            items: list[tuple[Ctx, object]] = [(ctx, node)]
        elif isinstance(node, list):
            if not node and self.non_empty:
                return ctx.error("must not be empty")
            items = [(ctx.index(i), item) for i, item in enumerate(node)]
        else:
            return ctx.error(f"expected a list of {self.what}, {got(node)}")
        seen: dict[str, int] = {}  # unique key -> index of the first item with it
        parsed = [
            self.item.parse(at, item) if self.unique is None else self._unique(at, item, i, seen)
            for i, (at, item) in enumerate(items)
        ]
        return INVALID if any(p is INVALID for p in parsed) else tuple(parsed)

    def _unique(self, at: Ctx, item: object, i: int, seen: dict[str, int]) -> Any:
        assert isinstance(self.item, Section) and self.unique is not None
        fields = self.item.read(at, item)
        name = fields.get(self.unique) if isinstance(fields, dict) else None
        if isinstance(name, str):  # a bad name is reported already, and never a duplicate
            if name in seen:
                noun = self.what.removesuffix("s")
                at.key(self.unique).error(
                    f"duplicate {noun} name {name!r} (also {self.what}[{seen[name]}])"
                )
                return INVALID
            seen[name] = i
        return build(self.item.cls, fields) if isinstance(fields, dict) else INVALID

    def json_schema(self, defs: Defs) -> JsonSchema:
        item = self.item.json_schema(defs)
        array: JsonSchema = {"type": "array", "items": item}
        if self.non_empty:
            array["minItems"] = 1
        return {"anyOf": [item, array]} if self.single else array


@dataclass(frozen=True, slots=True)
class Section(Value):
    """A mapping whose keys are the declared fields of a model dataclass."""

    cls: type
    if_null: str | None = None  # a hint for `key: null`, where null means something elsewhere

    def read(self, ctx: Ctx, node: object) -> dict[str, Any] | _Invalid:
        """The parsed fields given (by field name), required ones checked, rules applied."""
        if node is None and self.if_null is not None:
            return ctx.error(f"expected a mapping; {self.if_null}")
        keys = declared_keys(self.cls)
        raw = read_mapping(ctx, node, keys)
        if raw is None:
            return INVALID
        values = read_keys(ctx, raw, keys)
        rule = ctx.rules.get(self.cls)
        ok = rule is None or rule(ctx, raw, values)
        for name, (field, declared) in keys.items():
            if declared.required is not None and name not in raw:
                values[field.name] = ctx.key(name).error(declared.required)
        return values if ok else INVALID

    def parse(self, ctx: Ctx, node: object) -> Any:
        values = self.read(ctx, node)
        return build(self.cls, values) if isinstance(values, dict) else INVALID

    def json_schema(self, defs: Defs) -> JsonSchema:
        name = self.cls.__name__
        if name not in defs:
            defs[name] = {}  # a placeholder, so that a class may refer to itself
            doc = self.cls.__doc__ or ""
            if doc.startswith(f"{name}("):
                doc = ""  # the signature @dataclass writes when the class has no docstring
            defs[name] = object_schema(declared_keys(self.cls), defs, doc)
        return {"$ref": f"#/$defs/{name}"}


@dataclass(frozen=True, slots=True)
class Switch(Value):
    """An optional object: false or null turn it off (None); shorthands stand for whole values.

    `tcp_keepalive: true` is the kernel defaults, `rewrite_location: https` the
    common rewrite; `hint` is the message for any other word."""

    inner: Section
    shorthands: tuple[tuple[object, object], ...] = ()
    hint: str | None = None

    def parse(self, ctx: Ctx, node: object) -> Any:
        if node is None or node is False:
            return None
        for word, value in self.shorthands:
            # `is` for booleans: `1 == True` must not make `count: 1` a shorthand
            if node is word or (isinstance(word, str) and node == word):
                return value
        if isinstance(node, str) and self.hint is not None:
            return ctx.error(f"{self.hint}, got {node!r}")
        return self.inner.parse(ctx, node)

    def json_schema(self, defs: Defs) -> JsonSchema:
        words = [False, None, *(word for word, _ in self.shorthands)]
        return {"anyOf": [{"enum": words}, self.inner.json_schema(defs)]}


@dataclass(frozen=True, slots=True)
class SectionOrWord(Value):
    """A section that may also be written as the value of one of its keys alone
    (`events: syslog` for `events: {target: syslog}`). What the file leaves out
    keeps the value of `default()`, the field's own default object."""

    section: Section
    word: str  # the key a lone value stands for
    default: Callable[[], Any]

    def _word_value(self) -> Value:
        return declared_keys(self.section.cls)[self.word][1].value

    def parse(self, ctx: Ctx, node: object) -> Any:
        fields: dict[str, Any] | _Invalid
        if isinstance(node, str):  # the lone value, reported at the key itself
            fields = {
                declared_keys(self.section.cls)[self.word][0].name: self._word_value().parse(
                    ctx, node
                )
            }
        else:
            fields = self.section.read(ctx, node)
        if isinstance(fields, _Invalid) or any(v is INVALID for v in fields.values()):
            return INVALID
        return dataclasses.replace(self.default(), **fields)

    def json_schema(self, defs: Defs) -> JsonSchema:
        return {"anyOf": [self._word_value().json_schema(defs), self.section.json_schema(defs)]}


# --------------------------------------------------------------------------
# Keys


@dataclass(frozen=True, slots=True)
class Key:
    """What the configuration file may say about one model field."""

    value: Value
    doc: str = ""
    yaml: str | None = None  # the key as written, when it is not the field's name
    required: str | None = None  # the message when the key is missing; None: optional
    inherit: bool = False  # `defaults` may set it for every listener
    # The listener modes (or check types) the key belongs to; () means all of them.
    only: tuple[str, ...] = ()


def key(
    value: Value,
    doc: str = "",
    *,
    yaml: str | None = None,
    required: str | None = None,
    inherit: bool = False,
    only: tuple[str, ...] = (),
) -> Mapping[str, Key]:
    """The metadata of a declared field: `field(default=..., metadata=key(...))`."""
    return {"key": Key(value, doc, yaml, required, inherit, only)}


# YAML key -> (the model field, its declaration)
Keys = dict[str, tuple["dataclasses.Field[Any]", Key]]


def declared_keys(cls: type) -> Keys:
    """The declared keys of a model class, in declaration order.

    Fields without a declaration (a listener's name, which is its mapping key)
    are not keys of the file."""
    keys: Keys = {}
    for field in dataclasses.fields(cls):
        declared = field.metadata.get("key")
        if isinstance(declared, Key):
            keys[declared.yaml or field.name] = (field, declared)
    return keys


def read_mapping(ctx: Ctx, node: object, allowed: Collection[str]) -> dict[str, Any] | None:
    """The known keys of a mapping; unknown and non-string keys are reported."""
    if not isinstance(node, dict):
        ctx.error(f"expected a mapping, {got(node)}")
        return None
    known: dict[str, Any] = {}
    for name, value in node.items():
        if not isinstance(name, str):
            # `on: 1` or `80: ...`: YAML 1.1 turned the key into a boolean or a number.
            ctx.key(yaml_text(name)).error(f"keys must be strings, {got(name)}; quote it")
        elif name not in allowed:
            hint = suggest(name, allowed)
            if not hint and len(allowed) <= 12:
                hint = f"; valid keys: {', '.join(sorted(allowed))}"
            ctx.key(name).error(f"unknown key{hint}")
        else:
            known[name] = value
    return known


def read_keys(ctx: Ctx, raw: Mapping[str, Any], keys: Keys) -> dict[str, Any]:
    """Parse the keys of `raw` that `keys` declares, in the order written: field name -> value."""
    parsed: dict[str, Any] = {}
    for name, node in raw.items():
        if name in keys:
            field, declared = keys[name]
            parsed[field.name] = declared.value.parse(ctx.key(name), node)
    return parsed


def build(cls: Callable[..., Any], values: Mapping[str, Any]) -> Any:
    """`cls(**values)`, or INVALID when a value is (its problem is already reported)."""
    if any(value is INVALID for value in values.values()):
        return INVALID
    return cls(**values)


# --------------------------------------------------------------------------
# JSON Schema of declared keys


def object_schema(keys: Keys, defs: Defs, doc: str | None = None) -> JsonSchema:
    """An object of the declared keys: unknown keys are errors, as in the loader."""
    properties: JsonSchema = {}
    for name, (field, declared) in keys.items():
        schema = {**declared.value.json_schema(defs)}
        if declared.doc:
            schema["description"] = declared.doc
        default = json_default(field.default)
        if default is not dataclasses.MISSING and declared.required is None:
            schema["default"] = default
        properties[name] = schema
    schema = {"type": "object", "properties": properties, "additionalProperties": False}
    if doc:
        schema["description"] = " ".join(doc.split())
    required = [name for name, (_, declared) in keys.items() if declared.required is not None]
    if required:
        schema["required"] = required
    return schema


def json_default(value: object) -> object:
    """A model default as the configuration file would write it, or `dataclasses.MISSING`
    when there is no plain one to show (objects, None meaning "not set")."""
    if isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return int(value) if value.is_integer() and math.isfinite(value) else value
    # An empty tuple may stand for an empty mapping (headers, pools): no default shown.
    if isinstance(value, tuple) and value and all(isinstance(v, bool | int | str) for v in value):
        return list(value)
    return dataclasses.MISSING
