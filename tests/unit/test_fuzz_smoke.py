"""A short run of every fuzz target (fuzz/): its seeds, then about a second of
Hypothesis-drawn inputs. The long runs are `python -m fuzz run`."""

from __future__ import annotations

import pytest

from fuzz.engines import replay, run_hypothesis
from fuzz.registry import TARGETS, seeds


@pytest.mark.parametrize("name", sorted(TARGETS))
def test_seeds_replay(name: str) -> None:
    assert seeds(name), f"fuzz/corpus/{name}/ has no seed"
    replay(name, seeds(name))


@pytest.mark.parametrize("name", sorted(TARGETS))
def test_short_fuzz_run(name: str) -> None:
    run = run_hypothesis(name, seconds=1.0, max_len=1024)
    assert run.crash is None, f"{name} failed on an input saved in {run.crash}"
    assert run.executions > 0
