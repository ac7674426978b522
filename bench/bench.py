"""Throughput, latency and CPU cost of meshwg against wireguard-go, measured in the same run.

Each implementation gets its own pair of network namespaces joined by a veth, with one
WireGuard interface in each (discovery.lab.engines builds them). Through each tunnel:
iperf3 TCP with one stream and with four (-P 4), the median ping RTT, and the CPU seconds
both daemons spent per GB moved (utime + stime from /proc/PID/stat). Absolute figures
drift between machines; the meshwg/wireguard-go ratio is the figure to quote.

Run as root:  .venv/bin/python bench/bench.py [--seconds 5] [--json] [--only meshwg]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from typing import Any

from discovery.lab.engines import IMPLEMENTATIONS, TunnelPair, tunnel_pair
from discovery.lab.netns import Cleanup, LabError, poll, unavailable_reason
from handshakes import measure_handshakes_per_second as measure  # bench/, beside this script

IPERF_PORT = 5201


def measure_handshakes_per_second() -> float | None:
    """Handshakes per second one meshwg responder completes on one core (bench/handshakes.py)."""
    return measure(2000)["handshakes_per_second"]


def _iperf(pair: TunnelPair, seconds: float, streams: int) -> dict[str, float]:
    """One iperf3 TCP run a -> b; returns Mbit/s and CPU seconds per GB of both daemons."""
    server = pair.ns_b.popen(["iperf3", "-s", "-1", "-B", pair.tunnel_b, "-p", str(IPERF_PORT)],
                             name="iperf3-server")
    poll(lambda: f":{IPERF_PORT}" in pair.ns_b.run(["ss", "-ltnH"]).stdout or not server.alive,
         10, lambda: f"iperf3 server listening\n{server.output()}")
    cpu_before = pair.a.daemon.cpu_seconds() + pair.b.daemon.cpu_seconds()
    client = pair.ns_a.run(["iperf3", "-c", pair.tunnel_b, "-p", str(IPERF_PORT), "-J",
                            "-t", str(seconds), "-P", str(streams)],
                           timeout=seconds + 30, check=False)
    cpu = pair.a.daemon.cpu_seconds() + pair.b.daemon.cpu_seconds() - cpu_before
    server.stop()
    if client.returncode != 0:
        raise LabError(f"iperf3 client failed: {client.stdout[-1500:]} "
                       f"{client.stderr[-1500:]}\n{server.output()}")
    end = json.loads(client.stdout)["end"]
    received = end["sum_received"]
    gigabytes = received["bytes"] / 1e9
    return {"mbit_per_s": received["bits_per_second"] / 1e6,
            "cpu_s_per_gb": cpu / gigabytes if gigabytes else float("nan")}


def bench_implementation(kind: str, seconds: float) -> dict[str, Any]:
    with Cleanup() as lab:
        pair = tunnel_pair(lab, kind, kind)
        pair.ns_a.wait_ping(pair.tunnel_b, timeout=15)
        single = _iperf(pair, seconds, 1)
        multi = _iperf(pair, seconds, 4)
        rtts = pair.ns_a.ping_rtts(pair.tunnel_b, count=30, interval=0.02)
        return {
            "tcp_1_stream_mbit_per_s": single["mbit_per_s"],
            "tcp_4_streams_mbit_per_s": multi["mbit_per_s"],
            "cpu_s_per_gb_1_stream": single["cpu_s_per_gb"],
            "cpu_s_per_gb_4_streams": multi["cpu_s_per_gb"],
            "ping_rtt_median_ms": statistics.median(rtts) if rtts else float("nan"),
        }


METRICS = [
    ("tcp_1_stream_mbit_per_s", "TCP 1 stream (Mbit/s)"),
    ("tcp_4_streams_mbit_per_s", "TCP 4 streams (Mbit/s)"),
    ("cpu_s_per_gb_1_stream", "CPU s/GB, 1 stream"),
    ("cpu_s_per_gb_4_streams", "CPU s/GB, 4 streams"),
    ("ping_rtt_median_ms", "ping RTT median (ms)"),
]


def _ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or not b or a != a or b != b:
        return None
    return a / b


def render_table(results: dict[str, dict[str, Any]], handshakes: float | None) -> str:
    names = list(results)
    header = f"{'metric':<28}" + "".join(f"{n:>15}" for n in names)
    both = "meshwg" in results and "wireguard-go" in results
    if both:
        header += f"{'meshwg/wg-go':>15}"
    lines = [header, "-" * len(header)]
    for key, label in METRICS:
        row = f"{label:<28}" + "".join(f"{results[n][key]:>15.2f}" for n in names)
        if both:
            r = _ratio(results["meshwg"][key], results["wireguard-go"][key])
            row += f"{r:>15.2f}" if r is not None else f"{'n/a':>15}"
        lines.append(row)
    hs = f"{handshakes:.0f}" if handshakes is not None else "n/a (TODO hook)"
    lines.append(f"{'meshwg handshakes/s':<28}{hs:>15}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="length of each iperf3 run")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    parser.add_argument("--only", choices=IMPLEMENTATIONS, action="append",
                        help="bench only this implementation (repeatable)")
    args = parser.parse_args(argv)
    problem = unavailable_reason(("ip", "wg", "wireguard-go", "iperf3", "ping", "ss"))
    if problem:
        print(f"bench: {problem}", file=sys.stderr)
        return 2
    kinds = args.only or list(IMPLEMENTATIONS)
    results: dict[str, dict[str, Any]] = {}
    for kind in kinds:
        try:
            results[kind] = bench_implementation(kind, args.seconds)
        except LabError as exc:
            print(f"bench: {kind} failed: {exc}", file=sys.stderr)
            return 1
    handshakes = measure_handshakes_per_second() if "meshwg" in kinds else None
    if args.json:
        ratios = {}
        if "meshwg" in results and "wireguard-go" in results:
            ratios = {key: _ratio(results["meshwg"][key], results["wireguard-go"][key])
                      for key, _ in METRICS}
        print(json.dumps({"results": results, "ratio_meshwg_over_wireguard_go": ratios,
                          "meshwg_handshakes_per_second": handshakes,
                          "iperf_seconds": args.seconds}, indent=2))
    else:
        print(render_table(results, handshakes))
    return 0


if __name__ == "__main__":
    sys.exit(main())
