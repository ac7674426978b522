"""The device's lone-packet path end to end: three meshwg pairs on the compiled path, one
with the compiled lone crossing (meshwg.accel Crossing, the default), one with the lone
path in Python (meshwg.core.lone; MESHWG_CROSSING=0) and one with neither (MESHWG_LONE=0,
the batch path alone), answer pings of every size around the lone
limit, in IPv4 and IPv6, one at a time and in bursts that queue several packets behind
each other (a lone read then leaves a frame for the batch path, a lone datagram's
answer may not be lone). Both pairs share one lab."""

from __future__ import annotations

import re
from typing import Iterator

import pytest

from discovery.lab.engines import TunnelPair, tunnel_pair
from discovery.lab.netns import Cleanup, poll
from meshwg import accel
from meshwg.device.device import LONE_PACKET
from tests.conftest import require_netns

pytestmark = [pytest.mark.netns,
              pytest.mark.skipif(not accel.available(), reason="compiled data path not built")]

ICMP_IP = 28                # IPv4 + ICMP headers: ping -s N makes an N + 28 byte packet
SIZES = [56, LONE_PACKET - ICMP_IP, LONE_PACKET - ICMP_IP + 1, 1200]


@pytest.fixture(scope="module")
def pairs() -> Iterator[dict[str, TunnelPair]]:
    require_netns()
    with pytest.MonkeyPatch.context() as mp, Cleanup() as lab:
        made = {}
        mp.setenv("MESHWG_FASTPATH", "1")
        for name, lone, crossing in (("crossing", "1", "1"), ("lone", "1", "0"),
                                     ("batch", "0", "0")):
            mp.setenv("MESHWG_LONE", lone)
            mp.setenv("MESHWG_CROSSING", crossing)
            made[name] = tunnel_pair(lab, "meshwg", "meshwg", port_a=51820, port_b=51821)
            made[name].ns_a.wait_ping(made[name].tunnel_b, timeout=20)
        yield made


def _received(output: str) -> tuple[int, int]:
    match = re.search(r"(\d+) packets transmitted, (\d+) received", output)
    assert match, output
    return int(match.group(1)), int(match.group(2))


@pytest.mark.parametrize("path", ["crossing", "lone", "batch"])
@pytest.mark.parametrize("v6", [False, True], ids=["ipv4", "ipv6"])
def test_pings_around_the_lone_limit(pairs: dict[str, TunnelPair], path: str, v6: bool) -> None:
    pair = pairs[path]
    target = pair.tunnel6_b if v6 else pair.tunnel_b
    for size in SIZES:
        done = pair.ns_a.ping(target, count=5, wait=5, interval=0.05, size=size)
        assert _received(done.stdout) == (5, 5), (size, done.stdout)


@pytest.mark.parametrize("path", ["crossing", "lone", "batch"])
def test_bursts_queue_behind_each_other(pairs: dict[str, TunnelPair], path: str) -> None:
    """ping -l 8 keeps 8 requests in flight: reads and receives find more than one
    packet queued, of both sizes (lone and not), in both directions."""
    pair = pairs[path]
    for size in (56, 1200):
        done = pair.ns_a.run(["ping", "-n", "-q", "-c", "200", "-l", "8", "-i", "0.002",
                              "-W", "5", "-s", str(size), pair.tunnel_b], check=False, timeout=60)
        assert _received(done.stdout) == (200, 200), (size, done.stdout)


def test_crossed_packets_are_counted_once_idle(pairs: dict[str, TunnelPair]) -> None:
    """The compiled crossing leaves a packet's bookkeeping (transfer counters, timers)
    until the device has been idle a moment: one ping later both ends count its request
    and echo (128-byte datagrams each way: 84 bytes padded to 96, plus 32) without any
    further traffic."""
    pair = pairs["crossing"]
    before_a, before_b = pair.a.transfer()[pair.b.public_key], pair.b.transfer()[pair.a.public_key]
    done = pair.ns_a.ping(pair.tunnel_b, count=1, wait=5)
    assert _received(done.stdout) == (1, 1), done.stdout

    def counted() -> bool:
        (rx_a, tx_a), = [pair.a.transfer()[pair.b.public_key]]
        (rx_b, tx_b), = [pair.b.transfer()[pair.a.public_key]]
        return (rx_a - before_a[0] >= 128 and tx_a - before_a[1] >= 128
                and rx_b - before_b[0] >= 128 and tx_b - before_b[1] >= 128)
    poll(counted, 10, "transfer counters of one ping on both ends")
