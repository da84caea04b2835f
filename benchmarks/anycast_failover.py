"""Anycast failover: an instance lost among three announcing one VIP by BGP.

    .venv/bin/python -m benchmarks.anycast_failover [--runs 3] [--json OUT]

The bed is tests/netbed/bgp.py: three loadstone instances, each with a BIRD
speaking eBGP (BFD 300 ms x 3) to a router that merges their routes into one
ECMP route (Linux, L4 hash), a client behind the router sending HTTP through
the VIP with tests/netbed/flows.py. Needs root, bird2, network namespaces.

Faults, each under a connection-per-request load ("new": every request a new
flow) and a keep-alive load (each worker keeps its connection):
- kill9: kill -9 of one instance's loadstone. BIRD stays up; the service
  manager's stop hook (the bed's stand-in for systemd's ExecStopPost,
  docs/anycast.md) disables the VIP's protocol, and BIRD withdraws the route.
- cut: the instance's link cut (no RST, no ICMP): the router's BFD detects it.
- drain: SIGTERM (global.stop_delay 2s): loadstone withdraws first, waits,
  drains, exits.
- site: a second bed whose router prefers site a (lb1, lb2, local_pref 200)
  over site b (lb3); both links of site a are cut.

Measured per run:
The lost instance is lb1, lb2, lb3 in turn from run to run.

- outage_s: from the fault to the router's route without the instance (its
  next hops polled every ~10 ms with `ip -n router route`): the time during
  which the router still sends new flows to it;
- client_outage_s, failed_requests: from the fault to the start of the last
  failed request, and the failed requests (new-flow load);
- keep-alive: the share of the connections open at the fault that broke
  (a failed request on them), those to the lost instance and those to the
  others, which the router's hashing may move when a next hop goes.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.netbed.bgp import AnycastBed
from tests.netbed.flows import Flow, parse

ALL = {"lb1", "lb2", "lb3"}
LOAD_BEFORE = 1.0  # seconds of load before the fault
LOAD_AFTER = 2.5  # and after it (the bound of what is measured)


def client_view(flows: list[Flow], fault: float) -> dict[str, float | int]:
    """Failed requests after the fault, and when the last one started."""
    failed = [f for f in flows if not f.ok and f.start >= fault - 0.05]
    return {
        "failed_requests": len(failed),
        "client_outage_s": round(max((f.start for f in failed), default=fault) - fault, 3),
        "requests": len([f for f in flows if f.start >= fault]),
    }


def broken_shares(flows: list[Flow], fault: float, victim: str | set[str]) -> dict[str, Any]:
    """Keep-alive connections open at the fault (their last answer before it
    came from an instance), and the share of them that broke after it."""
    victims = {victim} if isinstance(victim, str) else victim
    on: dict[str, str] = {}  # connection -> the instance that served it
    for f in flows:
        if f.ok and f.start < fault:
            on[f.conn] = f.served_by
    broken = {f.conn for f in flows if not f.ok and f.start >= fault - 0.05}
    to_victim = [c for c, lb in on.items() if lb in victims]
    to_others = [c for c, lb in on.items() if lb not in victims]

    def share(conns: list[str]) -> float | None:
        return round(sum(c in broken for c in conns) / len(conns), 3) if conns else None

    return {
        "connections": len(on),
        "to_lost": len(to_victim),
        "lost_broken_share": share(to_victim),
        "others_broken_share": share(to_others),
        "all_broken_share": share(list(on)),
    }


def timed_fault(
    bed: AnycastBed, mode: str, fault: Callable[[], None], expected: set[str], victims: set[str]
) -> dict[str, Any]:
    out, proc = bed.start_flows(mode, workers=8 if mode == "new" else 12)
    time.sleep(LOAD_BEFORE)  # load before the fault, by design a duration
    started = time.monotonic()
    fault()
    bed.wait_next_hops(expected, timeout=30)
    outage = time.monotonic() - started
    time.sleep(max(0.0, LOAD_AFTER - outage))
    bed.bed.kill(proc)
    flows = parse(out.read_text().splitlines())
    result: dict[str, Any] = {"outage_s": round(outage, 3)}
    result.update(client_view(flows, started))
    if mode == "keepalive":
        result.update(broken_shares(flows, started, victims))
    return result


def kill_loadstone(bed: AnycastBed, lb: str, signal_name: str) -> None:
    subprocess.run(["kill", f"-{signal_name}", str(bed.loadstone_pid(lb))], check=True)


def restore(bed: AnycastBed, lb: str) -> None:
    bed.bed.restore_link(lb)
    if bed.loadstones[lb].poll() is not None:  # killed or stopped; a cut link's
        bed.start_loadstone(lb)  # loadstone kept running and BGP comes back by itself
    bed.wait_next_hops(ALL, timeout=60)
    time.sleep(1.0)  # BFD and the session settle before the next fault


def summary(values: list[float]) -> dict[str, float]:
    return {
        "median": round(statistics.median(values), 3),
        "min": round(min(values), 3),
        "max": round(max(values), 3),
    }


def run(runs: int, tmp: Path) -> dict[str, Any]:
    results: dict[str, list[dict[str, Any]]] = {}
    (tmp / "three").mkdir()
    (tmp / "sites").mkdir()
    with AnycastBed(tmp / "three").start() as bed:
        for i in range(runs):
            # The victim changes from run to run: which next hop goes decides
            # which of the others' flows the router's hash-threshold ECMP moves.
            victim = f"lb{i % 3 + 1}"
            for mode in ("new", "keepalive"):
                for name, fault in (
                    ("kill9", lambda v=victim: kill_loadstone(bed, v, "KILL")),
                    ("cut", lambda v=victim: bed.bed.cut_link(v)),
                    ("drain", lambda v=victim: kill_loadstone(bed, v, "TERM")),
                ):
                    r = timed_fault(bed, mode, fault, ALL - {victim}, {victim})
                    r["lost"] = victim
                    results.setdefault(f"{name}_{mode}", []).append(r)
                    print(f"{name} {mode}: {r}", file=sys.stderr)
                    if name == "drain":
                        bed.loadstones[victim].wait(30)
                    restore(bed, victim)
    sites = {"lb1": 200, "lb2": 200, "lb3": 100}
    with AnycastBed(tmp / "sites", sites=sites).start() as bed:
        for _ in range(runs):
            for mode in ("new", "keepalive"):

                def lose_site() -> None:
                    bed.bed.cut_link("lb1")
                    bed.bed.cut_link("lb2")

                r = timed_fault(bed, mode, lose_site, {"lb3"}, {"lb1", "lb2"})
                results.setdefault(f"site_{mode}", []).append(r)
                print(f"site {mode}: {r}", file=sys.stderr)
                bed.bed.restore_link("lb1")
                bed.bed.restore_link("lb2")
                bed.wait_next_hops({"lb1", "lb2"}, timeout=60)
                time.sleep(1.0)
    figures: dict[str, Any] = {
        "runs": runs,
        "loadavg_at_end": os.getloadavg(),
        "cpus": os.cpu_count(),
        "machine_loaded": os.getloadavg()[0] > (os.cpu_count() or 1),
        "scenarios": {},
    }
    for name, rows in results.items():
        doc: dict[str, Any] = {"rows": rows}
        for key in ("outage_s", "client_outage_s", "failed_requests"):
            doc[key] = summary([float(r[key]) for r in rows])
        for key in ("lost_broken_share", "others_broken_share"):
            values = [r[key] for r in rows if r.get(key) is not None]
            if values:
                doc[key] = summary(values)
        figures["scenarios"][name] = doc
    # The names the issue asks for: the instance-loss outage (kill -9, new
    # flows) and the failed requests of a planned drain.
    figures["outage_s"] = figures["scenarios"]["kill9_new"]["outage_s"]["median"]
    figures["drain_failed_requests"] = int(
        figures["scenarios"]["drain_new"]["failed_requests"]["max"]
    )
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--json", metavar="OUT", help="write the figures here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="anycast-bench-") as tmp:
        figures = run(args.runs, Path(tmp))
    text = json.dumps(figures, indent=2)
    if args.json:
        Path(args.json).write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
