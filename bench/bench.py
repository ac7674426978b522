"""Throughput, latency, CPU cost and handshakes of meshwg against wireguard-go, in one run.

Every configuration gets its own pair of network namespaces joined by a veth, with one
WireGuard interface in each (discovery.lab.engines builds them): Debian's wireguard-go,
meshwg on its compiled data path (MESHWG_FASTPATH=1; only when meshwg.accel is built) and
meshwg on its pure Python path (MESHWG_FASTPATH=0). All pairs stay up for the whole run
and are measured in alternated rounds (the order rotates each round), so a change in the
machine's load touches every configuration alike. Each round, through each tunnel:
iperf3 TCP with one stream and with four (-P 4), the CPU seconds both daemons spent per GB
moved (utime + stime from /proc/PID/stat) and how many cores each kept busy (CPU seconds
per wall second: where more than 2 cores exist, a direction per thread should exceed 1),
the median ping RTT idle and with one iperf3 stream running; then, once the machine is
quiet again (fewer than 0.2 cores busy, waited for at most 10 s: the round's streams
drained), the handshakes one meshwg responder completes per second on one core
(bench/handshakes.py).

Figures are the median and range over the rounds; ratios to wireguard-go are taken round
by round (each pairs figures measured moments apart) and summarised the same way.
Absolute figures drift between machines and with load: on a loaded machine they are
lower bounds, the ratio is the figure to quote.

Run as root:  .venv/bin/python bench/bench.py [--rounds 3] [--seconds 5] [--quick] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from typing import Any

from discovery.lab.engines import TunnelPair, tunnel_pair
from discovery.lab.netns import Cleanup, LabError, poll, unavailable_reason
# bench/, beside this script
from handshakes import measure_round, x25519_floor_per_second
from report import METRICS, REFERENCE, machine, render, summarise

IPERF_PORT = 5201
COMPILED, PYTHON = "meshwg", "meshwg-python"
# configuration -> (engine kind, MESHWG_FASTPATH for the daemon, or None)
CONFIGS = {REFERENCE: ("wireguard-go", None), COMPILED: ("meshwg", "1"),
           PYTHON: ("meshwg", "0")}


def _iperf_server(pair: TunnelPair):
    server = pair.ns_b.popen(["iperf3", "-s", "-1", "-B", pair.tunnel_b, "-p", str(IPERF_PORT)],
                             name="iperf3-server")
    poll(lambda: f":{IPERF_PORT}" in pair.ns_b.run(["ss", "-ltnH"]).stdout or not server.alive,
         10, lambda: f"iperf3 server listening\n{server.output()}")
    return server


def _iperf_argv(pair: TunnelPair, seconds: float, streams: int) -> list[str]:
    return ["iperf3", "-c", pair.tunnel_b, "-p", str(IPERF_PORT), "-J", "-t", f"{seconds:g}",
            "-P", str(streams)]


def thread_cpu_seconds(pid: int) -> dict[int, float]:
    """CPU seconds (utime + stime) of each thread of a process (/proc/PID/task/TID/stat);
    threads that end while being read are left out."""
    out = {}
    tick = os.sysconf("SC_CLK_TCK")
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{task}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        out[int(task)] = (int(fields[11]) + int(fields[12])) / tick
    return out


def busiest_thread(before: dict[int, float], after: dict[int, float]) -> float:
    """CPU seconds of the thread that used the most between two thread_cpu_seconds()."""
    return max((cpu - before.get(tid, 0.0) for tid, cpu in after.items()), default=0.0)


def tcp(pair: TunnelPair, seconds: float, streams: int) -> dict[str, float]:
    """One iperf3 TCP run a -> b: Mbit/s received, CPU seconds per GB of both daemons,
    and the cores the sending (a) and receiving (b) daemon kept busy, in all and in its
    busiest thread (equal: one thread does that daemon's work)."""
    server = _iperf_server(pair)
    daemon_a, daemon_b = pair.a.daemon, pair.b.daemon
    cpu_a, cpu_b = daemon_a.cpu_seconds(), daemon_b.cpu_seconds()
    threads_a, threads_b = thread_cpu_seconds(daemon_a.pid), thread_cpu_seconds(daemon_b.pid)
    wall = time.monotonic()
    client = pair.ns_a.run(_iperf_argv(pair, seconds, streams), timeout=seconds + 30, check=False)
    wall = time.monotonic() - wall
    cpu_a, cpu_b = daemon_a.cpu_seconds() - cpu_a, daemon_b.cpu_seconds() - cpu_b
    top_a = busiest_thread(threads_a, thread_cpu_seconds(daemon_a.pid))
    top_b = busiest_thread(threads_b, thread_cpu_seconds(daemon_b.pid))
    server.stop()
    if client.returncode != 0:
        raise LabError(f"iperf3 client failed: {client.stdout[-1500:]} "
                       f"{client.stderr[-1500:]}\n{server.output()}")
    received = json.loads(client.stdout)["end"]["sum_received"]
    gigabytes = received["bytes"] / 1e9
    return {"mbit_per_s": received["bits_per_second"] / 1e6,
            "cpu_s_per_gb": (cpu_a + cpu_b) / gigabytes if gigabytes else float("nan"),
            "sender_cores": cpu_a / wall, "receiver_cores": cpu_b / wall,
            "sender_busiest_thread_cores": top_a / wall,
            "receiver_busiest_thread_cores": top_b / wall}


def _median_rtt(pair: TunnelPair, count: int, interval: float) -> float:
    rtts = pair.ns_a.ping_rtts(pair.tunnel_b, count=count, interval=interval)
    if len(rtts) < count // 2:
        raise LabError(f"ping through the tunnel: {len(rtts)} of {count} replies")
    return statistics.median(rtts)


def rtt_loaded(pair: TunnelPair, count: int, interval: float) -> float:
    """Median ping RTT a -> b while one iperf3 stream a -> b runs (it starts first and
    outlasts the pings)."""
    server = _iperf_server(pair)
    client = pair.ns_a.popen(_iperf_argv(pair, count * interval + 4, 1), name="iperf3-load")
    try:
        poll(lambda: pair.ns_b.run(["ss", "-tnH", "state", "established",
                                    f"( sport = :{IPERF_PORT} )"]).stdout.count("\n") >= 2
             or not client.alive, 15, lambda: f"the load stream running\n{client.output()}")
        if not client.alive:
            raise LabError(f"iperf3 load stream ended early\n{client.output()}")
        return _median_rtt(pair, count, interval)
    finally:
        client.stop()
        server.stop()


def measure(pair: TunnelPair, seconds: float, pings: int) -> dict[str, float]:
    """One round of every tunnel metric for one pair."""
    single = tcp(pair, seconds, 1)
    multi = tcp(pair, seconds, 4)
    return {
        "tcp_1_stream_mbit_per_s": single["mbit_per_s"],
        "tcp_4_streams_mbit_per_s": multi["mbit_per_s"],
        "cpu_s_per_gb_1_stream": single["cpu_s_per_gb"],
        "cpu_s_per_gb_4_streams": multi["cpu_s_per_gb"],
        "ping_rtt_idle_ms": _median_rtt(pair, pings, 0.02),
        "ping_rtt_loaded_ms": rtt_loaded(pair, pings, 0.05),
        "sender_cores_1_stream": single["sender_cores"],
        "receiver_cores_1_stream": single["receiver_cores"],
        "sender_cores_4_streams": multi["sender_cores"],
        "receiver_cores_4_streams": multi["receiver_cores"],
        "sender_busiest_thread_cores_4_streams": multi["sender_busiest_thread_cores"],
        "receiver_busiest_thread_cores_4_streams": multi["receiver_busiest_thread_cores"],
    }


def start_pair(lab: Cleanup, config: str) -> TunnelPair:
    """The tunnel pair of one configuration; meshwg daemons read MESHWG_FASTPATH at start."""
    kind, fastpath = CONFIGS[config]
    saved = os.environ.get("MESHWG_FASTPATH")
    if fastpath is not None:
        os.environ["MESHWG_FASTPATH"] = fastpath
    try:
        pair = tunnel_pair(lab, kind, kind)
    finally:
        if saved is None:
            os.environ.pop("MESHWG_FASTPATH", None)
        else:
            os.environ["MESHWG_FASTPATH"] = saved
    pair.ns_a.wait_ping(pair.tunnel_b, timeout=20)
    return pair


def _accel():
    """meshwg.accel (the compiled data path's switch), None in a tree without it."""
    try:
        from meshwg import accel
    except ImportError:
        return None
    return accel


def data_paths(configs: list[str]) -> dict[str, str]:
    """What each meshwg configuration runs (meshwg.accel.describe)."""
    accel = _accel()
    out = {}
    for cfg in configs:
        _, fastpath = CONFIGS[cfg]
        if fastpath is not None:
            out[cfg] = (accel.describe(accel.select(fastpath == "1", warn=False))
                        if accel is not None else "pure Python (no meshwg.accel)")
    return out


def available_configs(wanted: list[str] | None) -> tuple[list[str], list[str]]:
    """(configurations to run, notes on those left out)."""
    accel = _accel()
    configs = wanted or list(CONFIGS)
    notes = []
    if COMPILED in configs and (accel is None or not accel.available()):
        configs = [c for c in configs if c != COMPILED]
        notes.append(f"{COMPILED} (compiled data path) left out: meshwg.accel is not built")
    return configs, notes


def busy_cores(window: float = 0.25) -> float:
    """Cores the whole machine kept busy over `window` seconds (/proc/stat: everything
    but idle and iowait, in clock ticks, over the ticks of one core)."""
    def sample() -> tuple[int, int]:
        with open("/proc/stat") as f:
            fields = [int(x) for x in f.readline().split()[1:]]
        idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
        return sum(fields) - idle, sum(fields)
    busy0, total0 = sample()
    time.sleep(window)
    busy1, total1 = sample()
    cores = os.cpu_count() or 1
    return (busy1 - busy0) / max(1, total1 - total0) * cores


def settle(quiet: float = 0.2, timeout: float = 10.0) -> float:
    """Wait (at most `timeout` seconds) until the machine keeps fewer than `quiet` cores
    busy: a round's iperf3 streams, ping and the daemons' queues have drained before the
    handshakes are timed, which a core busy beside the timed one would slow (a VM's two
    vCPUs may share one physical core). Returns the busy cores seen last (reported)."""
    deadline = time.monotonic() + timeout
    busy = busy_cores()
    while busy >= quiet and time.monotonic() < deadline:
        busy = busy_cores()
    return busy


def run(configs: list[str], rounds: int, seconds: float, pings: int,
        handshakes_n: int) -> dict[str, Any]:
    result: dict[str, Any] = {"machine": machine(), "rounds": rounds, "iperf_seconds": seconds,
                              "configurations": configs, "data_paths": data_paths(configs)}
    per_round: dict[str, dict[str, list[float | None]]] = {
        c: {m.key: [] for m in METRICS} for c in configs}
    handshakes: list[float] = []
    settled: list[float] = []     # cores busy machine-wide just before each handshake round
    order: list[list[str]] = []
    with Cleanup() as lab:
        pairs = {c: start_pair(lab, c) for c in configs}
        for r in range(rounds):
            turn = configs[r % len(configs):] + configs[:r % len(configs)]
            order.append(turn)
            for cfg in turn:
                figures = measure(pairs[cfg], seconds, pings)
                for key, value in figures.items():
                    per_round[cfg][key].append(value)
            if any(CONFIGS[c][0] == "meshwg" for c in configs):
                settled.append(settle())
                handshakes.append(measure_round(handshakes_n)["handshakes_per_second"])
    result["round_order"] = order
    result["per_round"] = per_round
    result["handshakes_per_round"] = handshakes
    result["busy_cores_before_handshakes"] = settled
    result["x25519_floor_per_second"] = x25519_floor_per_second(handshakes_n) if handshakes else None
    result.update(summarise(per_round, handshakes))
    result["machine"]["load_average_at_end"] = os.getloadavg()[0]
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, help="alternated rounds (default 3)")
    parser.add_argument("--seconds", type=float, default=5.0, help="length of each iperf3 run")
    parser.add_argument("--quick", action="store_true",
                        help="a quick look while developing: 3 rounds of 1 s runs, fewer pings "
                             "and handshakes (figures too short to quote)")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    parser.add_argument("--only", choices=list(CONFIGS), action="append",
                        help="bench only this configuration (repeatable)")
    args = parser.parse_args(argv)
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    problem = unavailable_reason(("ip", "wg", "wireguard-go", "iperf3", "ping", "ss"))
    if problem:
        print(f"bench: {problem}", file=sys.stderr)
        return 2
    configs, notes = available_configs(args.only)
    for note in notes:
        print(f"bench: {note}", file=sys.stderr)
    if not configs:
        return 2
    seconds, pings, handshakes_n = (1.0, 20, 500) if args.quick else (args.seconds, 40, 2000)
    try:
        result = run(configs, args.rounds, seconds, pings, handshakes_n)
    except LabError as exc:
        print(f"bench: failed: {exc}", file=sys.stderr)
        return 1
    result["notes"] = notes
    print(json.dumps(result, indent=2) if args.json else render(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
