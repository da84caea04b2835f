"""Run the Kolla HA scenarios under locust through loadstone and HAProxy.

    .venv/bin/python -m benchmarks.kolla_scenarios [--proxy loadstone|haproxy|both]
        [--scenario baseline,api,galera,rabbitmq,scale] [--duration 60] [--users 20]
        [--out benchmarks/kolla_scenarios/results] [--lite]

For each scenario and each proxy: the cloud is restored, the proxy started and
waited for (every server up), locust started headless, the scenario's steps
carried out at their fixed times, locust waited for, the proxy stopped. Then
the scenario's plot (both proxies on one figure) and the summaries are
written. Needs root (the Galera nodes run as mysql), mariadb-server, galera-4,
rsync, rabbitmq-server, memcached and haproxy; `--lite` needs only memcached.

Everything started is stopped on any exit, Ctrl-C and SIGTERM included.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from pathlib import Path
from types import FrameType

from benchmarks.harness.procs import ManagedProcess
from benchmarks.kolla_scenarios.cloud import VIP, Cloud, StartError, log
from benchmarks.kolla_scenarios.proxies import PROXIES
from benchmarks.kolla_scenarios.report import (
    Event,
    Run,
    plot,
    runs_from_summary,
    summarize,
    write_summary,
)
from benchmarks.kolla_scenarios.scenarios import SCENARIOS, Scenario

HERE = Path(__file__).resolve().parent
LOCUST = Path(sys.executable).parent / "locust"


def run_one(cloud: Cloud, proxy_name: str, scenario: Scenario, args: argparse.Namespace) -> Run:
    tag = f"{scenario.name}-{proxy_name}"
    workdir = args.out / "work" / tag
    workdir.mkdir(parents=True, exist_ok=True)
    (args.out / "locust").mkdir(exist_ok=True)
    request_log = workdir / "requests.csv"
    request_log.unlink(missing_ok=True)
    proxy = PROXIES[proxy_name](cloud, workdir)
    log(f"{tag}: starting {proxy_name}")
    try:
        proxy.start(list(scenario.controllers))
    except Exception as exc:
        proxy.stop()
        raise StartError(f"{proxy_name} failed to start: {exc}") from exc
    locust: ManagedProcess | None = None
    try:
        run = Run(scenario.name, proxy_name, time.time(), args.duration, [], request_log)
        run.csv_prefix = args.out / "locust" / tag
        env = {**os.environ, "KOLLA_VIP": VIP, "KOLLA_REQUEST_LOG": str(request_log)}
        argv = [
            str(LOCUST), "-f", str(HERE / "locustfile.py"), "--headless",
            "-u", str(args.users), "-r", str(args.users), "-t", f"{args.duration}s",
            "--csv", str(run.csv_prefix), "--csv-full-history", "--only-summary",
            "--stop-timeout", "2", "--exit-code-on-error", "0", "--loglevel", "WARNING",
        ]  # fmt: skip
        run.start = time.time()
        locust = ManagedProcess("locust", argv, workdir / "locust.log", env=env)
        for step in scenario.steps:
            time.sleep(max(0.0, run.start + step.at * args.duration - time.time()))
            at = time.time()
            try:
                what = step.action(cloud, proxy)
            except Exception as exc:
                run.fault_error = f"{step.kind} failed: {type(exc).__name__}: {exc}"
                run.events.append(Event(at, step.kind, run.fault_error, ok=False))
                log(f"{tag}: {run.fault_error}; load stopped")
                break
            run.events.append(Event(at, step.kind, what))
            log(f"{tag}: t={at - run.start:.1f}s {what}")
        if run.fault_error is not None:
            # The rest of the run would measure nothing the scenario is about.
            # locust quits on SIGTERM as at the end of its run time, CSVs written.
            locust.stop(30)
            run.duration = time.time() - run.start
        else:
            locust._popen.wait(args.duration + 60)
        return run
    finally:
        if locust is not None:
            locust.stop(10)
        proxy.stop()


def replot(out: Path) -> int:
    summary = json.loads((out / "summary.json").read_text())
    titles = {name: s.title for name, s in SCENARIOS.items()}
    for name, by_proxy in summary.items():
        runs = runs_from_summary(out, name, by_proxy)
        summary[name] = {run.proxy: summarize(run) for run in runs}
        plot(runs, titles[name], out / f"{name}.png")
    write_summary(out, summary, titles)
    print((out / "summary.md").read_text())
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--proxy", choices=["loadstone", "haproxy", "both"], default="both")
    parser.add_argument("--scenario", default=",".join(SCENARIOS), help="comma-separated")
    parser.add_argument("--duration", type=int, default=60, help="seconds of load per run")
    parser.add_argument("--users", type=int, default=20)
    parser.add_argument("--out", type=Path, default=HERE / "results")
    parser.add_argument("--lite", action="store_true", help="no Galera, no RabbitMQ")
    parser.add_argument(
        "--replot", action="store_true", help="recompute figures and plots from --out, run nothing"
    )
    args = parser.parse_args(argv)
    if args.replot:
        return replot(args.out)
    scenarios = [SCENARIOS[name] for name in args.scenario.split(",")]
    proxies = ["loadstone", "haproxy"] if args.proxy == "both" else [args.proxy]
    args.out.mkdir(parents=True, exist_ok=True)

    def terminate(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, terminate)
    # Also when started with SIGINT ignored (a background job of a shell script).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    cloud = Cloud(lite=args.lite)
    summary: dict[str, dict[str, dict[str, object]]] = {}
    titles = {s.name: s.title for s in scenarios}
    try:
        cloud.start()
        for scenario in scenarios:
            runs = []
            for proxy_name in proxies:
                cloud.restore()
                run = run_one(cloud, proxy_name, scenario, args)
                runs.append(run)
                summary.setdefault(scenario.name, {})[proxy_name] = summarize(run)
                write_summary(args.out, summary, titles)
            plot(runs, scenario.title, args.out / f"{scenario.name}.png")
        print((args.out / "summary.md").read_text())
        return 0
    except StartError as exc:
        log(f"a component failed to start: {exc}")
        return 2
    except KeyboardInterrupt:
        log("interrupted: stopping everything")
        return 130
    finally:
        cloud.stop()


if __name__ == "__main__":
    sys.exit(main())
