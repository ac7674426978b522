"""Success rate and time to direct of hard-NAT traversal by birthday-paradox probing, in
the hard-NAT lab (discovery/lab/hard_nat.py); a benchmark, not a test.

One member behind a symmetric NAT (MASQUERADE --random-fully), one behind an
endpoint-independent NAT (``--easy keep``: port-preserving, or ``rewrite``), each with its
netcheck report. Each trial stops both members, flushes both NATs' mappings (every
mapping is new: the hard NAT picks fresh random ports), starts both at once and waits for
both ends to show a direct path. A trial succeeds when the first birthday attempt found
the path (the hard member's status: one attempt, one hit); its time is seconds from the
members' start to both ends direct (it includes joining, the directory read, the relay
and START_AFTER before the attempt); attempt_to_direct is seconds from the hard member's
attempt start to its planner seeing the pair direct. Trials that fail wait for the retry (RETRY_START
later) up to --timeout.

After the trials, --transfer seconds of TCP from the hard to the easy member over the found
path (through the hard member's loopback proxy) give its throughput.

Run as root: `.venv/bin/python bench/birthday.py [--trials 20] [--easy keep] [--json]`.
Figures on a loaded machine are upper bounds of the code's own delays.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

from discovery.lab.hard_nat import build
from discovery.lab.netns import Cleanup, LabError, PollTimeout, unavailable_reason
from discovery.lab.traffic import tcp_transfer
from discovery.traversal.birthday import PROBES, SOCKETS, hit_probability


def trial(hn, timeout: float) -> dict:
    hn.stop_members()
    hn.flush_mappings()
    started = time.monotonic()
    hn.start_members()
    try:
        seconds = hn.wait_direct(timeout)
    except (PollTimeout, LabError):
        seconds = None
    if seconds is not None:
        seconds = time.monotonic() - started
    hard = hn.hard.status().get("hard_nat") or {}
    return {"direct_after": None if seconds is None else round(seconds, 2),
            "attempts": hard.get("attempts"), "hits": hard.get("hits"),
            "attempt_to_direct": hard.get("last_success_after"),
            "first_attempt": hard.get("attempts") == 1 and hard.get("hits") == 1,
            "paths": list(hn.paths())}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=20)
    ap.add_argument("--easy", choices=("keep", "rewrite"), default="keep")
    ap.add_argument("--timeout", type=float, default=60.0, help="seconds per trial")
    ap.add_argument("--transfer", type=float, default=5.0,
                    help="seconds of TCP from the hard to the easy member over the found path "
                         "after the trials (0: none)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    reason = unavailable_reason()
    if reason:
        print(f"birthday bench: cannot build the lab: {reason}", file=sys.stderr)
        return 1
    results = []
    with tempfile.TemporaryDirectory(prefix="mwhard") as workdir, Cleanup() as cleanup:
        hn = build(cleanup, Path(workdir), args.easy)
        hn.netcheck(hn.hard)
        hn.netcheck(hn.easy)
        hn.start_members({"hard": hn.mesh.invite(), "easy": hn.mesh.invite()})
        for i in range(args.trials):
            result = trial(hn, args.timeout)
            results.append(result)
            if not args.json:
                print(f"trial {i + 1:2d}: {result}", flush=True)
        transfer = None
        if args.transfer > 0 and hn.paths() == ("direct", "direct"):
            result = tcp_transfer(hn.hard.ns, hn.easy.ns, hn.easy.mesh_address,
                                  seconds=args.transfer, timeout=args.transfer + 60)
            transfer = {"mbit_s": round(result.received_bytes * 8 / result.seconds / 1e6, 1),
                        "intact": result.intact, "paths": list(hn.paths())}
        hn.stop_members()
    first = [r for r in results if r["first_attempt"]]
    times = [r["direct_after"] for r in first]
    spans = [r["attempt_to_direct"] for r in first if r["attempt_to_direct"] is not None]
    summary = {
        "easy_nat": args.easy, "sockets": SOCKETS, "probes": PROBES,
        "expected_first_attempt_rate": round(hit_probability(SOCKETS, PROBES), 4),
        "trials": len(results), "first_attempt_successes": len(first),
        "direct_within_timeout": sum(r["direct_after"] is not None for r in results),
        "direct_after_median_s": round(statistics.median(times), 2) if times else None,
        "direct_after_min_s": min(times) if times else None,
        "direct_after_max_s": max(times) if times else None,
        "attempt_to_direct_median_s": round(statistics.median(spans), 2) if spans else None,
        "attempt_to_direct_max_s": max(spans) if spans else None,
        "tcp_hard_to_easy": transfer,
    }
    if args.json:
        print(json.dumps({"summary": summary, "trials": results}, indent=2))
    else:
        print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
