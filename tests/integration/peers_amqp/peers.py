"""Real RabbitMQ, Redis and memcached servers from Debian's packages, on loopback.

RabbitMQ (3.10): each node gets its own loopback address (127.0.0.1, 127.0.0.2),
so that, as on real controllers, every node serves AMQP and its management API
on the same ports and one check configuration (`management_port`) fits all of
them. Per node distinct: node name, Erlang distribution port, mnesia and log
directories, configuration and enabled-plugins files (the variables in
../shared/notes/galera-amqp.md). The nodes and rabbitmqctl share an Erlang
cookie through a temporary HOME. /usr/lib/rabbitmq/bin/rabbitmq-server is run
rather than Debian's /usr/sbin wrapper, which switches to the rabbitmq user and
drops RABBITMQ_* variables. Its shell traps SIGTERM and stops the node cleanly,
so a node is stopped by signalling the pid we started.

epmd (the Erlang port mapper) is private to the cluster: our own, on a free
port given to the nodes and to rabbitmqctl as ERL_EPMD_PORT. The host's shared
epmd on 4369 may be started and stopped by anyone (another test run's
fixture): a node whose registration vanishes with it cannot be reached by
rabbitmqctl until RabbitMQ's epmd monitor registers it again, a minute later.

Redis and memcached start in milliseconds, so each test gets its own.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from base64 import b64encode
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tests.integration.harness import free_port, free_port_on, port_open, wait_for

RABBIT_BIN = Path("/usr/lib/rabbitmq/bin")
RABBITMQ_SERVER = RABBIT_BIN / "rabbitmq-server"
RABBITMQCTL = RABBIT_BIN / "rabbitmqctl"
EPMD = shutil.which("epmd")
REDIS_SERVER = shutil.which("redis-server", path="/usr/bin:/usr/sbin")
MEMCACHED = shutil.which("memcached", path="/usr/bin:/usr/sbin")

MONITOR_USER, MONITOR_PASSWORD = "monitor", "monitor-pw"  # tag `monitoring`
VHOST = "openstack"
COOKIE = "LOADSTONETESTCOOKIE"
BOOT_TIMEOUT = 90.0  # one node boots in ~6 s on 2 idle cores; give a busy CI room


def missing(what: str) -> str | None:
    """Why `what` (rabbitmq, redis, memcached) cannot be started here, or None."""
    needed: dict[str, list[object]] = {
        "rabbitmq": [RABBITMQ_SERVER if RABBITMQ_SERVER.exists() else None, EPMD],
        "redis": [REDIS_SERVER],
        "memcached": [MEMCACHED],
    }
    if any(path is None for path in needed[what]):
        package = {"rabbitmq": "rabbitmq-server", "redis": "redis-server"}.get(what, what)
        return f"{what} not installed (apt-get install {package}; scripts/test does it)"
    return None


def _stop(proc: subprocess.Popen[bytes] | None, timeout: float = 30) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)


# -- RabbitMQ -----------------------------------------------------------------------


class RabbitNode:
    def __init__(
        self, base: Path, home: Path, name: str, ip: str, port: int, mgmt_port: int, epmd_port: int
    ):
        self.dir = base / name
        self.dir.mkdir(parents=True)
        self.home = home
        self.node = f"{name}@localhost"
        self.ip = ip
        self.port = port
        self.mgmt_port = mgmt_port
        self.dist_port = free_port()
        self.epmd_port = epmd_port
        self.proc: subprocess.Popen[bytes] | None = None
        (self.dir / "rabbitmq.conf").write_text(
            f"listeners.tcp.default = {ip}:{port}\n"
            f"management.tcp.ip = {ip}\n"
            f"management.tcp.port = {mgmt_port}\n"
            # guest may log in from any address: the test clients use it.
            "loopback_users = none\n"
            "log.file.level = info\n"
        )
        (self.dir / "enabled_plugins").write_text("[rabbitmq_management].\n")

    @property
    def address(self) -> str:
        return f"{self.ip}:{self.port}"

    def env(self) -> dict[str, str]:
        return {
            **os.environ,
            "HOME": str(self.home),  # the shared .erlang.cookie
            "ERL_EPMD_PORT": str(self.epmd_port),
            "RABBITMQ_NODENAME": self.node,
            "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_DIST_PORT": str(self.dist_port),
            "RABBITMQ_MNESIA_BASE": str(self.dir / "mnesia"),
            "RABBITMQ_LOG_BASE": str(self.dir / "log"),
            "RABBITMQ_LOGS": str(self.dir / "log" / "node.log"),
            "RABBITMQ_CONFIG_FILE": str(self.dir / "rabbitmq.conf"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(self.dir / "enabled_plugins"),
            "RABBITMQ_PID_FILE": str(self.dir / "pid"),
            "RABBITMQ_CONF_ENV_FILE": "/dev/null",  # not Debian's /etc/rabbitmq/rabbitmq-env.conf
        }

    def start(self) -> RabbitNode:
        with open(self.dir / "stdout.log", "wb") as out:
            self.proc = subprocess.Popen(
                [str(RABBITMQ_SERVER)],
                env=self.env(),
                cwd=self.dir,  # an erl_crash.dump lands here
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        return self

    def wait_started(self, timeout: float = BOOT_TIMEOUT) -> None:
        """The AMQP listener is the last thing a node starts (after its plugins)."""

        def up() -> bool:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.node} exited {self.proc.returncode}: {self.log_tail()}")
            return port_open(self.ip, self.port) and port_open(self.ip, self.mgmt_port)

        wait_for(up, timeout=timeout, interval=0.2, what=f"RabbitMQ {self.node}")

    def ctl(self, *args: str, timeout: float = 120) -> str:
        result = subprocess.run(
            [str(RABBITMQCTL), "-n", self.node, *args],
            env=self.env(),
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if result.returncode != 0:
            raise RuntimeError(
                f"rabbitmqctl {' '.join(args)} on {self.node}: {result.stdout}{result.stderr}"
            )
        return result.stdout

    def api(self, method: str, path: str, body: Any = None) -> Any:
        """The management API as guest."""
        request = urllib.request.Request(
            f"http://{self.ip}:{self.mgmt_port}{path}",
            method=method,
            data=None if body is None else json.dumps(body).encode(),
            headers={
                "Authorization": "Basic " + b64encode(b"guest:guest").decode(),
                "Content-Type": "application/json",
            },
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            data = response.read()
        return json.loads(data) if data else None

    def local_alarms(self) -> list[str]:
        try:
            self.api("GET", "/api/health/checks/local-alarms")
        except urllib.error.HTTPError as err:
            if err.code == 503:
                return [alarm["resource"] for alarm in json.loads(err.read())["alarms"]]
            raise
        return []

    def stop(self) -> None:
        _stop(self.proc, timeout=60)

    def log_tail(self, lines: int = 30) -> str:
        path = self.dir / "log" / "node.log"
        text = path.read_text(errors="replace") if path.exists() else ""
        out = self.dir / "stdout.log"
        text += out.read_text(errors="replace") if out.exists() else ""
        return "\n".join(text.splitlines()[-lines:])


class RabbitCluster:
    """Two RabbitMQ nodes, on 127.0.0.1 and 127.0.0.2, joined into one cluster when
    that works (else two independent brokers: `clustered` says which)."""

    def __init__(self, base: Path):
        self.base = base
        self.home = base / "home"
        self.home.mkdir()
        cookie = self.home / ".erlang.cookie"
        cookie.write_text(COOKIE)
        cookie.chmod(0o400)
        self.epmd: subprocess.Popen[bytes] | None = None
        self.nodes: list[RabbitNode] = []
        self.clustered = False
        self.timings: dict[str, float] = {}

    def start(self) -> RabbitCluster:
        t0 = time.monotonic()
        assert EPMD is not None
        epmd_port = free_port()
        self.epmd = subprocess.Popen([EPMD, "-port", str(epmd_port), "-address", "127.0.0.1"])
        # Asked with its own client: a bare connect makes it log a partial packet.
        wait_for(
            lambda: (
                subprocess.run(
                    [EPMD, "-port", str(epmd_port), "-names"], capture_output=True
                ).returncode
                == 0
            ),
            timeout=10,
            what="epmd",
        )
        mgmt_port = free_port_on("127.0.0.1", "127.0.0.2")
        tag = str(mgmt_port)  # node names unique to this run, for clear logs
        self.nodes = [
            RabbitNode(
                self.base, self.home, f"lsa{tag}", "127.0.0.1", free_port(), mgmt_port, epmd_port
            ),
            RabbitNode(
                self.base,
                self.home,
                f"lsb{tag}",
                "127.0.0.2",
                free_port("127.0.0.2"),
                mgmt_port,
                epmd_port,
            ),
        ]
        for node in self.nodes:  # both boot at once: half the wall time on 2 cores
            node.start()
        for node in self.nodes:
            node.wait_started()
        self.timings["boot"] = time.monotonic() - t0
        a, b = self.nodes
        try:
            b.ctl("stop_app")
            b.ctl("join_cluster", a.node)
            b.ctl("start_app")
            b.wait_started()
            self.clustered = True
        except (RuntimeError, subprocess.TimeoutExpired, AssertionError):
            # Two independent brokers show the same failover; start B again alone.
            with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
                b.ctl("start_app")
            b.wait_started()
        self.timings["cluster"] = time.monotonic() - t0 - self.timings["boot"]
        for node in self.nodes if not self.clustered else [a]:  # users are cluster-wide
            node.api(
                "PUT",
                f"/api/users/{MONITOR_USER}",
                {"password": MONITOR_PASSWORD, "tags": "monitoring"},
            )
            node.api("PUT", f"/api/vhosts/{VHOST}")
            node.api(
                "PUT",
                f"/api/permissions/{VHOST}/{MONITOR_USER}",
                {"configure": ".*", "write": ".*", "read": ".*"},
            )
        return self

    def stop(self) -> None:
        for node in self.nodes:  # SIGTERM to both first: they shut down in parallel
            if node.proc is not None and node.proc.poll() is None:
                node.proc.send_signal(signal.SIGTERM)
        for node in self.nodes:
            node.stop()
        _stop(self.epmd)


# -- Redis ------------------------------------------------------------------------------


def resp(host: str, port: int, *command: str) -> bytes:
    """One Redis command over a fresh connection; the raw reply (enough for tests)."""
    with socket.create_connection((host, port), timeout=5) as s:
        args = [c.encode() for c in command]
        s.sendall(b"*%d\r\n" % len(args) + b"".join(b"$%d\r\n%s\r\n" % (len(a), a) for a in args))
        data = b""
        while not data.endswith(b"\r\n") or (data.startswith(b"$") and not _bulk_done(data)):
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
        return data


def _bulk_done(data: bytes) -> bool:
    head, _, rest = data.partition(b"\r\n")
    size = int(head[1:])
    return size < 0 or len(rest) >= size + 2


class RedisServer:
    def __init__(self, base: Path, name: str):
        self.dir = base / name
        self.dir.mkdir(parents=True)
        self.name = name
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, replica_of: RedisServer | None = None) -> RedisServer:
        assert REDIS_SERVER is not None
        cmd = [
            REDIS_SERVER,
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--dir", str(self.dir),
            "--save", "",
            "--appendonly", "no",
            "--daemonize", "no",
            "--logfile", str(self.dir / "redis.log"),
            # A replica syncs at once, not after the 5 s Redis waits for more replicas.
            "--repl-diskless-sync-delay", "0",
        ]  # fmt: skip
        if replica_of is not None:
            cmd += ["--replicaof", "127.0.0.1", str(replica_of.port)]
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL)
        wait_for(
            lambda: self.command("PING") == b"+PONG\r\n", timeout=15, what=f"redis {self.name}"
        )
        return self

    def command(self, *args: str) -> bytes:
        return resp("127.0.0.1", self.port, *args)

    def role(self) -> str:
        info = self.command("INFO", "replication").decode()
        return next(line.split(":", 1)[1] for line in info.splitlines() if line.startswith("role:"))

    def linked(self) -> bool:
        """A replica whose link to its master is up."""
        return b"master_link_status:up" in self.command("INFO", "replication")

    def stop(self) -> None:
        _stop(self.proc)


# -- memcached ----------------------------------------------------------------------------


class Memcached:
    def __init__(self) -> None:
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> Memcached:
        assert MEMCACHED is not None
        cmd = [MEMCACHED, "-l", "127.0.0.1", "-p", str(self.port), "-U", "0", "-m", "16"]
        if os.geteuid() == 0:
            cmd += ["-u", "nobody"]  # memcached refuses to run as root without -u
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL)
        wait_for(lambda: port_open("127.0.0.1", self.port), timeout=15, what="memcached")
        return self

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def stop(self) -> None:
        _stop(self.proc)


@contextlib.contextmanager
def started(*servers: RedisServer | Memcached) -> Iterator[None]:
    try:
        yield
    finally:
        for server in servers:
            server.stop()
