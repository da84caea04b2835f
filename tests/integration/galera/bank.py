"""The bank workload: concurrent transfers through a proxy to a Galera cluster,
each acknowledged commit remembered, so that a test can check afterwards that
none was lost and that the money adds up (test_galera.py, test_host_death.py,
and the namespace bed's client, tests/integration/ha/bank_client.py)."""

from __future__ import annotations

import random
import threading
import time
import uuid
from typing import Any

import pymysql

from tests.integration.galera.cluster import APP_PASSWORD, APP_USER

# Errors a client of a Galera cluster retries: deadlock / certification
# failure, lock wait, lost or refused connection, node not ready.
RETRYABLE = {1213, 1205, 1047, 1180, 2003, 2006, 2013, 2014, 0}


def connect(port: int, **kw: Any) -> Any:
    options: dict[str, Any] = {
        "host": "127.0.0.1",
        "port": port,
        "user": APP_USER,
        "password": APP_PASSWORD,
        "connect_timeout": 3,
        "read_timeout": 10,
        "write_timeout": 10,
        "autocommit": True,
    }
    return pymysql.connect(**{**options, **kw})


class Bank:
    """Concurrent transfers through the writer listener, retried on the errors a
    Galera client must expect; remembers every transfer it saw commit."""

    ACCOUNTS = 20
    START = 1000

    def __init__(self, port: int, workers: int = 4, host: str = "127.0.0.1") -> None:
        self.port = port
        self.host = host
        self.workers = workers
        self.committed: set[str] = set()
        self.commit_times: list[float] = []  # time.monotonic() of each acknowledged commit
        self.commit_ids: list[str] = []  # the transfer of each, in the same order
        self.errors: dict[int, int] = {}
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.threads: list[threading.Thread] = []
        self.failure: BaseException | None = None

    def setup(self, admin: Any) -> None:
        admin.query("DROP TABLE IF EXISTS app.accounts")
        admin.query("DROP TABLE IF EXISTS app.transfers")
        admin.query("CREATE TABLE app.accounts (id INT PRIMARY KEY, balance BIGINT NOT NULL)")
        admin.query(
            "CREATE TABLE app.transfers (id CHAR(32) PRIMARY KEY, src INT, dst INT, amount INT)"
        )
        values = ",".join(f"({i}, {self.START})" for i in range(self.ACCOUNTS))
        admin.query(f"INSERT INTO app.accounts VALUES {values}")

    def start(self) -> None:
        for i in range(self.workers):
            t = threading.Thread(target=self._work, args=(random.Random(i),), daemon=True)
            t.start()
            self.threads.append(t)

    def finish(self) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(30)

    @property
    def count(self) -> int:
        if self.failure is not None:
            raise AssertionError(f"a bank worker failed: {self.failure!r}")
        with self.lock:
            return len(self.committed)

    def _work(self, rng: random.Random) -> None:
        try:
            self._transfers(rng)
        except BaseException as exc:  # seen by the test, not lost in a thread
            self.failure = exc
            raise

    def _transfers(self, rng: random.Random) -> None:
        conn = None
        while not self.stop.is_set():
            src, dst = rng.sample(range(self.ACCOUNTS), 2)
            amount = rng.randint(1, 50)
            tid = uuid.uuid4().hex
            try:
                if conn is None:
                    conn = connect(self.port, autocommit=False, host=self.host)
                with conn.cursor() as cur:
                    # Lock both rows in one order: no deadlock among ourselves.
                    cur.execute(
                        "SELECT id, balance FROM app.accounts WHERE id IN (%s, %s) FOR UPDATE",
                        (src, dst),
                    )
                    cur.execute(
                        "UPDATE app.accounts SET balance = balance - %s WHERE id = %s",
                        (amount, src),
                    )
                    cur.execute(
                        "UPDATE app.accounts SET balance = balance + %s WHERE id = %s",
                        (amount, dst),
                    )
                    cur.execute(
                        "INSERT INTO app.transfers VALUES (%s, %s, %s, %s)",
                        (tid, src, dst, amount),
                    )
                conn.commit()
            except (pymysql.err.MySQLError, OSError) as exc:
                code = exc.args[0] if exc.args and isinstance(exc.args[0], int) else -1
                with self.lock:
                    self.errors[code] = self.errors.get(code, 0) + 1
                if code not in RETRYABLE and not isinstance(exc, OSError):
                    raise
                # The outcome of a transfer whose COMMIT got no answer is unknown:
                # it is not counted as seen, and the next one is a new transfer.
                if conn is not None:
                    conn.close()
                conn = None
                time.sleep(0.01)
                continue
            with self.lock:
                self.committed.add(tid)
                self.commit_times.append(time.monotonic())
                self.commit_ids.append(tid)
        if conn is not None:
            conn.close()
