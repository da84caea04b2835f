"""Running targets: once over given inputs, under atheris, or under Hypothesis.

atheris (libFuzzer) is coverage-guided and needs its own process per target
(libFuzzer owns the process and exits when done), so `run_atheris` starts
`python -m fuzz.atheris_main` and reads libFuzzer's own summary ("Done N runs
in S second(s)"). New inputs go to a scratch directory, so the checked-in
corpus changes only when someone copies a reproducer there on purpose.
Hypothesis is the fallback where atheris cannot be installed: it draws from
the seeds and random bytes for the same time, in this process.
"""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

from fuzz.registry import CRASHES, TARGETS, seeds


@dataclass
class Run:
    target: str
    engine: str
    executions: int
    seconds: float
    crash: Path | None = None  # the input that failed, saved

    def line(self) -> str:
        rate = self.executions / self.seconds if self.seconds else 0.0
        verdict = f"CRASH {self.crash}" if self.crash else "ok"
        return (
            f"{self.target:16} {self.engine:10} {self.executions:>10} execs "
            f"{self.seconds:7.1f} s {rate:9.0f}/s  {verdict}"
        )


def have_atheris() -> bool:
    return importlib.util.find_spec("atheris") is not None


def replay(name: str, inputs: list[bytes]) -> None:
    """Run a target over inputs; the first failure propagates."""
    target = TARGETS[name]
    for data in inputs:
        target(data)


def save_crash(name: str, data: bytes) -> Path:
    CRASHES.mkdir(exist_ok=True)
    path = CRASHES / f"{name}-{abs(hash(data)) & 0xFFFFFFFF:08x}"
    path.write_bytes(data)
    return path


_DONE = re.compile(rb"Done (\d+) runs in (\d+) second")


def run_atheris(name: str, seconds: float, max_len: int) -> Run:
    CRASHES.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f"fuzz-{name}-") as scratch:
        seed_dir = Path(__file__).parent / "corpus" / name
        command = [
            sys.executable,
            "-m",
            "fuzz.atheris_main",
            name,
            scratch,
            str(seed_dir),
            f"-max_total_time={int(seconds)}",
            f"-max_len={max_len}",
            f"-artifact_prefix={CRASHES}/{name}-",
            "-print_final_stats=1",
        ]
        started = time.monotonic()
        result = subprocess.run(command, capture_output=True, cwd=Path(__file__).parent.parent)
        elapsed = time.monotonic() - started
    found = _DONE.search(result.stderr)
    runs = int(found[1]) if found else 0
    crash = None
    if result.returncode != 0:
        sys.stderr.write(result.stderr.decode(errors="replace")[-4000:])
        made = sorted(CRASHES.glob(f"{name}-*"), key=lambda p: p.stat().st_mtime)
        crash = made[-1] if made else CRASHES
        stats = re.search(rb"stat::number_of_executed_units: (\d+)", result.stderr)
        runs = int(stats[1]) if stats else runs
    return Run(name, "atheris", runs, elapsed, crash)


def run_hypothesis(name: str, seconds: float, max_len: int) -> Run:
    """Seeds spliced with random bytes, drawn by Hypothesis in batches until
    the time is up (a batch that fails is shrunk to a small input)."""
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    target = TARGETS[name]
    corpus = seeds(name) or [b""]
    count = 0
    last = b""

    @settings(
        max_examples=200, deadline=None, database=None, suppress_health_check=list(HealthCheck)
    )
    @given(st.sampled_from(corpus), st.binary(max_size=max_len), st.integers(0, max_len))
    def batch(seed: bytes, noise: bytes, at: int) -> None:
        nonlocal count, last
        count += 1
        at = min(at, len(seed))
        last = (seed[:at] + noise + seed[at + len(noise) // 2 :])[:max_len]
        target(last)

    started = time.monotonic()
    crash = None
    while time.monotonic() - started < seconds:
        try:
            batch()
        except Exception:
            traceback.print_exc()
            crash = save_crash(name, last)  # the shrunk input: Hypothesis replays it last
            break
    return Run(name, "hypothesis", count, time.monotonic() - started, crash)
