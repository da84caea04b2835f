"""Self-description: `loadstone version -v`, the shell completions asked by
bash and zsh themselves, and the likely-mistake warnings of `loadstone check`."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.integration.harness import LOADSTONE, ROOT

pytestmark = pytest.mark.integration

COMPLETION = ROOT / "share" / "completion"


def loadstone(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(LOADSTONE), *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **(env or {})},
    )


def test_version_verbose_describes_build_and_kernel() -> None:
    plain = loadstone("version")
    assert plain.returncode == 0 and plain.stdout.startswith("loadstone ")
    result = loadstone("version", "-v", "--json")
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    assert doc["data path"] == "native" and doc["build"] == "release"
    assert doc["llhttp"].count(".") == 2 and doc["OpenSSL"][0].isdigit()
    assert doc["kernel"].startswith("Linux ")
    for feature in ("io_uring", "splice", "SO_REUSEPORT", "TCP_USER_TIMEOUT", "IP_FREEBIND"):
        assert doc[feature] == "yes" or doc[feature].startswith("no ("), (feature, doc[feature])
    assert doc["splice"] == "yes" and doc["SO_REUSEPORT"] == "yes"  # any Linux this runs on
    text = loadstone("version", "-v").stdout
    assert "data path:" in text and "TCP_USER_TIMEOUT:" in text

    pure = json.loads(
        loadstone("version", "-v", "--json", env={"LOADSTONE_NO_EXTENSIONS": "1"}).stdout
    )
    assert pure["data path"] == "pure" and pure["llhttp"] == "none"
    assert pure["io_uring"].startswith("n/a")


def bash_complete(*words: str) -> list[str]:
    script = (
        f"source {COMPLETION / 'loadstone.bash'}; "
        'COMP_WORDS=("$@"); COMP_CWORD=$(($#-1)); _loadstone; printf "%s\\n" "${COMPREPLY[@]}"'
    )
    result = subprocess.run(["bash", "-c", script, "_", *words], capture_output=True, text=True)
    assert result.returncode == 0 and not result.stderr, result.stderr
    return result.stdout.split()


def zsh_complete(*words: str) -> list[str]:
    # compadd and _files stand in for zsh's completion system: they print what
    # the function offers (zsh filters by the prefix itself)
    script = (
        'compadd() { shift; print -rl -- "$@"; }; _files() { print -r -- "<files>"; }; '
        f'words=("$@"); CURRENT=$#; source {COMPLETION / "_loadstone"}'
    )
    result = subprocess.run(["zsh", "-fc", script, "_", *words], capture_output=True, text=True)
    assert result.returncode == 0 and not result.stderr, result.stderr
    return result.stdout.split()


def test_bash_completion(tmp_path: Path) -> None:
    assert "ctl" in bash_complete("loadstone", "")
    assert bash_complete("loadstone", "ctl", "dr") == ["drain", "drain-node"]
    assert bash_complete("loadstone", "run", "--log-format", "") == ["text", "json"]
    # an option's value is skipped when finding the command: -c FILE, then drain-node
    assert bash_complete("loadstone", "ctl", "-c", "x.yaml", "drain-node", "--") == [
        "--help",
        "--wait",
        "--timeout",
    ]
    (tmp_path / "site.yaml").write_text("")
    assert bash_complete("loadstone", "check", str(tmp_path / "si")) == [
        str(tmp_path / "site.yaml")
    ]


@pytest.mark.skipif(shutil.which("zsh") is None, reason="zsh (Debian package zsh) is not installed")
def test_zsh_completion() -> None:
    assert "drain-node" in zsh_complete("loadstone", "ctl", "dr")
    assert zsh_complete("loadstone", "import", "haproxy", "--galera-check", "") == [
        "native",
        "http",
    ]
    assert zsh_complete("loadstone", "check", "") == ["<files>"]
    assert "--watch" in zsh_complete("loadstone", "ctl", "status", "-")


def test_check_warns_about_likely_mistakes_and_exits_0(tmp_path: Path) -> None:
    path = tmp_path / "mistakes.yaml"
    path.write_text(
        """
defaults:
  timeouts: {connect: 5000, tunnel: 3600}
listeners:
  web:
    bind: ["127.0.0.1:18080"]
    mode: http
    timeouts: {client: 30s, server: 30000}
    check: {interval: 60s}
    servers:
      - {name: a, address: "127.0.0.1:19001"}
  db:
    bind: ["127.0.0.1:13306"]
    balance: active-backup
    servers:
      - {name: db1, address: "127.0.0.1:19002"}
"""
    )
    result = loadstone("check", str(path))
    assert result.returncode == 0, result.stderr
    assert result.stderr.splitlines() == [
        "warning: defaults.timeouts.connect: 5000 has no unit, so it is 5000 seconds "
        "(1h23m20s); write '5000ms' if milliseconds were meant",
        "warning: listeners.web.timeouts.server: 30000 has no unit, so it is 30000 seconds "
        "(8h20m); write '30000ms' if milliseconds were meant",
        "warning: listeners.web.check.interval: 1m is longer than timeouts.client (30s): "
        "clients time out before a dead server is noticed",
        "warning: listeners.db.servers: active-backup with a single server has nothing to "
        "fail over to; add the other servers, or use balance: first",
    ]
    # 3600 (an hour of tunnel) is round in seconds: no warning for it


def test_check_names_loadstone_equivalent_of_haproxy_keys(tmp_path: Path) -> None:
    path = tmp_path / "haproxy-words.yaml"
    path.write_text(
        """
listeners:
  web:
    bind: ["127.0.0.1:18080"]
    option: httpchk
    servers:
      - {name: a, address: "127.0.0.1:19001", inter: 2s}
"""
    )
    result = loadstone("check", str(path))
    assert result.returncode == 2  # unknown keys stay errors
    lines = result.stderr.splitlines()
    assert "listeners.web.option: unknown key" in lines
    assert (
        "hint: listeners.web.servers[0].inter: 'inter' is HAProxy's; in loadstone it is "
        "`check.interval` on the listener"
    ) in lines
    assert any(
        line.startswith("hint: listeners.web.option: 'option' is HAProxy's") for line in lines
    )


def test_shipped_examples_have_no_warnings() -> None:
    for config in ("openstack-controller.yaml", "demo.yaml"):
        result = loadstone("check", str(ROOT / "configs" / config))
        assert result.returncode == 0 and "warning" not in result.stderr, result.stderr
