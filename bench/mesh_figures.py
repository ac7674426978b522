"""Mesh figures measured in the NAT lab (discovery/lab/mesh.py); a benchmark, not a test.

* join -> first ping over a direct path: a fresh member D behind NAT2 runs `meshwg join`
  with a reusable token; the clock stops at the first ping reply to A1 (behind NAT1) sent
  while D's `wg show` endpoint for A1 is NAT1's public address. Median of --joins runs.
* resume after a NAT public-address change: NAT2 is renumbered (new public address,
  `conntrack -F`) during a continuous UDP echo B -> A1 over the mesh; the gap in replies.
* resume after the node's own address change: B's LAN address changes (a new lease).

Run as root: `.venv/bin/python bench/mesh_figures.py [--joins 10] [--repeat 1] [--json]`.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from typing import Any, Callable

from discovery.lab import mesh as mesh_lab
from discovery.lab.netns import LabError, change_host_address, poll, unavailable_reason
from discovery.lab.traffic import EchoProbe


def time_join_to_direct_ping(lab: mesh_lab.MeshLab, token: str, index: int,
                             timeout: float = 60.0) -> float:
    """Seconds from starting `meshwg join` on a new member to its first direct ping to A1."""
    a1 = lab.members["a1"]
    nat1 = lab.routers["nat1"]
    node = lab.add_node("nat2", f"d{index}", 51830)
    started = time.monotonic()
    lab.join(node, token, wait=False)

    def direct_ping() -> bool:
        node.daemon.check_alive()
        if not node.wg.endpoints().get(a1.public_key, "").startswith(f"{nat1.public_address}:"):
            return False
        return node.ns.ping(a1.mesh_address, count=1, wait=0.3).returncode == 0
    poll(direct_ping, timeout, f"{node.label}'s first direct ping to A1", interval=0.02)
    elapsed = time.monotonic() - started
    node.daemon.stop()
    lab.remove_member(node.label)
    return elapsed


def time_resume(lab: mesh_lab.MeshLab, change: Callable[[], None], timeout: float = 90.0
                ) -> float:
    """Gap (seconds) in B -> A1 echo replies around `change()`."""
    a1 = lab.members["a1"]
    probe = EchoProbe(lab.members["b"].ns, a1.ns, a1.mesh_address)
    try:
        poll(lambda: len(probe.replies()) >= 5, 15, "B -> A1 echo replies")
        started = time.time()
        change()
        done = time.time()
        return poll(lambda: probe.gap(started, done), timeout, "B -> A1 traffic to resume")
    finally:
        probe.stop()


def summarize(name: str, values: list[float]) -> dict[str, Any]:
    return {"figure": name, "n": len(values), "median_s": statistics.median(values),
            "min_s": min(values), "max_s": max(values), "values_s": values}


def measure(joins: int, repeat: int) -> list[dict[str, Any]]:
    rows = []
    with mesh_lab.build_lab() as lab:
        token = lab.invite(reusable=True)
        rows.append(summarize("join -> first direct ping",
                              [time_join_to_direct_ping(lab, token, i) for i in range(joins)]))
        nat2 = lab.routers["nat2"]
        nat_gaps = []
        for i in range(repeat):
            nat_gaps.append(time_resume(lab, lambda i=i: nat2.renumber(f"198.18.2.{2 + i}")))
        rows.append(summarize("resume after NAT public-address change", nat_gaps))
        b = lab.members["b"]
        own_gaps = []
        for i in range(repeat):
            old, new = b.lan_address, str(nat2.next_lan_address())

            def renumber_b(old: str = old, new: str = new) -> None:
                prefix = nat2.lan.prefixlen
                change_host_address(b.ns, "eth0", f"{old}/{prefix}", f"{new}/{prefix}",
                                    nat2.lan_gateway)
                b.lan_address = new
            own_gaps.append(time_resume(lab, renumber_b))
        rows.append(summarize("resume after own address change", own_gaps))
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--joins", type=int, default=10, help="join runs (default 10)")
    parser.add_argument("--repeat", type=int, default=1,
                        help="address changes of each kind (default 1)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    reason = unavailable_reason()
    if reason:
        print(f"mesh_figures: {reason}", file=sys.stderr)
        return 2
    try:
        rows = measure(args.joins, args.repeat)
    except LabError as exc:
        print(f"mesh_figures: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    print(f"{'figure':<42} {'n':>3} {'median':>9} {'min':>9} {'max':>9}")
    for row in rows:
        print(f"{row['figure']:<42} {row['n']:>3} {row['median_s']:>8.2f}s "
              f"{row['min_s']:>8.2f}s {row['max_s']:>8.2f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
