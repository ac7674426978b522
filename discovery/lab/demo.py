"""``meshwg lab`` (``make demo``): the connectivity matrix, or the mesh proof, in a NAT lab.

By default it builds the connectivity matrix (``discovery.lab.matrix``): member situations
behind real Linux NATs, every pairing's path (direct, lan, relay, judged from ``wg show``
endpoints) and time to first packet, printed as a table (``--json``: as JSON).

With ``--mesh`` it builds the four-member mesh lab instead and prints the proof: every
member pings every other member over the mesh, each pair's ``wg show`` endpoint is the
direct one (the peer's LAN address behind the same NAT, its NAT's public address otherwise;
through a symmetric NAT, the relay client's 127.0.0.1 proxy: the rendezvous's relay), and
the rendezvous forwarded no packet. See ``discovery.lab.mesh`` for the topology.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import signal
import sys
import time
from typing import Any, Sequence

from meshwg.util.endpoint import split_hostport

from discovery.lab import matrix as connectivity
from discovery.lab.mesh import (DEFAULT_INTERVAL, MEMBERS, RENDEZVOUS_ADDRESS, RENDEZVOUS_PORT,
                                MeshLab, build_lab)
from discovery.lab.netns import LabError


def ping_matrix(lab: MeshLab, count: int = 3) -> dict[tuple[str, str], float | None]:
    """Each member pings every other member's mesh address (in parallel)."""
    with concurrent.futures.ThreadPoolExecutor(max_workers=6) as pool:
        futures = {(a, b): pool.submit(lab.members[a].ping, lab.members[b].mesh_address,
                                       count)
                   for a, b in lab.pairs()}
        return {pair: future.result() for pair, future in futures.items()}


def directness(lab: MeshLab) -> list[dict[str, Any]]:
    """For each pair: the endpoint ``wg show`` holds and whether it is what a direct
    path needs (the peer's NAT public address, or its LAN address behind the same NAT)."""
    rows = []
    endpoints = {label: node.wg.endpoints() for label, node in lab.members.items()}
    for a, b in lab.pairs():
        peer = lab.members[b]
        endpoint = endpoints[a].get(peer.public_key or "", "(none)")
        host = split_hostport(endpoint)[0] if endpoint != "(none)" else ""
        expected = lab.expected_path(a, b)
        if expected == "lan":
            want = peer.lan_address
        elif expected == "direct":
            want = peer.router.public_address if peer.router else None
        elif expected == "relay":
            want = "127.0.0.1"          # the relay client's local proxy for this peer
        else:
            want = None
        rows.append({"from": a, "to": b, "endpoint": endpoint, "expected": expected,
                     "want_host": want, "ok": want is not None and host == want})
    return rows


def report(lab: MeshLab) -> dict[str, Any]:
    """Everything the demo shows, as one JSON-able document."""
    matrix = ping_matrix(lab)
    statuses = {}
    for label, node in lab.members.items():
        try:
            statuses[label] = node.status()
        except Exception as exc:  # noqa: BLE001 - shown, not fatal
            statuses[label] = {"error": str(exc)}
    rv = lab.rendezvous
    return {
        "ping_ms": {f"{a}->{b}": rtt for (a, b), rtt in matrix.items()},
        "expected_path": {f"{a}->{b}": lab.expected_path(a, b) for a, b in lab.pairs()},
        "status": statuses,
        "wg_endpoints": {label: node.wg.endpoints() for label, node in
                         [("rendezvous", rv), *lab.members.items()]},
        "directness": directness(lab),
        "rendezvous": {"ip_forward": rv.ns.read_sysctl("net.ipv4.ip_forward"),
                       "forwarded_datagrams": rv.ns.forwarded_datagrams()},
        "routers": {name: {"public_address": r.public_address, "mode": r.mode,
                           "lan": str(r.lan)} for name, r in lab.routers.items()},
        "members": {label: {"mesh_address": n.mesh_address, "lan_address": n.lan_address,
                            "public_key": n.public_key, "interface": n.interface}
                    for label, n in lab.members.items()},
    }


def _fmt_rtt(rtt: float | None) -> str:
    return "FAIL" if rtt is None else f"{rtt:.2f} ms"


def format_report(doc: dict[str, Any]) -> str:
    """The human-readable text of a :func:`report`."""
    members = list(doc["members"])
    lines = ["== topology =="]
    for name, r in doc["routers"].items():
        hosts = [f"{m} {doc['members'][m]['lan_address']}" for m in members
                 if MEMBERS[m][0] == name]
        lines.append(f"  {name}: public {r['public_address']} ({r['mode']} NAT), "
                     f"LAN {r['lan']}: {', '.join(hosts)}")
    lines.append(f"  rendezvous: public {RENDEZVOUS_ADDRESS}:{RENDEZVOUS_PORT}, "
                 f"ip_forward={doc['rendezvous']['ip_forward']}, "
                 f"forwarded datagrams={doc['rendezvous']['forwarded_datagrams']}")
    lines.append("")
    lines.append("== ping matrix (row pings column's mesh address) ==")
    width = 12
    lines.append(" " * 6 + "".join(m.ljust(width) for m in members))
    for a in members:
        cells = ["-".ljust(width) if a == b else _fmt_rtt(doc["ping_ms"][f"{a}->{b}"]).ljust(width)
                 for b in members]
        lines.append(a.ljust(6) + "".join(cells))
    lines.append("")
    lines.append("== meshwg status ==")
    for label, status in doc["status"].items():
        if "error" in status:
            lines.append(f"  {label}: status failed: {status['error']}")
            continue
        me = status.get("self", {})
        lines.append(f"  {label} ({me.get('mesh_address')}, {status.get('interface')}, "
                     f"port {me.get('listen_port')}):")
        for p in status.get("peers", []):
            reason = f"  ({p['reason']})" if p.get("reason") else ""
            lines.append(f"    {str(p.get('name')):<12} {str(p.get('mesh_address')):<14} "
                         f"{str(p.get('path')):<11} {str(p.get('endpoint')):<22}{reason}")
    lines.append("")
    lines.append("== wg show endpoints: is each path direct? ==")
    for row in doc["directness"]:
        if row["expected"] == "none":
            verdict = "no direct path expected (symmetric NAT)"
        elif row["expected"] == "relay":
            verdict = (f"{'OK' if row['ok'] else 'NOT'} relay: 127.0.0.1 is the proxy to the "
                       f"rendezvous's relay (symmetric NAT)")
        else:
            where = "its LAN address" if row["expected"] == "lan" else "its NAT's public address"
            verdict = (f"{'OK' if row['ok'] else 'NOT'} {row['expected']}: "
                       f"{row['want_host']} is {where}")
        lines.append(f"  {row['from']:>3} -> {row['to']:<3} endpoint {row['endpoint']:<22} {verdict}")
    return "\n".join(lines)


def verdict(doc: dict[str, Any]) -> list[str]:
    """What is wrong with a report (empty: the mesh is proven)."""
    problems = []
    for key, expected in doc["expected_path"].items():
        if expected != "none" and doc["ping_ms"][key] is None:
            problems.append(f"ping {key} failed")
    problems += [f"{r['from']}->{r['to']} endpoint {r['endpoint']} is not {r['want_host']}"
                 for r in doc["directness"] if r["expected"] != "none" and not r["ok"]]
    if doc["rendezvous"]["forwarded_datagrams"] != 0:
        problems.append("the rendezvous forwarded packets")
    return problems


def _run_matrix(args: argparse.Namespace) -> int:
    """The connectivity matrix (all cells, or the ``--cell`` ones): table or JSON."""
    cells = connectivity.select(args.cell) if args.cell else connectivity.CELLS
    doc = connectivity.run_matrix(cells, timeout=args.timeout)
    if args.json:
        print(json.dumps(doc, indent=2, sort_keys=True))
    else:
        print(connectivity.format_table(doc))
        for note in doc["notes"]:
            print(f"note: {note}")
        print(f"\n{len(doc['cells'])} cells in {doc['total_s']} s; RESULT: "
              + ("every cell as expected" if not doc["problems"] else "; ".join(doc["problems"])))
    return 1 if doc["problems"] else 0


def main(argv: Sequence[str] | None = None) -> int:
    """``meshwg lab``: build the lab, measure it, print the result, clean up."""
    parser = argparse.ArgumentParser(prog="meshwg lab", description=__doc__.split("\n\n")[0])
    parser.add_argument("--mesh", action="store_true",
                        help="the four-member mesh proof instead of the connectivity matrix")
    parser.add_argument("--cell", action="append", default=[], metavar="A-B",
                        help="matrix: only this cell (repeatable), e.g. cone-sym")
    parser.add_argument("--timeout", type=float, default=120.0,
                        help="matrix: seconds each phase (first packets, paths) may take")
    parser.add_argument("--keep", action="store_true",
                        help="mesh (implies --mesh): leave the lab running until Ctrl-C")
    parser.add_argument("--symmetric", action="store_true",
                        help="mesh (implies --mesh): add member C behind a symmetric NAT")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.add_argument("--interval", type=float, default=DEFAULT_INTERVAL,
                        help=f"mesh: daemon update interval in seconds (default {DEFAULT_INTERVAL})")
    args = parser.parse_args(list(argv) if argv is not None else None)

    def on_term(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt
    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # even if started in background
    started = time.monotonic()
    try:
        if not (args.mesh or args.symmetric or args.keep):
            return _run_matrix(args)
        with build_lab(symmetric=args.symmetric, interval=args.interval) as lab:
            doc = report(lab)
            doc["formed_in_s"] = round(time.monotonic() - started, 2)
            problems = verdict(doc)
            doc["problems"] = problems
            if args.json:
                print(json.dumps(doc, indent=2, sort_keys=True))
            else:
                print(format_report(doc))
                print()
                print("RESULT: " + ("the mesh is direct everywhere it can be"
                                    if not problems else "; ".join(problems)))
            if args.keep:
                print("\nlab running; namespaces: " + ", ".join(
                    [lab.rendezvous.ns.name] + [n.ns.name for n in lab.members.values()])
                    + f"\nstate and logs in {lab.workdir}. Ctrl-C removes everything.",
                    file=sys.stderr, flush=True)
                while True:
                    time.sleep(3600)
            return 1 if problems else 0
    except KeyboardInterrupt:
        print("lab removed", file=sys.stderr)
        return 130 if not args.keep else 0
    except LabError as exc:
        print(f"meshwg lab: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
