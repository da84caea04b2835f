"""Helpers for integration tests: free ports, backend subprocesses, a loadstone
subprocess with its admin API, and waiting on conditions (never bare sleeps)."""

from __future__ import annotations

import errno
import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import yaml

ROOT = Path(__file__).resolve().parents[2]
BACKEND = ROOT / "tests" / "peers" / "backend.py"
LOADSTONE = Path(sys.executable).parent / "loadstone"
T = TypeVar("T")

_handed_out: set[int] = set()

# Ports are drawn below the kernel's ephemeral range (ip_local_port_range,
# 32768-60999 by default), not by binding port 0, which takes one from that
# range: there, any outgoing connection made before the peer binds the port
# (the harness polling an admin API while loadstone starts) can take it as its
# source port, and the peer's bind then fails. Above the fixed ports of the
# peers tests start (memcached 11211); below galera/cluster.py's free_ports,
# which start at FREE_PORTS.stop (its nodes' IST and SST ports listen only
# during a state transfer: a bind test here would not see them taken).
FREE_PORTS = range(12000, 20000)
_draw = random.Random()


def ephemeral_range() -> tuple[int, int]:
    """The kernel's range of source ports for outgoing connections."""
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32768, 60999


def free_port(host: str = "127.0.0.1") -> int:
    """A port nobody listens on now, outside the ephemeral range, that this
    process has not handed out."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    ceiling = min(FREE_PORTS.stop, ephemeral_range()[0])
    while True:
        if ceiling > FREE_PORTS.start:
            port = _draw.randrange(FREE_PORTS.start, ceiling)
        else:  # an ephemeral range reaching down here: take the kernel's pick
            with socket.socket(family, socket.SOCK_STREAM) as s:
                s.bind((host, 0))
                port = int(s.getsockname()[1])
        if port in _handed_out:
            continue
        with socket.socket(family, socket.SOCK_STREAM) as s:
            try:
                s.bind((host, port))
            except OSError as e:
                if e.errno != errno.EADDRINUSE:
                    raise  # not a local address, say: no port would do
                continue
        _handed_out.add(port)
        return port


def free_port_on(*hosts: str) -> int:
    """A port free on every one of `hosts` (loopback addresses), for peers that listen
    on the same port on several addresses."""
    while True:
        port = free_port(hosts[0])
        try:
            for host in hosts[1:]:
                with socket.socket() as s:
                    s.bind((host, port))
        except OSError:
            continue
        return port


def wait_for(
    predicate: Callable[[], T], timeout: float = 10.0, interval: float = 0.02, what: str = ""
) -> T:
    """Poll `predicate` until it returns something truthy; fail after `timeout`."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        try:
            last = predicate()
        except Exception as exc:  # a peer not up yet is a normal poll result
            last = exc
        if last and not isinstance(last, Exception):
            return last  # type: ignore[no-any-return]
        if time.monotonic() > deadline:
            raise AssertionError(
                f"timed out after {timeout}s waiting for {what or predicate}: {last!r}"
            )
        time.sleep(interval)


def port_bindable(port: int, host: str = "127.0.0.1") -> bool:
    """Can a TCP socket bind this port now (nobody listens on it nor holds it
    as a connection's local port)?"""
    with socket.socket() as s:
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


class Backend:
    def __init__(
        self,
        name: str,
        port: int,
        mode: str = "http",
        fail_file: str | None = None,
        host: str = "127.0.0.1",
    ):
        self.name = name
        self.host = host
        self.port = port
        self.mode = mode
        self.fail_file = fail_file
        self.proc: subprocess.Popen[str] | None = None

    @property
    def address(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    def start(self) -> Backend:
        return self.spawn().wait_ready()

    def spawn(self) -> Backend:
        """Start the process without waiting for it (start_backends: several at once)."""
        cmd = [
            sys.executable,
            str(BACKEND),
            "--name",
            self.name,
            "--port",
            str(self.port),
            "--mode",
            self.mode,
            "--host",
            self.host,
        ]
        if self.fail_file:
            cmd += ["--fail-file", self.fail_file]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
        return self

    def wait_ready(self) -> Backend:
        assert self.proc is not None and self.proc.stdout is not None
        line = self.proc.stdout.readline()
        assert line.strip() == "ready", f"backend {self.name} did not start: {line!r}"
        return self

    def kill(self) -> None:
        """kill -9: the server vanishes without closing anything gracefully."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        if self.proc is not None and self.proc.stdout is not None:
            self.proc.stdout.close()


def start_backends(backends: list[Backend]) -> list[Backend]:
    """Start them all at once, then wait for each: a Python start is most of a
    backend's, and one after the other they cost a test seconds."""
    for backend in backends:
        backend.spawn()
    for backend in backends:
        backend.wait_ready()
    return backends


def stop_backends(backends: list[Backend]) -> None:
    """SIGTERM to them all first: they shut down side by side."""
    for backend in backends:
        if backend.proc is not None and backend.proc.poll() is None:
            backend.proc.terminate()
    for backend in backends:
        backend.stop()


class Loadstone:
    """`loadstone run` as a subprocess, with helpers to read its admin API."""

    def __init__(
        self,
        tmp: Path,
        config: dict[str, Any],
        loop: str = "uvloop",
        log_format: str = "json",
        env: dict[str, str] | None = None,
    ):
        self.tmp = tmp
        self.config = config
        self.admin_port = free_port()
        config.setdefault("global", {}).setdefault("admin", {})["bind"] = (
            f"127.0.0.1:{self.admin_port}"
        )
        self.path = tmp / f"loadstone-{self.admin_port}.yaml"
        self.path.write_text(yaml.safe_dump(config))
        self.stdout_path = tmp / f"loadstone-{self.admin_port}.out"
        self.stderr_path = tmp / f"loadstone-{self.admin_port}.err"
        self.loop = loop
        self.log_format = log_format
        self.env = {**os.environ, **(env or {})}
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, wait: bool = True) -> Loadstone:
        with open(self.stdout_path, "wb") as out, open(self.stderr_path, "wb") as err:
            self.proc = subprocess.Popen(
                [
                    str(LOADSTONE),
                    "run",
                    str(self.path),
                    "--log-format",
                    self.log_format,
                    "--loop",
                    self.loop,
                    "--log-level",
                    "debug",
                ],
                stdout=out,
                stderr=err,
                env=self.env,
            )
        if wait:
            wait_for(self._ready, timeout=15, what="loadstone admin API")
        return self

    def _ready(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise RuntimeError(f"loadstone exited {self.proc.returncode}: {self.stderr()}")
        self.status()
        return True

    def get(self, path: str) -> bytes:
        url = f"http://127.0.0.1:{self.admin_port}{path}"
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.read()  # type: ignore[no-any-return]

    def status(self) -> dict[str, Any]:
        return json.loads(self.get("/api/v1/status"))  # type: ignore[no-any-return]

    def server(self, listener: str, server: str) -> dict[str, Any]:
        return self.status()["listeners"][listener]["servers"][server]  # type: ignore[no-any-return]

    def wait_state(self, listener: str, server: str, state: str, timeout: float = 10) -> float:
        """Wait until a server shows `state`; return how long that took."""
        t0 = time.monotonic()
        wait_for(
            lambda: self.server(listener, server)["state"] == state,
            timeout=timeout,
            what=f"{listener}/{server} {state}",
        )
        return time.monotonic() - t0

    def wait_all_up(self, listener: str, timeout: float = 10) -> None:
        def all_up() -> bool:
            servers = self.status()["listeners"][listener]["servers"]
            return all(
                s["state"] == "up" and s["check"]["status"] in ("ok", "disabled")
                for s in servers.values()
            )

        wait_for(all_up, timeout=timeout, what=f"all servers of {listener} up")

    def session_logs(self) -> list[dict[str, Any]]:
        lines = self.stdout_path.read_text().splitlines()
        return [json.loads(line) for line in lines if line.startswith("{")]

    def stderr(self) -> str:
        return self.stderr_path.read_text()

    def fd_count(self) -> int:
        assert self.proc is not None
        return len(os.listdir(f"/proc/{self.proc.pid}/fd"))

    def stop(self, timeout: float = 30) -> int:
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
                raise AssertionError("loadstone did not stop on SIGTERM") from None
        return self.proc.returncode


_NGINX_CONF = """
worker_processes 1;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
{user}
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path {dir}/tmp;
    proxy_temp_path {dir}/tmp;
    fastcgi_temp_path {dir}/tmp;
    uwsgi_temp_path {dir}/tmp;
    scgi_temp_path {dir}/tmp;
{http}
}}
"""


def start_nginx(directory: Path, http: str) -> subprocess.Popen[bytes]:
    """Debian's nginx in the foreground, everything of its own under `directory`;
    `http` is what goes in its http block (the server blocks)."""
    (directory / "tmp").mkdir(parents=True, exist_ok=True)
    user = "user root;" if os.geteuid() == 0 else ""
    conf = directory / "nginx.conf"
    conf.write_text(_NGINX_CONF.format(dir=directory, user=user, http=http))
    command = ["nginx", "-p", str(directory), "-c", str(conf), "-e", str(directory / "error.log")]
    return subprocess.Popen([*command, "-g", "daemon off;"])


def run_check(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(LOADSTONE), "check", str(path)], capture_output=True, text=True, timeout=30
    )
