"""Configuration: YAML in, validated frozen objects (`loadstone.config.model`) out.

    config = load_config("/etc/loadstone/loadstone.yaml")   # or parse_config(text)

Both raise `ConfigError`, whose `problems` are `yaml.path: message` lines, all
of them found in one pass.
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
