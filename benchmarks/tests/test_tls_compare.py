"""benchmarks/tls_compare.py: the table of ratios, and a smoke run through real
proxies (loadstone and HAProxy terminating TLS before two nginx backends) of
three scenarios for a second each."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

from benchmarks import tls_compare
from benchmarks.tls_compare import Figure


def figure(scenario: str, proxy: str, value: float, cpu: float = 0.0) -> Figure:
    return Figure(scenario, proxy, value, cpu, 100, 1.0, 0, 1.0 if scenario == "resumed" else 0.0)


def test_table_gives_ratios_and_targets() -> None:
    figures = [
        figure("keepalive", "loadstone", 11000, cpu=18),
        figure("keepalive", "haproxy", 10000, cpu=20),
        figure("resumed", "loadstone", 500, cpu=400),
        figure("resumed", "haproxy", 1000, cpu=200),
        figure("idle", "loadstone", 30000),
        figure("idle", "haproxy", 15000),
    ]
    text = tls_compare.table(figures, ["loadstone", "haproxy"], markdown=False)
    lines = [line.split() for line in text.splitlines() if line.strip()]
    assert lines[2][:5] == ["keepalive", "req/s", "11,000.0", "10,000.0", "1.10x"]
    assert lines[3][:5] == ["cpu", "us/req", "18.0", "20.0", "0.90x"]
    assert lines[4][:5] == ["resumed", "conn/s", "500.0", "1,000.0", "0.50x"]
    assert lines[5] == ["resumed", "share", "100%", "100%"]
    assert ["idle", "bytes/conn", "30,000.0", "15,000.0", "2.00x", "<=", "1.0"] in lines
    markdown = tls_compare.table(figures, ["loadstone", "haproxy"], markdown=True)
    assert markdown.startswith("| scenario | unit | loadstone | haproxy | loadstone/haproxy |")


def test_repeated_runs_show_their_medians() -> None:
    figures = [
        figure("keepalive", "loadstone", v, cpu=c) for v, c in ((900, 30), (1200, 10), (1000, 20))
    ]
    figures += [figure("keepalive", "haproxy", 1000, cpu=20)]
    text = tls_compare.table(figures, ["loadstone", "haproxy"], markdown=False)
    lines = [line.split() for line in text.splitlines() if line.strip()]
    assert lines[2][:5] == ["keepalive", "req/s", "1,000.0", "1,000.0", "1.00x"]
    assert lines[3][:5] == ["cpu", "us/req", "20.0", "20.0", "1.00x"]


def test_smoke_run(tmp_path: Path) -> None:
    out = tmp_path / "tls.json"
    status = tls_compare.main(
        ["--quick", "-d", "1", "--clients", "1", "--idle-clients", "20",
         "--scenarios", "handshake-ecdsa,keepalive,idle", "--proxies", "loadstone,haproxy",
         "--json", str(out)]
    )  # fmt: skip
    assert status == 0
    figures = json.loads(out.read_text())["figures"]
    seen = {(f["scenario"], f["proxy"]): f for f in figures}
    assert set(seen) == {
        (s, p) for s in ("handshake-ecdsa", "keepalive", "idle") for p in ("loadstone", "haproxy")
    }
    for key, f in seen.items():
        assert f["errors"] == 0, (key, f)
        # 20 idle clients may fit in memory the proxy already had: no growth to see.
        assert f["value"] > 0 or key[0] == "idle", (key, f)
    assert seen["idle", "loadstone"]["count"] == 20
    assert seen["keepalive", "haproxy"]["cpu_us"] > 0
    # which path served the TLS listener, as its status says; the same handshake for both
    meta = json.loads(out.read_text())["meta"]
    built = importlib.util.find_spec("loadstone._fastpath.relay") is not None
    path = "native" if built else "pure"
    assert meta["proxies"]["loadstone"].endswith(f"TLS listener served by the {path} path")
    negotiated = meta["negotiated"]
    assert negotiated["ecdsa loadstone"] == negotiated["ecdsa haproxy"]
    assert negotiated["ecdsa loadstone"].startswith("TLSv1.3, TLS_AES_256_GCM_SHA384, X25519")
