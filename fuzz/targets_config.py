"""The configuration loader (loadstone.config.loader.parse_config) on random and
mutated YAML.

Documented errors: ConfigError, each of its problems one line that starts with
the YAML path at fault (`listeners.web.servers[0].weight: ...`, `(top level):
...`) or, for YAML that does not parse, the source and position. Nothing else
may come out: no TypeError from a value of a type nobody expected, no
RecursionError, no crash in a cross-key rule.

Each input is tried twice: as text (byte-level mutations of the seeds, which
mostly exercise the YAML layer), and, when it parses, as the document with a
few structural mutations drawn by fuzz.source.Source (a value replaced by one of
another type, a key dropped or renamed, a list emptied or doubled), dumped back
to YAML: these reach the schema's values and the cross-key rules.
"""

from __future__ import annotations

import copy
import re
from typing import Any

import yaml

from fuzz.source import Source
from loadstone.config.loader import ConfigError, parse_config

# A problem line: "<YAML path>: <message>" on one line, the path as loadstone
# writes it (`a.b[0].c`, an odd key quoted: `['a.b']`, `["it's"]`, or as it came:
# `-lobal`), or "(top level): ..."; YAML that does not parse is reported as
# "<source>[:line:col]: invalid YAML: ..." with PyYAML's own (multi-line) detail.
PROBLEM = re.compile(r"<string>(:\d+:\d+)?: invalid YAML: .*|[^\s][^\n]*?: \S[^\n]*", re.S)

ODD_VALUES: list[Any] = [
    None,
    True,
    False,
    0,
    -1,
    1,
    2**63,
    -(2**70),
    1.5,
    float("inf"),
    float("nan"),
    "",
    "x" * 300,
    "1s",
    "-5s",
    "0ms",
    "10y",
    "127.0.0.1:0",
    "[::1]:65536",
    "host:port",
    "é\u202e",
    "a b",
    [],
    [None],
    {},
    {"": None},
    {"name": 1},
    [[[]]],
]


def check(text: str) -> None:
    try:
        parse_config(text)
    except ConfigError as err:
        assert err.problems, "a ConfigError without problems"
        for line in err.problems:
            assert PROBLEM.fullmatch(line), f"not a path-prefixed problem: {line!r}"


def mutate(node: Any, source: Source, depth: int = 0) -> Any:
    """One structural change somewhere in the document (returns the new node)."""
    if isinstance(node, dict) and node and depth < 12 and source.flag():
        key = list(node)[source.choice(len(node))]
        action = source.choice(4)
        if action == 0:
            del node[key]
        elif action == 1:
            node[f"{key}_" if isinstance(key, str) else str(key)] = node.pop(key)
        else:
            node[key] = mutate(node[key], source, depth + 1)
        return node
    if isinstance(node, list) and node and depth < 12 and source.flag():
        i = source.choice(len(node))
        action = source.choice(4)
        if action == 0:
            return []
        if action == 1:
            return node + node
        node[i] = mutate(node[i], source, depth + 1)
        return node
    return copy.deepcopy(ODD_VALUES[source.choice(len(ODD_VALUES))])  # never shared


def config_yaml(data: bytes) -> None:
    text = data.decode("utf-8", "replace")
    check(text)
    try:
        document = yaml.safe_load(text)
    except (yaml.YAMLError, RecursionError):
        return
    source = Source(data)
    for _ in range(1 + source.choice(4)):
        document = mutate(document, source)
    try:
        mutated = yaml.safe_dump(document, allow_unicode=True)
    except (yaml.YAMLError, RecursionError, ValueError):
        return  # a document PyYAML itself cannot write back: not the loader's
    check(mutated)
