"""Figures and ratio tables (text or Markdown) from summaries, and the machine they ran on."""

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


@dataclass(frozen=True, slots=True)
class Metric:
    label: str
    value: Callable[[Summary], float]
    fmt: str
    ratio: bool = True  # a ratio of error counts means nothing
    higher_is_better: bool = False  # which peer is the best one on this metric
    # A cell that is not one number (several workers' figures); ratio=False with it.
    text: Callable[[Summary], str] | None = None

    def cell(self, summary: Summary) -> str:
        if self.text is not None:
            return self.text(summary)
        return self.fmt.format(self.value(summary))


METRICS = (
    Metric("req/s", lambda s: s.requests_per_second, "{:,.0f}", higher_is_better=True),
    Metric("MB/s", lambda s: s.mib_per_second, "{:,.1f}", higher_is_better=True),
    Metric("cpu us/req", lambda s: s.cpu_us_per_request, "{:,.1f}"),
    Metric("p99 latency ms", lambda s: s.latency_p99_ms, "{:,.2f}"),
    Metric("rss MB", lambda s: s.rss_mib, "{:,.1f}"),
    Metric("errors", lambda s: s.errors, "{:,.0f}", ratio=False),
)
# With the backends' CPU capped (compare.py --backend-cpus) the backends set the
# pace: what a proxy costs them per request, and how much of their cap they got
# to use, tell whether it wastes some of their capacity.
BACKEND_METRICS = (
    Metric("backend us/req", lambda s: s.backend_cpu_us_per_request, "{:,.1f}"),
    Metric("backend cores", lambda s: s.backend_cores, "{:,.2f}", ratio=False),
)
# METRICS with the backend's beside the latency (before rss and errors).
CAPPED_BACKEND_METRICS = (*METRICS[:4], *BACKEND_METRICS, *METRICS[4:])
# With each backend worker capped on its own (--backend-cpus-per-worker), also each
# worker's cores, the busiest first: "0.10 / 0.03" under caps of 0.1 says the proxy
# left most of the second worker's capacity unused.
PER_WORKER_METRICS = (
    *METRICS[:4],
    *BACKEND_METRICS,
    Metric(
        "backend cores per worker",
        lambda s: max(s.backend_worker_cores, default=0.0),
        "{:,.2f}",
        ratio=False,
        text=lambda s: " / ".join(f"{c:.2f}" for c in s.backend_worker_cores) or "-",
    ),
    *METRICS[4:],
)

BEST_PEER = "best peer"

Row = tuple[str, ...]


def _scenarios(summaries: Sequence[Summary]) -> list[str]:
    return list(dict.fromkeys(s.scenario for s in summaries))


def figure_rows(summaries: Sequence[Summary], metrics: Sequence[Metric] = METRICS) -> list[Row]:
    """One row per (scenario, proxy), proxies in the order they were run."""
    table = []
    for scenario in _scenarios(summaries):
        for i, summary in enumerate(s for s in summaries if s.scenario == scenario):
            cells = []
            for metric in metrics:
                cell = metric.cell(summary)
                # A run with errors must not pass for a clean one.
                if metric.label == "errors" and summary.errors:
                    cell += " !"
                cells.append(cell)
            table.append((scenario if i == 0 else "", summary.proxy, *cells))
    return table


def _ratio(candidate: float, baseline: float) -> str:
    return f"{candidate / baseline:.2f}x" if baseline else "-"


def _ratios(candidate: Summary, baseline: Summary, metrics: Sequence[Metric]) -> list[str]:
    return [_ratio(m.value(candidate), m.value(baseline)) for m in metrics if m.ratio]


def _best_peer_ratios(
    candidate: Summary, peers: Sequence[Summary], metrics: Sequence[Metric]
) -> list[str]:
    """Per metric, the ratio to whichever peer did best on it, and that peer's name."""
    cells = []
    for metric in (m for m in metrics if m.ratio):
        pick = max if metric.higher_is_better else min
        best = pick(peers, key=metric.value)
        cells.append(f"{_ratio(metric.value(candidate), metric.value(best))} {best.proxy}")
    return cells


def ratio_rows(
    summaries: Sequence[Summary], candidates: Sequence[str], metrics: Sequence[Metric] = METRICS
) -> list[Row]:
    """Per scenario and loadstone build: its ratio to each peer, to the best peer on
    each metric (when there are several peers) and to the first build (when there
    are several builds). Above 1 is better for req/s and MB/s, below 1 for the rest."""
    table: list[Row] = []
    for scenario in _scenarios(summaries):
        here = [s for s in summaries if s.scenario == scenario]
        peers = [s for s in here if s.proxy not in candidates]
        builds = sorted(
            (s for s in here if s.proxy in candidates), key=lambda s: candidates.index(s.proxy)
        )
        first_row = len(table)
        for build in builds:
            lines = [(peer.proxy, _ratios(build, peer, metrics)) for peer in peers]
            if len(peers) > 1:
                lines.append((BEST_PEER, _best_peer_ratios(build, peers, metrics)))
            if build is not builds[0]:
                lines.append((builds[0].proxy, _ratios(build, builds[0], metrics)))
            for i, (to, cells) in enumerate(lines):
                table.append(("", build.proxy if i == 0 else "", to, *cells))
        if len(table) > first_row:
            table[first_row] = (scenario, *table[first_row][1:])
    return table


def text_table(header: Row, body: Sequence[Row], *, names: int = 2) -> str:
    """Aligned columns, the first `names` left-aligned and the figures right-aligned
    so digits line up; a blank line between scenarios."""
    widths = [max(len(r[i]) for r in [header, *body]) for i in range(len(header))]

    def line(row: Row) -> str:
        cells = [
            cell.ljust(widths[i]) if i < names else cell.rjust(widths[i])
            for i, cell in enumerate(row)
        ]
        return "  ".join(cells).rstrip()

    out = [line(header), "  ".join("-" * w for w in widths)]
    for row in body:
        if row[0] and len(out) > 2:
            out.append("")
        out.append(line(row))
    return "\n".join(out)


def markdown_table(header: Row, body: Sequence[Row], *, names: int = 2) -> str:
    align = ["---"] * names + ["---:"] * (len(header) - names)
    out = ["| " + " | ".join(header) + " |", "|" + "|".join(align) + "|"]
    out += ["| " + " | ".join(row) + " |" for row in body]
    return "\n".join(out)


def tables(
    summaries: Sequence[Summary],
    candidates: Sequence[str],
    *,
    markdown: bool,
    metrics: Sequence[Metric] = METRICS,
) -> str:
    """Every proxy's figures, then loadstone's ratios (when there is something to
    compare it with)."""
    render = markdown_table if markdown else text_table
    labels = [m.label for m in metrics]
    out = render(("scenario", "proxy", *labels), figure_rows(summaries, metrics))
    ratios = ratio_rows(summaries, candidates, metrics)
    if any(row[2] for row in ratios):
        header = ("scenario", "loadstone", "ratio to", *(m.label for m in metrics if m.ratio))
        out += "\n\n" + render(header, ratios, names=3)
    return out


def markdown_header(meta: dict[str, Any]) -> str:
    """Provenance lines to go above a table of figures."""
    # The backends' nginx is the nginx peer's binary too: named once.
    tools = [*meta.get("proxies", {}).values(), meta["nginx"], meta["wrk"].split(" Copyright")[0]]
    tools += [meta[key] for key in ("backends", "session_logs") if key in meta]
    return "\n".join(
        [
            f"**{meta['date']}**, {meta['nproc']} x {meta['cpu_model']}, "
            f"Linux {meta['kernel']}, git {meta['git_revision']}  ",
            f"`{meta['command']}`  ",
            "; ".join(dict.fromkeys(tools)),
        ]
    )


@dataclass(frozen=True, slots=True)
class Paired:
    """candidate/baseline of the runs of one scenario that share a repeat, which ran
    in the same round: steadier than the ratio of the medians when the machine's own
    speed drifts during an invocation (a shared VM's can move by a quarter)."""

    scenario: str
    candidate: str  # a loadstone build
    baseline: str  # a peer, or the first loadstone build
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
            f"{self.scenario} {self.candidate}/{self.baseline}: req/s "
            f"{spread(self.rps_ratios)}, cpu us/req {spread(self.cpu_ratios)} "
            f"over {self.pairs} repeat(s)"
        )


def _pair(runs: Sequence[Run], scenario: str, candidate: str, baseline: str) -> Paired | None:
    by_key = {(r.repeat, r.proxy): r for r in runs if r.scenario == scenario}
    rps, cpu = [], []
    for repeat in sorted({repeat for repeat, _ in by_key}):
        base, cand = by_key.get((repeat, baseline)), by_key.get((repeat, candidate))
        if base is None or cand is None:
            continue
        if base.wrk.requests_per_second:
            rps.append(cand.wrk.requests_per_second / base.wrk.requests_per_second)
        if base.cpu_us_per_request:
            cpu.append(cand.cpu_us_per_request / base.cpu_us_per_request)
    if not (rps or cpu):
        return None
    return Paired(scenario, candidate, baseline, max(len(rps), len(cpu)), tuple(rps), tuple(cpu))


def paired(runs: Sequence[Run], candidates: Sequence[str]) -> list[Paired]:
    """Per scenario (in the order run) and loadstone build, its ratios to each peer
    and to the first build, repeat by repeat."""
    result = []
    for scenario in dict.fromkeys(r.scenario for r in runs):
        present = list(dict.fromkeys(r.proxy for r in runs if r.scenario == scenario))
        peers = [p for p in present if p not in candidates]
        builds = [c for c in candidates if c in present]
        for build in builds:
            baselines = peers + ([builds[0]] if build != builds[0] else [])
            for baseline in baselines:
                pair = _pair(runs, scenario, build, baseline)
                if pair is not None:
                    result.append(pair)
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
