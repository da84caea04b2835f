"""The man pages and shell completions under share/ are what scripts/selfdoc.py
writes from the parser and the schema today (as test_config_schema keeps the
schema file current), and the man pages are clean roff naming every command
and key."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from loadstone.cli import build_parser
from loadstone.cli_tree import command_tree
from loadstone.config.jsonschema import config_schema

ROOT = Path(__file__).resolve().parents[2]
MAN = ROOT / "share" / "man"


def test_shipped_files_are_current() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "selfdoc.py"), "--check"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr


def test_man_pages_render_without_warnings() -> None:
    for page in ("loadstone.8", "loadstone.yaml.5"):
        result = subprocess.run(
            ["groff", "-man", "-ww", "-z", str(MAN / page)], capture_output=True, text=True
        )
        assert result.returncode == 0 and result.stderr == "", (page, result.stderr)


def test_loadstone_8_has_every_command_and_option() -> None:
    page = (MAN / "loadstone.8").read_text()
    for command in command_tree(build_parser()).walk()[1:]:
        title = " ".join(["loadstone", *command.path]).replace("-", "\\-")
        assert f'.SS "{title}"' in page, title
        for option in command.options:
            if option.flags == ["-h", "--help"]:
                continue  # every command has it: not repeated in the page
            assert option.flags[-1].replace("-", "\\-") in page
    assert "LOADSTONE_CONFIG" in page and ".SH EXIT STATUS" in page


def test_loadstone_yaml_5_has_every_key() -> None:
    page = (MAN / "loadstone.yaml.5").read_text()
    schema = config_schema()
    for name, definition in schema["$defs"].items():
        for key in definition.get("properties", {}):
            assert f"\\fB{key.replace('-', chr(92) + '-')}\\fR" in page, (name, key)
    for section in ("global.admin", "listeners.NAME", "listeners.NAME.servers[]"):
        assert f'.SS "{section}"' in page, section
