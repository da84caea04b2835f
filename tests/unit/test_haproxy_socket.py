"""HAProxy's runtime socket, sans-IO: a session fed with bytes, its answers read back.

The running proxy is real pools built from a parsed configuration; the frontends
are counters only (what `show stat` reads of them)."""

from __future__ import annotations

import ast
import asyncio
import csv
import io
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from loadstone.config import ConfigError, parse_config
from loadstone.config.model import Address, HaproxySocket, ListenerConfig
from loadstone.haproxy_socket import cli, stats
from loadstone.haproxy_socket.server import HaproxySocketError, HaproxySocketServer
from loadstone.server import Pool

CONFIG = """
listeners:
  galera-front-1:
    bind: ["127.0.0.1:3306"]
    balance: active-backup
    haproxy_names: {frontend: galera-front-1, backend: galera-back}
    servers:
      - {name: ctl1, address: "127.0.0.1:13306"}
      - {name: ctl2, address: "127.0.0.1:13307", backup: true}
  keystone:
    bind: ["127.0.0.1:5000"]
    mode: http
    check: {type: http, path: /healthcheck}
    servers:
      - {name: ks1, address: "127.0.0.1:15000", weight: 10}
    pools:
      nova_api-back:
        servers:
          - {name: nova_api-back.ctl1, address: "127.0.0.1:18774"}
    routes:
      - {path_prefix: /compute, pool: nova_api-back}
"""


@dataclass
class Counters:
    """What show stat reads of a frontend."""

    current_sessions: int = 2
    sessions_total: int = 40
    bytes_in: int = 1000
    bytes_out: int = 5000
    queued_count: int = 0


@dataclass
class Listener:
    config: ListenerConfig
    pool: Pool
    frontend: Any = field(default_factory=Counters)


@dataclass
class Runtime:
    listeners: Mapping[str, Listener]
    started_at: float = 1000.0


@pytest.fixture
def runtime() -> Runtime:
    config = parse_config(CONFIG)
    return Runtime({lc.name: Listener(lc, Pool(lc)) for lc in config.listeners})


def talk(runtime: Runtime, *chunks: bytes, level: cli.Level = "admin") -> tuple[str, cli.Session]:
    session = cli.Session(runtime, level, pid=42, node="ctl1", clock=lambda: 1100.0)  # type: ignore[arg-type]
    out = b"".join(session.receive(chunk) for chunk in chunks)
    return out.decode(), session


def server(runtime: Runtime, listener: str, name: str) -> Any:
    return runtime.listeners[listener].pool.by_name[name]


def test_show_info_answers_once_then_closes(runtime: Runtime) -> None:
    out, session = talk(runtime, b"show info\n")
    assert session.closed
    lines = out.split("\n")
    assert lines[:2] == [
        "Name: loadstone",
        f"Version: {stats.HAPROXY_DIALECT} (loadstone " + lines[1].split("(loadstone ")[1],
    ]
    assert "Pid: 42" in lines and "Uptime_sec: 100" in lines and "node: ctl1" in lines
    assert "CurrConns: 4" in lines  # two listeners of two sessions each
    assert out.endswith("\n\n")  # the empty line that ends every answer


def test_show_stat_columns_in_haproxy_order_and_rows_per_proxy(runtime: Runtime) -> None:
    out, _ = talk(runtime, b"show stat\n")
    header, *rows = out.rstrip("\n").split("\n")
    assert header.startswith("# pxname,svname,qcur,qmax,scur,smax,slim,stot,bin,bout,")
    assert header.endswith(",need_conn_est,uweight,")
    table = list(csv.DictReader(io.StringIO(out.lstrip("# "))))
    assert [(r["pxname"], r["svname"]) for r in table] == [
        ("galera-front-1", "FRONTEND"),
        ("galera-back", "ctl1"),
        ("galera-back", "ctl2"),
        ("galera-back", "BACKEND"),
        ("keystone", "FRONTEND"),
        ("keystone", "ks1"),
        ("keystone", "BACKEND"),
        ("nova_api-back", "ctl1"),
        ("nova_api-back", "BACKEND"),
    ]
    by_name = {(r["pxname"], r["svname"]): r for r in table}
    assert by_name[("galera-back", "ctl1")]["status"] == "no check"
    assert by_name[("galera-back", "ctl2")]["bck"] == "1"
    assert by_name[("keystone", "ks1")]["status"] == "UP"
    assert by_name[("keystone", "ks1")]["weight"] == "10"
    assert by_name[("keystone", "FRONTEND")]["status"] == "OPEN"
    assert by_name[("keystone", "BACKEND")]["algo"] == "roundrobin"
    # Each proxy its own iid (hatop groups rows by it); a listen-like listener one.
    iids = {r["pxname"]: r["iid"] for r in table}
    assert iids == {
        "galera-front-1": "1",
        "galera-back": "2",
        "keystone": "3",
        "nova_api-back": "4",
    }
    # Every row as wide as the header: readers by position find their column.
    assert {row.count(",") for row in rows} == {header.count(",")}


def test_show_stat_filter_by_proxy_and_type(runtime: Runtime) -> None:
    out, _ = talk(runtime, b"show stat galera-back 4 -1\n")
    table = list(csv.DictReader(io.StringIO(out.lstrip("# "))))
    assert [(r["pxname"], r["svname"]) for r in table] == [
        ("galera-back", "ctl1"),
        ("galera-back", "ctl2"),
    ]


def test_disable_enable_by_haproxy_backend_name(runtime: Runtime) -> None:
    ctl1 = server(runtime, "galera-front-1", "ctl1")
    out, _ = talk(runtime, b"disable server galera-back/ctl1\n")
    assert out == "\n"  # success: the empty answer
    assert ctl1.state == "maint"
    talk(runtime, b"enable server galera-back/ctl1\n")
    assert ctl1.state == "up"
    # The listener's own name works too.
    talk(runtime, b"set server galera-front-1/ctl1 state drain\n")
    assert ctl1.state == "drain"


def test_pool_servers_by_their_backend_name(runtime: Runtime) -> None:
    talk(runtime, b"set server nova_api-back/ctl1 state maint\n")
    assert server(runtime, "keystone", "nova_api-back.ctl1").state == "maint"


def test_weight_commands(runtime: Runtime) -> None:
    ks1 = server(runtime, "keystone", "ks1")
    out, _ = talk(
        runtime, b"prompt\n", b"set weight keystone/ks1 50%\n", b"get weight keystone/ks1\n"
    )
    assert ks1.weight == 5
    assert "5 (initial 10)\n" in out
    out, _ = talk(runtime, b"set server keystone/ks1 weight 0\n")
    assert ks1.weight == 0 and out == "\n"


def test_several_commands_on_one_line(runtime: Runtime) -> None:
    # Ansible's haproxy module: the weight first, to restore it when enabling.
    out, session = talk(runtime, b"get weight galera-back/ctl2; disable server galera-back/ctl2\n")
    assert out == "1 (initial 1)\n\n"
    assert server(runtime, "galera-front-1", "ctl2").state == "maint"
    assert session.closed


@pytest.mark.parametrize(
    ("line", "answer"),
    [
        ("disable server galera-back", "Require 'backend/server'.\n"),
        ("disable server nope/ctl1", "No such backend.\n"),
        ("disable server galera-back/nope", "No such server.\n"),
        (
            "set server galera-back/ctl1 state up",
            "'set server <srv> state' expects 'ready', 'drain' and 'maint'.\n",
        ),
        (
            "set weight galera-back/ctl1 300",
            "Absolute weight can only be between 0 and 256 inclusive.\n",
        ),
        ("set weight galera-back/ctl1 1x", "Trailing garbage in weight string.\n"),
        ("show servers state nope", "Can't find backend.\n"),
    ],
)
def test_haproxy_error_texts(runtime: Runtime, line: str, answer: str) -> None:
    out, _ = talk(runtime, line.encode() + b"\n")
    assert out == answer + "\n"
    assert server(runtime, "galera-front-1", "ctl1").state == "up"


def test_prompt_mode_stays_usable_after_bad_commands(runtime: Runtime) -> None:
    out, session = talk(runtime, b"prompt\n", b"frobnicate\n", b"show\n")
    assert not session.closed
    assert "\n> Unknown command, but maybe one of the following ones is a better match:\n" in out
    assert out.endswith("\n> ")
    # `show` alone: the show commands are the better matches, not the others.
    last = out.split("better match:\n")[-1]
    assert "show stat" in last and "disable server" not in last
    out = session.receive(b"disable server galera-back/ctl1\n").decode()
    assert out == "\n> " and server(runtime, "galera-front-1", "ctl1").state == "maint"
    assert session.receive(b"quit\n") == b"" and session.closed


def test_level_refuses_what_it_does_not_allow(runtime: Runtime) -> None:
    for level in ("user", "operator"):
        out, _ = talk(runtime, b"disable server galera-back/ctl1\n", level=level)  # type: ignore[arg-type]
        assert out == "Permission denied\n\n"
        out, _ = talk(runtime, b"show stat\n", level=level)  # type: ignore[arg-type]
        assert out.startswith("# pxname")
    assert server(runtime, "galera-front-1", "ctl1").state == "up"
    out, _ = talk(runtime, b"help\n", level="user")
    assert out.startswith("The following commands are valid at this level:\n")
    assert "show info" in out and "disable server" not in out


def test_partial_lines_and_crlf(runtime: Runtime) -> None:
    out, session = talk(runtime, b"show in", b"fo\r\n")
    assert out.startswith("Name: loadstone\n") and session.closed


def test_last_line_without_newline_runs_at_end_of_input(runtime: Runtime) -> None:
    session = cli.Session(runtime)  # type: ignore[arg-type]
    assert session.receive(b"disable server galera-back/ctl1") == b""
    assert session.end_of_input() == b"\n"
    assert server(runtime, "galera-front-1", "ctl1").state == "maint"


def test_a_line_too_long_closes(runtime: Runtime) -> None:
    out, session = talk(runtime, b"x" * (cli.MAX_LINE + 1))
    assert session.closed and out == "Line too long.\n\n"


def test_set_timeout_cli(runtime: Runtime) -> None:
    out, session = talk(runtime, b"prompt\n", b"set timeout cli 30\n", b"set timeout cli x\n")
    assert session.timeout == 30.0
    assert out.endswith("Expects an integer value.\n\n> ")


def test_show_servers_state(runtime: Runtime) -> None:
    talk(runtime, b"set server galera-back/ctl2 state drain\n")
    out, _ = talk(runtime, b"show servers state galera-back\n")
    lines = out.rstrip("\n").split("\n")
    assert lines[0] == "1" and lines[1] == stats.SERVERS_STATE_HEADER
    fields = [line.split() for line in lines[2:]]
    assert [(f[1], f[3], f[6]) for f in fields] == [
        ("galera-back", "ctl1", "0"),
        ("galera-back", "ctl2", "8"),
    ]
    assert all(len(f) == len(lines[1].split()) - 1 for f in fields)  # the header's "#" aside


def test_socket_configuration() -> None:
    config = parse_config(
        "global:\n  admin:\n    haproxy_socket: {path: /run/l.sock, mode: '0660', level: admin}\n"
        "listeners:\n  l: {bind: ['127.0.0.1:1'], servers: [{name: s, address: '127.0.0.1:2'}]}\n"
    )
    socket = config.global_.admin.haproxy_socket
    assert socket is not None and socket.mode == "660" and socket.level == "admin"
    assert socket.timeout == 10.0
    bad = (
        "global:\n  admin:\n    haproxy_socket: {mode: 660, level: root}\n"
        "listeners:\n  l: {bind: ['127.0.0.1:1'], servers: [{name: s, address: '127.0.0.1:2'}]}\n"
    )
    with pytest.raises(ConfigError) as err:
        parse_config(bad)
    problems = "\n".join(err.value.problems)
    assert "global.admin.haproxy_socket.mode: expected octal permissions as a string" in problems
    assert "global.admin.haproxy_socket.level: must be one of user, operator, admin" in problems
    assert "global.admin.haproxy_socket: the runtime socket needs a path" in problems


def test_the_session_imports_no_event_loop() -> None:
    for module in (cli, stats):
        tree = ast.parse(Path(module.__file__ or "").read_text())
        imported = {
            alias.name.split(".")[0]
            for node in ast.walk(tree)
            if isinstance(node, ast.Import | ast.ImportFrom)
            for alias in (node.names if isinstance(node, ast.Import) else [node])  # type: ignore[list-item]
            if isinstance(alias, ast.alias)
        } | {
            (node.module or "").split(".")[0]
            for node in ast.walk(tree)
            if isinstance(node, ast.ImportFrom)
        }
        assert not imported & {"asyncio", "uvloop", "socket", "selectors"}, module.__name__


async def test_an_unknown_group_stops_the_start_and_leaves_no_file(
    runtime: Runtime, tmp_path: Path
) -> None:
    path = tmp_path / "s.sock"
    config = HaproxySocket(path=str(path), group="no-such-group-loadstone")
    server = HaproxySocketServer(runtime, config)  # type: ignore[arg-type]
    with pytest.raises(HaproxySocketError, match="group: no group named 'no-such-group-loadstone'"):
        await server.start()
    assert not path.exists()


async def test_the_socket_gets_its_mode_and_answers(runtime: Runtime, tmp_path: Path) -> None:
    path = tmp_path / "s.sock"
    server = HaproxySocketServer(runtime, HaproxySocket(path=str(path), mode="640"))  # type: ignore[arg-type]
    await server.start()
    try:
        assert path.stat().st_mode & 0o777 == 0o640
        reader, writer = await asyncio.open_unix_connection(str(path))
        writer.write(b"show info\n")
        assert (await reader.read()).startswith(b"Name: loadstone\n")  # then closed
        writer.close()
    finally:
        await server.stop()
    assert not path.exists()


async def test_on_tcp_too(runtime: Runtime) -> None:
    with socket.socket() as probe:  # a free loopback port
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    config = HaproxySocket(bind=Address("127.0.0.1", port), level="user")
    listening = HaproxySocketServer(runtime, config)  # type: ignore[arg-type]
    await listening.start()
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"prompt\nshow stat keystone 4 -1\ndisable server keystone/ks1\nquit\n")
        answer = (await reader.read()).decode()
        writer.close()
    finally:
        await listening.stop()
    assert "\nkeystone,ks1," in answer and "Permission denied\n" in answer
    assert server(runtime, "keystone", "ks1").state == "up"
