"""From one run's request log to figures, a plot, a markdown table and summary.json.

Figures of a run (one scenario, one proxy):

- requests, failed_requests: every request locust made, and those that failed;
  checked against the Aggregated row of locust's own <prefix>_stats.csv.
- p95_ms: 95th percentile latency over the run; p95_fault_ms over the fault
  window (from the first fault or change to the last step, or to the end
  when the scenario never restores).
- recovery_s: after each step, the time until the last failed request (its
  end) before the next step (0 when none failed); the largest over the
  steps. None for a scenario without steps.
- fault_injected: every step was carried out; `fault_error` says why not.
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

COLORS = {"loadstone": "tab:blue", "haproxy": "tab:red"}


@dataclass
class Event:
    at: float  # unix time
    kind: str
    what: str
    ok: bool = True


@dataclass
class Run:
    scenario: str
    proxy: str
    start: float  # unix time locust started
    duration: float
    events: list[Event] = field(default_factory=list)
    requests_log: Path | None = None
    csv_prefix: Path | None = None
    fault_error: str | None = None

    def requests(self) -> list[tuple[float, str, float, bool]]:
        rows = []
        assert self.requests_log is not None
        if self.requests_log.exists():
            for line in self.requests_log.read_text().splitlines():
                t, name, ms, ok = line.split(",")
                rows.append((float(t), name, float(ms), ok == "1"))
        return rows


def percentile(values: list[float], p: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, math.ceil(p / 100 * len(ordered)) - 1)]


def locust_totals(prefix: Path) -> tuple[int, int]:
    """(requests, failures) of locust's Aggregated row."""
    with open(f"{prefix}_stats.csv", newline="") as f:
        for row in csv.DictReader(f):
            if row["Name"] == "Aggregated":
                return int(row["Request Count"]), int(row["Failure Count"])
    raise ValueError(f"no Aggregated row in {prefix}_stats.csv")


def summarize(run: Run) -> dict[str, Any]:
    rows = run.requests()
    steps = [e for e in run.events if e.kind in ("fault", "change", "restore")]
    # A failure counts when it is seen: at the end of the request (one that
    # started just before a step and failed because of it belongs to that step).
    failures = [t + ms / 1000 for t, _, ms, ok in rows if not ok]
    summary: dict[str, Any] = {
        "requests": len(rows),
        "failed_requests": len(failures),
        "p95_ms": percentile([ms for _, _, ms, _ in rows], 95),
        "p95_fault_ms": None,
        "recovery_s": None,
        "fault_injected": run.fault_error is None,
        "fault_error": run.fault_error,
        "start": run.start,
        "duration": round(run.duration, 2),
        "events": [{**asdict(e), "at_s": round(e.at - run.start, 2)} for e in run.events],
    }
    if run.csv_prefix is not None:
        summary["locust_requests"], summary["locust_failures"] = locust_totals(run.csv_prefix)
        summary["consistent_with_locust"] = (
            summary["locust_requests"] == summary["requests"]
            and summary["locust_failures"] == summary["failed_requests"]
        )
    if steps:
        window_end = steps[-1].at if steps[-1].kind == "restore" else run.start + run.duration
        in_window = [ms for t, _, ms, _ in rows if steps[0].at <= t <= window_end]
        summary["p95_fault_ms"] = percentile(in_window, 95)
        recovery = 0.0
        for i, step in enumerate(steps):
            until = steps[i + 1].at if i + 1 < len(steps) else math.inf
            after = [t for t in failures if step.at <= t < until]
            if after:
                recovery = max(recovery, max(after) - step.at)
        summary["recovery_s"] = round(recovery, 2)
    return summary


def per_second(run: Run) -> tuple[list[int], list[int], list[int], list[float | None]]:
    """Seconds since the start, requests, failures and p95 in each second."""
    buckets: dict[int, list[tuple[float, bool]]] = {}
    for t, _, ms, ok in run.requests():
        buckets.setdefault(int(t - run.start), []).append((ms, ok))
    seconds = list(range(int(run.duration) + 2))
    reqs = [len(buckets.get(s, [])) for s in seconds]
    fails = [sum(1 for _, ok in buckets.get(s, []) if not ok) for s in seconds]
    p95 = [percentile([ms for ms, _ in buckets.get(s, [])], 95) for s in seconds]
    return seconds, reqs, fails, p95


def plot(runs: list[Run], title: str, path: Path) -> None:
    fig, axes = plt.subplots(3, 1, figsize=(9, 7), sharex=True)
    labels = ("requests/s", "failures/s", "p95 latency (ms)")
    for index, run in enumerate(runs):
        seconds, reqs, fails, p95 = per_second(run)
        color = COLORS.get(run.proxy)
        axes[0].plot(seconds, reqs, color=color, label=run.proxy)
        axes[1].plot(seconds, fails, color=color, label=run.proxy)
        axes[2].plot(seconds, [v if v is not None else math.nan for v in p95], color=color)
        for event in run.events:
            style = {"fault": "-", "change": "-.", "restore": ":"}.get(event.kind, "--")
            for ax in axes:
                ax.axvline(event.at - run.start, color=color, linestyle=style, alpha=0.6)
            if index:  # the steps are at the same times for every proxy: named once
                continue
            axes[0].annotate(
                event.what,
                (event.at - run.start, 1.0),
                xycoords=("data", "axes fraction"),
                fontsize=7,
                rotation=90,
                va="top",
                ha="right",
                color="black",
            )
    for ax, label in zip(axes, labels, strict=True):
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    axes[2].set_yscale("log")
    axes[2].set_xlabel("seconds since the load started")
    axes[0].legend(loc="lower left", fontsize=8)
    fig.suptitle(title + "\n(solid: fault, dash-dot: reload, dotted: restore)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.1f}"
    return str(value)


def markdown(summary: dict[str, dict[str, dict[str, Any]]], titles: dict[str, str]) -> str:
    lines = [
        "| scenario | proxy | requests | failed | recovery (s) | p95 (ms) | p95 in fault (ms) "
        "| fault |",
        "|---|---|---:|---:|---:|---:|---:|---|",
    ]
    for scenario, by_proxy in summary.items():
        for proxy, s in by_proxy.items():
            fault = "injected" if s["fault_injected"] else f"NOT injected: {s['fault_error']}"
            if not s["events"] and s["fault_injected"]:
                fault = "none (baseline)"
            lines.append(
                f"| {titles.get(scenario, scenario)} | {proxy} | {s['requests']} | "
                f"{s['failed_requests']} | {_fmt(s['recovery_s'])} | {_fmt(s['p95_ms'])} | "
                f"{_fmt(s['p95_fault_ms'])} | {fault} |"
            )
    return "\n".join(lines) + "\n"


def write_summary(out: Path, summary: dict[str, Any], titles: dict[str, str]) -> None:
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    (out / "summary.md").write_text(markdown(summary, titles))


def runs_from_summary(out: Path, scenario: str, by_proxy: dict[str, Any]) -> list[Run]:
    """The runs of a scenario rebuilt from summary.json and the request logs kept
    in out/work, to recompute figures and plots without running again."""
    runs = []
    for proxy, s in by_proxy.items():
        events = [Event(e["at"], e["kind"], e["what"], e["ok"]) for e in s["events"]]
        log = out / "work" / f"{scenario}-{proxy}" / "requests.csv"
        start = s.get("start")
        if start is None:  # summaries written before start was recorded
            start = events[0].at - s["events"][0]["at_s"] if events else 0.0
        run = Run(scenario, proxy, start, s.get("duration", 60.0), events, log)
        if not start:
            run.start = min(t for t, _, _, _ in run.requests())
        run.csv_prefix = out / "locust" / f"{scenario}-{proxy}"
        run.fault_error = s["fault_error"]
        runs.append(run)
    return runs
