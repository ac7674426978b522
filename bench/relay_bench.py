"""Relay figures measured in the NAT lab (discovery/lab/mesh.py); a benchmark, not a test.

* throughput through one relay node: N member pairs (one member behind NAT1, the other
  behind the symmetric NAT3, so the rendezvous's relay is their only path) run iperf3
  over the mesh at once for --seconds; the sum of their TCP goodput (Mbit/s), for N = 1
  and N = 10 (--pairs); first one direct pair (NAT1 to NAT2) for reference;
* the relay's CPU: the rendezvous process's CPU seconds (it runs the relay; nothing else
  is busy meanwhile) per GB of TCP payload relayed, as a share of one core, and the
  members' engines' CPU beside it (on a 2-core machine 2 x N Python engines, not the
  relay, bound the N-pair figure: compare the shares), TCP retransmits and UDP datagrams
  dropped for a full socket receive buffer (rendezvous and members' namespaces);
* relay -> direct: a pair behind NAT1 and NAT2 whose direct path is blocked (NAT2 drops
  UDP to and from NAT1's public address) runs on the relay for --hold seconds; then the
  block is lifted, and the clock runs until its endpoint is NAT2's public address and a
  ping answers. Direct probing backs off while relayed (1 s doubling to 30 s), so the
  figure depends on --hold.

Run as root: `.venv/bin/python bench/relay_bench.py [--pairs 1 10] [--seconds 10]
[--moves 3] [--hold 10] [--json]`. On a loaded machine the figures are lower bounds of
throughput and upper bounds of time and CPU.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from discovery.lab import mesh as mesh_lab
from discovery.lab.netns import LAB_TOOLS, LabError, measure_in_lab, poll

IPERF_PORT = 5201
BYTES_PER_GB = 1e9


class Pairs:
    """Fresh member pairs joined through one reusable token."""

    def __init__(self, lab: mesh_lab.MeshLab):
        self.lab = lab
        self.token = lab.invite(reusable=True)
        self.count = 0

    def make(self, n: int, site_a: str, site_b: str) -> list[tuple[mesh_lab.Node, mesh_lab.Node]]:
        pairs = []
        for _ in range(n):
            i = self.count
            self.count += 1
            pairs.append((self.lab.add_node(site_a, f"p{i}a", 51850 + 2 * i),
                          self.lab.add_node(site_b, f"p{i}b", 51851 + 2 * i)))
        nodes = [node for pair in pairs for node in pair]
        for node in nodes:
            self.lab.join(node, self.token, wait=False)
        for node in nodes:
            self.lab.wait_joined(node, timeout=120)
        return pairs

    def remove(self, pairs: list[tuple[mesh_lab.Node, mesh_lab.Node]]) -> None:
        for node in [n for pair in pairs for n in pair]:
            if node.daemon is not None:
                node.daemon.stop()
            self.lab.remove_member(node.label)


def path_of(a: mesh_lab.Node, b: mesh_lab.Node) -> str | None:
    row = a.peers_by_name().get(b.label)
    return row.get("path") if row else None


def wait_path(pairs: list[tuple[mesh_lab.Node, mesh_lab.Node]], path: str, timeout: float = 120.0
              ) -> None:
    def there() -> bool:
        return all(path_of(a, b) == path and path_of(b, a) == path for a, b in pairs)
    poll(there, timeout, lambda: f"{len(pairs)} pair(s) on path {path}: "
         f"{[(path_of(a, b), path_of(b, a)) for a, b in pairs]}", interval=0.5)


def iperf(a: mesh_lab.Node, b: mesh_lab.Node, port: int, seconds: float) -> dict[str, float]:
    """iperf3 from a to b over the mesh: goodput (bit/s) and payload bytes received."""
    server = b.ns.popen(["iperf3", "-s", "-1", "--forceflush", "-B", b.mesh_address, "-p", port],
                        name=f"iperf3-s-{b.label}")
    try:
        def listening() -> bool:
            server.check_alive()
            return "listening" in server.stdout().lower()
        poll(listening, 20, lambda: f"iperf3 server on {b.label}\n{server.output()}")
        proc = a.ns.run(["iperf3", "-c", b.mesh_address, "-p", port, "-t", seconds, "-J"],
                        timeout=seconds + 60, check=False)
        doc = json.loads(proc.stdout or "{}")
        if "error" in doc or "end" not in doc:
            raise LabError(f"iperf3 {a.label} -> {b.label}: {doc.get('error', proc.stderr[-500:])}")
        received = doc["end"]["sum_received"]
        return {"bits_per_second": received["bits_per_second"], "bytes": received["bytes"],
                "retransmits": doc["end"]["sum_sent"].get("retransmits", 0)}
    finally:
        server.stop()


def udp_buffer_drops(ns) -> int:
    """Udp RcvbufErrors of a namespace (/proc/net/snmp is per netns): datagrams dropped
    because a socket's receive buffer was full."""
    lines = [line.split() for line in ns.run(["cat", "/proc/net/snmp"]).stdout.splitlines()
             if line.startswith("Udp:")]
    return int(dict(zip(lines[0], lines[1]))["RcvbufErrors"])


def throughput(lab: mesh_lab.MeshLab, pairs: list[tuple[mesh_lab.Node, mesh_lab.Node]],
               seconds: float) -> dict[str, Any]:
    """Every pair's iperf3 at once; sum of goodput, and the relay's CPU per GB."""
    relay = lab.rendezvous.daemon
    members = [node.daemon for pair in pairs for node in pair]
    cpu0, t0 = relay.cpu_seconds(), time.monotonic()
    members0 = sum(m.cpu_seconds() for m in members)
    spaces = [lab.rendezvous.ns] + [node.ns for pair in pairs for node in pair]
    drops0 = sum(udp_buffer_drops(ns) for ns in spaces)
    with ThreadPoolExecutor(max_workers=len(pairs)) as pool:
        results = list(pool.map(lambda ip: iperf(ip[1][0], ip[1][1], IPERF_PORT + ip[0], seconds),
                                enumerate(pairs)))
    cpu, wall = relay.cpu_seconds() - cpu0, time.monotonic() - t0
    members_cpu = sum(m.cpu_seconds() for m in members) - members0
    drops = sum(udp_buffer_drops(ns) for ns in spaces) - drops0
    payload = sum(r["bytes"] for r in results)
    return {"pairs": len(pairs), "seconds": seconds,
            "mbit_s_total": sum(r["bits_per_second"] for r in results) / 1e6,
            "mbit_s_per_pair": [r["bits_per_second"] / 1e6 for r in results],
            "payload_bytes": payload,
            "relay_cpu_s": cpu, "relay_cpu_share": cpu / wall,
            "members_cpu_s": members_cpu, "members_cpu_share": members_cpu / wall,
            "tcp_retransmits": sum(r["retransmits"] for r in results),
            "udp_receive_buffer_drops": drops,
            "relay_cpu_s_per_gb": cpu / (payload / BYTES_PER_GB) if payload else None}


def _block(router, other_public: str, on: bool) -> None:
    """Drop (on) or stop dropping UDP between `router`'s LAN and `other_public`."""
    action = "-I" if on else "-D"
    for match in (["-s", other_public], ["-d", other_public]):
        router.ns.run(["iptables", action, "FORWARD", *match, "-p", "udp", "-j", "DROP"])


def relay_to_direct(lab: mesh_lab.MeshLab, maker: Pairs, hold: float,
                    timeout: float = 120.0) -> dict[str, float]:
    """Seconds from lifting the block to the direct path answering a ping."""
    nat1, nat2 = lab.routers["nat1"], lab.routers["nat2"]
    _block(nat2, nat1.public_address, True)
    blocked = True
    pairs = maker.make(1, "nat1", "nat2")
    a, b = pairs[0]
    try:
        wait_path(pairs, "relay")
        relayed_at = time.monotonic()
        while time.monotonic() - relayed_at < hold:      # the pair stays relayed this long
            time.sleep(0.5)
        _block(nat2, nat1.public_address, False)
        blocked = False
        lifted = time.monotonic()

        def direct() -> bool:
            if not a.wg.endpoints().get(b.public_key, "").startswith(f"{nat2.public_address}:"):
                return False
            return a.ns.ping(b.mesh_address, count=1, wait=0.5).returncode == 0
        poll(direct, timeout, f"{a.label}'s direct path to {b.label}", interval=0.05)
        return {"hold_s": hold, "relay_to_direct_s": time.monotonic() - lifted}
    finally:
        if blocked:
            _block(nat2, nat1.public_address, False)
        maker.remove(pairs)


def measure(pair_counts: list[int], seconds: float, moves: int, hold: float) -> dict[str, Any]:
    out: dict[str, Any] = {"throughput": [], "relay_to_direct": []}
    with mesh_lab.build_lab(symmetric=True, start=False) as lab:
        mesh_lab.init_rendezvous(lab)
        maker = Pairs(lab)
        runs = [(1, "nat2", "direct")] + [(n, "nat3", "relay") for n in pair_counts]
        for n, site_b, path in runs:        # one direct pair first, for reference
            pairs = maker.make(n, "nat1", site_b)
            try:
                wait_path(pairs, path)
                out["throughput"].append({"path": path, **throughput(lab, pairs, seconds)})
                print(json.dumps(out["throughput"][-1]), file=sys.stderr, flush=True)
            finally:
                maker.remove(pairs)
        for _ in range(moves):
            out["relay_to_direct"].append(relay_to_direct(lab, maker, hold))
            print(json.dumps(out["relay_to_direct"][-1]), file=sys.stderr, flush=True)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pairs", type=int, nargs="+", default=[1, 10],
                        help="relayed pairs at once, one run each (default 1 10)")
    parser.add_argument("--seconds", type=float, default=10.0, help="iperf3 seconds (default 10)")
    parser.add_argument("--moves", type=int, default=3, help="relay -> direct runs (default 3)")
    parser.add_argument("--hold", type=float, default=10.0,
                        help="seconds a pair stays relayed before its direct path opens (default 10)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    code, out = measure_in_lab("relay_bench", lambda: measure(
        args.pairs, args.seconds, args.moves, args.hold), tools=(*LAB_TOOLS, "iperf3"))
    if code:
        return code
    if args.json:
        print(json.dumps(out, indent=2))
        return 0
    print(f"{'path':<7} {'pairs':>5} {'Mbit/s total':>13} {'per pair (min-max)':>19} "
          f"{'relay CPU':>10} {'CPU s/GB':>9} {'members CPU':>12} {'TCP retr':>9} {'UDP drops':>10}")
    for row in out["throughput"]:
        per = row["mbit_s_per_pair"]
        per_gb = row["relay_cpu_s_per_gb"]
        print(f"{row['path']:<7} {row['pairs']:>5} {row['mbit_s_total']:>13.1f} "
              f"{min(per):>9.1f}-{max(per):<9.1f} {100 * row['relay_cpu_share']:>9.0f}% "
              f"{per_gb if per_gb is None else format(per_gb, '.1f'):>9} "
              f"{100 * row['members_cpu_share']:>11.0f}% {row['tcp_retransmits']:>9} "
              f"{row['udp_receive_buffer_drops']:>10}")
    moves = [r["relay_to_direct_s"] for r in out["relay_to_direct"]]
    if moves:
        print(f"relay -> direct after {args.hold:.0f} s relayed: median {statistics.median(moves):.2f} s "
              f"(min {min(moves):.2f}, max {max(moves):.2f}, n={len(moves)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
