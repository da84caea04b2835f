#!/usr/bin/env python3
"""Write the man pages and shell completions under share/ from loadstone's own
parser and configuration schema; `--check` exits 1 if a shipped file is stale
(tests/unit/test_selfdoc.py runs it, as test_config_schema does for the schema).

    share/man/loadstone.8             loadstone(8), from the argparse parser
    share/man/loadstone.yaml.5        loadstone.yaml(5), from the JSON Schema
    share/completion/loadstone.bash   /usr/share/bash-completion/completions/loadstone
    share/completion/_loadstone       /usr/share/zsh/vendor-completions/_loadstone
"""

from __future__ import annotations

import sys
from pathlib import Path

from loadstone.cli import build_parser
from loadstone.completion import bash_completion, zsh_completion
from loadstone.config.jsonschema import config_schema
from loadstone.manpages import loadstone_8, loadstone_yaml_5

ROOT = Path(__file__).resolve().parents[1]
SHARE = ROOT / "share"


def generated() -> dict[Path, str]:
    parser = build_parser()
    operations = (ROOT / "docs" / "operations.md").read_text()
    return {
        SHARE / "man" / "loadstone.8": loadstone_8(parser, operations),
        SHARE / "man" / "loadstone.yaml.5": loadstone_yaml_5(config_schema()),
        SHARE / "completion" / "loadstone.bash": bash_completion(parser),
        SHARE / "completion" / "_loadstone": zsh_completion(parser),
    }


def main(argv: list[str]) -> int:
    files = generated()
    if argv == ["--check"]:
        stale = [p for p, text in files.items() if not p.exists() or p.read_text() != text]
        for path in stale:
            print(f"{path.relative_to(ROOT)} is stale: run scripts/selfdoc.py", file=sys.stderr)
        return 1 if stale else 0
    for path, text in files.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
