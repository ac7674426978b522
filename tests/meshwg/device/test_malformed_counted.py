"""Every malformed datagram is counted, whatever its size (issue 9, case 10): zero-length
datagrams and datagrams too short for any message, alone and in the middle of a
transfer, each land in `malformed` in the counters file `meshwg show` reads (the core's
part: tests/meshwg/core/test_malformed_sizes.py).
"""

from __future__ import annotations

import json

import pytest

from discovery.lab.engines import tunnel_pair
from discovery.lab.netns import Cleanup, poll
from discovery.lab.traffic import tcp_transfer
from meshwg.device.stats import stats_path

SIZES = (0, 0, 1, 2, 3, 0, 4, 7, 15)     # zero-length three times in every round
ROUNDS = 200

# argv: host port rounds sizes...: each round sends one datagram of each size
SENDER = r"""
import socket, sys, time
host, port, rounds, sizes = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4:]
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
for r in range(rounds):
    for n in sizes:
        s.sendto(bytes([(r % 5) or 9]) * int(n), (host, port))
    time.sleep(0.002)
"""


def udp_receive_drops(ns) -> int:
    """UDP datagrams the namespace's kernel dropped before any socket read them."""
    lines = [line.split() for line in ns.run(["cat", "/proc/net/snmp"]).stdout.splitlines()
             if line.startswith("Udp:")]
    fields = dict(zip(lines[0][1:], map(int, lines[1][1:])))
    return fields["RcvbufErrors"] + fields["InErrors"]


def counters(ifname: str) -> dict:
    try:
        with open(stats_path(ifname)) as f:
            return json.load(f).get("counters", {})
    except (FileNotFoundError, ValueError):
        return {}


pytestmark = pytest.mark.netns


def test_zero_length_and_short_datagrams_are_each_counted(lab: Cleanup) -> None:
    pair = tunnel_pair(lab, "meshwg", "meshwg")
    pair.ns_b.wait_ping(pair.tunnel_a)
    sent = ROUNDS * len(SIZES)
    before = counters(pair.a.ifname).get("malformed", 0)
    drops_before = udp_receive_drops(pair.ns_a)
    # alone, then again while a transfer runs through the same socket
    pair.ns_b.run_python(SENDER, pair.underlay_a, pair.port_a, ROUNDS, *SIZES, timeout=120)
    flood = pair.ns_b.popen_python(SENDER, pair.underlay_a, pair.port_a, ROUNDS, *SIZES,
                                   name="short-datagrams")
    result = tcp_transfer(pair.ns_b, pair.ns_a, pair.tunnel_a, nbytes=8 << 20)
    assert result.intact
    poll(lambda: not flood.alive, 120, "the second round of short datagrams sent")
    assert flood.returncode == 0, flood.output()
    # every one that reached the socket (a loaded machine may drop some before it)
    def all_counted() -> bool:
        counted = counters(pair.a.ifname).get("malformed", 0) - before
        dropped = udp_receive_drops(pair.ns_a) - drops_before
        return 2 * sent - dropped <= counted <= 2 * sent
    poll(all_counted, 60, lambda: f"{2 * sent} malformed counted, got "
         f"{counters(pair.a.ifname).get('malformed', 0) - before} "
         f"({udp_receive_drops(pair.ns_a) - drops_before} dropped by the kernel)")
