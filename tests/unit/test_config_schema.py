"""`loadstone schema`: the JSON Schema of the configuration file, from the model's declarations.

The schema must accept every file the loader accepts (the shipped examples, the
complete examples of docs/configuration.md, the valid documents of the loader's
own tests), and refuse what a single key can get wrong, as the loader does.
"""

from __future__ import annotations

import dataclasses
import json
import re
import subprocess
import sys
import textwrap
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from loadstone import cli
from loadstone.config import ConfigError, DurationError, parse_config, parse_duration
from loadstone.config.jsonschema import config_schema
from loadstone.config.model import (
    AdminConfig,
    CheckConfig,
    Config,
    CookiePersistence,
    ForwardFor,
    GlobalConfig,
    ListenerConfig,
    LocationRewrite,
    RouteConfig,
    ServerConfig,
    TcpKeepalive,
    Timeouts,
)
from loadstone.config.schema import DURATION_PATTERN
from tests.unit.test_config import DESIGN_EXAMPLE, INHERITANCE

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = ROOT / "src/loadstone/configs/loadstone.schema.json"
EXAMPLES = [*sorted((ROOT / "configs").glob("*.yaml")), ROOT / "src/loadstone/configs/demo.yaml"]
SCHEMA_LINE = re.compile(r"# yaml-language-server: \$schema=(\S+)")


@pytest.fixture(scope="module")
def validator() -> jsonschema.protocols.Validator:
    schema = config_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def schema_problems(validator: jsonschema.protocols.Validator, document: Any) -> list[str]:
    return [
        f"{'.'.join(map(str, error.absolute_path))}: {error.message}"
        for error in validator.iter_errors(document)
    ]


def test_loadstone_schema_prints_a_valid_json_schema(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["schema"]) == 0
    printed = json.loads(capsys.readouterr().out)
    jsonschema.Draft202012Validator.check_schema(printed)
    assert printed["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert printed == config_schema()


def test_the_command_prints_it() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "loadstone", "schema"], capture_output=True, text=True, check=True
    )
    assert result.stdout == cli.schema_text()


def test_shipped_schema_is_the_output_of_loadstone_schema() -> None:
    # Regenerate with: loadstone schema > src/loadstone/configs/loadstone.schema.json
    assert SHIPPED.read_text() == cli.schema_text()


def test_schema_carries_types_bounds_defaults_and_descriptions() -> None:
    schema = config_schema()
    listener = schema["$defs"]["ListenerConfig"]
    assert listener["additionalProperties"] is False
    assert listener["required"] == ["bind"]
    retries = listener["properties"]["retries"]
    assert (retries["minimum"], retries["maximum"], retries["default"]) == (0, 100, 3)
    assert retries["description"]
    assert listener["properties"]["balance"]["enum"][:2] == ["roundrobin", "leastconn"]
    connect = schema["$defs"]["Timeouts"]["properties"]["connect"]
    assert connect["default"] == 5
    assert {"type": "number", "exclusiveMinimum": 0} in connect["anyOf"]
    defaults = schema["properties"]["defaults"]["anyOf"][1]["properties"]
    assert "maxconn" in defaults and "servers" not in defaults and "bind" not in defaults


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: str(p.relative_to(ROOT)))
def test_example_files_validate_and_name_the_schema(
    path: Path, validator: jsonschema.protocols.Validator
) -> None:
    text = path.read_text()
    assert schema_problems(validator, yaml.safe_load(text)) == []
    match = SCHEMA_LINE.fullmatch(text.splitlines()[0])
    assert match, f"{path}: the first line should be '# yaml-language-server: $schema=...'"
    assert (path.parent / match[1]).resolve() == SHIPPED


def _complete_files_in_docs() -> list[str]:
    """The YAML examples of docs/configuration.md that are whole files (they have listeners)."""
    text = (ROOT / "docs" / "configuration.md").read_text()
    blocks = re.findall(r"```yaml\n(.*?)```", text, re.S)
    # indented blocks: runs of lines indented by four spaces (or blank), after a blank line
    blocks += [textwrap.dedent(b) for b in re.findall(r"\n\n((?:    .*\n|\n)+)", text)]
    found = []
    for block in blocks:
        try:
            document = yaml.safe_load(block)
        except yaml.YAMLError:
            continue  # HAProxy configuration, shell
        if isinstance(document, dict) and "listeners" in document:
            found.append(block)
    return found


def test_complete_examples_of_the_docs_validate(validator: jsonschema.protocols.Validator) -> None:
    examples = _complete_files_in_docs()
    assert examples, "docs/configuration.md has no complete example"
    for text in examples:
        parse_config(text)
        assert schema_problems(validator, yaml.safe_load(text)) == []


VALID = {
    "design": DESIGN_EXAMPLE,
    "inheritance": INHERITANCE,
    "http": """
global: {splice: off, io_uring: auto, admin: {bind: null}}
defaults: {forwardfor: true, max_headers: 20, tcp_keepalive: {idle: 30s}}
listeners:
  api:
    bind: '127.0.0.1:8080'
    mode: http
    forwardfor: {except: 127.0.0.0/8, header: X-Real-IP}
    request_headers: [{delete: X-Forwarded-Proto}, {set: X-A, value: b}]
    rewrite_location: https
    cookie: {name: SERVERID, indirect: true}
    servers: [{name: a, address: '127.0.0.1:1'}]
    pools:
      images: {balance: source, servers: [{name: g1, address: '127.0.0.1:2'}]}
    routes: [{host: [glance.example.com], pool: images}, {path_regex: '^/v2', pool: images}]
  redis:
    bind: ['[::1]:6379']
    check: {type: send-expect, steps: [{send: PING\\r\\n}, {expect: +PONG, timeout: 500ms}]}
    servers: [{name: r1, address: '127.0.0.1:6379'}]
""",
}


@pytest.mark.parametrize("text", VALID.values(), ids=VALID.keys())
def test_valid_documents_of_the_loader_validate(
    text: str, validator: jsonschema.protocols.Validator
) -> None:
    parse_config(text)
    assert schema_problems(validator, yaml.safe_load(text)) == []


SERVERS = "    servers: [{name: a, address: '10.0.0.1:80'}]\n"
LISTENER = "  web:\n    bind: ['127.0.0.1:8080']\n" + SERVERS
WEB = "listeners:\n" + LISTENER

INVALID = [
    pytest.param("listeners: {}\n", "listeners", id="no-listener"),
    pytest.param(f"listners: {{}}\nlisteners:\n{LISTENER}", "listners", id="top-unknown"),
    pytest.param(f"{WEB}    servrs: []\n", "listeners.web.servrs", id="unknown"),
    pytest.param(
        "listeners:\n  web:\n" + SERVERS,
        "listeners.web.bind",
        id="bind-missing",
    ),
    pytest.param(f"{WEB}    balance: random\n", "listeners.web.balance", id="enum"),
    pytest.param(f"{WEB}    retries: 101\n", "listeners.web.retries", id="bound"),
    pytest.param(f"{WEB}    maxconn: true\n", "listeners.web.maxconn", id="bool"),
    pytest.param(
        f"{WEB}    timeouts: {{connect: 5 seconds}}\n",
        "listeners.web.timeouts.connect",
        id="duration",
    ),
    pytest.param(
        f"{WEB}    timeouts: {{server: 30s1m}}\n",
        "listeners.web.timeouts.server",
        id="duration-order",
    ),
    pytest.param(
        f"{WEB}    check: {{type: http, expect_status: 700}}\n",
        "listeners.web.check.expect_status",
        id="status",
    ),
    pytest.param(
        "listeners:\n  web:\n    bind: ['127.0.0.1:http']\n" + SERVERS,
        "listeners.web.bind[0]",
        id="port-name",
    ),
    pytest.param(
        "listeners:\n  web:\n    bind: ['127.0.0.1:80']\n"
        "    servers: [{name: 'a b', address: 'h:1'}]\n",
        "listeners.web.servers[0].name",
        id="server-name",
    ),
    pytest.param(
        f"{WEB}    mode: http\n    request_headers: [{{set: X, add: Y, value: z}}]\n",
        "listeners.web.request_headers[0]",
        id="rule-two-actions",
    ),
    pytest.param(
        f"{WEB}    check: {{type: send-expect, steps: [{{timeout: 1s}}]}}\n",
        "listeners.web.check.steps[0]",
        id="step-no-action",
    ),
    pytest.param(
        "global: {workers: 0}\nlisteners:\n" + LISTENER, "global.workers", id="global-bound"
    ),
    pytest.param("defaults: {servers: []}\nlisteners:\n" + LISTENER, "defaults.servers", id="dflt"),
]


def yaml_path(path: Iterable[str | int]) -> str:
    """A JSON Schema error's path written as the loader writes YAML paths."""
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else f".{part}" if text else part
    return text or "(top level)"


def error_paths(error: jsonschema.ValidationError) -> Iterator[str]:
    """Where an error is, and where the errors under its anyOf/oneOf branches are.

    JSON Schema reports an unknown or a missing key at its mapping, the loader at the key."""
    path = yaml_path(error.absolute_path)
    if error.validator == "additionalProperties":
        unknown = set(error.instance) - set(error.schema.get("properties", {}))
        yield from (f"{path}.{name}" if error.absolute_path else name for name in unknown)
    elif error.validator == "required":
        yield from (f"{path}.{name}" for name in error.validator_value)
    else:
        yield path
    for branch in error.context or ():
        yield from error_paths(branch)


@pytest.mark.parametrize(("text", "path"), INVALID)
def test_invalid_documents_are_refused_by_both_at_the_same_path(
    text: str, path: str, validator: jsonschema.protocols.Validator
) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(text)
    assert any(problem.startswith(f"{path}: ") for problem in info.value.problems), (
        info.value.problems
    )
    errors = list(validator.iter_errors(yaml.safe_load(text)))
    assert path in {p for error in errors for p in error_paths(error)}, errors


@pytest.mark.parametrize(
    "text",
    [
        *("10", "2.5", "250ms", "1m30s", "1h 30m", " 2s ", "500us", "1d2h3m4s5ms6us"),
        *("", "5x", "5M", "-5s", "2 s", "30s1m", "1m1m", "1m30", "ms", "1.s"),
    ],
)
def test_the_duration_pattern_is_the_grammar_of_parse_duration(text: str) -> None:
    try:
        parse_duration(text)
        accepted = True
    except DurationError:
        accepted = False
    assert bool(re.search(DURATION_PATTERN, text)) == accepted


# Fields the file does not set as keys of their own: a listener's name is its
# mapping key, a server's pool is where it is listed, Config is the file itself.
UNDECLARED = {
    ListenerConfig: {"name"},
    ServerConfig: {"pool"},
    Config: {"global_", "listeners", "source"},
}


@pytest.mark.parametrize(
    "cls",
    [
        *(GlobalConfig, AdminConfig, ListenerConfig, Timeouts, TcpKeepalive, CheckConfig),
        *(ServerConfig, ForwardFor, CookiePersistence, LocationRewrite, RouteConfig, Config),
    ],
    ids=lambda cls: cls.__name__,
)
def test_every_field_the_file_sets_is_declared(cls: type) -> None:
    undeclared = {f.name for f in dataclasses.fields(cls) if "key" not in f.metadata}
    assert undeclared == UNDECLARED.get(cls, set())
