"""A real 3-node MariaDB Galera cluster on loopback ports, for tests and benchmarks.

Per-node settings follow MariaDB's own galera_3nodes.cnf (../shared/notes/galera-amqp.md):
distinct client port, socket, datadir, pid-file, error log, Galera base port
(IST listens on base_port + 1, so each node gets a pair of free ports) and SST
receive port. Nodes run as the `mysql` user in directories it owns: rsync SST's
receiving daemon drops to an unprivileged user and could not write a root-owned
datadir. Node 1 bootstraps the cluster (--wsrep-new-cluster) and each next node
is started only once the previous one is Synced, as a joiner that starts while
another node is still receiving its state transfer has no donor to pick.

Each node names the address loadstone checks it on as its incoming address
(MariaDB shows "AUTO" for a node bound to a loopback address): the Primary
Component's member list is then read by loadstone (checks/membership.py).

Every node's wsrep_cluster_address lists all three, so any node, the bootstrap
one included, can be killed and restarted: it rejoins by IST from the gcache.

Only the standard library and PyMySQL (aiomysql's dependency) are used, so that
benchmarks can drive the cluster too.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import random
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pymysql

from tests.integration.harness import FREE_PORTS, ephemeral_range, port_bindable
from tests.peers.mariadb import install_db

MARIADBD = shutil.which("mariadbd", path="/usr/sbin:/usr/bin:" + os.environ.get("PATH", ""))
INSTALL_DB = shutil.which("mariadb-install-db", path="/usr/bin:/usr/sbin")
MARIADB_CLIENT = shutil.which("mariadb", path="/usr/bin")
PROVIDER = "/usr/lib/galera/libgalera_smm.so"

ADMIN_USER, ADMIN_PASSWORD = "lsadmin", "lsadmin-pw"
MONITOR_USER, MONITOR_PASSWORD = "monitor", "monitor-pw"
APP_USER, APP_PASSWORD = "app", "app-pw"

SYNCED = 4


def missing_software() -> str | None:
    """Why a cluster cannot be started here, or None."""
    for what, path in (("mariadbd", MARIADBD), ("mariadb-install-db", INSTALL_DB)):
        if path is None:
            return f"{what} not found (apt-get install mariadb-server galera-4 rsync lsof)"
    if not os.path.exists(PROVIDER):
        return f"{PROVIDER} not found (apt-get install galera-4)"
    if shutil.which("rsync") is None:
        return "rsync not found (needed for SST)"
    if os.geteuid() != 0:
        return "needs root to run the nodes as the mysql user"
    return None


_taken: set[int] = set()


def free_ports(count: int, consecutive: bool = False) -> list[int]:
    """`count` free loopback ports (consecutive: a run, for base_port and IST).

    Taken below the kernel's ephemeral range: the nodes' own outgoing
    connections (gcomm, SST, clients) take ephemeral source ports, and one of
    them could take a port chosen with bind(0) before the node listens on it."""
    low = FREE_PORTS.stop  # above the harness's free_port
    high = max(low + 1000, ephemeral_range()[0]) - count
    ports: list[int] = []
    while len(ports) < count:
        first = random.randrange(low, high)
        run = [first + i for i in range(count if consecutive else 1)]
        if any(p in _taken for p in run) or not all(map(port_bindable, run)):
            continue
        _taken.update(run)
        ports.extend(run)
    return ports


def wait_until(
    predicate: Callable[[], Any], timeout: float, what: str, interval: float = 0.05
) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        try:
            last = predicate()
        except Exception as exc:  # a node still starting refuses connections
            last = exc
        if last and not isinstance(last, Exception):
            return last
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}: {last!r}")
        time.sleep(interval)


class GaleraNode:
    def __init__(self, cluster: GaleraCluster, index: int) -> None:
        self.cluster = cluster
        self.index = index
        self.name = f"db{index + 1}"
        self.port, self.sst_port = free_ports(2)
        self.gport = free_ports(2, consecutive=True)[0]  # base_port; IST on base_port + 1
        self.dir = cluster.base / self.name
        self.datadir = self.dir / "data"
        self.socket = self.dir / "mysqld.sock"
        self.cnf = self.dir / "my.cnf"
        self.log = self.dir / "error.log"
        self.proc: subprocess.Popen[bytes] | None = None
        # Where the node runs: loopback by default; a host of the namespace
        # test bed (tests/integration/ha/galera_bed.py) sets its address and
        # the `ip netns exec` prefix before the cluster starts.
        self.host = "127.0.0.1"
        self.exec_prefix: list[str] = []

    @property
    def donor(self) -> str:
        """The node this one asks for a state transfer (the trailing comma in the
        setting lets Galera fall back to any other). The last node donates, so
        that a rejoining node does not turn the writer (db1 or db2 in the tests
        and the benchmark) into a donor, which the writer policy takes out."""
        last = self.cluster.nodes[-1]
        return last.name if last is not self else self.cluster.nodes[-2].name

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def write_config(self) -> None:
        cluster_address = ",".join(f"{n.host}:{n.gport}" for n in self.cluster.nodes)
        options = ";".join(
            [
                f"base_port={self.gport}",
                f"gmcast.listen_addr=tcp://{self.host}:{self.gport}",
                f"ist.recv_addr={self.host}:{self.gport + 1}",
                "gcache.size=32M",
                *self.cluster.provider_options,
            ]
        )
        self.cnf.write_text(
            f"""[mysqld]
user=mysql
bind-address={self.host}
port={self.port}
socket={self.socket}
datadir={self.datadir}
pid-file={self.dir}/mysqld.pid
log-error={self.log}
tmpdir={self.dir}/tmp
skip-name-resolve
performance_schema=OFF
max_connections=500
innodb_buffer_pool_size=64M
innodb_log_file_size=32M
innodb_flush_log_at_trx_commit=2
binlog_format=ROW
default_storage_engine=InnoDB
innodb_autoinc_lock_mode=2
wsrep_on=ON
wsrep_provider={PROVIDER}
wsrep_cluster_name=loadstone-test
wsrep_cluster_address=gcomm://{cluster_address}
wsrep_provider_options="{options}"
wsrep_node_address={self.host}:{self.gport}
wsrep_node_name={self.name}
wsrep_node_incoming_address={self.host}:{self.port}
wsrep_sst_receive_address={self.host}:{self.sst_port}
wsrep_sst_method=rsync
wsrep_sst_donor={self.donor},
wsrep_slave_threads=2
"""
        )

    def prepare(self, install: bool) -> None:
        (self.dir / "tmp").mkdir(parents=True)
        self.datadir.mkdir()
        self.write_config()
        _chown_tree(self.dir)
        if install:
            install_db(self.cnf)
        # A joiner's datadir stays empty: rsync SST fills it from the donor.

    def start(self, bootstrap: bool = False) -> None:
        assert MARIADBD is not None
        assert not self.alive, f"{self.name} already running"
        args = [*self.exec_prefix, MARIADBD, f"--defaults-file={self.cnf}"]
        if bootstrap:
            args.append("--wsrep-new-cluster")
        with open(self.dir / "stdout.log", "ab") as out:
            # Own session: a Ctrl-C on the test run must not kill the node before
            # teardown stops it, and teardown can kill leftover SST helpers.
            self.proc = subprocess.Popen(
                args, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )

    def kill(self) -> None:
        """kill -9 of mariadbd: the node vanishes, its sockets closed by the kernel."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(30)
        self._kill_group()

    def stop(self, timeout: float = 60) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(30)
        self._kill_group()

    def _kill_group(self) -> None:
        # rsync daemons of an SST in flight live in the node's session.
        if self.proc is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.proc.pid, signal.SIGKILL)

    # -- SQL -------------------------------------------------------------------------

    def connect(self, user: str = ADMIN_USER, password: str = ADMIN_PASSWORD, **kw: Any) -> Any:
        options: dict[str, Any] = {
            "host": self.host,
            "port": self.port,
            "user": user,
            "password": password,
            "connect_timeout": 3,
            "read_timeout": 10,
            "write_timeout": 10,
            "autocommit": True,
        }
        options.update(kw)
        if not self.exec_prefix:
            return pymysql.connect(**options)
        # In a namespace: its Unix socket is reachable from here. Connected by
        # us, as PyMySQL leaks the socket of a failed Unix-socket connect.
        conn = pymysql.connect(**options, defer_connect=True)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.settimeout(options["connect_timeout"])
            sock.connect(str(self.socket))
            conn.connect(sock)
        except BaseException:
            sock.close()
            raise
        return conn

    def query(self, sql: str, args: Sequence[Any] | None = None) -> list[tuple[Any, ...]]:
        conn = self.connect()
        try:
            with conn.cursor() as cur:
                cur.execute("SET SESSION wsrep_sync_wait=0")
                cur.execute(sql, args)
                return list(cur.fetchall())
        finally:
            conn.close()

    def status(self, name: str) -> str:
        rows = self.query("SHOW GLOBAL STATUS LIKE %s", (name,))
        return str(rows[0][1]) if rows else ""

    def synced(self) -> bool:
        return (
            self.alive
            and self.status("wsrep_local_state") == str(SYNCED)
            and self.status("wsrep_cluster_status") == "Primary"
            and self.status("wsrep_ready") == "ON"
        )

    def wait_synced(self, timeout: float = 90) -> None:
        def ready() -> bool:
            if not self.alive:
                raise RuntimeError(f"{self.name} exited: {self.tail_log()}")
            return self.synced()

        wait_until(ready, timeout, f"{self.name} Synced")

    def tail_log(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


def _chown_tree(path: Path) -> None:
    mysql = pwd.getpwnam("mysql")
    for root, dirs, files in os.walk(path):
        os.chown(root, mysql.pw_uid, mysql.pw_gid)
        for name in dirs + files:
            os.chown(os.path.join(root, name), mysql.pw_uid, mysql.pw_gid)


BOOTSTRAP_SQL = f"""
DROP USER IF EXISTS ''@'localhost';
DROP USER IF EXISTS ''@'{socket.gethostname()}';
CREATE USER '{ADMIN_USER}'@'%' IDENTIFIED BY '{ADMIN_PASSWORD}';
GRANT ALL PRIVILEGES ON *.* TO '{ADMIN_USER}'@'%' WITH GRANT OPTION;
CREATE USER '{MONITOR_USER}'@'%' IDENTIFIED BY '{MONITOR_PASSWORD}';
GRANT USAGE ON *.* TO '{MONITOR_USER}'@'%';
CREATE USER '{APP_USER}'@'%' IDENTIFIED BY '{APP_PASSWORD}';
GRANT ALL PRIVILEGES ON *.* TO '{APP_USER}'@'%';
CREATE DATABASE IF NOT EXISTS app;
"""


class GaleraCluster:
    def __init__(self, size: int = 3, provider_options: Sequence[str] = ()) -> None:
        # Not under pytest's per-user 0700 temp root: the mysql user must reach it.
        self.base = Path(tempfile.mkdtemp(prefix="loadstone-galera-"))
        os.chmod(self.base, 0o755)
        self.provider_options = tuple(provider_options)
        self.nodes: list[GaleraNode] = []
        for i in range(size):
            self.nodes.append(GaleraNode(self, i))

    def __getitem__(self, name: str) -> GaleraNode:
        for node in self.nodes:
            if node.name == name:
                return node
        raise KeyError(name)

    def by_port(self, port: int) -> GaleraNode:
        for node in self.nodes:
            if node.port == port:
                return node
        raise KeyError(port)

    def start(self) -> GaleraCluster:
        first, *others = self.nodes
        first.prepare(install=True)
        for node in others:
            node.prepare(install=False)
        first.start(bootstrap=True)
        wait_until(lambda: first.socket.exists() or not first.alive, 60, "db1 socket")
        self._bootstrap_sql(first)
        first.wait_synced()
        for node in others:
            node.start()
            node.wait_synced()
        return self

    def boot(self) -> GaleraCluster:
        """start(), or on failure: the nodes' logs printed, everything stopped, raise."""
        try:
            return self.start()
        except BaseException:
            for node in self.nodes:
                print(f"--- {node.name} log ---\n{node.tail_log(60)}")
            self.stop()
            raise

    def _bootstrap_sql(self, node: GaleraNode) -> None:
        assert MARIADB_CLIENT is not None

        def run() -> bool:
            if not node.alive:
                raise RuntimeError(f"{node.name} exited: {node.tail_log()}")
            subprocess.run(
                [MARIADB_CLIENT, f"--socket={node.socket}", "-uroot", "-e", BOOTSTRAP_SQL],
                check=True,
                capture_output=True,
                timeout=30,
            )
            return True

        wait_until(run, 60, f"bootstrap SQL on {node.name}", interval=0.2)

    def stop(self) -> None:
        for node in reversed(self.nodes):
            node.stop()
        shutil.rmtree(self.base, ignore_errors=True)

    # -- restoring after a test broke something --------------------------------------

    def restore(self, timeout: float = 120) -> None:
        """Every node running, Synced, in one Primary component, with default settings.

        A dead node is restarted (it rejoins by IST); a node left desynced,
        rejecting queries or isolated gets its setting back."""
        for node in self.nodes:
            if not node.alive:
                continue
            with contextlib.suppress(Exception):
                node.query("SET GLOBAL wsrep_desync=OFF")
            with contextlib.suppress(Exception):
                node.query("SET GLOBAL wsrep_reject_queries=NONE")
            with contextlib.suppress(Exception):
                node.query("SET GLOBAL wsrep_provider_options='gmcast.isolate=0'")
            with contextlib.suppress(Exception):
                node.query("SET GLOBAL read_only=OFF")
        for node in self.nodes:
            if not node.alive:
                node.start()
                node.wait_synced(timeout)
        for node in self.nodes:
            node.wait_synced(timeout)
        wait_until(
            lambda: all(n.status("wsrep_cluster_size") == str(len(self.nodes)) for n in self.nodes),
            timeout,
            "cluster size back to full",
        )


@contextlib.contextmanager
def running_cluster(**kw: Any) -> Iterator[GaleraCluster]:
    cluster = GaleraCluster(**kw)
    try:
        yield cluster.start()
    finally:
        cluster.stop()
