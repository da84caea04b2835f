"""One real MariaDB server on a loopback port, in a temporary directory, run as
the `mysql` user (mariadbd refuses to run as root without --user).

Used where a test needs what only the real server does, e.g. reading a PROXY
protocol header (`proxy_protocol_networks`) and reporting the client address
it names in USER() and the processlist.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import pymysql

MARIADBD = shutil.which("mariadbd", path="/usr/sbin:/usr/bin:" + os.environ.get("PATH", ""))
INSTALL_DB = shutil.which("mariadb-install-db", path="/usr/bin:/usr/sbin")

APP_USER, APP_PASSWORD = "app", "app-pw"


def missing_software() -> str | None:
    """Why a server cannot be started here, or None."""
    if MARIADBD is None or INSTALL_DB is None:
        return "mariadbd not found (apt-get install mariadb-server)"
    if os.geteuid() != 0:
        return "needs root to run the server as the mysql user"
    return None


def install_db(cnf: Path) -> None:
    """mariadb-install-db for the datadir of `cnf`: system tables, root by socket."""
    assert INSTALL_DB is not None
    done = subprocess.run(
        [
            INSTALL_DB,
            f"--defaults-file={cnf}",
            "--user=mysql",
            "--skip-test-db",
            "--auth-root-authentication-method=socket",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    if done.returncode != 0:
        raise RuntimeError(f"mariadb-install-db failed: {done.stdout}{done.stderr}")


class MariaDB:
    def __init__(self, port: int, proxy_networks: str | None = None) -> None:
        self.port = port
        self.proxy_networks = proxy_networks
        self.dir = Path(tempfile.mkdtemp(prefix="ls-mariadb-"))
        self.socket = self.dir / "mysqld.sock"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 60) -> MariaDB:
        assert MARIADBD is not None and INSTALL_DB is not None
        datadir = self.dir / "data"
        datadir.mkdir()
        (self.dir / "tmp").mkdir()
        cnf = self.dir / "my.cnf"
        proxy = f"proxy_protocol_networks={self.proxy_networks}\n" if self.proxy_networks else ""
        cnf.write_text(
            f"""[mysqld]
user=mysql
bind-address=127.0.0.1
port={self.port}
socket={self.socket}
datadir={datadir}
pid-file={self.dir}/mysqld.pid
log-error={self.dir}/error.log
tmpdir={self.dir}/tmp
skip-name-resolve
performance_schema=OFF
innodb_buffer_pool_size=16M
innodb_log_file_size=8M
{proxy}"""
        )
        mysql = pwd.getpwnam("mysql")
        for path in (self.dir, datadir, self.dir / "tmp"):
            os.chown(path, mysql.pw_uid, mysql.pw_gid)
        install_db(cnf)
        self.proc = subprocess.Popen(
            [MARIADBD, f"--defaults-file={cnf}"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + timeout
        while not self._listening():
            if self.proc.poll() is not None:
                raise RuntimeError(f"mariadbd exited: {self.error_log()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"mariadbd did not listen in {timeout}s: {self.error_log()}")
            time.sleep(0.05)  # polling the condition: the server is starting
        self.admin(f"CREATE USER '{APP_USER}'@'%' IDENTIFIED BY '{APP_PASSWORD}'")
        return self

    def _listening(self) -> bool:
        with socket.socket(socket.AF_UNIX) as s:
            try:
                s.connect(str(self.socket))
            except OSError:
                return False
        return True

    def admin(self, sql: str) -> list[tuple[Any, ...]]:
        """Run `sql` as root over the unix socket (no PROXY header involved)."""
        conn = pymysql.connect(unix_socket=str(self.socket), user="root", autocommit=True)
        try:
            with conn.cursor() as cur:
                cur.execute(sql)
                return list(cur.fetchall())
        finally:
            conn.close()

    def error_log(self) -> str:
        with contextlib.suppress(OSError):
            return (self.dir / "error.log").read_text(errors="replace")[-3000:]
        return "(no log)"

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(30)
        shutil.rmtree(self.dir, ignore_errors=True)


def who_am_i(host: str, port: int, source: str) -> tuple[str, str]:
    """Connect from `source` (a loopback address) as the app user; return what the
    server says the connection is: USER() and its processlist host."""
    conn = pymysql.connect(
        host=host,
        port=port,
        user=APP_USER,
        password=APP_PASSWORD,
        bind_address=source,
        connect_timeout=5,
        read_timeout=5,
    )
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT USER()")
            user = str(cur.fetchone()[0])  # type: ignore[index]
            cur.execute(
                "SELECT host FROM information_schema.processlist WHERE id = CONNECTION_ID()"
            )
            processlist_host = str(cur.fetchone()[0])  # type: ignore[index]
        return user, processlist_host
    finally:
        conn.close()
