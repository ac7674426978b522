"""Mesh figures measured in the NAT lab (discovery/lab.py); a benchmark, not a test.

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
from pathlib import Path
from typing import Any, Callable

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from discovery.lab import mesh as mesh_lab  # noqa: E402
from discovery.lab import netns  # noqa: E402


def time_join_to_direct_ping(lab: mesh_lab.MeshLab, token: str, index: int,
                             timeout: float = 60.0) -> float:
    """Seconds from starting `meshwg join` on a new member to its first direct ping to A1."""
    a1 = lab.members["a1"]
    nat1 = lab.routers["nat1"]
    ns, address = lab.add_host("nat2", f"d{index}")
    node = mesh_lab.Node(label=f"d{index}", ns=ns, interface=netns.unique_name("mwd"),
                         listen_port=51830, state_dir=lab.workdir / f"d{index}" / "state",
                         log_dir=lab.workdir / f"d{index}", router=lab.routers["nat2"],
                         lan_address=address)
    node.state_dir.parent.mkdir(parents=True, exist_ok=True)
    lab.cleanup.push("socket", lambda: netns.remove_uapi_socket(node.interface))
    started = time.monotonic()
    lab.join(node, token, wait=False)

    def direct_ping() -> bool:
        if not node.daemon.alive:
            raise mesh_lab.LabError(f"member {node.label} exited\n{node.daemon.output()}")
        endpoints = node.ns.run(["wg", "show", node.interface, "endpoints"], check=False).stdout
        row = dict(line.split("\t") for line in endpoints.splitlines() if "\t" in line)
        if not row.get(a1.public_key, "").startswith(f"{nat1.public_address}:"):
            return False
        return node.ns.ping(a1.mesh_address, count=1, wait=0.3).returncode == 0
    netns.poll(direct_ping, timeout, f"{node.label}'s first direct ping to A1", interval=0.02)
    elapsed = time.monotonic() - started
    node.daemon.stop()
    lab.remove_member(node.label)
    return elapsed


def time_resume(lab: mesh_lab.MeshLab, change: Callable[[], None], timeout: float = 90.0
                ) -> float:
    """Gap (seconds) in B -> A1 echo replies around `change()`."""
    probe = mesh_lab.EchoProbe(lab.members["b"], lab.members["a1"])
    try:
        netns.poll(lambda: len(probe.replies()) >= 5, 15, "B -> A1 echo replies")
        started = time.time()
        change()
        done = time.time()
        return netns.poll(lambda: probe.gap(started, done), timeout, "B -> A1 traffic to resume")
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
                netns.change_host_address(b.ns, "eth0", f"{old}/{prefix}", f"{new}/{prefix}",
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
    reason = netns.unavailable_reason()
    if reason:
        print(f"mesh_figures: {reason}", file=sys.stderr)
        return 2
    try:
        rows = measure(args.joins, args.repeat)
    except (mesh_lab.LabError, netns.NetnsError, netns.PollTimeout) as exc:
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
