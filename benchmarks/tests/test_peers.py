"""The peers' configurations, the selection of proxies and builds, and the report with
several peers and builds.

The rendering tests need no installed proxy; the last ones hand the generated
configurations to Debian's nginx and caddy, whose own checkers must accept them
(scripts/test installs both, with nginx's stream module).
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from benchmarks import compare
from benchmarks.harness import nginx, report
from benchmarks.harness.backends import SHAPES, Backend
from benchmarks.harness.caddy import Caddy
from benchmarks.harness.lineup import Build, parse_build, parse_builds, parse_proxies
from benchmarks.harness.measure import Run, Summary
from benchmarks.harness.nginx_proxy import NginxProxy
from benchmarks.harness.proxies import Loadstone
from benchmarks.harness.wrk import WrkResult

BACKENDS = [Backend("s0", 4001), Backend("s1", 4002)]
DYNAMIC_STREAM = (
    "nginx version: nginx/1.22.1\nconfigure arguments: --modules-path={} --with-stream=dynamic"
)


@pytest.fixture
def fake_nginx(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """`nginx -V` of Debian's build, its stream module in a modules dir of tmp_path."""
    modules = tmp_path / "modules"
    modules.mkdir()
    (modules / "ngx_stream_module.so").touch()
    monkeypatch.setattr(nginx, "build_options", lambda _: DYNAMIC_STREAM.format(modules))
    return modules


def _nginx(tmp_path: Path, mode: str, *, log: bool = True, workers: int = 2) -> str:
    proxy = NginxProxy(
        tmp_path / mode, BACKENDS, workers=workers, mode=mode, log_sessions=log, binary="true"
    )
    return proxy.write_config().read_text()


def test_nginx_stream_config_loads_the_dynamic_module(fake_nginx: Path, tmp_path: Path) -> None:
    text = _nginx(tmp_path, "tcp")
    assert text.splitlines()[1] == f"load_module {fake_nginx}/ngx_stream_module.so;"
    assert "worker_processes 2;" in text
    assert "stream {" in text and "http {" not in text
    assert "server 127.0.0.1:4001;" in text and "server 127.0.0.1:4002;" in text
    assert "proxy_pass bench_servers;" in text
    assert "access_log " in text and "$session_time" in text
    assert "access_log off;" in _nginx(tmp_path / "quiet", "tcp", log=False)


def test_nginx_http_config_keeps_server_connections_alive(fake_nginx: Path, tmp_path: Path) -> None:
    text = _nginx(tmp_path, "http", workers=1)
    assert "load_module" not in text and "stream {" not in text
    assert "worker_processes 1;" in text
    # What nginx's documentation asks for to reuse upstream connections.
    assert "keepalive 64;" in text
    assert "proxy_pass http://bench_servers;" in text
    assert "proxy_http_version 1.1;" in text
    assert 'proxy_set_header Connection "";' in text
    assert "X-Forwarded-For $proxy_add_x_forwarded_for" in text
    assert '"$request"' in text  # one access-log line per request


def test_stream_module_built_in_missing_or_absent(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(nginx, "build_options", lambda _: "--with-stream --with-http_ssl_module")
    assert nginx.stream_module_line("nginx") == ""
    monkeypatch.setattr(nginx, "build_options", lambda _: DYNAMIC_STREAM.format(tmp_path))
    with pytest.raises(FileNotFoundError, match="libnginx-mod-stream"):
        nginx.stream_module_line("nginx")
    monkeypatch.setattr(nginx, "build_options", lambda _: "--with-http_ssl_module")
    with pytest.raises(FileNotFoundError, match="without the stream module"):
        nginx.stream_module_line("nginx")


def test_caddy_config_and_environment(tmp_path: Path) -> None:
    caddy = Caddy(tmp_path, BACKENDS, workers=2, mode="http", log_sessions=True, binary="true")
    text = caddy.write_config().read_text()
    assert "admin off" in text and "auto_https off" in text
    assert f"http://127.0.0.1:{caddy.port} {{" in text
    assert "reverse_proxy 127.0.0.1:4001 127.0.0.1:4002 {" in text
    assert "lb_policy round_robin" in text
    assert "output file" in text
    env = caddy.environment()
    assert env is not None and env["GOMAXPROCS"] == "2"
    quiet = Caddy(tmp_path / "quiet", BACKENDS, workers=1, mode="http", binary="true")
    assert "log {" not in quiet.write_config().read_text()
    with pytest.raises(ValueError, match="no tcp mode"):
        Caddy(tmp_path / "tcp", BACKENDS, workers=1, mode="tcp", binary="true")


def test_backend_shapes() -> None:
    assert SHAPES["two-single"].describe() == "two-single (2 x nginx, 1 worker)"
    assert SHAPES["one-multi"].describe() == "one-multi (1 x nginx, 2 workers on one port)"


def test_builds_and_proxies_from_the_options() -> None:
    assert parse_build("before=/a/b/loadstone") == Build("loadstone-before", Path("/a/b/loadstone"))
    # A path with '=' in a directory name is a path, not a label.
    assert parse_build("/x=y/loadstone") == Build("loadstone", Path("/x=y/loadstone"))
    assert len(parse_builds(None)) == 1
    with pytest.raises(ValueError, match="distinct"):
        parse_builds(["/a/loadstone", "/b/loadstone"])
    with pytest.raises(ValueError, match="LABEL=PATH"):
        parse_build("=/a")
    assert parse_proxies("nginx, loadstone,nginx") == ("nginx", "loadstone")
    with pytest.raises(ValueError, match="unknown proxy envoy"):
        parse_proxies("loadstone,envoy")


def test_command_line_options() -> None:
    default = compare.parse_args([])
    assert default.proxy_list is None  # all that are installed
    assert default.backend_shape is SHAPES["two-single"]
    assert [b.name for b in default.builds] == ["loadstone"]
    args = compare.parse_args(
        [
            *("--loadstone", "before=/a/loadstone", "--loadstone", "after=/b/loadstone"),
            *("--proxies", "haproxy,loadstone", "--backends", "one-multi"),
        ]
    )
    assert [b.name for b in args.builds] == ["loadstone-before", "loadstone-after"]
    assert args.proxy_list == ("haproxy", "loadstone")
    assert args.backend_shape.workers == 2
    assert compare.parse_args(["--only", "caddy"]).proxy_list == ("caddy",)
    with pytest.raises(SystemExit):
        compare.parse_args(["--only", "caddy", "--proxies", "nginx"])


def test_build_proxies_leaves_out_caddy_in_tcp(tmp_path: Path) -> None:
    loadstone = tmp_path / "bin" / "loadstone"
    loadstone.parent.mkdir()
    loadstone.touch()
    args = compare.parse_args(["--proxies", "caddy,loadstone", "--loadstone", str(loadstone)])

    class FakeBackends:
        backends = BACKENDS

    proxies, notes = compare.build_proxies(args, tmp_path, FakeBackends(), "tcp")  # type: ignore[arg-type]
    assert [p.name for p in proxies] == ["loadstone"]
    assert notes == [
        "caddy: no tcp mode (Debian's caddy proxies HTTP only), left out of the tcp scenarios"
    ]
    assert isinstance(proxies[0], Loadstone)


def _run(proxy: str, scenario: str, repeat: int, rps: float, cpu_us: float) -> Run:
    result = WrkResult(int(rps * 10), 10.0, 0.0, rps, 0.0)
    return Run(proxy, scenario, repeat, result, cpu_us * rps * 10 / 1e6, 0, 0.0, 0.0, 20.0, 1, [])


def _summary(proxy: str, rps: float, cpu: float) -> Summary:
    return Summary(proxy, "keepalive", 1, rps, 1.0, cpu, 20.0, 1.0, 0.5, 5.0, 0.0, 0)


def test_ratios_to_each_peer_the_best_peer_and_the_first_build() -> None:
    summaries = [
        _summary("loadstone-before", 1000.0, 20.0),
        _summary("loadstone-after", 1100.0, 16.0),
        _summary("haproxy", 1000.0, 25.0),
        _summary("nginx", 1250.0, 20.0),
    ]
    rows = report.ratio_rows(summaries, ["loadstone-before", "loadstone-after"])
    # to, req/s, cpu us/req of each row
    assert [(r[1], r[2], r[3], r[5]) for r in rows] == [
        ("loadstone-before", "haproxy", "1.00x", "0.80x"),
        ("", "nginx", "0.80x", "1.00x"),
        ("", "best peer", "0.80x nginx", "1.00x nginx"),
        ("loadstone-after", "haproxy", "1.10x", "0.64x"),
        ("", "nginx", "0.88x", "0.80x"),
        ("", "best peer", "0.88x nginx", "0.80x nginx"),
        ("", "loadstone-before", "1.10x", "0.80x"),
    ]
    assert rows[0][0] == "keepalive" and all(not r[0] for r in rows[1:])
    text = report.tables(summaries, ["loadstone-before", "loadstone-after"], markdown=False)
    assert "best peer" in text and text.count("loadstone-after") == 2


def test_generated_configs_pass_nginx_and_caddy_checkers(tmp_path: Path) -> None:
    # Debian's nginx with libnginx-mod-stream, and caddy: as scripts/test installs them.
    for mode in ("tcp", "http"):
        proxy = NginxProxy(tmp_path / mode, BACKENDS, workers=2, mode=mode, log_sessions=True)
        config = proxy.write_config()
        done = subprocess.run(proxy.check_argv(config), capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
    caddy = Caddy(tmp_path / "caddy", BACKENDS, workers=1, mode="http", log_sessions=True)
    config = caddy.write_config()
    done = subprocess.run(
        caddy.check_argv(config), capture_output=True, text=True, env=caddy.environment()
    )
    assert done.returncode == 0, done.stderr


def test_publish_prints_every_proxy_and_writes_json(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run.json"
    args = compare.parse_args(
        [
            *("--loadstone", "a=/x/loadstone", "--loadstone", "b=/y/loadstone"),
            *("--json", str(out), "--backends", "one-multi", "--markdown"),
        ]
    )
    runs = [
        _run(name, "keepalive", 0, rps, cpu)
        for name, rps, cpu in (
            ("loadstone-a", 900, 9.0),
            ("loadstone-b", 1000, 8.0),
            ("haproxy", 1000, 10.0),
            ("nginx", 800, 10.0),
            ("caddy", 500, 20.0),
        )
    ]
    meta = {
        "date": "d", "nproc": 2, "cpu_model": "c", "kernel": "k", "git_revision": "g",
        "command": "python benchmarks/compare.py", "nginx": "nginx/1.22.1", "wrk": "wrk 4.1",
        "backends": "backends: one-multi (1 x nginx, 2 workers on one port)", "proxies": {},
    }  # fmt: skip
    assert compare.publish(args, meta, runs, ["a note"]) == 0
    printed = capsys.readouterr().out
    assert "backends: one-multi" in printed and "note: a note" in printed
    assert "keepalive loadstone-b/loadstone-a: req/s 1.11x" in printed
    assert "| keepalive | loadstone-a | haproxy | 0.90x |" in printed
    document = json.loads(out.read_text())
    assert document["options"]["builds"][1] == {"name": "loadstone-b", "binary": "/y/loadstone"}
    assert document["options"]["backend_shape"]["workers"] == 2
    assert {p["baseline"] for p in document["paired"]} == {
        "haproxy", "nginx", "caddy", "loadstone-a"
    }  # fmt: skip
