"""A CPU cap for a process tree: a private cgroup with a CFS bandwidth quota.

compare.py --backend-cpus makes the backends the bottleneck, as the OpenStack APIs
(uwsgi, mod_wsgi) behind a proxy usually are, by putting the nginx backends'
processes into a cgroup of their own whose processes together may use FRACTION of
one CPU. Every proxy should then reach the same backend-limited rate; what tells
them apart is whether a proxy wastes some of the backend's capacity (spreading
connections badly over its workers, or making each request cost the backend more)
and the latency it adds.

compare.py --backend-cpus-per-worker caps each backend worker process on its own
instead (one cgroup per worker, `cap_each`): a uwsgi or mod_wsgi worker is one
process and can use one core at most, so each worker is its own bottleneck, and a
proxy that piles its server connections onto one of them leaves the others' capacity
unused - which one shared cap cannot show.

cgroup v2 (`cpu.max`) is used when /sys/fs/cgroup/cgroup.controllers lists cpu,
else cgroup v1's cpu controller at /sys/fs/cgroup/cpu (`cpu.cfs_quota_us` and
`cpu.cfs_period_us`). Both need root (or a delegated subtree).
"""

from __future__ import annotations

import contextlib
import errno
import os
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

from benchmarks.harness.procs import process_tree

CGROUP_ROOT = Path("/sys/fs/cgroup")
# A short period: the quota is handed out per period, and a group that spends it
# early (two busy workers burn a 0.5-CPU quota in a quarter of the period) waits,
# every process of it, until the next period begins. With the kernel's default
# 100 ms that is a 75 ms stall, which would be every proxy's p99; with 10 ms the
# stalls are short and many, so the cap throttles smoothly, at the price of more
# frequent bandwidth-timer work.
PERIOD_US = 10_000
# The kernel refuses a quota below 1 ms (cfs_quota_us and cpu.max alike).
MIN_QUOTA_US = 1_000
# How long moving processes out before removal may take (they are moved at once;
# the wait only covers a process that forks while it is being moved).
SETTLE_TIMEOUT = 5.0


class CgroupUnavailable(RuntimeError):
    """Neither cgroup v2 with the cpu controller nor cgroup v1's cpu hierarchy is usable."""


def period_and_quota(fraction: float) -> tuple[int, int]:
    """(period, quota) in microseconds for `fraction` of one CPU.

    The period is PERIOD_US unless the quota would fall below the kernel's 1 ms
    minimum; then the period grows (a cap of 0.05 CPU: 1 ms every 20 ms).
    """
    if not fraction > 0:
        raise ValueError(f"a CPU cap must be positive, not {fraction}")
    period = max(PERIOD_US, round(MIN_QUOTA_US / fraction))
    return period, max(MIN_QUOTA_US, round(fraction * period))


def _own_cgroup(controller: str | None) -> str:
    """This process's cgroup in the v1 hierarchy of `controller` (None: in cgroup v2).

    /proc/self/cgroup has lines `ID:CONTROLLERS:PATH`; v2's line is `0::PATH`.
    """
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        names = controllers.split(",")
        if (names == [""]) if controller is None else (controller in names):
            return path
    return "/"


def _hierarchy() -> tuple[str, Path]:
    """('v2' or 'v1', the directory new cgroups are made in)."""
    controllers = CGROUP_ROOT / "cgroup.controllers"
    if controllers.exists() and "cpu" in controllers.read_text().split():
        parent = CGROUP_ROOT / _own_cgroup(None).lstrip("/")
        # v2 allows processes only in leaves; a child of this process's own cgroup
        # is made, which needs the cpu controller enabled for the parent's children.
        subtree = parent / "cgroup.subtree_control"
        if "cpu" not in subtree.read_text().split():
            try:
                subtree.write_text("+cpu")
            except OSError as exc:
                raise CgroupUnavailable(
                    f"cgroup v2: cannot enable the cpu controller in {subtree} ({exc}); "
                    "run as root in a cgroup whose parent delegates cpu"
                ) from exc
        return "v2", parent
    v1 = CGROUP_ROOT / "cpu"
    if (v1 / "cpu.cfs_quota_us").exists():
        return "v1", v1 / _own_cgroup("cpu").lstrip("/")
    raise CgroupUnavailable(
        f"no usable cpu controller: {controllers} does not list cpu (cgroup v2) and "
        f"{v1}/cpu.cfs_quota_us does not exist (cgroup v1)"
    )


class CpuCap:
    """A new cgroup limited to `fraction` of one CPU, removed on exit.

        with CpuCap(0.5, "backends") as cap:
            cap.add_tree(nginx_master_pid)

    Processes added (with all their descendants, and whatever they fork later) share
    the cap. On exit they are moved back to the cgroup this process is in and the
    cgroup is removed, also when the block raised; the processes keep running.
    """

    def __init__(self, fraction: float, label: str) -> None:
        self.fraction = fraction
        self.period_us, self.quota_us = period_and_quota(fraction)
        self.version, self.parent = _hierarchy()
        # The pid makes the name unique between concurrent benchmarks.
        self.path = self.parent / f"loadstone-bench-{label}-{os.getpid()}"
        try:
            self.path.mkdir()
        except OSError as exc:
            raise CgroupUnavailable(f"cannot create {self.path}: {exc}") from exc
        try:
            if self.version == "v2":
                (self.path / "cpu.max").write_text(f"{self.quota_us} {self.period_us}")
            else:
                # Period first: the quota is checked against the period in force.
                (self.path / "cpu.cfs_period_us").write_text(str(self.period_us))
                (self.path / "cpu.cfs_quota_us").write_text(str(self.quota_us))
        except BaseException:
            self.path.rmdir()
            raise

    def describe(self) -> str:
        return f"{self.fraction:g} CPU (cgroup {self.version} {self.path}, {self.quota()})"

    def quota(self) -> str:
        return f"{self.quota_us} us every {self.period_us} us"

    def members(self) -> set[int]:
        """Pids in the cgroup (an empty set once it is removed)."""
        try:
            text = (self.path / "cgroup.procs").read_text()
        except FileNotFoundError:
            return set()
        return {int(pid) for pid in text.split()}

    def add_tree(self, *roots: int) -> None:
        """Move the process trees at `roots` into the cgroup.

        A process forked while its parent is being moved may land in the old cgroup;
        the trees are listed again until every live member is inside.
        """
        deadline = time.monotonic() + SETTLE_TIMEOUT
        while True:
            missing = {pid for root in roots for pid in process_tree(root)} - self.members()
            if not missing:
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"processes {sorted(missing)} do not stay in {self.path}")
            for pid in missing:
                self._move(pid, self.path)

    def remove(self) -> None:
        """Move every member back to the parent cgroup and remove the cgroup."""
        # On v2 the parent holds processes (this one) and delegates cpu to its
        # children, which the kernel allows only for the root cgroup (elsewhere
        # _hierarchy's "+cpu" fails, a CgroupUnavailable): so moving back into it
        # is allowed too.
        if not self.path.exists():
            return
        deadline = time.monotonic() + SETTLE_TIMEOUT
        while members := self.members():
            if time.monotonic() > deadline:
                raise RuntimeError(f"processes {sorted(members)} do not leave {self.path}")
            for pid in members:
                self._move(pid, self.parent)
        self.path.rmdir()

    @staticmethod
    def _move(pid: int, cgroup: Path) -> None:
        # Writing a pid to cgroup.procs moves the whole process (all its threads).
        # A process that exited meanwhile is no longer anyone's concern.
        try:
            (cgroup / "cgroup.procs").write_text(str(pid))
        except ProcessLookupError:
            pass
        except OSError as exc:
            if exc.errno != errno.ESRCH:
                raise

    def __enter__(self) -> CpuCap:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        # A failure to clean up must not hide the error that ended the block.
        if exc is None:
            self.remove()
        else:
            with contextlib.suppress(OSError, RuntimeError):
                self.remove()


def cap_each(
    stack: contextlib.ExitStack, fraction: float, pids: Sequence[int], label: str
) -> list[CpuCap]:
    """Each process of `pids` (with its descendants) in a cgroup of its own, capped at
    `fraction` of one CPU; the cgroups are entered on `stack`, so every one made so
    far is removed when the stack unwinds, also when making a later one failed.

    Names are unique: `label`, the capped pid and this process's pid.
    """
    caps = []
    for pid in pids:
        cap = stack.enter_context(CpuCap(fraction, f"{label}-{pid}"))
        cap.add_tree(pid)
        caps.append(cap)
    return caps


def describe_each(caps: Sequence[CpuCap]) -> str:
    """What `cap_each` made, for a benchmark's provenance line."""
    first = caps[0]
    names = ", ".join(cap.path.name for cap in caps)
    return (
        f"each of the {len(caps)} workers capped on its own at {first.fraction:g} CPU "
        f"(cgroup {first.version} in {first.parent}, {first.quota()}: {names})"
    )
