"""A smoke run of benchmarks/kolla_scenarios: every scenario for a few seconds, loadstone only.

The cloud is the lite one (API services and memcached, no Galera, no
RabbitMQ): a 3-node Galera cluster and a RabbitMQ cluster take a minute or
more to form on a busy 2-core machine, more than the whole smoke may take.
The Galera and RabbitMQ scenarios therefore cannot inject their fault, which
checks the other promise: such a run is reported as not injected, never as a
pass. The full cloud is exercised by the real run in benchmarks/README.md.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.kolla_scenarios.report import locust_totals

# Asked of the import system, not imported: importing locust monkey-patches the
# whole process with gevent (sockets, selectors), which would change every test
# that pytest runs after this module is collected. The runner imports it in its
# own process.
if importlib.util.find_spec("locust") is None:
    pytest.skip("the bench extra: pip install -e '.[bench]'", allow_module_level=True)

pytestmark = [pytest.mark.integration, pytest.mark.slow]
REPO = Path(__file__).resolve().parents[2]


@pytest.mark.timeout(150)
def test_smoke_run_writes_consistent_report_and_plots(tmp_path: Path) -> None:
    out = tmp_path / "out"
    argv = [
        sys.executable, "-m", "benchmarks.kolla_scenarios", "--lite",
        "--proxy", "loadstone", "--duration", "4", "--users", "10", "--out", str(out),
    ]  # fmt: skip
    done = subprocess.run(
        argv,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=140,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary) == {"baseline", "api", "galera", "rabbitmq", "scale"}
    table = (out / "summary.md").read_text()
    for name, by_proxy in summary.items():
        assert set(by_proxy) == {"loadstone"}
        figures = by_proxy["loadstone"]
        assert (out / f"{name}.png").stat().st_size > 10_000
        # The figures are locust's own: same totals as its Aggregated row.
        requests, failures = locust_totals(out / "locust" / f"{name}-loadstone")
        assert (figures["requests"], figures["failed_requests"]) == (requests, failures)
        assert requests > 0
        assert f"| loadstone | {requests} | {failures} |" in table
        for key in ("recovery_s", "p95_ms", "p95_fault_ms", "fault_injected"):
            assert key in figures
    # No database and no broker in the lite cloud: reported, not passed.
    for name in ("galera", "rabbitmq"):
        assert summary[name]["loadstone"]["fault_injected"] is False
        assert "lite" in summary[name]["loadstone"]["fault_error"]
    assert "NOT injected" in table
    for name in ("api", "scale"):
        figures = summary[name]["loadstone"]
        assert figures["fault_injected"] is True
        assert figures["p95_fault_ms"] is not None and figures["recovery_s"] is not None
    # A working cloud fails nothing.
    assert summary["baseline"]["loadstone"]["failed_requests"] == 0
    assert summary["baseline"]["loadstone"]["fault_injected"] is True


def test_recovery_is_the_last_failure_after_each_step(tmp_path: Path) -> None:
    """The figures of a synthetic run: a failure belongs to the step it follows."""
    from benchmarks.kolla_scenarios.report import Event, Run, markdown, summarize

    log = tmp_path / "requests.csv"
    rows = [(100.0 + i / 10, "nova list", 10.0, True) for i in range(100)]  # 10 s, 10 req/s
    rows += [(102.5, "nova list", 500.0, False), (103.9, "nova create", 100.0, False)]
    rows += [(106.2, "nova show", 50.0, False)]  # after the second step
    log.write_text("".join(f"{t:.3f},{n},{ms},{int(ok)}\n" for t, n, ms, ok in rows))
    (tmp_path / "x_stats.csv").write_text(
        "Type,Name,Request Count,Failure Count\n,Aggregated,103,3\n"
    )
    events = [Event(102.0, "fault", "kill ctl1"), Event(106.0, "fault", "kill ctl2")]
    events.append(Event(108.0, "restore", "restart"))
    run = Run("api", "loadstone", 100.0, 10.0, events, log, tmp_path / "x")
    figures = summarize(run)
    assert (figures["requests"], figures["failed_requests"]) == (103, 3)
    assert figures["consistent_with_locust"] is True
    # First step: the failure ending at 103.9 + 0.1 s, 2.0 s after it.
    assert figures["recovery_s"] == 2.0
    # 102-108 s: 60 requests of 10 ms and the 3 slower failures; the 95th of 63 is fast.
    assert figures["p95_fault_ms"] == 10.0
    run.fault_error = "fault failed: RuntimeError: no Galera"
    table = markdown({"api": {"loadstone": summarize(run)}}, {"api": "2. API"})
    assert "NOT injected: fault failed: RuntimeError: no Galera" in table
