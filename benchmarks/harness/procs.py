"""Child processes we start and stop by pid, and their CPU/RSS as seen in /proc."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from collections.abc import Sequence
from pathlib import Path

_CLK_TCK = os.sysconf("SC_CLK_TCK")


class ProcessDied(RuntimeError):
    """A managed process exited while it was expected to keep running."""


class ManagedProcess:
    """A long-running child (nginx, haproxy, loadstone) with its output in a log file.

    Each child gets its own session so that a Ctrl-C on the benchmark reaches only
    the benchmark, which then stops its children in order instead of all of them
    racing to exit.
    """

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        log_path: Path,
        *,
        cwd: Path | None = None,
        env: dict[str, str] | None = None,
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.log_path = log_path
        self._log = log_path.open("ab")
        try:
            self._popen = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=self._log,
                stderr=subprocess.STDOUT,
                cwd=cwd,
                env=env,
                start_new_session=True,
            )
        except BaseException:
            self._log.close()
            raise

    @property
    def pid(self) -> int:
        return self._popen.pid

    def check_alive(self) -> None:
        """Raise ProcessDied (with the tail of its log) if the process has exited."""
        code = self._popen.poll()
        if code is not None:
            raise ProcessDied(
                f"{self.name} (pid {self.pid}) exited with status {code}; "
                f"last log lines:\n{self.log_tail()}"
            )

    def log_tail(self, lines: int = 20) -> str:
        if not self._log.closed:
            self._log.flush()
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:]) or "(empty log)"

    def stop(self, timeout: float = 15.0) -> int | None:
        """SIGTERM, then SIGKILL after `timeout` seconds; return the exit status."""
        try:
            if self._popen.poll() is None:
                self._popen.send_signal(signal.SIGTERM)
                try:
                    self._popen.wait(timeout)
                except subprocess.TimeoutExpired:
                    self._popen.kill()
                    self._popen.wait()
            return self._popen.returncode
        finally:
            self._log.close()


def _read_stat(pid: int) -> list[str] | None:
    """Fields of /proc/PID/stat after the command name, or None if the process is gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    # The command name is in parentheses and may itself contain spaces and ')'.
    return raw[raw.rindex(")") + 2 :].split()


def process_tree(pid: int) -> list[int]:
    """`pid` and all its live descendants.

    A proxy may run its workers as child processes; their CPU time would only reach
    the parent's counters once they are reaped, so the whole tree is summed instead.
    """
    children: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        fields = _read_stat(int(entry.name))
        if fields is not None:
            # After the name: state (index 0), ppid (index 1).
            children.setdefault(int(fields[1]), []).append(int(entry.name))
    tree, todo = [], [pid]
    while todo:
        current = todo.pop()
        tree.append(current)
        todo.extend(children.get(current, ()))
    return tree


def cpu_seconds(*roots: int) -> float:
    """User + system CPU seconds used so far by the process trees at `roots`.

    From proc(5) utime and stime, which cover all threads of a process.
    """
    user, system = _cpu_ticks(*roots)
    return (user + system) / _CLK_TCK


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of the one process `pid` (not its descendants).

    Raises ProcessDied when it is gone: a figure per process (a backend worker's)
    must not quietly turn into another process's or nothing.
    """
    fields = _read_stat(pid)
    if fields is None:
        raise ProcessDied(f"process {pid} is gone")
    return sum(_ticks(fields)) / _CLK_TCK


def children(pid: int) -> list[int]:
    """The live direct children of `pid`, in pid order."""
    return sorted(member for member in process_tree(pid) if _parent(member) == pid)


def _parent(pid: int) -> int | None:
    fields = _read_stat(pid)
    return int(fields[1]) if fields is not None else None


def user_system_seconds(*roots: int) -> tuple[float, float]:
    """(user, system) CPU seconds used so far by the process trees at `roots`.

    Their sum is cpu_seconds(). The split is sampled: with tick accounting (this
    machine's kernel: CONFIG_TICK_CPU_ACCOUNTING at 250 Hz, no
    IRQ_TIME_ACCOUNTING) each tick is charged to user or system by where the CPU
    was at that moment, and the kernel scales the two so that they add up to the
    exact run time. So a split needs seconds of run (hundreds of ticks) to mean
    anything, and softirq work done in a process's context (the network stack's
    receive path on loopback) counts as that process's system time.
    """
    user, system = _cpu_ticks(*roots)
    return user / _CLK_TCK, system / _CLK_TCK


def _cpu_ticks(*roots: int) -> tuple[int, int]:
    """(utime, stime) clock ticks summed over the process trees at `roots`."""
    members = {member for root in roots for member in process_tree(root)}
    user = system = 0
    for member in members:
        fields = _read_stat(member)
        if fields is not None:
            member_user, member_system = _ticks(fields)
            user += member_user
            system += member_system
    return user, system


def _ticks(fields: list[str]) -> tuple[int, int]:
    """(utime, stime) of one process's stat fields (after the command name)."""
    # utime and stime are fields 14 and 15 of the full line, 12 and 13 here.
    return int(fields[11]), int(fields[12])


def thread_cpu_seconds(*roots: int) -> dict[str, float]:
    """User + system CPU seconds of the process trees at `roots`, by thread name.

    Threads of one name (a proxy's workers, each in its own process) are summed:
    where a proxy's time goes (loadstone's ls-worker-N against its control thread)
    stays readable on a loaded machine, unlike a profile's share.
    """
    by_name: dict[str, float] = {}
    for member in {member for root in roots for member in process_tree(root)}:
        with contextlib.suppress(FileNotFoundError, ProcessLookupError, NotADirectoryError):
            for task in os.scandir(f"/proc/{member}/task"):
                try:
                    name = Path(task.path, "comm").read_text().strip()
                    raw = Path(task.path, "stat").read_text()
                except (FileNotFoundError, ProcessLookupError):
                    continue
                fields = raw[raw.rindex(")") + 2 :].split()
                ticks = int(fields[11]) + int(fields[12])
                by_name[name] = by_name.get(name, 0.0) + ticks / _CLK_TCK
    return by_name


def rss_bytes(pid: int) -> int:
    """Sum of VmRSS over the tree rooted at `pid`.

    Pages shared between a parent and forked workers are counted once per process,
    so for multi-process proxies this is an upper bound.
    """
    total = 0
    for member in process_tree(pid):
        with contextlib.suppress(FileNotFoundError, ProcessLookupError):
            for line in Path(f"/proc/{member}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024  # reported in kB
                    break
    return total


def host_cpu_seconds() -> tuple[float, float]:
    """(busy, total) CPU seconds of all CPUs since boot, from the first line of /proc/stat.

    Across a run, busy minus what the benchmark's own processes used is the load
    other programs put on the machine meanwhile; on a shared 2-core machine that is
    the main source of noise, so it is measured rather than assumed away.
    """
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = values[3] + values[4]  # idle + iowait
    # guest and guest_nice (9, 10) are already included in user and nice.
    total = sum(values[:8])
    return (total - idle) / _CLK_TCK, total / _CLK_TCK
