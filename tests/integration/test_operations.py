"""Operations: admin write API and token, ctl, reload under load, graceful stop,
systemd notification. `loadstone run` is a subprocess against real backends."""

from __future__ import annotations

import collections
import json
import os
import signal
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.integration.conftest import listener_config
from tests.integration.harness import LOADSTONE, Backend, Loadstone, free_port, wait_for
from tests.integration.test_tcp_proxy import checked, proxy_port, who

pytestmark = pytest.mark.integration

Backends = Callable[..., list[Backend]]
Start = Callable[..., Loadstone]


def post(
    ls: Loadstone,
    path: str,
    body: Any = None,
    token: str | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, Any]:
    data = json.dumps(body).encode() if body is not None else b""
    req = urllib.request.Request(
        f"http://127.0.0.1:{ls.admin_port}{path}", data=data, method="POST", headers=headers or {}
    )
    if token is not None:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def set_state(ls: Loadstone, server: str, state: str, token: str | None = None) -> int:
    return post(ls, f"/api/v1/listeners/web/servers/{server}/state", {"state": state}, token)[0]


def echo_session(port: int) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    s.sendall(b"ping")
    assert s.recv(4) == b"ping"
    return s


def still_relays(s: socket.socket, payload: bytes = b"still-there") -> bool:
    s.sendall(payload)
    got = b""
    while len(got) < len(payload):
        chunk = s.recv(len(payload) - len(got))
        if not chunk:
            return False
        got += chunk
    return got == payload


# -- admin write API ------------------------------------------------------------------


def test_drain_keeps_open_sessions_and_maint_closes_them(
    backends: Backends, loadstone: Start
) -> None:
    servers = backends(2, mode="echo")
    ls = loadstone(listener_config(servers))
    port = proxy_port(ls)
    sessions = [echo_session(port) for _ in range(4)]  # 2 on each server
    wait_for(lambda: ls.server("web", "s1")["sessions"] == 2)

    assert set_state(ls, "s1", "drain") == 200
    assert ls.server("web", "s1")["state"] == "drain"
    new = [echo_session(port) for _ in range(4)]
    assert ls.server("web", "s1")["sessions"] == 2  # no new session went to s1
    assert ls.server("web", "s2")["sessions"] == 6
    assert all(still_relays(s) for s in sessions)  # drained sessions run on

    assert set_state(ls, "s1", "maint") == 200
    wait_for(lambda: ls.server("web", "s1")["sessions"] == 0)
    closed = [s for s in sessions if not still_relays_or_closed(s)]
    assert len(closed) == 2  # exactly s1's two sessions were closed

    assert set_state(ls, "s1", "ready") == 200
    assert ls.server("web", "s1")["state"] == "up"
    for s in sessions + new:
        s.close()


def still_relays_or_closed(s: socket.socket) -> bool:
    """True if the session still relays, False if the proxy closed it."""
    try:
        return still_relays(s)
    except OSError:
        return False


def test_weight_and_shutdown_sessions_and_bad_requests(
    backends: Backends, loadstone: Start
) -> None:
    servers = backends(2)
    ls = loadstone(listener_config(servers))
    port = proxy_port(ls)
    code, doc = post(ls, "/api/v1/listeners/web/servers/s2/weight", {"weight": 3})
    assert code == 200 and doc["weight"] == 3
    assert collections.Counter(who(port) for _ in range(8)) == {"s1": 2, "s2": 6}

    echo = backends(1, mode="echo", prefix="e")[0]
    ls2 = loadstone(listener_config([echo]))
    s = echo_session(proxy_port(ls2))
    code, doc = post(ls2, "/api/v1/listeners/web/servers/e3/shutdown-sessions")
    assert (code, doc) == (200, {"closed": 1})
    assert s.recv(10) == b""
    s.close()

    assert post(ls, "/api/v1/listeners/nope/servers/s1/state", {"state": "drain"})[0] == 404
    assert post(ls, "/api/v1/listeners/web/servers/nope/state", {"state": "drain"})[0] == 404
    code, doc = post(ls, "/api/v1/listeners/web/servers/s1/state", {"state": "sleep"})
    assert code == 400 and "ready, drain, maint" in doc["error"]
    code, doc = post(ls, "/api/v1/listeners/web/servers/s1/weight", {"weight": 999})
    assert code == 400


def test_cross_site_writes_are_refused_without_a_token(
    backends: Backends, loadstone: Start
) -> None:
    """A page of another site in an operator's browser cannot drain a server
    through the loopback admin API (a text/plain POST needs no CORS preflight)."""
    ls = loadstone(listener_config(backends(1)))
    path = "/api/v1/listeners/web/servers/s1/state"
    drain = {"state": "drain"}
    for headers in (
        {"Origin": "http://evil.example", "Content-Type": "text/plain"},
        {"Origin": "null"},
        {"Sec-Fetch-Site": "cross-site"},
    ):
        status, doc = post(ls, path, drain, headers=headers)
        assert status == 403 and "cross-site" in doc["error"], headers
    assert ls.server("web", "s1")["state"] == "up"
    same_origin = {"Origin": f"http://127.0.0.1:{ls.admin_port}"}  # the stats page
    assert post(ls, path, drain, headers=same_origin)[0] == 200
    assert ls.server("web", "s1")["state"] == "drain"


def test_token_protects_writes_not_reads(
    backends: Backends, loadstone: Start, tmp_path: Path
) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("s3cret-token\n")
    servers = backends(1)
    config = listener_config(servers)
    config["global"]["admin"] = {"token_file": str(token_file)}
    ls = loadstone(config)
    assert ls.status()["listeners"]["web"]["servers"]["s1"]["state"] == "up"  # reads open
    assert set_state(ls, "s1", "drain") == 401
    assert set_state(ls, "s1", "drain", token="wrong") == 403
    assert post(ls, "/api/v1/reload", token="wrong")[0] == 403
    assert ls.server("web", "s1")["state"] == "up"
    assert set_state(ls, "s1", "drain", token="s3cret-token") == 200
    assert ls.server("web", "s1")["state"] == "drain"

    # ctl reads the admin address and the token from the configuration file.
    ctl = [str(LOADSTONE), "ctl", "-c", str(ls.path)]
    result = subprocess.run([*ctl, "ready", "web", "s1"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert ls.server("web", "s1")["state"] == "up"
    result = subprocess.run([*ctl, "status"], capture_output=True, text=True)
    assert result.returncode == 0
    assert "web" in result.stdout and "s1" in result.stdout and "up" in result.stdout
    url = f"http://127.0.0.1:{ls.admin_port}"
    result = subprocess.run(
        [str(LOADSTONE), "ctl", "--url", url, "drain", "web", "s1"], capture_output=True, text=True
    )
    assert result.returncode == 1 and "HTTP 401" in result.stderr


# -- reload ---------------------------------------------------------------------------


def test_twenty_reloads_under_load_lose_nothing(backends: Backends, loadstone: Start) -> None:
    http = backends(3)
    echo = backends(1, mode="echo", prefix="e")
    web_port, echo_port = free_port(), free_port()

    def config(with_s3: bool, weight: int) -> dict[str, Any]:
        cfg = listener_config(
            http[:2] + (http[2:] if with_s3 else []),
            port=web_port,
            check=checked(interval="100ms", rise=1, fall=2),
        )
        cfg["listeners"]["web"]["servers"][0]["weight"] = weight
        cfg["listeners"]["echo"] = {
            "bind": [f"127.0.0.1:{echo_port}"],
            "servers": [{"name": echo[0].name, "address": echo[0].address}],
        }
        return cfg

    ls = loadstone(config(True, 1))
    ls.wait_all_up("web")
    long_lived = [echo_session(echo_port) for _ in range(5)]
    failures: list[str] = []
    done = 0
    stop = threading.Event()

    def client_loop() -> None:
        nonlocal done
        while not stop.is_set():
            try:
                assert who(web_port) in ("s1", "s2", "s3")
                done += 1
            except Exception as exc:
                failures.append(repr(exc))

    threads = [threading.Thread(target=client_loop) for _ in range(4)]
    for t in threads:
        t.start()
    try:
        for i in range(20):
            ls.path.write_text(yaml.safe_dump(config(with_s3=i % 2 == 1, weight=1 + i % 3)))
            assert ls.proc is not None
            ls.proc.send_signal(signal.SIGHUP)
            wait_for(
                lambda i=i: ls.status()["reload"]["generation"] == i + 1, what=f"reload {i + 1}"
            )
            assert ls.status()["reload"]["ok"]
            ls.wait_all_up("web")
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert failures == []
    assert done > 100
    assert all(still_relays(s) for s in long_lived)  # no established session was reset
    assert set(ls.status()["listeners"]["web"]["servers"]) == {"s1", "s2", "s3"}
    for s in long_lived:
        s.close()


def test_broken_reload_changes_nothing(backends: Backends, loadstone: Start) -> None:
    servers = backends(2)
    ls = loadstone(listener_config(servers))
    port = proxy_port(ls)
    good = ls.path.read_text()
    ls.path.write_text(good.replace("roundrobin", "no-such-algorithm"))
    code, report = post(ls, "/api/v1/reload")
    assert code == 422
    assert report["ok"] is False
    assert any(e.startswith("listeners.web.balance:") for e in report["errors"])
    status = ls.status()
    assert status["reload"]["ok"] is False and status["reload"]["generation"] == 0
    assert status["listeners"]["web"]["balance"] == "roundrobin"
    assert {who(port) for _ in range(4)} == {"s1", "s2"}
    assert "reload rejected" in ls.stderr()
    ls.path.write_text(good)
    assert post(ls, "/api/v1/reload")[0] == 200
    reload = ls.status()["reload"]
    assert (reload["ok"], reload["generation"], reload["errors"]) == (True, 1, [])


def test_reload_warns_about_settings_only_a_restart_changes(
    backends: Backends, loadstone: Start
) -> None:
    servers = backends(2)
    ls = loadstone(listener_config(servers))
    config = yaml.safe_load(ls.path.read_text())
    config["global"]["workers"] = 2
    config["global"]["splice"] = "off"
    config["global"]["io_uring"] = "off"
    ls.path.write_text(yaml.safe_dump(config))
    for attempt in (1, 2):  # the running values stay what the next reload compares with
        assert post(ls, "/api/v1/reload")[0] == 200
        # logged before the reload is answered
        assert ls.stderr().count("global.workers changes only at restart") == attempt
        assert ls.stderr().count("global.splice changes only at restart") == attempt
        assert ls.stderr().count("global.io_uring changes only at restart") == attempt
    assert "keeping 1 (not 2)" in ls.stderr()
    assert {who(proxy_port(ls)) for _ in range(4)} == {"s1", "s2"}


def test_reload_keeps_active_server_and_runtime_state(backends: Backends, loadstone: Start) -> None:
    servers = backends(2)
    config = listener_config(
        servers, balance="active-backup", check=checked(interval="100ms", rise=1, fall=1)
    )
    ls = loadstone(config)
    ls.wait_all_up("web")
    assert ls.status()["listeners"]["web"]["active"] == "s1"
    servers[0].kill()
    wait_for(lambda: ls.status()["listeners"]["web"]["active"] == "s2")
    revived = Backend("s1", servers[0].port).start()
    try:
        ls.wait_state("web", "s1", "up")
        assert ls.status()["listeners"]["web"]["active"] == "s2"  # no failback
        post(ls, "/api/v1/listeners/web/servers/s2/weight", {"weight": 7})
        assert post(ls, "/api/v1/reload")[0] == 200
        status = ls.status()["listeners"]["web"]
        assert status["active"] == "s2"  # the writer survives the reload
        assert status["servers"]["s2"]["weight"] == 7  # so does the runtime weight
        assert who(proxy_port(ls)) == "s2"
    finally:
        revived.stop()


# -- stopping -------------------------------------------------------------------------


@pytest.mark.parametrize("log", ["all", "errors"])
def test_sigterm_lets_sessions_finish_within_grace(
    backends: Backends, loadstone: Start, log: str
) -> None:
    # With `log: errors` the native engine makes no record of a normal close,
    # the record that otherwise tells the control plane a session ended.
    servers = backends(1, mode="echo")
    config = listener_config(servers, log=log)
    config["global"]["grace"] = "20s"
    ls = loadstone(config)
    port = proxy_port(ls)
    s = echo_session(port)
    assert ls.proc is not None
    ls.proc.send_signal(signal.SIGTERM)
    wait_for(lambda: "waiting up to" in ls.stderr(), what="graceful stop begins")
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=2)  # no longer accepting
    assert still_relays(s)  # the open session runs on
    t0 = time.monotonic()
    s.shutdown(socket.SHUT_WR)  # a clean close (read to the end), not a reset
    while s.recv(65536):
        pass
    s.close()
    assert ls.proc.wait(10) == 0
    assert time.monotonic() - t0 < 5  # it exits when the last session ends


def test_sigterm_closes_what_is_left_after_grace(backends: Backends, loadstone: Start) -> None:
    servers = backends(1, mode="echo")
    config = listener_config(servers)
    config["global"]["grace"] = "500ms"
    ls = loadstone(config)
    s = echo_session(proxy_port(ls))
    assert ls.proc is not None
    ls.proc.send_signal(signal.SIGTERM)
    assert ls.proc.wait(10) == 0
    assert s.recv(10) == b""
    s.close()


def test_systemd_notify(backends: Backends, loadstone: Start, tmp_path: Path) -> None:
    path = str(tmp_path / "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(15)
    try:
        ls = loadstone(listener_config(backends(1)), env={"NOTIFY_SOCKET": path})
        assert b"READY=1" in sock.recv(4096)
        assert ls.proc is not None
        ls.proc.send_signal(signal.SIGHUP)
        reloading = sock.recv(4096)
        assert b"RELOADING=1" in reloading and b"MONOTONIC_USEC=" in reloading
        assert sock.recv(4096) == b"READY=1"
        ls.proc.send_signal(signal.SIGTERM)
        assert sock.recv(4096) == b"STOPPING=1"
        assert ls.proc.wait(10) == 0
    finally:
        sock.close()
        os.unlink(path)


def test_every_documented_metric_is_exported(backends: Backends, loadstone: Start) -> None:
    import re

    from tests.integration.harness import ROOT

    servers = backends(2)
    # mode http: the documented HTTP families (responses, the request histogram) too
    ls = loadstone(listener_config(servers, balance="active-backup", check=checked(), mode="http"))
    ls.wait_all_up("web")
    who(proxy_port(ls))
    exported = ls.get("/metrics").decode()
    documented = set(re.findall(r"`(loadstone_[a-z_]+)", (ROOT / "docs/operations.md").read_text()))
    assert len(documented) >= 15
    missing = {m for m in documented if not re.search(rf"^{m}[{{ ]", exported, re.M)}
    assert missing == set()
    assert 'loadstone_server_active_writer{listener="web",server="s1"} 1.0' in exported
    assert 'loadstone_server_active_writer{listener="web",server="s2"} 0.0' in exported
