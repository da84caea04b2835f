"""Turning summaries into the comparison table (text or Markdown) and describing the machine."""

from __future__ import annotations

import datetime
import os
import platform
import shutil
import statistics
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.harness.measure import Run, Summary

BASELINE = "haproxy"
CANDIDATE = "loadstone"


@dataclass(frozen=True, slots=True)
class Metric:
    label: str
    value: Callable[[Summary], float]
    fmt: str
    ratio: bool = True  # a ratio of error counts means nothing


METRICS = (
    Metric("req/s", lambda s: s.requests_per_second, "{:,.0f}"),
    Metric("MB/s", lambda s: s.mib_per_second, "{:,.1f}"),
    Metric("cpu us/req", lambda s: s.cpu_us_per_request, "{:,.1f}"),
    Metric("p99 latency ms", lambda s: s.latency_p99_ms, "{:,.2f}"),
    Metric("rss MB", lambda s: s.rss_mib, "{:,.1f}"),
    Metric("errors", lambda s: s.errors, "{:,.0f}", ratio=False),
)

HEADER = ("scenario", "metric", BASELINE, CANDIDATE, f"ratio {CANDIDATE}/{BASELINE}")


def rows(summaries: Sequence[Summary]) -> list[tuple[str, str, str, str, str]]:
    """One row per (scenario, metric); scenarios in the order they were run."""
    by_key = {(s.scenario, s.proxy): s for s in summaries}
    scenarios = list(dict.fromkeys(s.scenario for s in summaries))
    table = []
    for scenario in scenarios:
        base, cand = by_key.get((scenario, BASELINE)), by_key.get((scenario, CANDIDATE))
        for i, metric in enumerate(METRICS):
            cells = []
            for summary in (base, cand):
                if summary is None:
                    cells.append("-")
                    continue
                cell = metric.fmt.format(metric.value(summary))
                # A run with errors must not pass for a clean one.
                if metric.label == "errors" and summary.errors:
                    cell += " !"
                cells.append(cell)
            ratio = "-"
            if metric.ratio and base is not None and cand is not None and metric.value(base):
                ratio = f"{metric.value(cand) / metric.value(base):.2f}x"
            table.append((scenario if i == 0 else "", metric.label, cells[0], cells[1], ratio))
    return table


def text_table(summaries: Sequence[Summary]) -> str:
    body = rows(summaries)
    widths = [max(len(r[i]) for r in [HEADER, *body]) for i in range(len(HEADER))]

    def line(row: Sequence[str]) -> str:
        # Names left-aligned, figures right-aligned so digits line up.
        cells = [
            cell.ljust(widths[i]) if i < 2 else cell.rjust(widths[i]) for i, cell in enumerate(row)
        ]
        return "  ".join(cells).rstrip()

    out = [line(HEADER), "  ".join("-" * w for w in widths)]
    for row in body:
        if row[0] and len(out) > 2:
            out.append("")
        out.append(line(row))
    return "\n".join(out)


def markdown_table(summaries: Sequence[Summary]) -> str:
    out = ["| " + " | ".join(HEADER) + " |", "|" + "|".join(["---"] * 2 + ["---:"] * 3) + "|"]
    out += ["| " + " | ".join(row) + " |" for row in rows(summaries)]
    return "\n".join(out)


def markdown_header(meta: dict[str, Any]) -> str:
    """Provenance lines to go above a table of figures."""
    proxies = "; ".join(meta.get("proxies", {}).values())
    return "\n".join(
        [
            f"**{meta['date']}**, {meta['nproc']} x {meta['cpu_model']}, "
            f"Linux {meta['kernel']}, git {meta['git_revision']}  ",
            f"`{meta['command']}`  ",
            f"{proxies}; {meta['nginx']}; {meta['wrk'].split(' Copyright')[0]}"
            + (f"; {meta['session_logs']}" if "session_logs" in meta else ""),
        ]
    )


@dataclass(frozen=True, slots=True)
class Paired:
    """loadstone/HAProxy of each repeat's two runs of one scenario, which ran back
    to back: steadier than the ratio of the medians when the machine's own speed
    drifts during an invocation (a shared VM's can move by a quarter)."""

    scenario: str
    pairs: int
    rps_ratios: tuple[float, ...]
    cpu_ratios: tuple[float, ...]

    def describe(self) -> str:
        def spread(values: tuple[float, ...]) -> str:
            return (
                f"{statistics.median(values):.2f}x ({min(values):.2f}-{max(values):.2f})"
                if values
                else "-"
            )

        return (
            f"{self.scenario}: req/s {spread(self.rps_ratios)}, cpu us/req "
            f"{spread(self.cpu_ratios)} over {self.pairs} back-to-back pair(s)"
        )


def paired(runs: Sequence[Run]) -> list[Paired]:
    """Per scenario (in the order run), the ratios of the runs that share a repeat."""
    by_key = {(r.scenario, r.repeat, r.proxy): r for r in runs}
    result = []
    for scenario in dict.fromkeys(r.scenario for r in runs):
        rps, cpu = [], []
        for repeat in sorted({r.repeat for r in runs if r.scenario == scenario}):
            base = by_key.get((scenario, repeat, BASELINE))
            cand = by_key.get((scenario, repeat, CANDIDATE))
            if base is None or cand is None:
                continue
            if base.wrk.requests_per_second:
                rps.append(cand.wrk.requests_per_second / base.wrk.requests_per_second)
            if base.cpu_us_per_request:
                cpu.append(cand.cpu_us_per_request / base.cpu_us_per_request)
        if rps or cpu:
            result.append(Paired(scenario, max(len(rps), len(cpu)), tuple(rps), tuple(cpu)))
    return result


def warnings(summaries: Sequence[Summary], *, max_foreign: float) -> list[str]:
    """Conditions under which the figures should not be trusted as they stand."""
    notes = []
    for s in summaries:
        where = f"{s.scenario}/{s.proxy}"
        if s.errors:
            notes.append(f"{where}: {s.errors} wrk errors (socket errors or non-2xx) - FLAGGED")
        if s.wrk_cpu_share > 0.9:
            notes.append(
                f"{where}: wrk used {s.wrk_cpu_share:.0%} of its thread(s)' CPU; "
                "the load generator may be what limits this figure"
            )
        if s.foreign_cores > max_foreign:
            notes.append(
                f"{where}: other programs used up to {s.foreign_cores:.2f} cores during "
                "a measured run - DISTURBED, take these figures with salt"
            )
    return notes


def _first_line(argv: list[str]) -> str:
    if shutil.which(argv[0]) is None:
        return "not installed"
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    text = (done.stdout or done.stderr).strip()
    return text.splitlines()[0] if text else "unknown"


def _cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def _git_revision(repo: Path) -> str:
    def git(*args: str) -> str:
        done = subprocess.run(
            ["git", "-C", str(repo), *args], capture_output=True, text=True, check=False
        )
        return done.stdout.strip()

    revision = git("rev-parse", "--short", "HEAD") or "unknown"
    return revision + ("+dirty" if git("status", "--porcelain", "--untracked-files=no") else "")


def machine_info(repo: Path) -> dict[str, Any]:
    """What a reader needs to judge or reproduce a figure."""
    return {
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "nproc": len(os.sched_getaffinity(0)),
        "cpu_model": _cpu_model(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "nginx": _first_line(["nginx", "-v"]),
        "wrk": _first_line(["wrk", "-v"]),
        "git_revision": _git_revision(repo),
        "ip_local_port_range": _sysctl("net/ipv4/ip_local_port_range"),
        "tcp_tw_reuse": _sysctl("net/ipv4/tcp_tw_reuse"),
    }


def _sysctl(name: str) -> str:
    try:
        return " ".join(Path("/proc/sys", name).read_text().split())
    except OSError:
        return "unknown"
