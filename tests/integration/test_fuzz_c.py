"""The C engine's libFuzzer harness (fuzz/c/, scripts/fuzz-c) over its inputs.

Every input that made the harness crash is kept in fuzz/c/reproducers/ under a
name that says the defect; this replays them, and the seed corpus, through the
harness built from the current engine (with ASan and UBSan), so each defect
stays fixed. The bounded fuzzing run itself is a step of scripts/test.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
REPRODUCERS = sorted((ROOT / "fuzz" / "c" / "reproducers").iterdir())
SEEDS = sorted((ROOT / "fuzz" / "c" / "corpus").iterdir())

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(900)]


def _replay(files: list[Path], target: str = "http_engine") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(ROOT / "scripts" / "fuzz-c"), "--target", target, "--replay", *map(str, files)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )


def test_reproducers_and_seeds_run_clean_through_the_engine() -> None:
    # close-head-leading-empty-lines: a response with empty lines before its
    # status line, relayed to a client whose connection closes after it:
    # close_head (http_io.c) took the first empty line for the end of the head
    # and wrote "Connection: close" before the status line.
    # status-020-taken-for-interim: a response with status 020 passed for an
    # interim one (below 200), so the next response went on as part of its
    # head; a status outside 100-599 is now a bad response (http_parse.c).
    assert [f.name for f in REPRODUCERS] == [
        "close-head-leading-empty-lines",
        "status-020-taken-for-interim",
    ]
    done = _replay([*REPRODUCERS, *SEEDS])
    assert done.returncode == 0, done.stderr[-4000:]
    assert f"Executed {SEEDS[-1]} in" in done.stderr


def test_the_clienthello_corpus_runs_clean_through_the_engines_reader() -> None:
    # fuzz/c/clienthello_fuzz.c: the reader of SNI passthrough, whole and split
    # reads agreeing, over the Python twin's corpus
    seeds = sorted((ROOT / "fuzz" / "corpus" / "client_hello").iterdir())
    done = _replay(seeds, "clienthello")
    assert done.returncode == 0, done.stderr[-4000:]
    assert f"Executed {seeds[-1]} in" in done.stderr
