"""Slow clients (issue 17, part 5), a smoke version of benchmarks/slow_clients.py:
a few hundred slowloris attackers (a header byte a second) and slow readers (a
byte a second of a 1 GiB download) against a real loadstone on each path. Each
attacker is cut at its timeout (`timeouts.http_request`; the idle timeouts),
loadstone's memory comes back, and a normal client on the same process is
served promptly meanwhile. The figures for thousands of attackers are in
benchmarks/README.md."""

from __future__ import annotations

from pathlib import Path

import pytest
from benchmarks.slow_clients import FILL, AttackResult, run_path

pytestmark = [pytest.mark.integration]

ATTACKERS = 200
HTTP_REQUEST = 1.0
IDLE = 2.0
SLACK = 4.0  # a loaded 2-core machine (six other sessions building and testing)


def attack(path: str, kind: str, tmp_path: Path, loop: str = "uvloop") -> AttackResult:
    (result,) = run_path(path, [kind], ATTACKERS, HTTP_REQUEST, IDLE, SLACK, 30, tmp_path, loop)
    assert result.not_cut == 0, result
    allowed = result.timeout_s + SLACK + (FILL if kind == "slowread" else 0.0)
    assert result.cut_max_s <= allowed, result
    return result


@pytest.mark.parametrize("path", ["native", "pure"])
def test_slowloris_is_cut_at_http_request(path: str, tmp_path: Path) -> None:
    r = attack(path, "slowloris", tmp_path)
    assert r.p99_attack_ms < 1000, r  # promptly, whatever the attackers hold
    assert r.rss_peak_mib - r.rss_before_mib < 32, r  # a few KiB each
    assert r.rss_after_mib - r.rss_before_mib < 32, r


def test_slow_readers_are_cut_at_the_idle_timeout_native(tmp_path: Path) -> None:
    r = attack("native", "slowread", tmp_path)
    assert r.p99_attack_ms < 1000, r
    assert r.rss_peak_mib - r.rss_before_mib < 64, r  # the workers' buffers only
    assert r.rss_after_mib - r.rss_before_mib < 32, r


@pytest.mark.parametrize("loop", ["uvloop", "asyncio"])
def test_slow_readers_are_cut_at_the_idle_timeout_pure(loop: str, tmp_path: Path) -> None:
    # Before the fix the pure path closed (flush first) instead of aborting: no
    # slow reader was ever cut and each kept its descriptors (`not_cut` above).
    r = attack("pure", "slowread", tmp_path, loop)
    assert r.rss_per_attacker_kib < 8 * 1024, r
    # Bounded by the configured buffers: the client transport's high-water mark
    # (256 KiB) and one read of its server (256 KiB). Before the writes of a
    # read were made within it, uvloop read up to 32 x 256 KiB of a server in
    # one pass before the client's transport could pause it: 4.6-5.4 MiB per
    # slow reader, and the normal client waited seconds (on asyncio too, 2.8 MiB).
    assert r.rss_per_attacker_kib < 1024, r
    assert r.p99_attack_ms < 1000, r
