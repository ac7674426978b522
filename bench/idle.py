"""Idle cost of the mesh daemons: percent of one core each uses while nothing happens.

Builds the default NAT lab (discovery.lab: a rendezvous and members A1, A2 behind NAT1 and
B behind NAT2, the real daemons run through the CLI), waits until the mesh has formed,
lets it settle (probes answered, backoffs run out), then reads each daemon's CPU time
(utime + stime of all its threads, /proc/PID/stat fields 14 and 15, in clock ticks) at the
start and the end of a window with no traffic and prints the share of one core.

Run as root: `.venv/bin/python bench/idle.py [--duration 60] [--settle 20] [--runs 1] [--json]`.
The baseline of an older checkout with the old layout (discovery/lab.py) runs the same
script with that checkout first on the path:
`cd OLD && PYTHONPATH=OLD /path/to/.venv/bin/python /path/to/bench/idle.py`.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from typing import Any

try:                                    # the layout of issue 7
    from discovery.lab.mesh import build_lab
except ImportError:                     # the flat layout before it (discovery/lab.py)
    from discovery.lab import build_lab  # type: ignore[no-redef]

TICKS_PER_SECOND = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """utime + stime of process `pid` (all its threads), in seconds. Raises OSError when
    the process is gone."""
    with open(f"/proc/{pid}/stat") as f:
        stat = f.read()
    # the command name (field 2) is in parentheses and may hold spaces: split after it
    fields = stat[stat.rindex(")") + 2:].split()
    utime, stime = int(fields[11]), int(fields[12])   # fields 14 and 15 of proc(5)
    return (utime + stime) / TICKS_PER_SECOND


def measure(daemons: dict[str, int], duration: float) -> dict[str, float]:
    """Percent of one core each daemon (label -> pid) used over `duration` seconds."""
    start = {label: cpu_seconds(pid) for label, pid in daemons.items()}
    started = time.monotonic()
    time.sleep(duration)                  # the quiet window being measured
    elapsed = time.monotonic() - started
    return {label: 100.0 * (cpu_seconds(pid) - start[label]) / elapsed
            for label, pid in daemons.items()}


def run_once(duration: float, settle: float) -> dict[str, float]:
    """Build the lab, form the mesh, settle, measure; the lab is removed afterwards."""
    with build_lab() as lab:
        daemons = {"rendezvous": lab.rendezvous.daemon.pid}
        daemons.update({label: node.daemon.pid for label, node in lab.members.items()})
        time.sleep(settle)
        return measure(daemons, duration)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=60.0,
                        help="seconds of idle measured (default 60)")
    parser.add_argument("--settle", type=float, default=20.0,
                        help="seconds to wait after the mesh formed (default 20)")
    parser.add_argument("--runs", type=int, default=1, help="labs built and measured (default 1)")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        print("bench/idle.py: needs root (network namespaces)", file=sys.stderr)
        return 1
    runs: list[dict[str, float]] = []
    for i in range(args.runs):
        figures = run_once(args.duration, args.settle)
        runs.append(figures)
        if not args.json:
            print(f"run {i + 1}: " + ", ".join(f"{label} {pct:.3f} %" for label, pct in figures.items()),
                  flush=True)
    labels = list(runs[0])
    members = [label for label in labels if label != "rendezvous"]
    doc: dict[str, Any] = {
        "duration_s": args.duration, "settle_s": args.settle, "runs": runs,
        "median_percent": {label: statistics.median(r[label] for r in runs) for label in labels},
    }
    doc["median_percent_member_max"] = max(doc["median_percent"][m] for m in members)
    if args.json:
        print(json.dumps(doc, indent=2))
    else:
        print(f"idle CPU, percent of one core over {args.duration:.0f} s (median of {len(runs)} "
              f"run(s)): rendezvous {doc['median_percent']['rendezvous']:.3f} %, members "
              + ", ".join(f"{m} {doc['median_percent'][m]:.3f} %" for m in members))
    return 0


if __name__ == "__main__":
    sys.exit(main())
