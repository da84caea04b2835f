"""The man pages, written from what loadstone itself reads: loadstone(8) from
the argparse parser (loadstone.cli_tree), loadstone.yaml(5) from the
configuration's JSON Schema (loadstone.config.jsonschema, itself generated from
the declarations in config/model.py). scripts/selfdoc.py writes them to
share/man/, and a test keeps the shipped ones equal to these functions' output,
as it does for the schema file.

No dates in the pages, so that the same source always makes the same bytes.
"""

from __future__ import annotations

import argparse
import json
import re
from typing import Any

import loadstone
from loadstone.cli_tree import Command, Option, command_tree
from loadstone.config.schema_walk import first_ref, is_duration, non_null, resolve

BREAK_AFTER_COLON = ":\\:"  # roff's \: lets a line break there
SUMMARY = "L4/L7 load-balancing proxy for OpenStack controllers"


def roff(text: str) -> str:
    """Text as roff shows it literally: backslashes, dashes of options, and a
    leading dot or quote that would start a request."""
    text = text.replace("\\", "\\e").replace("-", "\\-")
    return "\n".join(
        ("\\&" + line) if line.startswith((".", "'")) else line for line in text.split("\n")
    )


def _prose(text: str) -> str:
    """Markdown-ish prose (`code`) as roff: code in bold."""
    return re.sub(r"`([^`]+)`", lambda m: f"\\fB{m.group(1)}\\fR", roff(text))


def _header(name: str, section: int, title: str) -> list[str]:
    return [
        f'.TH "{name.upper()}" "{section}" "" "loadstone {loadstone.__version__}" "{title}"',
        ".ad l",  # ragged right: long values (cipher lists) cannot be justified
        ".SH NAME",
    ]


# -- loadstone(8) ------------------------------------------------------------------------


def _option(option: Option) -> list[str]:
    flags = ", ".join(f"\\fB{roff(f)}\\fR" for f in option.flags)
    if option.metavar is not None:
        value = "{" + ",".join(option.choices) + "}" if option.choices else option.metavar
        flags += f" \\fI{roff(value)}\\fR"
    return [".TP", flags, _prose(option.help) if option.help else ""]


def _command(command: Command) -> list[str]:
    lines = [f'.SS "{roff(" ".join(["loadstone", *command.path]))}"']
    if command.help:
        lines += [_prose(command.help[0].upper() + command.help[1:]) + "."]
    lines += [".PP", ".nf", roff(command.usage), ".fi"]
    for positional in command.positionals:
        if positional.help or positional.choices:
            about = positional.help or "one of " + ", ".join(positional.choices or [])
            lines += [".TP", f"\\fI{roff(positional.name)}\\fR", _prose(about)]
    for option in command.options:
        if option.flags != ["-h", "--help"]:
            lines += _option(option)
    return [line for line in lines if line != ""]


EXIT_STATUS = """\
.TP
.B 0
success, and after a graceful stop
.TP
.B 1
a valid configuration that cannot start (an address in use, a server name that
does not resolve); for \\fBctl\\fR, a command the admin API refused
.TP
.B 2
an invalid configuration: one line per problem on standard error, each starting
with its YAML path"""


def environment_table(operations_md: str) -> list[tuple[str, str]]:
    """(variable, meaning) from docs/operations.md's "Environment variables" table."""
    section = operations_md.split("## Environment variables", 1)[1]
    rows = []
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 3 and cells[0].startswith("`LOADSTONE_"):
            rows.append((cells[0].strip("`"), f"({cells[1]}) {cells[2]}"))
    return rows


def loadstone_8(parser: argparse.ArgumentParser, operations_md: str) -> str:
    tree = command_tree(parser)
    lines = _header("loadstone", 8, "System Administration")
    lines += [f"loadstone \\- {roff(SUMMARY)}", ".SH SYNOPSIS", ".nf"]
    lines += [roff(sub.usage) for sub in tree.subcommands]
    lines += [".fi", ".SH DESCRIPTION"]
    lines += [
        _prose(
            "loadstone relays TCP sessions and HTTP requests from its listeners to "
            "the servers of each, checks the servers' health and balances among "
            "those up. A native data path (C worker threads) serves what it "
            "implements, a pure-Python twin the rest. `loadstone run` serves a "
            "configuration file (loadstone.yaml(5)); `loadstone ctl` talks to a "
            "running one through its admin API."
        ),
        ".SH OPTIONS",
    ]
    for option in tree.options:
        if option.flags != ["-h", "--help"]:
            lines += _option(option)
    lines += [".SH COMMANDS"]
    for command in tree.walk()[1:]:
        lines += _command(command)
    lines += [".SH ENVIRONMENT"]
    for name, meaning in environment_table(operations_md):
        lines += [".TP", f"\\fB{roff(name)}\\fR", _prose(meaning)]
    lines += [".SH EXIT STATUS", EXIT_STATUS]
    lines += [
        ".SH FILES",
        ".TP",
        "\\fI/etc/loadstone/loadstone.yaml\\fR",
        "the configuration file \\fBctl\\fR reads when neither \\fB\\-c\\fR nor "
        "\\fBLOADSTONE_CONFIG\\fR names one",
        ".SH SEE ALSO",
        "loadstone.yaml(5), keepalived(8), haproxy(1)",
    ]
    return "\n".join(lines) + "\n"


# -- loadstone.yaml(5) ----------------------------------------------------------------------


def type_text(schema: dict[str, Any], root: dict[str, Any]) -> str:
    """What a key takes, in words."""
    schema, nullable = non_null(schema)
    text = _type_words(schema, root)
    return f"{text}, or null" if nullable else text


def _bounds(schema: dict[str, Any]) -> str:
    low = schema.get("minimum", schema.get("exclusiveMinimum"))
    high = schema.get("maximum")
    if low is not None and high is not None:
        return f" {low}-{high}"
    if low is not None:
        return f" >= {low}" if "minimum" in schema else f" > {low}"
    return ""


def _type_words(schema: dict[str, Any], root: dict[str, Any]) -> str:
    if is_duration(schema):
        return "duration"
    if "enum" in schema:
        return "one of " + ", ".join(json.dumps(v) for v in schema["enum"])
    if "const" in schema:
        return json.dumps(schema["const"])
    if "$ref" in schema:
        return "a mapping (its keys below)"
    if "anyOf" in schema or "oneOf" in schema:
        alternatives = schema.get("anyOf") or schema.get("oneOf") or []
        return " or ".join(_type_words(a, root) for a in alternatives)
    kind = schema.get("type")
    if kind == "array":
        return "list of " + _type_words(schema.get("items", {}), root)
    if kind == "object":
        if "additionalProperties" in schema and isinstance(schema["additionalProperties"], dict):
            return "map of name to " + _type_words(schema["additionalProperties"], root)
        return "mapping"
    if kind in ("integer", "number"):
        return f"{kind}{_bounds(schema)}"
    if isinstance(kind, str):
        return kind
    return "any"


def _sections_below(
    prefix: str, schema: dict[str, Any], root: dict[str, Any]
) -> list[tuple[str, dict[str, Any]]]:
    """The keys of `schema` that are sections of their own, as (path, section)."""
    found = []
    for key, sub in schema.get("properties", {}).items():
        path = f"{prefix}.{key}" if prefix else key
        ref = first_ref(sub)
        named = non_null(sub)[0].get("additionalProperties")
        if ref is not None:
            found.append((path + ("[]" if ref[1] else ""), resolve(ref[0], root)))
        elif isinstance(named, dict) and resolve(named, root).get("properties"):
            found.append((path + ".NAME", resolve(named, root)))
        elif non_null(sub)[0].get("properties"):
            found.append((path, non_null(sub)[0]))
    return found


def _section(path: str, schema: dict[str, Any], root: dict[str, Any], seen: set[str]) -> list[str]:
    lines = [f'.SS "{roff(path)}"']
    if schema.get("description"):
        lines.append(_prose(schema["description"]))
    for key, sub in schema.get("properties", {}).items():
        lines += [".TP", f"\\fB{roff(key)}\\fR \\(em {roff(type_text(sub, root))}"]
        about = sub.get("description") or resolve(non_null(sub)[0], root).get("description", "")
        default = sub.get("default")
        parts = [_prose(about.rstrip(".") + ".")] if about else []
        if default is not None and not isinstance(default, dict | list):
            # \: lets a long value (a cipher list) break after its colons
            value = roff(json.dumps(default)).replace(":", BREAK_AFTER_COLON)
            parts.append(f"Default: {value}.")
        lines.append(" ".join(parts) if parts else "(no description)")
    out = lines
    for sub_path, sub_schema in _sections_below(path, schema, root):
        if sub_path not in seen:
            seen.add(sub_path)
            out += _section(sub_path, sub_schema, root, seen)
    return out


def loadstone_yaml_5(schema: dict[str, Any]) -> str:
    lines = _header("loadstone.yaml", 5, "File Formats")
    lines += [
        "loadstone.yaml \\- loadstone configuration file",
        ".SH SYNOPSIS",
        "\\fI/etc/loadstone/loadstone.yaml\\fR",
        ".SH DESCRIPTION",
        _prose(
            "A YAML document with three top-level keys: `global` (process-wide "
            "settings), `defaults` (what every listener inherits) and `listeners` "
            "(by name). `loadstone check FILE` validates one (exit 2 with the YAML "
            "path of each problem, warnings for likely mistakes); `loadstone schema` "
            "prints its JSON Schema for editors. docs/configuration.md in the "
            "source explains each key at length."
        ),
        ".PP",
        _prose(
            "A duration is a number of seconds (`5`, `0.2`) or a string with "
            "units: `us`, `ms`, `s`, `m`, `h`, `d`, combined as in `1m30s`. A "
            "bare number is always seconds: `5000` is 83 minutes (`loadstone check` "
            "warns about such values)."
        ),
        ".SH KEYS",
    ]
    seen: set[str] = set()
    for key, sub in schema["properties"].items():
        sub, _ = non_null(sub)
        if key == "listeners":
            listener = sub["additionalProperties"]
            lines += [f'.SS "{roff("listeners")}"', _prose(sub.get("description", ""))]
            lines += _section("listeners.NAME", resolve(listener, schema), schema, seen)
        else:
            lines += _section(key, resolve(sub, schema), schema, seen)
    lines += [
        ".SH EXAMPLE",
        ".nf",
        roff(EXAMPLE.rstrip("\n")),
        ".fi",
        ".SH SEE ALSO",
        "loadstone(8)",
    ]
    return "\n".join(lines) + "\n"


EXAMPLE = """\
global:
  admin:
    bind: 127.0.0.1:6956
defaults:
  timeouts:
    connect: 5s
    client: 1m
listeners:
  keystone:
    bind: ["198.18.0.10:5000"]
    mode: http
    servers:
      - {name: ctl1, address: "198.18.0.11:5000"}
      - {name: ctl2, address: "198.18.0.12:5000"}
"""
