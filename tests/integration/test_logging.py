"""Log destinations against real receivers: rsyslogd (Debian's) over a unix
datagram socket, UDP and TCP, its parse of each message read back; journald's
priority prefixes; a logrotate cycle (rename, then SIGUSR1 or `ctl
reopen-logs`) losing no line; an unreachable syslog server costing lines, not
latency."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from tests.integration.conftest import listener_config
from tests.integration.harness import (
    LOADSTONE,
    Backend,
    Loadstone,
    free_port,
    port_open,
    wait_for,
)
from tests.integration.test_tcp_proxy import checked, proxy_port, who

pytestmark = pytest.mark.integration

Backends = Callable[..., list[Backend]]
Start = Callable[..., Loadstone]

RSYSLOGD = shutil.which("rsyslogd") or "/usr/sbin/rsyslogd"
# What rsyslogd writes for each message it received: its own parse, one field per
# property, the message last (it may hold the separator).
FIELDS = ("inputname", "syslogfacility-text", "syslogseverity-text", "app-name", "procid", "msgid")


@dataclass
class Received:
    input: str
    facility: str
    severity: str
    app: str
    procid: str
    msgid: str
    msg: str


class Rsyslog:
    """rsyslogd in the foreground with a unix socket, a UDP and a TCP input."""

    def __init__(self, tmp: Path) -> None:
        self.dir = tmp / "rsyslog"
        self.dir.mkdir()
        self.socket = self.dir / "log.sock"
        self.udp = free_port()
        self.tcp = free_port()
        self.out = self.dir / "received"
        properties = "|".join(f"%{name}%" for name in FIELDS)
        conf = self.dir / "rsyslog.conf"
        conf.write_text(
            f"""
global(workDirectory="{self.dir}" maxMessageSize="64k")
module(load="imuxsock" SysSock.Use="off")
input(type="imuxsock" Socket="{self.socket}")
module(load="imudp")
input(type="imudp" address="127.0.0.1" port="{self.udp}")
module(load="imtcp")
input(type="imtcp" address="127.0.0.1" port="{self.tcp}")
template(name="fields" type="string" string="{properties}|%msg%\\n")
*.* action(type="omfile" file="{self.out}" template="fields")
"""
        )
        self.proc = subprocess.Popen(
            [RSYSLOGD, "-n", "-f", str(conf), "-i", str(self.dir / "pid")],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for(
            lambda: self.socket.exists() and port_open("127.0.0.1", self.tcp),
            what="rsyslogd inputs",
        )

    def target(self, kind: str) -> str:
        return {
            "unix": f"syslog:{self.socket}",
            "udp": f"syslog+udp://127.0.0.1:{self.udp}",
            "tcp": f"syslog+tcp://127.0.0.1:{self.tcp}",
        }[kind]

    def messages(self) -> list[Received]:
        if not self.out.exists():
            return []
        received = []
        for line in self.out.read_text().splitlines():
            parts = line.split("|", len(FIELDS))
            if len(parts) == len(FIELDS) + 1:
                received.append(Received(*parts[:-1], parts[-1].strip()))
        return received

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(10)


@pytest.fixture
def rsyslog(tmp_path: Path) -> Iterator[Rsyslog]:
    daemon = Rsyslog(tmp_path)
    yield daemon
    daemon.stop()


INPUTS = {"unix": "imuxsock", "udp": "imudp", "tcp": "imtcp"}


@pytest.mark.parametrize(
    ("kind", "protocol"),
    [
        ("unix", "rfc3164"),
        ("udp", "rfc3164"),
        ("udp", "rfc5424"),
        ("tcp", "rfc3164"),
        ("tcp", "rfc5424"),
    ],
)
def test_rsyslog_receives_sessions_and_events(
    backends: Backends, loadstone: Start, rsyslog: Rsyslog, kind: str, protocol: str
) -> None:
    servers = backends(2)
    config = listener_config(servers, check=checked())
    # A server nobody listens on: its DOWN is a warning event.
    config["listeners"]["web"]["servers"].append(
        {"name": "gone", "address": f"127.0.0.1:{free_port()}"}
    )
    target = rsyslog.target(kind)
    config["global"]["log"] = {
        "events": {"target": target, "protocol": protocol, "facility": "daemon", "tag": "lbtest"},
        "sessions": {
            "target": target,
            "protocol": protocol,
            "facility": "local3",
            "tag": "lbtest",
            "format": "json",
        },
    }
    ls = loadstone(config)  # run --log-format json: events in JSON too
    port = proxy_port(ls)
    ls.wait_state("web", "gone", "down")
    for _ in range(20):
        assert who(port) in ("s1", "s2")

    def sessions() -> list[Received]:
        return [m for m in rsyslog.messages() if m.facility == "local3"]

    wait_for(lambda: len(sessions()) == 20, what="20 session messages at rsyslogd")
    assert ls.proc is not None
    for m in sessions():
        assert (m.input, m.severity, m.app, m.procid) == (
            INPUTS[kind],
            "info",
            "lbtest",
            str(ls.proc.pid),
        ), m
        assert m.msgid == ("session" if protocol == "rfc5424" else "-"), m
        line = json.loads(m.msg)
        assert (line["event"], line["listener"], line["server"]) == (
            "session",
            "web",
            line["server"],
        )
        assert line["server"] in ("s1", "s2")

    def events() -> list[Received]:
        return [m for m in rsyslog.messages() if m.facility == "daemon"]

    down = wait_for(
        lambda: [m for m in events() if "server web/gone is DOWN" in m.msg],
        what="the DOWN event at rsyslogd",
    )
    assert down[0].severity == "warning"
    started = [m for m in events() if "listener web on" in m.msg]
    assert started and started[0].severity == "info" and started[0].app == "lbtest"
    assert ls.status()["logs"]["sessions"]["dropped"] == 0
    assert ls.stderr() == ""  # every event went to rsyslogd


def test_unreachable_syslog_server_costs_lines_not_latency(
    backends: Backends, loadstone: Start
) -> None:
    servers = backends(1)
    config = listener_config(servers)
    closed = free_port()  # nothing listens there
    config["global"]["log"] = {"sessions": f"syslog+tcp://127.0.0.1:{closed}"}
    ls = loadstone(config)
    port = proxy_port(ls)
    slowest = 0.0
    for _ in range(50):
        t0 = time.monotonic()
        assert who(port) == "s1"
        slowest = max(slowest, time.monotonic() - t0)
    assert slowest < 0.5
    wait_for(lambda: ls.status()["logs"]["sessions"]["dropped"] == 50, what="50 dropped lines")
    assert ls.status()["logs"]["sessions"]["written"] == 0
    wait_for(lambda: "cannot connect" in ls.stderr(), what="the warning on stderr")
    assert f"syslog+tcp://127.0.0.1:{closed}" in ls.stderr()


def journal_stream(path: Path) -> str:
    st = os.stat(path)
    return f"{st.st_dev}:{st.st_ino}"


def test_journald_priority_prefixes_on_the_journal_stream(
    tmp_path: Path, backends: Backends
) -> None:
    servers = backends(1)
    config = listener_config(servers, check=checked())
    config["listeners"]["web"]["servers"].append(
        {"name": "gone", "address": f"127.0.0.1:{free_port()}"}
    )
    ls = Loadstone(tmp_path, config, log_format="text")
    # systemd names the stream it connected to journald; here stderr's file.
    ls.stderr_path.touch()
    ls.env["JOURNAL_STREAM"] = journal_stream(ls.stderr_path)
    ls.start()
    try:
        ls.wait_state("web", "gone", "down")
        assert who(proxy_port(ls)) == "s1"
        wait_for(lambda: ls.stdout_path.read_text(), what="a session line")
    finally:
        ls.stop()
    events = ls.stderr().splitlines()
    assert events and all(line[:3] in ("<3>", "<4>", "<6>", "<7>") for line in events), events
    assert any(line.startswith("<4>") and "web/gone is DOWN" in line for line in events)
    assert any(line.startswith("<6>") and "listener web on" in line for line in events)
    # stdout is not the journal stream: its lines have no prefix.
    assert ls.stdout_path.read_text().startswith("20")


def ctl(ls: Loadstone, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(LOADSTONE), "ctl", "-c", str(ls.path), *args],
        capture_output=True,
        text=True,
        timeout=30,
    )


def logging_to_file(access: Path, backends: Backends, loadstone: Start) -> tuple[Loadstone, int]:
    """A proxy in front of one backend, its session lines to `access`; with its port."""
    config = listener_config(backends(1))
    config["global"]["log"] = {"sessions": f"file:{access}"}
    ls = loadstone(config)
    return ls, proxy_port(ls)


@pytest.mark.parametrize("how", ["SIGUSR1", "ctl"])
def test_logrotate_cycle_loses_no_line(
    tmp_path: Path, backends: Backends, loadstone: Start, how: str
) -> None:
    access = tmp_path / "access.log"
    rotated = tmp_path / "access.log.1"
    ls, port = logging_to_file(access, backends, loadstone)
    done = 0
    stop = threading.Event()
    failures: list[BaseException] = []

    def traffic() -> None:  # sessions one after another, through the whole cycle
        nonlocal done
        try:
            while not stop.is_set():
                who(port)
                done += 1
        except BaseException as exc:
            failures.append(exc)

    worker = threading.Thread(target=traffic)
    worker.start()
    try:
        wait_for(lambda: len(access.read_text().splitlines()) >= 100, what="100 lines")
        # logrotate's default (create): move the file, then tell the process.
        access.rename(rotated)
        if how == "SIGUSR1":
            assert ls.proc is not None
            ls.proc.send_signal(signal.SIGUSR1)
        else:
            result = ctl(ls, "reopen-logs")
            assert result.returncode == 0, result.stderr
        wait_for(
            lambda: access.exists() and len(access.read_text().splitlines()) >= 100,
            what="100 lines in the new access.log",
        )
    finally:
        stop.set()
        worker.join(60)
    assert not failures

    def lines() -> list[str]:
        return rotated.read_text().splitlines() + access.read_text().splitlines()

    wait_for(lambda: len(lines()) == done, what=f"{done} session lines")
    assert all(json.loads(line)["event"] == "session" for line in lines())  # none cut
    assert len(set(lines())) == done  # each session once (time and client differ)
    assert len(rotated.read_text().splitlines()) >= 100
    assert "log files reopened" in ls.stderr()


def test_a_file_that_cannot_be_reopened_keeps_the_old_one(
    tmp_path: Path, backends: Backends, loadstone: Start
) -> None:
    access = tmp_path / "access.log"
    ls, port = logging_to_file(access, backends, loadstone)
    who(port)
    access.rename(tmp_path / "moved.log")
    access.mkdir()  # the path is now a directory: no file can be opened there
    result = ctl(ls, "reopen-logs")
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1, result.stderr
    assert f"cannot reopen {access}" in result.stderr
    who(port)
    wait_for(
        lambda: len((tmp_path / "moved.log").read_text().splitlines()) == 2,
        what="the second line in the old file",
    )
    assert "still writing to the old file" in ls.stderr()


def test_a_failed_start_is_an_error_for_journald(tmp_path: Path) -> None:
    config = listener_config([Backend("a", free_port())])
    config["global"]["log"] = {"sessions": f"file:{tmp_path / 'no-such-dir' / 'access.log'}"}
    path = tmp_path / "bad-log.yaml"
    path.write_text(yaml.safe_dump(config))
    errors = tmp_path / "stderr"
    errors.touch()
    with errors.open("r+b") as err:
        result = subprocess.run(
            [str(LOADSTONE), "run", str(path)],
            stderr=err,
            timeout=30,
            env={**os.environ, "JOURNAL_STREAM": journal_stream(errors)},
        )
    assert result.returncode == 1
    assert errors.read_text().splitlines() == [
        f"<3>loadstone: global.log.sessions: cannot open {tmp_path}/no-such-dir/access.log: "
        "no such file or directory"
    ]


def test_log_targets_change_only_at_restart(
    tmp_path: Path, backends: Backends, loadstone: Start
) -> None:
    access = tmp_path / "access.log"
    ls, port = logging_to_file(access, backends, loadstone)
    config = yaml.safe_load(ls.path.read_text())
    config["global"]["log"]["sessions"] = "stdout"
    ls.path.write_text(yaml.safe_dump(config))
    assert ctl(ls, "reload").returncode == 0
    assert "reload: global.log changes only at restart" in ls.stderr()
    who(port)
    wait_for(access.read_text, what="the session line still in access.log")
