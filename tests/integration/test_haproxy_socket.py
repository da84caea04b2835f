"""HAProxy's runtime socket against a live `loadstone run`, with the deployers'
own tools and command sequences, on a configuration imported from haproxy.cfg.

- kolla-ansible's keepalived check script (check_alive_haproxy.sh): `show info`
  through socat, only its exit status counts;
- a kolla-precheck-style `show stat` through socat, read as CSV;
- openstack-ansible's drain step without Ansible: the commands and the order in
  which Ansible's haproxy module (community.general.haproxy, which the
  openstack-ansible playbooks call with the haproxy_server role's socket) sends
  them, one connection per command, as the module does;
- hatop: its own socket and parsing code (it has no batch mode), and the
  curses program itself in a pseudo-terminal.
"""

from __future__ import annotations

import csv
import fcntl
import importlib.machinery
import importlib.util
import io
import os
import pty
import select
import socket
import stat
import struct
import subprocess
import termios
import time
import types
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.integration.harness import LOADSTONE, Loadstone, free_port, wait_for

HAPROXY_CFG = """\
global
    stats socket {sock} level admin mode 660
    stats timeout 2s

defaults
    timeout connect 5s
    timeout client 30s
    timeout server 30s

frontend keystone_api-front
    bind 127.0.0.1:{http_port}
    mode http
    default_backend keystone_api-back

backend keystone_api-back
    mode http
    option httpchk GET /health
    server ctl1 {b1} check inter 300 rise 1 fall 1
    server ctl2 {b2} check inter 300 rise 1 fall 1

frontend galera-front-1
    bind 127.0.0.1:{tcp_port}
    mode tcp
    default_backend galera-back

backend galera-back
    mode tcp
    server ctl1 {e1} check inter 300 rise 1 fall 1
    server ctl2 {e2} check inter 300 rise 1 fall 1 backup
"""


@pytest.fixture
def proxy(tmp_path: Path, backends: Any) -> Iterator[tuple[Loadstone, Path]]:
    """loadstone running the import of HAPROXY_CFG; its runtime socket's path."""
    b1, b2 = backends(2)
    e1, e2 = backends(2, mode="echo", prefix="e")
    sock = tmp_path / "haproxy.sock"
    cfg = tmp_path / "haproxy.cfg"
    cfg.write_text(
        HAPROXY_CFG.format(
            sock=sock,
            http_port=free_port(),
            tcp_port=free_port(),
            b1=b1.address,
            b2=b2.address,
            e1=e1.address,
            e2=e2.address,
        )
    )
    imported = subprocess.run(
        [str(LOADSTONE), "import", "haproxy", str(cfg)],
        capture_output=True,
        text=True,
        check=True,
    )
    ls = Loadstone(tmp_path, yaml.safe_load(imported.stdout)).start()
    try:
        ls.wait_all_up("keystone_api-front")
        wait_for(sock.exists, what="the runtime socket")
        yield ls, sock
    finally:
        assert ls.stop() == 0


def socat(sock: Path, text: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["socat", f"unix-connect:{sock}", "stdio"],
        input=text,
        capture_output=True,
        text=True,
        timeout=10,
        check=False,
    )


def stat_rows(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text.lstrip("# "))))


def test_socket_file_mode_from_the_import(proxy: tuple[Loadstone, Path]) -> None:
    _, sock = proxy
    mode = os.stat(sock).st_mode
    assert stat.S_ISSOCK(mode) and stat.S_IMODE(mode) == 0o660


def test_kolla_keepalived_check_script(proxy: tuple[Loadstone, Path], tmp_path: Path) -> None:
    ls, sock = proxy
    # kolla-ansible's ansible/roles/loadbalancer/templates/keepalived/check_alive_haproxy.sh.j2,
    # with the socket's path.
    script = tmp_path / "check_alive_haproxy.sh"
    script.write_text(
        "#!/bin/bash\n"
        "# This will return 0 when it successfully talks to the haproxy daemon via the socket\n"
        "# Failures return 1\n"
        f'echo "show info" | socat unix-connect:{sock} stdio > /dev/null\n'
    )
    script.chmod(0o755)
    assert subprocess.run([str(script)], timeout=10, check=False).returncode == 0
    assert "Name: loadstone\n" in socat(sock, "show info\n").stdout
    ls.stop()
    # No proxy, no socket: the check fails, and keepalived moves the VIP away.
    assert (
        subprocess.run([str(script)], timeout=10, check=False, stderr=subprocess.DEVNULL).returncode
        != 0
    )


def test_kolla_precheck_show_stat(proxy: tuple[Loadstone, Path]) -> None:
    _, sock = proxy
    out = socat(sock, "show stat\n")
    assert out.returncode == 0
    rows = {(r["pxname"], r["svname"]): r for r in stat_rows(out.stdout)}
    assert rows[("keystone_api-front", "FRONTEND")]["status"] == "OPEN"
    assert rows[("keystone_api-back", "ctl1")]["status"] == "UP"
    assert rows[("keystone_api-back", "ctl1")]["check_status"] == "L7OK"
    assert rows[("keystone_api-back", "BACKEND")]["status"] == "UP"
    assert rows[("galera-back", "ctl2")]["bck"] == "1"
    assert list(rows).index(("galera-front-1", "FRONTEND")) < list(rows).index(
        ("galera-back", "ctl1")
    )


# -- openstack-ansible's drain, as Ansible's haproxy module does it -------------------


def module_execute(sock: Path, cmd: str) -> str:
    """community.general.haproxy's execute(): a connection per command, the
    command and a newline, then everything until the socket closes."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
        client.settimeout(5)
        client.connect(str(sock))
        client.sendall(f"{cmd}\n".encode())
        result = b""
        while True:
            buf = client.recv(8192)
            if not buf:
                break
            result += buf
    return result.decode()


def module_status(sock: Path, backend: str, server: str) -> str:
    """The module's get_state_for(): `show stat` read by column name."""
    rows = stat_rows(module_execute(sock, "show stat"))
    found = [r for r in rows if r["pxname"] == backend and r["svname"] == server]
    assert found, f"{backend}/{server} not in show stat"
    return found[0]["status"]


def module_version(sock: Path) -> tuple[int, int]:
    """The module's discover_version(): drain needs HAProxy 1.5 or later."""
    line = next(x for x in module_execute(sock, "show info").splitlines() if "Version:" in x)
    major, minor = line.partition(":")[2].strip().split(".", 3)[:2]
    return int(major), int(minor)


def test_openstack_ansible_drain_and_enable(proxy: tuple[Loadstone, Path]) -> None:
    ls, sock = proxy
    backend, host = "keystone_api-back", "ctl1"
    listener = "keystone_api-front"
    assert module_version(sock) >= (1, 5)
    # state: drain (wait: yes)
    assert module_status(sock, backend, host) == "UP"
    assert module_execute(sock, f"set server {backend}/{host} state drain") == "\n"
    wait_for(lambda: module_status(sock, backend, host) == "DRAIN", what="DRAIN")
    assert ls.server(listener, host)["state"] == "drain"
    # state: disabled, shutdown_sessions: yes (the playbooks' upgrade step)
    out = module_execute(
        sock,
        f"get weight {backend}/{host}; disable server {backend}/{host}; "
        f"shutdown sessions server {backend}/{host}",
    )
    assert out == "1 (initial 1)\n\n"
    wait_for(lambda: module_status(sock, backend, host) == "MAINT", what="MAINT")
    assert ls.server(listener, host)["state"] == "maint"
    assert ls.server(listener, "ctl2")["state"] == "up"
    # state: enabled
    module_execute(sock, f"get weight {backend}/{host}; enable server {backend}/{host}")
    wait_for(lambda: module_status(sock, backend, host) == "UP", what="UP")
    assert ls.server(listener, host)["state"] == "up"
    # set weight, as the module's `weight:` does
    assert module_execute(sock, f"set weight {backend}/{host} 50") == "\n"
    assert ls.server(listener, host)["weight"] == 50


def test_shutdown_sessions_closes_the_galera_connection(proxy: tuple[Loadstone, Path]) -> None:
    ls, sock = proxy
    port = int(ls.config["listeners"]["galera-front-1"]["bind"][0].rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=5) as client:
        client.sendall(b"ping")
        assert client.recv(4) == b"ping"  # the echo server, through the writer
        wait_for(lambda: ls.server("galera-front-1", "ctl1")["sessions"] == 1, what="a session")
        assert module_execute(sock, "shutdown sessions server galera-back/ctl1") == "\n"
        assert client.recv(100) == b""  # closed by the proxy
    assert ls.server("galera-front-1", "ctl1")["state"] == "up"


def test_prompt_mode_survives_bad_commands(proxy: tuple[Loadstone, Path]) -> None:
    ls, sock = proxy
    out = socat(
        sock,
        "prompt\nfrobnicate\nset server galera-back/ctl1 state up\n"
        "disable server galera-back/ctl9\ndisable server galera-back/ctl2\nquit\n",
    ).stdout
    assert "Unknown command, but maybe one of the following ones is a better match:" in out
    assert "'set server <srv> state' expects 'ready', 'drain' and 'maint'." in out
    assert "No such server." in out
    assert ls.server("galera-front-1", "ctl2")["state"] == "maint"  # the line after the errors


def test_a_silent_client_is_timed_out(proxy: tuple[Loadstone, Path]) -> None:
    _, sock = proxy
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
        client.settimeout(10)
        client.connect(str(sock))
        t0 = time.monotonic()
        assert client.recv(100) == b""  # `stats timeout 2s`, imported
        assert 1.5 < time.monotonic() - t0 < 8


def test_a_user_level_socket_refuses_changes(tmp_path: Path, backends: Any) -> None:
    (b1,) = backends(1)
    sock = tmp_path / "user.sock"
    config = {
        "global": {"admin": {"haproxy_socket": {"path": str(sock), "level": "user"}}},
        "listeners": {
            "web": {
                "bind": [f"127.0.0.1:{free_port()}"],
                "servers": [{"name": "a", "address": b1.address}],
            }
        },
    }
    ls = Loadstone(tmp_path, config).start()
    try:
        assert socat(sock, "disable server web/a\n").stdout == "Permission denied\n\n"
        assert ls.server("web", "a")["state"] == "up"
        assert stat.S_IMODE(os.stat(sock).st_mode) == 0o600  # the default mode
    finally:
        assert ls.stop() == 0
    assert not sock.exists()


# -- hatop ------------------------------------------------------------------------------

HATOP = Path("/usr/bin/hatop")


def load_hatop() -> types.ModuleType:
    loader = importlib.machinery.SourceFileLoader("hatop", str(HATOP))
    spec = importlib.util.spec_from_loader("hatop", loader)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    with warnings.catch_warnings():
        # hatop 0.8.2's regular expressions are written with "\." in plain strings,
        # which Python 3.11 warns about (and pytest makes warnings errors).
        warnings.simplefilter("ignore", (SyntaxWarning, DeprecationWarning))
        loader.exec_module(module)
    return module


def test_hatop_reads_info_and_stats_and_sends_commands(proxy: tuple[Loadstone, Path]) -> None:
    ls, sock = proxy
    hatop = load_hatop()
    connection = hatop.Socket(str(sock))
    connection.connect()  # `prompt`, then `set timeout cli`
    try:
        data = hatop.SocketData(connection)
        data.update_info()  # raises on a missing field
        assert data.info["software_name"] == "loadstone"
        data.update_stat()  # parses every column by position
        rows = [row for proxy_rows in data.stat.values() for row in proxy_rows.values()]
        by_name = {(r["pxname"], r["svname"]): r for r in rows}
        assert by_name[("keystone_api-back", "ctl1")]["status"] == "UP"
        assert by_name[("keystone_api-back", "ctl1")]["type"] == 2
        # hatop's CLI mode sends what the operator types.
        connection.send(b"disable server keystone_api-back/ctl2")
        assert [line for line in connection.recv() if line] == []
        assert ls.server("keystone_api-front", "ctl2")["state"] == "maint"
    finally:
        connection.close()


def test_hatop_program_in_a_terminal(proxy: tuple[Loadstone, Path]) -> None:
    _, sock = proxy
    pid, fd = pty.fork()
    if pid == 0:  # the child: hatop on a 100x30 terminal
        os.environ["TERM"] = "xterm"
        os.execv(str(HATOP), [str(HATOP), "-s", str(sock), "-i", "1"])
    try:
        fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", 30, 100, 0, 0))
        screen = b""
        deadline = time.monotonic() + 20
        while b"keystone_api-back" not in screen or b"ctl2" not in screen:
            assert time.monotonic() < deadline, screen.decode(errors="replace")
            ready, _, _ = select.select([fd], [], [], 1)
            if ready:
                screen += os.read(fd, 65536)
        assert b"loadstone" in screen  # the Name of show info, in hatop's header
        os.write(fd, b"q")
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        pid = 0
    finally:
        if pid:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
        os.close(fd)
