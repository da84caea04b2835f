"""The kernel behaviour behind the native engine's batched sends (src/_fastpath/
includes/uring.h), checked by a small C program built against that header: a
batch completes inside one call, a send to a full socket comes back at once with
EAGAIN instead of holding the worker until the peer reads, and what was sent
arrives in order."""

from __future__ import annotations

import ctypes
import os
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
INCLUDES = REPO / "src" / "_fastpath" / "includes"
PROGRAM = REPO / "tests" / "native" / "uring_send.c"
CLOSE_PROGRAM = REPO / "tests" / "native" / "uring_close.c"
# io_uring_setup's number, the same in the x86_64 and the generic (arm64) tables
IO_URING_SETUP = 425


def io_uring_allowed() -> bool:
    """Whether this process may set up an io_uring: tried, since a kernel switch
    (kernel.io_uring_disabled) or a seccomp filter (containers) can refuse it."""
    libc = ctypes.CDLL(None, use_errno=True)
    params = ctypes.create_string_buffer(120)  # struct io_uring_params, zeroed
    fd = libc.syscall(IO_URING_SETUP, 4, params)
    if fd < 0:
        return False
    os.close(fd)
    return True


def build(program: Path, tmp_path: Path) -> Path:
    """Compile one of tests/native's programs against the engine's uring.h."""
    compiler = shutil.which("cc") or shutil.which("gcc")
    assert compiler, "a C compiler builds the native extension; the suite installs one"
    binary = tmp_path / program.stem
    subprocess.run(
        [compiler, "-O2", "-Wall", "-Werror", f"-I{INCLUDES}", "-o", binary, program], check=True
    )
    return binary


def test_batched_sends_never_wait_for_a_full_socket(tmp_path: Path) -> None:
    binary = build(PROGRAM, tmp_path)
    try:
        # A send that waited for room would hang here: nobody ever reads that socket.
        done = subprocess.run([binary], capture_output=True, text=True, timeout=10)
    except subprocess.TimeoutExpired:
        pytest.fail("a batched send to a full socket waited for room")
    if not io_uring_allowed():
        assert done.returncode == 3, done.stdout  # the engine sends one by one here
        return
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.splitlines() == [
        "lost 0",
        "fits 6 5",
        "full EAGAIN",
        "prompt yes",
        "received 11 hello world",
    ]


def test_batched_closes_are_done_inline_after_the_sends(tmp_path: Path) -> None:
    """A close on the ring (engine/closing.c) ends the descriptor inside the run,
    with no io-wq thread, after the bytes sent before it in the same batch."""
    done = subprocess.run(
        [build(CLOSE_PROGRAM, tmp_path)], capture_output=True, text=True, timeout=10
    )
    expected = 0 if io_uring_allowed() else 3  # 3: the engine closes with close() there
    assert done.returncode == expected, done.stdout + done.stderr
    assert expected or done.stdout.splitlines() == [
        "taken back yes",
        "lost 0",
        "results 10 0 unissued",
        "closed yes",
        "kept yes",
        "threads 0",
        "received 10 last words then 0",
    ]
