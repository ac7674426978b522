"""Time to the first packet between two members that join at the same moment, measured in
the NAT lab (discovery/lab/mesh.py); a benchmark, not a test.

Each run adds two fresh hosts, starts `meshwg join` on both at once (a reusable token),
and starts a UDP echo (discovery.lab.traffic.EchoProbe, one probe every 20 ms) from the
first to the second as soon as their mesh addresses are known. Reported per pair kind:

* both enrolled: seconds from the joins' start until both hold a mesh address (mostly the
  interpreter's start and imports: `meshwg join` enrolls before anything else);
* first packet: seconds from the joins' start to the first echo reply, and the path the
  first member's engine used for the second at that moment (direct or relay); also the
  seconds from both enrolled to that reply (what the mesh itself takes);
* direct: seconds until the first member's endpoint for the second is the second's NAT
  public address (the direct path), for pairs that can go direct.

Pair kinds: `direct` (behind NAT1 and NAT2, port-rewriting cones) and `relay` (behind NAT1
and the symmetric NAT3: only the rendezvous's relay connects them).

Run as root: `.venv/bin/python bench/first_packet.py [--runs 5] [--json] [--verbose]`
(--verbose: the members log with -v; their logs are copied to /tmp/first_packet_logs).
Figures on a loaded machine are upper bounds of the code's own delays.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from discovery.lab import mesh as mesh_lab
from discovery.lab.engines import meshwg_argv
from discovery.lab.netns import measure_in_lab, poll
from discovery.lab.traffic import EchoProbe
from discovery.lab.wg import remove_uapi_socket

LOG_COPY = "/tmp/first_packet_logs"   # --verbose: the members' logs are copied here
KINDS = {"direct": ("nat1", "nat2"), "relay": ("nat1", "nat3")}


def _mesh_address(node: mesh_lab.Node) -> str | None:
    doc = node.state_dir / "member.json"
    try:
        return json.loads(doc.read_text())["address"]
    except (OSError, ValueError, KeyError):
        return None


def _join(lab: mesh_lab.MeshLab, node: mesh_lab.Node, token: str, verbose: bool) -> None:
    """`meshwg join` without waiting (lab.join, with -v when profiling)."""
    if not verbose:
        lab.join(node, token, wait=False)
        return
    remove_uapi_socket(node.interface)
    node.daemon = node.ns.popen(meshwg_argv(
        "-v", "join", token, "--state", node.state_dir, "--interface", node.interface,
        "--listen-port", node.listen_port, "--name", node.label, "--interval", lab.interval),
        f"member-{node.label}", log_dir=str(node.log_dir))


def time_pair(lab: mesh_lab.MeshLab, token: str, kind: str, index: int,
              verbose: bool = False, timeout: float = 60.0) -> dict[str, Any]:
    """One run: two fresh members of `kind` join at once; their figures."""
    site_a, site_b = KINDS[kind]
    a = lab.add_node(site_a, f"{kind[0]}{index}a", 51840 + 2 * index)
    b = lab.add_node(site_b, f"{kind[0]}{index}b", 51841 + 2 * index)
    b_public = lab.routers[site_b].public_address
    started = time.time()
    _join(lab, a, token, verbose)
    _join(lab, b, token, verbose)
    probe = None
    try:
        def addresses() -> tuple[str, str] | None:
            a.daemon.check_alive()
            b.daemon.check_alive()
            pair = _mesh_address(a), _mesh_address(b)
            return pair if all(pair) else None
        _, b_address = poll(addresses, timeout, "both members to enroll", interval=0.01)
        enrolled = time.time() - started
        probe = EchoProbe(a.ns, b.ns, b_address, interval=0.02, bind="0.0.0.0")
        b_key = poll(lambda: b.wg.show("public-key").strip() or None, timeout,
                     f"{b.label}'s interface")
        first_path: list[str] = []
        direct_at: list[float] = []

        def endpoint() -> str:
            return a.wg.endpoints().get(b_key, "(none)")

        def first_reply() -> float | None:
            a.daemon.check_alive()
            replies = probe.replies()
            if not replies:
                ep = endpoint()
                if ep.startswith(f"{b_public}:") and not direct_at:
                    direct_at.append(time.time())
                return None
            first_path.append(endpoint())
            return min(r[2] for r in replies)
        first = poll(first_reply, timeout, f"{a.label}'s first echo reply from {b.label}",
                     interval=0.01)
        row = {"kind": kind, "enrolled_s": enrolled, "first_packet_s": first - started,
               "after_enrolled_s": first - started - enrolled,
               "path_at_first_packet": "relay" if first_path[0].startswith("127.") else "direct"}
        if kind == "direct":
            if not direct_at:
                poll(lambda: endpoint().startswith(f"{b_public}:"), timeout,
                     f"{a.label}'s direct path to {b.label}", interval=0.02)
                direct_at.append(time.time())
            row["direct_s"] = direct_at[0] - started
        if verbose:
            row["logs"] = [str(Path(LOG_COPY) / n.label) for n in (a, b)]
        return row
    finally:
        if probe is not None:
            probe.stop()
        for node in (a, b):
            if node.daemon is not None:
                node.daemon.stop()
            if verbose:
                shutil.copytree(node.log_dir, Path(LOG_COPY) / node.label, dirs_exist_ok=True)
            if _mesh_address(node):
                lab.remove_member(node.label)


def summarize(kind: str, rows: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {"kind": kind, "n": len(rows)}
    for figure in ("enrolled_s", "first_packet_s", "after_enrolled_s", "direct_s"):
        values = [r[figure] for r in rows if figure in r]
        if values:
            out[figure] = {"median": statistics.median(values), "min": min(values),
                           "max": max(values), "values": values}
    out["paths_at_first_packet"] = [r["path_at_first_packet"] for r in rows]
    return out


def measure(runs: int, kinds: list[str], verbose: bool
            ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    rows: list[dict[str, Any]] = []
    with mesh_lab.build_lab(symmetric=True, start=False) as lab:
        mesh_lab.init_rendezvous(lab)
        token = lab.invite(reusable=True)
        index = 0
        for _ in range(runs):
            for kind in kinds:
                rows.append(time_pair(lab, token, kind, index, verbose))
                index += 1
                print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    return rows, [summarize(k, [r for r in rows if r["kind"] == k]) for k in kinds]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5, help="runs of each pair kind (default 5)")
    parser.add_argument("--kind", choices=sorted(KINDS), action="append",
                        help="only this pair kind (repeatable; default all)")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--verbose", action="store_true",
                        help=f"members log with -v; their logs are copied to {LOG_COPY}")
    args = parser.parse_args(argv)
    code, result = measure_in_lab("first_packet", lambda: measure(
        args.runs, args.kind or list(KINDS), args.verbose))
    if code:
        return code
    rows, summary = result
    if args.json:
        print(json.dumps({"runs": rows, "summary": summary}, indent=2))
        return 0
    print(f"{'pair':<8} {'n':>3} {'figure':<26} {'median':>8} {'min':>8} {'max':>8}")
    for row in summary:
        for figure, label in (("enrolled_s", "both enrolled"),
                              ("first_packet_s", "first packet"),
                              ("after_enrolled_s", "first packet - enrolled"),
                              ("direct_s", "direct path")):
            if figure in row:
                f = row[figure]
                print(f"{row['kind']:<8} {row['n']:>3} {label:<26} {f['median']:>7.2f}s "
                      f"{f['min']:>7.2f}s {f['max']:>7.2f}s")
        print(f"{row['kind']:<8} {'':>3} {'path at first packet':<26} "
              f"{', '.join(row['paths_at_first_packet'])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
