"""Reading the configuration's JSON Schema (loadstone.config.jsonschema) back:
what the man page (loadstone.manpages) and the likely-mistake warnings
(loadstone.config.lint) need to know of a key's schema."""

from __future__ import annotations

from typing import Any

Schema = dict[str, Any]


def resolve(schema: Schema, root: Schema) -> Schema:
    """The definition a {"$ref": "#/$defs/X"} names; any other schema as it is."""
    ref = schema.get("$ref")
    if isinstance(ref, str):
        resolved: Schema = root["$defs"][ref.rsplit("/", 1)[1]]
        return resolved
    return schema


def non_null(schema: Schema) -> tuple[Schema, bool]:
    """The schema without its null alternative, and whether it had one."""
    alternatives = schema.get("anyOf")
    if isinstance(alternatives, list):
        others = [a for a in alternatives if a.get("type") != "null"]
        if len(others) < len(alternatives):
            merged = {k: v for k, v in schema.items() if k != "anyOf"}
            if len(others) == 1:
                return {**others[0], **merged}, True
            return {**merged, "anyOf": others}, True
    return schema, False


def is_duration(schema: Schema) -> bool:
    """A duration key: a number of seconds or a string with units."""
    return any("ms" in str(a.get("pattern", "")) for a in schema.get("anyOf", []))


def mapping_schemas(schema: Schema, root: Schema) -> list[Schema]:
    """The object schemas a value under `schema` may be (a section, a section or
    a string, a section or null), resolved."""
    schema, _ = non_null(schema)
    candidates = schema.get("anyOf", [schema])
    out = []
    for candidate in candidates:
        resolved = resolve(candidate, root)
        if resolved.get("type") == "object" or "properties" in resolved:
            out.append(resolved)
    return out


def first_ref(schema: Schema) -> tuple[Schema, bool] | None:
    """The first {"$ref": ...} a value's schema reaches through its alternatives
    and list items, and whether it is reached through a list; None if none."""
    if "$ref" in schema:
        return schema, False
    for alternative in schema.get("anyOf", []) + schema.get("oneOf", []):
        found = first_ref(alternative)
        if found is not None:
            return found
    items = schema.get("items")
    if isinstance(items, dict):
        found = first_ref(items)
        if found is not None:
            return found[0], True
    return None
