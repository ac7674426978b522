"""Benchmark: one client resolving an N-member directory from a DnsServer in another
process on loopback (checked field by field against what was served; above 900 members
through the bulk directory), and (optionally) dnsperf queries/s against the same server.

    .venv/bin/python bench/dnssd_bench.py --members 10000 [--dnsperf 10]
"""

from __future__ import annotations

import argparse
import multiprocessing
import shutil
import subprocess
import tempfile
import time

from discovery.dnssd.client import resolve_zone
from discovery.dnssd.server import DnsServer
from discovery.dnssd.member import MemberRecord
from discovery.dnssd.names import instance_name
from discovery.dnssd.zone import Directory

ZONE = "mesh.example."


def make_members(n: int) -> list[MemberRecord]:
    return [
        MemberRecord(
            i.to_bytes(4, "big") * 8,
            (f"198.51.{i // 250 % 250}.{i % 250 + 1}", 20000 + i % 40000),
            [f"100.64.{i // 250 % 250}.{i % 250 + 1}/32"],
            name=f"m{i}",
            mesh_address=f"100.64.{i // 250 % 250}.{i % 250 + 1}",
            host_candidates=[(f"192.168.{i % 250}.{i % 200 + 2}", 51820)],
        )
        for i in range(n)
    ]


def serve(n: int, ready, done) -> None:
    directory = Directory(ZONE)
    start = time.perf_counter()
    directory.set_members(make_members(n))
    build = time.perf_counter() - start
    with DnsServer(directory, "127.0.0.1", 0) as server:
        ready.send((server.port, build))
        done.recv()
        ready.send(server.counters)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--members", type=int, default=10000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--dnsperf", type=int, default=0, help="seconds of dnsperf (0: skip)")
    args = parser.parse_args()
    ready_parent, ready_child = multiprocessing.Pipe()
    done_parent, done_child = multiprocessing.Pipe()
    proc = multiprocessing.Process(target=serve, args=(args.members, ready_child, done_child))
    proc.start()
    try:
        port, build = ready_parent.recv()
        print(f"set_members({args.members}): {build:.2f} s")
        expected = make_members(args.members)
        for round_ in range(args.rounds):
            start = time.perf_counter()
            got = resolve_zone(("127.0.0.1", port), ZONE, timeout=5.0)
            elapsed = time.perf_counter() - start
            assert got == expected, "resolved directory differs from the served one"
            print(f"resolve_zone round {round_ + 1} ({'cold' if round_ == 0 else 'server cache warm'}): "
                  f"{len(got)} members in {elapsed:.2f} s")
        if args.dnsperf and shutil.which("dnsperf"):
            with tempfile.NamedTemporaryFile("w", suffix=".txt") as queries:
                for record in make_members(args.members):
                    queries.write(f"{instance_name(ZONE, record.public_key)} SRV\n")
                queries.flush()
                # resolve_zone used a transfer, so the SRV answers are not cached yet: the
                # first pass over the file measures misses, the timed run mostly hits.
                for label, extra in (("dnsperf, one pass, uncached SRV", ["-n", "1"]),
                                     (f"dnsperf, {args.dnsperf} s, cached SRV", ["-l", str(args.dnsperf)])):
                    out = subprocess.run(
                        ["dnsperf", "-s", "127.0.0.1", "-p", str(port), "-d", queries.name,
                         "-c", "1", "-q", "200", *extra],
                        capture_output=True, text=True,
                    ).stdout
                    print(label)
                    print("\n".join(line for line in out.splitlines()
                                    if "Queries per second" in line or "Queries completed" in line
                                    or "Queries lost" in line or "Average Latency" in line))
    finally:
        done_parent.send(True)
        print(ready_parent.recv())
        proc.join(10)


if __name__ == "__main__":
    main()
