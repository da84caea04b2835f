"""A short run of the network fuzzer (fuzz/net.py) on each path: mutated HTTP/1.1
streams and TLS ClientHellos from 16 connections at once. The process survives,
the canary requests on both listeners are served throughout, and the
descriptors come back to their baseline. scripts/sanitize-tests runs the native
half under ASan+UBSan; long runs are recorded in benchmarks/README.md."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from fuzz.net import run

pytestmark = [pytest.mark.integration]

# NET_FUZZ_SECONDS: a longer run, e.g. under scripts/sanitize-tests
SECONDS = float(os.environ.get("NET_FUZZ_SECONDS", "5"))


@pytest.mark.timeout(SECONDS + 120)  # a long run (NET_FUZZ_SECONDS) outlives the default
@pytest.mark.parametrize("path", ["native", "pure"])
def test_mutated_streams_end_only_their_own_connection(path: str, tmp_path: Path) -> None:
    report = run(path, SECONDS, seed=17, workdir=tmp_path)
    assert report.ok, report
    assert report.alive
    assert report.executions["http"] > 100 and report.executions["tls"] > 10, report
    assert report.canaries >= 4 and not report.canary_failures
    assert report.fds_end <= report.fds_baseline
    assert report.data_paths["web"] == path
