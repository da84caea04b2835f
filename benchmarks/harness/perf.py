"""Where a proxy's time goes: `perf record -g` of its process while a scenario
runs, and a plain-text summary by library and by function beside the profile.

    with recorded(proxy.pid, Path("perf"), "handshake-ecdsa-haproxy"):
        ...  # the load
    # perf/handshake-ecdsa-haproxy.data (perf report -i ...) and .txt

`directory` None records nothing, so a benchmark can pass its option through.
The summary counts samples where they were taken (--no-children): the shares
of libcrypto, libssl, the kernel, the proxy's own code and, for loadstone, the
Python interpreter, then the functions above `FUNCTION_SHARE` percent.
"""

from __future__ import annotations

import contextlib
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

SAMPLE_HZ = 999  # odd: no lockstep with the proxies' timers
LIBRARY_SHARE = 0.5  # percent: libraries below it are left out of the summary
FUNCTION_SHARE = 0.8  # percent: functions below it are left out


@contextlib.contextmanager
def recorded(pid: int, directory: Path | None, name: str) -> Iterator[None]:
    """perf record -g of process `pid` (all its threads) while the block runs."""
    if directory is None:
        yield
        return
    data = directory / f"{name}.data"
    argv = ["perf", "record", "-g", "-F", str(SAMPLE_HZ), "-p", str(pid), "-o", str(data)]
    recorder = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        yield
    finally:
        recorder.send_signal(signal.SIGINT)  # perf writes its file and exits
        try:
            _, err = recorder.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            recorder.kill()
            _, err = recorder.communicate()
    if recorder.returncode not in (0, -signal.SIGINT) or not data.exists():
        text = err.decode(errors="replace").strip()
        (directory / f"{name}.txt").write_text(f"perf record failed: {text}\n")
        return
    (directory / f"{name}.txt").write_text(summary(data))


def summary(data: Path) -> str:
    """The profile's samples by library (dso), then by library and function."""
    parts = []
    for sort, limit in (("dso", LIBRARY_SHARE), ("dso,sym", FUNCTION_SHARE)):
        argv = ["perf", "report", "-i", str(data), "--stdio", "--no-children", "-g", "none",
                "--sort", sort, "--percent-limit", str(limit)]  # fmt: skip
        done = subprocess.run(argv, capture_output=True, text=True, timeout=300, check=False)
        lines = [line for line in done.stdout.splitlines() if line.strip()]
        parts.append("\n".join(lines) if done.returncode == 0 else done.stderr.strip())
    return "\n\n".join(parts) + "\n"
