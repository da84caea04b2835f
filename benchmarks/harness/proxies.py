"""The proxies under test, each configured to balance the same backends the same way.

A Proxy writes its own configuration into the run's temp dir, validates it with the
proxy's own checker, starts the proxy in the foreground and waits until it both
accepts and relays a request. The scenario code only needs `port` and `pid`.
"""

from __future__ import annotations

import os
import resource
import shutil
import signal
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from benchmarks.harness.backends import SMALL_BODY, SMALL_PATH, Backend
from benchmarks.harness.net import LOOPBACK, free_ports, http_get, wait_for_port
from benchmarks.harness.procs import ManagedProcess


def _maxconn(wanted: int = 20000) -> int:
    """A connection limit high enough that no scenario ever queues on it.

    HAProxy refuses to start when the descriptors it may need exceed the hard
    RLIMIT_NOFILE, which is often exactly 20000: two per connection, plus a pair per
    pipe when splicing is enabled (maxpipes defaults to maxconn / 4). Stay under
    that with room to spare, and give loadstone the same figure.
    """
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    if hard == resource.RLIM_INFINITY:
        return wanted
    return max(1000, min(wanted, (hard - 200) // 3))


# Same limits on both sides, and the connect/client/server timeouts loadstone uses
# by default.
MAXCONN = _maxconn()
TIMEOUT_CONNECT = "5s"
TIMEOUT_IDLE = "60s"


class Proxy:
    """Common life cycle; subclasses say how to configure, check and run one proxy."""

    name: str
    # How the proxy may exit when stopped with SIGTERM without that being a fault.
    clean_exit_statuses: frozenset[int] = frozenset({0})
    # The modes (tcp, http) this proxy can be configured for, and why not the others.
    modes: frozenset[str] = frozenset({"tcp", "http"})
    modes_note = ""

    def __init__(
        self, workdir: Path, backends: Sequence[Backend], *, workers: int, mode: str = "tcp"
    ) -> None:
        if mode not in self.modes:
            raise ValueError(f"{self.name} has no {mode} mode")
        self.workdir = workdir / self.name
        self.workdir.mkdir(parents=True)
        self.backends = list(backends)
        self.workers = workers
        self.mode = mode
        self.port = free_ports(1)[0]
        self.log_path = self.workdir / "output.log"
        self._proc: ManagedProcess | None = None

    # -- to be provided by subclasses -------------------------------------------------
    def write_config(self) -> Path:
        raise NotImplementedError

    def check_argv(self, config: Path) -> list[str]:
        raise NotImplementedError

    def run_argv(self, config: Path) -> list[str]:
        raise NotImplementedError

    def environment(self) -> dict[str, str] | None:
        return None

    def version(self) -> str:
        raise NotImplementedError

    # -- shared ------------------------------------------------------------------------
    @property
    def pid(self) -> int:
        if self._proc is None:
            raise RuntimeError(f"{self.name} is not running")
        return self._proc.pid

    def check_alive(self) -> None:
        if self._proc is not None:
            self._proc.check_alive()

    def start(self) -> None:
        config = self.write_config()
        checked = subprocess.run(
            self.check_argv(config),
            capture_output=True,
            text=True,
            env=self.environment(),
            check=False,
        )
        if checked.returncode != 0:
            raise RuntimeError(
                f"{self.name} rejects its generated configuration {config} "
                f"(exit {checked.returncode}):\n{checked.stderr.strip() or checked.stdout.strip()}"
            )
        self._proc = ManagedProcess(
            self.name,
            self.run_argv(config),
            self.log_path,
            cwd=self.workdir,
            env=self.environment(),
        )
        try:
            wait_for_port(self.port, alive=self._proc.check_alive)
            # One request per backend: round robin must reach both of them.
            for _ in self.backends:
                status, length = self.probe()
                if (status, length) != (200, len(SMALL_BODY)):
                    raise RuntimeError(f"{self.name}: GET / through the proxy gave {status}")
        except BaseException:
            self.stop()
            raise

    def probe(self) -> tuple[int, int]:
        """One GET / through the proxy: (status, body length). A proxy terminating
        TLS (benchmarks/tls_compare.py) asks over TLS."""
        return http_get(self.port, SMALL_PATH)

    def stop(self) -> int | None:
        """Stop the proxy (idempotent); return its exit status, None if never started."""
        return self._proc.stop() if self._proc is not None else None

    def log_tail(self, lines: int = 20) -> str:
        return self._proc.log_tail(lines) if self._proc is not None else "(not running)"


class Peer(Proxy):
    """A proxy loadstone is compared with: a program found on the PATH, which logs
    every session or request when `log_sessions` (one switch for all peers: in
    OpenStack deployments HAProxy logs each one, and so does loadstone's benchmark
    listener by default, so that all do the same work)."""

    install_hint: str  # how to get the program on Debian

    def __init__(
        self,
        workdir: Path,
        backends: Sequence[Backend],
        *,
        workers: int,
        mode: str = "tcp",
        log_sessions: bool = False,
        binary: str | None = None,
    ) -> None:
        program = binary or self.name
        found = shutil.which(program)
        if found is None:
            raise FileNotFoundError(f"{program} not found ({self.install_hint})")
        self.binary = found
        self.log_sessions = log_sessions
        self.check_installed(mode)
        super().__init__(workdir, backends, workers=workers, mode=mode)

    def check_installed(self, mode: str) -> None:
        """Raise FileNotFoundError when something more this peer needs for `mode` is
        missing: found before anything starts, so a default run can leave it out."""


class HAProxy(Peer):
    """Debian's haproxy, one process with `nbthread` = workers, started with -db."""

    name = "haproxy"
    install_hint = "apt-get install -y haproxy"
    # SIGTERM is HAProxy's hard stop: it dies by the signal rather than exiting 0.
    clean_exit_statuses = frozenset({0, -signal.SIGTERM})

    def __init__(
        self,
        workdir: Path,
        backends: Sequence[Backend],
        *,
        workers: int,
        mode: str = "tcp",
        log_sessions: bool = False,
        binary: str | None = None,
        extra_global: Sequence[str] = (),
        extra_defaults: Sequence[str] = (),
    ) -> None:
        super().__init__(
            workdir, backends, workers=workers, mode=mode, log_sessions=log_sessions, binary=binary
        )
        self.extra_global = list(extra_global)
        self.extra_defaults = list(extra_defaults)
        # HAProxy in OpenStack deployments logs one line per session: option
        # tcplog/httplog.
        if self.log_sessions:
            self.extra_global.append("log stdout format raw local0")
            self.extra_defaults += ["log global", f"option {self.mode}log"]

    def write_config(self) -> Path:
        # Extra lines (tuning experiments such as tune.bufsize or option splice-auto)
        # come last so that they override the defaults written here.
        extra_global = "".join(f"    {line}\n" for line in self.extra_global)
        extra_defaults = "".join(f"    {line}\n" for line in self.extra_defaults)
        servers = "".join(f"    server {b.name} {b.address}\n" for b in self.backends)
        # HTTP mode as OpenStack deployments run it: X-Forwarded-For added,
        # keep-alive on both sides (http-keep-alive, HAProxy's default), server
        # connections reused across clients (http-reuse safe, the default).
        http = (
            "    option forwardfor\n    timeout http-request 10s\n    timeout http-keep-alive 10s\n"
            if self.mode == "http"
            else ""
        )
        text = (
            "# Generated by benchmarks/harness/proxies.py\n"
            "global\n"
            f"    nbthread {self.workers}\n"
            f"    maxconn {MAXCONN}\n"
            f"{extra_global}"
            "\n"
            "defaults\n"
            f"    mode {self.mode}\n"
            f"    maxconn {MAXCONN}\n"
            f"    timeout connect {TIMEOUT_CONNECT}\n"
            f"    timeout client {TIMEOUT_IDLE}\n"
            f"    timeout server {TIMEOUT_IDLE}\n"
            f"{http}"
            f"{extra_defaults}"
            "\n"
            "frontend bench\n"
            f"    bind {LOOPBACK}:{self.port}\n"
            "    default_backend bench_servers\n"
            "\n"
            "backend bench_servers\n"
            "    balance roundrobin\n"
            f"{servers}"
        )
        path = self.workdir / "haproxy.cfg"
        path.write_text(text)
        return path

    def check_argv(self, config: Path) -> list[str]:
        return [self.binary, "-c", "-f", str(config)]

    def run_argv(self, config: Path) -> list[str]:
        return [self.binary, "-f", str(config), "-db"]

    def version(self) -> str:
        out = subprocess.run([self.binary, "-v"], capture_output=True, text=True, check=False)
        return out.stdout.splitlines()[0] if out.stdout else "unknown"


def default_loadstone_binary() -> Path:
    """The `loadstone` console script installed next to the running interpreter."""
    return Path(sys.executable).parent / "loadstone"


class Loadstone(Proxy):
    """`loadstone run` with JSON logs; its per-session log lines go to a file."""

    name = "loadstone"

    def __init__(
        self,
        workdir: Path,
        backends: Sequence[Backend],
        *,
        workers: int,
        mode: str = "tcp",
        binary: Path | None = None,
        pure_python: bool = False,
        log: str = "all",
        name: str = "loadstone",
    ) -> None:
        # Two builds measured in one run (before and after a change) need two names.
        self.name = name
        # Absolute: the proxy runs in its own directory, a relative path would not
        # resolve there (not resolved further: the venv's symlinks must stay).
        self.binary = (binary or default_loadstone_binary()).absolute()
        self.log = log  # the listener's `log`: all, errors or none
        if not self.binary.exists():
            raise FileNotFoundError(
                f"{self.binary} not found (pip install -e . in the repository's venv)"
            )
        self.pure_python = pure_python
        super().__init__(workdir, backends, workers=workers, mode=mode)

    def write_config(self) -> Path:
        servers = "".join(
            f'      - {{name: {b.name}, address: "{b.address}"}}\n' for b in self.backends
        )
        text = (
            "# Generated by benchmarks/harness/proxies.py\n"
            "global:\n"
            f"  workers: {self.workers}\n"
            # Nothing is left open when the benchmark stops the proxy; a short grace
            # keeps a proxy that drains slowly from stretching the run.
            "  grace: 1s\n"
            "  admin: {bind: null}\n"
            "defaults:\n"
            f"  timeouts: {{connect: {TIMEOUT_CONNECT}, client: {TIMEOUT_IDLE},"
            f" server: {TIMEOUT_IDLE}}}\n"
            "listeners:\n"
            "  bench:\n"
            f'    bind: ["{LOOPBACK}:{self.port}"]\n'
            f"    mode: {self.mode}\n"
            + ("    forwardfor: true\n" if self.mode == "http" else "")
            + "    balance: roundrobin\n"
            f"    maxconn: {MAXCONN}\n"
            f"    log: {self.log}\n"
            "    servers:\n"
            f"{servers}"
        )
        path = self.workdir / "loadstone.yaml"
        path.write_text(text)
        return path

    def check_argv(self, config: Path) -> list[str]:
        return [str(self.binary), "check", str(config)]

    def run_argv(self, config: Path) -> list[str]:
        return [str(self.binary), "run", str(config), "--log-format", "json"]

    def environment(self) -> dict[str, str] | None:
        if not self.pure_python:
            return None
        # The documented switch that forces the pure-Python twin of the data path.
        return {**os.environ, "LOADSTONE_NO_EXTENSIONS": "1"}

    def version(self) -> str:
        # The console script's interpreter knows the installed distribution, and
        # whether the native data path was built: figures differ a lot without it.
        python = self.binary.parent / "python"
        code = (
            "import importlib.metadata as m, importlib.util as u\n"
            "print(m.version('loadstone'))\n"
            "print('native' if u.find_spec('loadstone._fastpath') else 'pure Python only')"
        )
        out = subprocess.run(
            [str(python), "-c", code],
            capture_output=True,
            text=True,
            env=self.environment(),
            check=False,
        )
        lines = out.stdout.splitlines()
        if out.returncode != 0 or len(lines) < 2:
            return "loadstone (version unknown)"
        version, built = lines[:2]
        path = "pure Python forced" if self.pure_python else f"data path: {built}"
        return f"loadstone {version} ({path})"
