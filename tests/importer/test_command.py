"""`loadstone import haproxy`: files in HAProxy's order, output, exit status, --strict."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from loadstone.cli import main
from loadstone.importers.haproxy.files import haproxy_load_order

GOOD = """\
defaults
    timeout connect 5s
    timeout client 1m
    timeout server 1m
listen web
    bind 127.0.0.1:8080
    option tcplog
    server a 127.0.0.1:9001 check
"""


def test_load_order_is_argument_order_and_lexical_within_a_directory(tmp_path: Path) -> None:
    conf = tmp_path / "conf.d"
    conf.mkdir()
    for name in ("b.cfg", "a.cfg", "notes.txt", "10-x.cfg"):
        (conf / name).write_text("")
    main_cfg = tmp_path / "haproxy.cfg"
    main_cfg.write_text("")
    order = haproxy_load_order([str(conf), str(main_cfg)])
    assert [p.name for p in order] == ["10-x.cfg", "a.cfg", "b.cfg", "haproxy.cfg"]


def test_writes_yaml_and_reports_on_stderr(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = tmp_path / "haproxy.cfg"
    src.write_text(GOOD)
    out = tmp_path / "out.yaml"
    assert main(["import", "haproxy", str(src), "-o", str(out)]) == 0
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == (
        f"{src}:7: option tcplog: loadstone logs to standard output (the journal); see"
        " global.log_format (one line per session)\n"
    )
    assert f"  # listen web ({src}:5)\n  web:\n" in out.read_text()  # where it came from
    web = yaml.safe_load(out.read_text())["listeners"]["web"]
    assert web["servers"] == [{"name": "a", "address": "127.0.0.1:9001"}]
    # without -o the YAML goes to standard output
    assert main(["import", "haproxy", str(src)]) == 0
    assert yaml.safe_load(capsys.readouterr().out)["listeners"]["web"] == web


def test_a_file_haproxy_refuses_exits_2_with_file_and_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = tmp_path / "haproxy.cfg"
    src.write_text(GOOD.replace("option tcplog", "option 'tcplog"))
    out = tmp_path / "out.yaml"
    assert main(["import", "haproxy", str(src), "-o", str(out)]) == 2
    assert capsys.readouterr().err == f"{src}:7: unterminated ' quote\n"
    assert not out.exists()


def test_a_missing_file_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["import", "haproxy", str(tmp_path / "nope.cfg")]) == 2
    assert "nope.cfg" in capsys.readouterr().err


def test_strict_fails_only_on_what_changes_behaviour(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = tmp_path / "haproxy.cfg"
    src.write_text(GOOD)  # option tcplog: not needed, so --strict passes
    assert main(["import", "haproxy", str(src), "--strict"]) == 0
    capsys.readouterr()
    src.write_text(GOOD + "    option httpclose\n")
    assert main(["import", "haproxy", str(src), "--strict"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.splitlines()[-1] == (
        "loadstone import: --strict: 1 directive not translated (listed above)"
    )


def test_map_files_are_found_beside_the_configuration(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "hosts.map").write_text("api.example.com api\n")
    src = tmp_path / "haproxy.cfg"
    src.write_text(
        "defaults\n  mode http\n  timeout connect 1s\n  timeout client 1s\n  timeout server 1s\n"
        "frontend f\n  bind :80\n"
        "  use_backend %[req.hdr(host),lower,map(/etc/haproxy/hosts.map,web)]\n"
        "backend web\n  server w 127.0.0.1:1\nbackend api\n  server a 127.0.0.1:2\n"
    )
    assert main(["import", "haproxy", str(src)]) == 0
    routes = yaml.safe_load(capsys.readouterr().out)["listeners"]["f"]["routes"]
    assert routes == [{"host": "api.example.com", "pool": "api"}]
