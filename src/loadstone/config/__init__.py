"""Configuration: YAML in, validated frozen objects (`loadstone.config.model`) out.

    config = load_config("/etc/loadstone/loadstone.yaml")   # or parse_config(text)

Both raise `ConfigError`, whose `problems` are `yaml.path: message` lines, all
of them found in one pass.

    model.py       the frozen objects, and the declaration of every key of the file
    schema.py      what a declared key is: its value's parser and JSON Schema
    values.py      the domain's values (addresses, HTTP tokens, send/expect steps...)
    loader.py      the walk: YAML -> objects, defaults inherited by listeners
    validate.py    the rules across keys
    jsonschema.py  the file's JSON Schema (`loadstone schema`)
"""

from loadstone.config.durations import DurationError, parse_duration
from loadstone.config.loader import SEND_EXPECT_PRESETS, ConfigError, load_config, parse_config

__all__ = [
    "SEND_EXPECT_PRESETS",
    "ConfigError",
    "DurationError",
    "load_config",
    "parse_config",
    "parse_duration",
]
