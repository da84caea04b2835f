"""Every deployer configuration of the corpus imports into a configuration loadstone accepts,
with the report recorded in expected/ (see corpus/SOURCES.md)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from loadstone.config import parse_config
from loadstone.importers.haproxy import import_haproxy

CORPUS = Path(__file__).parent / "corpus"
EXPECTED = CORPUS / "expected"

# Each entry: the arguments as the deployer runs HAProxy (files, then directories).
CASES = {
    "kolla-ansible": ["kolla-ansible/haproxy.cfg", "kolla-ansible/services.d"],
    "kolla-ansible-single-frontend": [
        "kolla-ansible-single-frontend/haproxy.cfg",
        "kolla-ansible-single-frontend/services.d",
    ],
    "openstack-ansible": ["openstack-ansible/haproxy.cfg"],
    "charm-helpers": ["charm-helpers/haproxy.cfg"],
    "puppet-tripleo": ["puppet-tripleo/haproxy.cfg"],
    "ha-guide": ["ha-guide/haproxy.cfg"],
}


@pytest.mark.parametrize("galera_check", ["http", "native"])
@pytest.mark.parametrize("case", sorted(CASES))
def test_corpus_imports_and_passes_loadstone_check(
    case: str, galera_check: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(CORPUS)  # report lines name files relative to the corpus
    result = import_haproxy(CASES[case], galera_check, env={})  # type: ignore[arg-type]
    config = parse_config(result.yaml)
    assert config.listeners
    report = "".join(f"{line}\n" for line in result.report)
    expected = (EXPECTED / f"{case}.{galera_check}.report").read_text()
    assert report == expected


def test_every_corpus_directory_is_tested() -> None:
    dirs = {p.name for p in CORPUS.iterdir() if p.is_dir() and p.name != "expected"}
    assert dirs == set(CASES)


def test_cli_import_then_check(tmp_path: Path) -> None:
    out = tmp_path / "loadstone.yaml"
    args = [str(CORPUS / p) for p in CASES["kolla-ansible"]]
    loadstone = [sys.executable, "-m", "loadstone"]
    imported = subprocess.run(
        [*loadstone, "import", "haproxy", *args, "-o", str(out), "--galera-check", "native"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert imported.returncode == 0, imported.stderr
    assert "services.d/mariadb.cfg:17: backend mariadb_external_lb_back: single-writer" in (
        imported.stderr
    )
    checked = subprocess.run(
        [*loadstone, "check", str(out)], capture_output=True, text=True, check=False
    )
    assert checked.returncode == 0, checked.stderr
    # Every directive of kolla's files is translated now, or has no effect.
    kolla_strict = subprocess.run(
        [*loadstone, "import", "haproxy", *args, "--strict"], capture_output=True, check=False
    )
    assert kolla_strict.returncode == 0, kolla_strict.stderr
    # openstack-ansible: ssl-default-server-*, option httpclose... are not translated.
    args = [str(CORPUS / p) for p in CASES["openstack-ansible"]]
    strict = subprocess.run(
        [*loadstone, "import", "haproxy", *args, "--strict"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert strict.returncode == 2
    assert strict.stdout == ""
    assert "--strict:" in strict.stderr.splitlines()[-1]
