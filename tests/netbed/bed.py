"""A multi-host test bed from network namespaces: hosts on one switch.

Every host is a namespace with one interface, eth0, whose other end is a port
of a bridge living in a namespace of its own (the switch). Nothing is created
in the namespace the tests run in: no bridge, no veth, no route, no address,
so the machine's own networking is never touched. Addresses come from
198.18.0.0/15 (RFC 2544, benchmarking) only, and only inside the namespaces.

The faults a cluster meets, none of which sends a reset to anyone:
- kill(proc): kill -9 of a process (its host's kernel still resets its
  connections, as a crashed daemon's would);
- cut_link(host): the switch port goes down, the host vanishes from the wire;
- partition(groups): the switch's ports move to one bridge per group, so hosts
  see each other only within their group, links staying up (a split network);
- heal(): every port back up and on one bridge.

Everything is removed on exit (close(), the context manager, or at interpreter
exit): processes by their pid, then the namespaces, which takes their
interfaces with them. A bed left by a test run that was killed -9 is swept by
the next one (sweep_stale()): the namespace names carry the creating pid.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

PREFIX = "lsbed"
SUBNET = "198.18.0"  # /24 inside the bed; the bed is alone on its switch
PREFIX_LEN = 24


class NetBedError(Exception):
    pass


def ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(["ip", *args], capture_output=True, text=True)
    if check and result.returncode != 0:
        raise NetBedError(f"ip {' '.join(args)}: {result.stderr.strip()}")
    return result


def netns_available() -> str | None:
    """None when namespaces can be made here, else why not."""
    name = f"{PREFIX}-probe-{os.getpid()}"
    result = ip("netns", "add", name, check=False)
    if result.returncode != 0:
        return result.stderr.strip() or "ip netns add failed"
    ip("netns", "del", name, check=False)
    return None


def _namespaces() -> list[str]:
    out = ip("netns", "list", check=False).stdout
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def sweep_stale() -> None:
    """Remove beds whose creating process is gone (a run killed -9)."""
    for name in _namespaces():
        parts = name.split("-")
        if len(parts) < 3 or parts[0] != PREFIX or not parts[1].isdigit():
            continue
        pid = int(parts[1])
        if pid != os.getpid() and not Path(f"/proc/{pid}").exists():
            ip("netns", "del", name, check=False)


@dataclass
class Host:
    name: str
    netns: str
    address: str  # on eth0
    port: str  # its switch port, in the switch namespace

    def exec_args(self, argv: Sequence[str]) -> list[str]:
        # `ip netns exec` execs the command: the Popen's pid is the command's own.
        return ["ip", "netns", "exec", self.netns, *argv]


class NetBed:
    """Hosts on a switch; bed.host("ctl1").address is its address."""

    def __init__(self, hosts: Iterable[str]) -> None:
        sweep_stale()
        self.tag = f"{PREFIX}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self.switch = f"{self.tag}-sw"
        self.hosts: dict[str, Host] = {}
        self.procs: list[subprocess.Popen[bytes]] = []
        self._bridges = {"br0"}
        self._closed = False
        atexit.register(self.close)
        _exit_on_sigterm()
        try:
            ip("netns", "add", self.switch)
            self._in_switch("link", "add", "br0", "type", "bridge")
            self._in_switch("link", "set", "br0", "up")
            for i, name in enumerate(hosts):
                self._add_host(name, f"{SUBNET}.{11 + i}", i)
        except BaseException:
            self.close()
            raise

    def _in_switch(self, *args: str) -> None:
        ip("-n", self.switch, *args)

    def _add_host(self, name: str, address: str, index: int) -> None:
        netns = f"{self.tag}-{name}"
        port = f"p{index}"
        ip("netns", "add", netns)
        ip("-n", netns, "link", "set", "lo", "up")
        # Both ends are made in the switch namespace and one is moved at once.
        self._in_switch("link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", netns)
        self._in_switch("link", "set", port, "master", "br0")
        self._in_switch("link", "set", port, "up")
        ip("-n", netns, "addr", "add", f"{address}/{PREFIX_LEN}", "dev", "eth0")
        ip("-n", netns, "link", "set", "eth0", "up")
        self.hosts[name] = Host(name, netns, address, port)

    def host(self, name: str) -> Host:
        return self.hosts[name]

    # -- processes -------------------------------------------------------------

    def spawn(self, host: str, argv: Sequence[str], **kw: object) -> subprocess.Popen[bytes]:
        """Start a process on a host; it is killed when the bed closes."""
        proc: subprocess.Popen[bytes] = subprocess.Popen(  # type: ignore[call-overload]
            self.hosts[host].exec_args(argv), **kw
        )
        self.procs.append(proc)
        return proc

    def run(self, host: str, argv: Sequence[str], timeout: float = 30) -> str:
        result = subprocess.run(
            self.hosts[host].exec_args(argv), capture_output=True, text=True, timeout=timeout
        )
        if result.returncode != 0:
            raise NetBedError(f"{host}: {' '.join(argv)}: {result.stderr.strip()}")
        return result.stdout

    @staticmethod
    def kill(proc: subprocess.Popen[bytes], sig: int = signal.SIGKILL) -> None:
        if proc.poll() is None:
            proc.send_signal(sig)
            proc.wait(10)

    # -- faults ----------------------------------------------------------------

    def cut_link(self, host: str) -> None:
        """The host's switch port goes down: its packets, and those to it, are
        lost without a word (no RST, no ICMP)."""
        self._in_switch("link", "set", self.hosts[host].port, "down")

    def restore_link(self, host: str) -> None:
        self._in_switch("link", "set", self.hosts[host].port, "up")

    def partition(self, *groups: Sequence[str]) -> None:
        """Hosts reach each other only within their group: each group's ports
        move to a bridge of their own (links stay up; a host in no group stays
        on br0 with the others left there). Bridges, not VLANs: this kernel's
        bridge may lack VLAN filtering."""
        for n, group in enumerate(groups, start=1):
            bridge = f"br{n}"
            if bridge not in self._bridges:
                self._in_switch("link", "add", bridge, "type", "bridge")
                self._in_switch("link", "set", bridge, "up")
                self._bridges.add(bridge)
            for name in group:
                self._in_switch("link", "set", self.hosts[name].port, "master", bridge)

    def heal(self) -> None:
        """Every port up and back on br0."""
        for host in self.hosts.values():
            self._in_switch("link", "set", host.port, "master", "br0")
            self._in_switch("link", "set", host.port, "up")

    # -- teardown --------------------------------------------------------------

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        # A short patience: the namespaces go next, and with them whatever a
        # daemon would clean up on TERM (its addresses, its rules).
        stop_processes(self.procs, patience=2.0)
        mine = [ns for ns in _namespaces() if ns.startswith(self.tag)]
        for ns in mine:
            # Whatever our processes left running in the bed (keepalived's
            # children, say): every pid in these namespaces was started by us.
            for pid in ip("netns", "pids", ns, check=False).stdout.split():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(pid), signal.SIGKILL)
        for ns in mine:
            ip("netns", "del", ns, check=False)  # the switch takes br0 and the ports along
        atexit.unregister(self.close)

    def __enter__(self) -> NetBed:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def stop_processes(procs: Sequence[subprocess.Popen[bytes]], patience: float = 5.0) -> None:
    """SIGTERM, then SIGKILL: daemons such as keepalived clean up on TERM. All
    are told at once and given the same `patience`: one by one, a loadstone
    in its stop_delay or a keepalived sending its last adverts made the
    teardown wait for each in turn."""
    running = [proc for proc in procs if proc.poll() is None]
    for proc in running:
        proc.terminate()
    deadline = time.monotonic() + patience
    for proc in running:
        try:
            proc.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
    for proc in procs:
        for pipe in (proc.stdin, proc.stdout, proc.stderr):
            if pipe is not None:
                pipe.close()


def _exit_on_sigterm() -> None:
    """A SIGTERM (timeout(1), a CI runner) exits through atexit, which closes
    the beds; left to its default it would leave namespaces behind (swept only
    by the next run). A handler someone else installed is left alone."""
    if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
