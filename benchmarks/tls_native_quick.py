"""A quick sanity run of TLS termination on loadstone's native path beside HAProxy.

    .venv/bin/python benchmarks/tls_native_quick.py [-d 5] [--workers 1] [--repeat 2]

Same machine, same run, same certificate (ECDSA P-256, or RSA 2048 with
--rsa), same nginx backend, each proxy with `workers`/`nbthread` threads and no
logging; wrk over https:
- keep-alive: c=50 connections kept open, GET / (a 2-byte body);
- new connection per request: `Connection: close`, so every request pays a
  TLS handshake; wrk keeps its SSL object across reconnects, so these are
  mostly resumed handshakes (TLS 1.3 tickets);
- full handshakes: `openssl s_time -new` (two of them at once, GET /), no
  resumption; the clients, not the proxies, are the limit here, so the CPU
  per handshake is the figure to read.
It prints req/s and the proxy's CPU microseconds per request (utime + stime of
the process over the run) and loadstone's ratio to HAProxy. Not the full TLS
benchmark (that belongs to benchmarks/compare.py and benchmarks/README.md):
a smoke check that the native path is in HAProxy's league, the figures only
meaningful as same-run ratios on a loaded machine.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.tlscerts import Ca  # noqa: E402  (the repository root is importable now)

LOADSTONE = Path(sys.executable).parent / "loadstone"
TICKS = os.sysconf("SC_CLK_TCK")
SCENARIOS = ("keep-alive", "new-conn", "full-hs")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {port}")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime, stime


def start_backend(tmp: Path, procs: list[Any]) -> int:
    port = free_port()
    d = tmp / "nginx"
    (d / "tmp").mkdir(parents=True)
    user = "user root;" if os.geteuid() == 0 else ""
    (d / "nginx.conf").write_text(f"""{user}
worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/error.log;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {d}/tmp; proxy_temp_path {d}/tmp; fastcgi_temp_path {d}/tmp;
    uwsgi_temp_path {d}/tmp; scgi_temp_path {d}/tmp;
    keepalive_requests 1000000;
    server {{ listen 127.0.0.1:{port}; location / {{ return 200 "ok"; }} }}
}}
""")
    procs.append(
        subprocess.Popen(["nginx", "-p", str(d), "-c", str(d / "nginx.conf"), "-g", "daemon off;"])
    )
    wait_port(port)
    return port


def start_haproxy(
    tmp: Path, bundle: Path, backend: int, threads: int, procs: list[Any]
) -> tuple[Any, int]:
    port = free_port()
    conf = tmp / "haproxy.cfg"
    conf.write_text(f"""global
    nbthread {threads}
    maxconn 8000
    tune.ssl.default-dh-param 2048
defaults
    mode http
    timeout connect 5s
    timeout client 30s
    timeout server 30s
    http-reuse always
frontend fe
    bind 127.0.0.1:{port} ssl crt {bundle} alpn http/1.1
    default_backend be
backend be
    server s1 127.0.0.1:{backend}
""")
    proc = subprocess.Popen(["haproxy", "-db", "-f", str(conf)])
    procs.append(proc)
    wait_port(port)
    return proc, port


def start_loadstone(
    tmp: Path, bundle: Path, backend: int, threads: int, procs: list[Any]
) -> tuple[Any, int]:
    port = free_port()
    admin = free_port()
    conf = tmp / "loadstone.yaml"
    conf.write_text(f"""global:
  workers: {threads}
  admin: {{bind: "127.0.0.1:{admin}"}}
listeners:
  web:
    bind: ["127.0.0.1:{port}"]
    mode: http
    log: none
    tls: {{certificates: "{bundle}"}}
    servers: [{{name: s1, address: "127.0.0.1:{backend}"}}]
""")
    proc = subprocess.Popen([str(LOADSTONE), "run", str(conf)], stdout=subprocess.DEVNULL)
    procs.append(proc)
    wait_port(port)
    wait_port(admin)
    url = f"http://127.0.0.1:{admin}/api/v1/status"
    status = subprocess.run(["curl", "-s", "-m", "5", url], capture_output=True, text=True).stdout
    if '"data_path": "native"' not in status and '"data_path":"native"' not in status:
        raise RuntimeError(f"the listener is not on the native path: {status[:300]}")
    return proc, port


def wrk(port: int, duration: int, close: bool) -> tuple[float, int]:
    argv = ["wrk", "-t2", "-c50", f"-d{duration}s"]
    if close:
        argv += ["-H", "Connection: close"]
    out = subprocess.run(
        [*argv, f"https://127.0.0.1:{port}/"], capture_output=True, text=True, timeout=duration + 60
    ).stdout
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    total = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if errors:
        raise RuntimeError(f"wrk saw errors: {out}")
    return rate, total


def s_time(port: int, duration: int) -> tuple[float, int]:
    """Two `openssl s_time -new` at once: full handshakes per second, and how many."""
    argv = ["openssl", "s_time", "-connect", f"127.0.0.1:{port}", "-new", "-www", "/"]
    clients = [
        subprocess.Popen(
            [*argv, "-time", str(duration)], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL
        )
        for _ in range(2)
    ]
    total = 0
    for c in clients:
        out = c.communicate(timeout=duration + 60)[0].decode()
        total += int(re.search(r"(\d+) connections in [\d.]+s", out).group(1))  # type: ignore[union-attr]
    return total / duration, total


def measure(pid: int, port: int, duration: int, scenario: str) -> tuple[float, float]:
    before = cpu_seconds(pid)
    if scenario == "full-hs":
        rate, total = s_time(port, duration)
    else:
        rate, total = wrk(port, duration, close=scenario == "new-conn")
    used = cpu_seconds(pid) - before
    return rate, used * 1e6 / max(total, 1)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-d", "--duration", type=int, default=5)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--rsa", action="store_true", help="an RSA 2048 certificate")
    args = parser.parse_args()
    for tool in ("haproxy", "nginx", "wrk"):
        if shutil.which(tool) is None:
            sys.exit(f"{tool} is not installed")
    tmp = Path(tempfile.mkdtemp(prefix="tls-quick-"))
    kind = "rsa" if args.rsa else "ecdsa"
    cert = Ca(tmp / "pki").issue("server", ["127.0.0.1", "api.test"], kind=kind)
    procs: list[Any] = []
    try:
        bport = start_backend(tmp, procs)
        haproxy, hport = start_haproxy(tmp, cert.bundle, bport, args.workers, procs)
        ls, lport = start_loadstone(tmp, cert.bundle, bport, args.workers, procs)
        results: dict[tuple[str, str], list[tuple[float, float]]] = {}
        for r in range(args.repeat):
            order = [("loadstone", ls.pid, lport), ("haproxy", haproxy.pid, hport)]
            if r % 2:
                order.reverse()  # spread the drift of a loaded machine evenly
            for scenario in SCENARIOS:
                for name, pid, port in order:
                    results.setdefault((scenario, name), []).append(
                        measure(pid, port, args.duration, scenario)
                    )
        print(f"TLS ({kind}), workers={args.workers}, {args.repeat} x {args.duration}s, wrk c=50")
        for scenario in SCENARIOS:
            rows = {}
            for name in ("loadstone", "haproxy"):
                runs = results[(scenario, name)]
                rate = sorted(x[0] for x in runs)[len(runs) // 2]
                cpu = sorted(x[1] for x in runs)[len(runs) // 2]
                rows[name] = (rate, cpu)
                print(f"  {scenario:10} {name:9} {rate:10.0f} req/s {cpu:8.1f} us CPU/req")
            ratio = rows["loadstone"][0] / rows["haproxy"][0]
            cpu_ratio = rows["loadstone"][1] / rows["haproxy"][1]
            print(f"  {scenario:10} loadstone/haproxy: {ratio:.2f}x req/s, {cpu_ratio:.2f}x CPU")
    finally:
        for p in reversed(procs):
            p.terminate()
            p.wait(10)
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
