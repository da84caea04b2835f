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


def test_batched_sends_never_wait_for_a_full_socket(tmp_path: Path) -> None:
    compiler = shutil.which("cc") or shutil.which("gcc")
    assert compiler, "a C compiler builds the native extension; the suite installs one"
    binary = tmp_path / "uring_send"
    subprocess.run(
        [compiler, "-O2", "-Wall", "-Werror", f"-I{INCLUDES}", "-o", binary, PROGRAM], check=True
    )
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
