"""The configuration file as a JSON Schema (draft 2020-12), from the same declarations
the loader walks: `loadstone schema` prints it. Its output is shipped beside the
example files (`configs/loadstone.schema.json`), which name it on their first
line (`# yaml-language-server: $schema=loadstone.schema.json`) so that editors
complete and check keys.

The schema says what one key alone can say (types, choices, bounds, durations,
unknown keys); the rules across keys (`loadstone.config.validate`: the keys of
another check type, a route to an unknown pool) are left to `loadstone check`.
"""

from __future__ import annotations

from typing import Any, Final

from loadstone.config.loader import DEFAULTS_KEYS
from loadstone.config.model import GlobalConfig, ListenerConfig
from loadstone.config.schema import Defs, JsonSchema, Section, object_schema
from loadstone.config.values import NAME

__all__ = ["DRAFT", "config_schema"]

DRAFT: Final = "https://json-schema.org/draft/2020-12/schema"


def _or_null(schema: JsonSchema) -> JsonSchema:
    return {"anyOf": [{"type": "null"}, schema]}


def config_schema() -> dict[str, Any]:
    """The JSON Schema of a whole configuration file."""
    defs: Defs = {}
    global_ = Section(GlobalConfig).json_schema(defs)
    listener = Section(ListenerConfig).json_schema(defs)
    defaults = object_schema(
        DEFAULTS_KEYS,
        defs,
        "Inherited by every listener, overridable there; timeouts and check merge key by key.",
    )
    return {
        "$schema": DRAFT,
        "title": "loadstone configuration",
        "description": "A loadstone configuration file (docs/configuration.md).",
        "type": "object",
        "properties": {
            "global": {**_or_null(global_), "description": "Process-wide settings."},
            "defaults": _or_null(defaults),
            "listeners": {
                "description": "The listeners, by name.",
                "type": "object",
                "minProperties": 1,
                "propertyNames": {"pattern": f"^{NAME}$"},
                "additionalProperties": listener,
            },
        },
        "required": ["listeners"],
        "additionalProperties": False,
        "$defs": dict(sorted(defs.items())),
    }
