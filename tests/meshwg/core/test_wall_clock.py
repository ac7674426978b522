"""The wall clock of TAI64N timestamps (issue 9, case 18): the core takes it from its caller
with its inputs, so a clock set after start (a router that boots before NTP) gives the next
initiation a timestamp the peer accepts, without a restart. The clock is virtual (harness);
the device's part (it passes time.time() with each input) is tested last.
"""

from __future__ import annotations

import ipaddress
import time

from meshwg.core.events import HandshakeCompleted
from meshwg.core.constants import HANDSHAKE_INITIATION_RATE
from meshwg.core.protocol import WireGuardProtocol
from meshwg.device.api import DeviceUpdate
from meshwg.device.device import Device
from tests.meshwg.core.harness import RESPONSE, WALL_OFFSET, Node, established

WRONG_WALL = 1_000_000_000.0        # a clock before NTP: years behind the peer's last view


def restart_with_wrong_clock(a: Node, b: Node) -> None:
    """a restarts (same key, fresh protocol) with a wall clock years behind, as a router
    before NTP; b still remembers the timestamp of a's last initiation."""
    net = a.net
    a.protocol = WireGuardProtocol(a.private_key, wall_offset=WRONG_WALL - net.now)
    peer = a.protocol.add_peer(b.public_key)
    a.protocol.set_endpoint(peer, b.address)
    a.protocol.add_allowed_ips(peer, [ipaddress.ip_network(f"{b.ip4}/32")])


def test_initiation_after_the_clock_is_set_is_accepted_without_restart() -> None:
    net, a, b = established()                  # b saw a's timestamp at the right time
    restart_with_wrong_clock(a, b)

    net.now += 1
    a.initiate(b)
    net.pump()
    assert b.stats["replayed_initiation"] == 1  # 2001 < 2023: refused as a replay
    assert net.sent(RESPONSE, b, since=net.now) == []

    net.now += 1
    a.initiate(b)                              # the clock is still wrong: refused again
    net.pump()
    assert b.stats["replayed_initiation"] == 2

    # NTP sets the clock; the caller passes the new wall time with its next input
    net.now += 1 + HANDSHAKE_INITIATION_RATE
    a.protocol.set_wall_clock(net.now + WALL_OFFSET + 5, net.now)
    completed_before = sum(isinstance(e, HandshakeCompleted) for e in b.events)
    a.initiate(b)
    net.pump()
    assert b.stats["replayed_initiation"] == 2
    assert len(net.sent(RESPONSE, b, since=net.now)) == 1
    assert sum(isinstance(e, HandshakeCompleted) for e in b.events) == completed_before + 1
    assert a.peer(b).current is not None


def test_wall_clock_moves_handshake_times_with_it() -> None:
    net, a, b = established()
    handshake_at = a.peer(b).last_handshake
    assert a.protocol.last_handshake_wall(a.peer(b)) == handshake_at + WALL_OFFSET
    a.protocol.set_wall_clock(net.now + WALL_OFFSET + 3600, net.now)
    assert a.protocol.wall_time(net.now) == net.now + WALL_OFFSET + 3600


def test_device_passes_the_wall_clock_with_each_input() -> None:
    device = Device("mwclocktest")             # not started: no interface, no socket
    try:
        device.protocol.wall_offset = WRONG_WALL   # as if read once, before NTP
        device.apply(DeviceUpdate())
        wall = device.protocol.wall_time(time.monotonic())
        assert abs(wall - time.time()) < 60
    finally:
        device.stop()
