"""The compiled lone crossing (meshwg.accel Crossing) against the Python lone path
(meshwg.core.lone seal_lone / open_lone): the same decisions, the same bytes on the wire,
the same state afterwards, and nothing changed where it declines. Real descriptors, no
root: the "TUN device" is one end of an AF_UNIX SOCK_DGRAM socketpair (packet boundaries
kept; the test holds the other end), the UDP sockets are on 127.0.0.1 / ::1 (and an
AF_INET6 dual-stack socket whose peer is IPv4). The protocol state is the in-memory
harness's (tests/meshwg/core/harness.py): node `a` owns the crossing, node `b` is its
peer, whose keys seal what `a` receives and open what `a` sends."""

from __future__ import annotations

import ipaddress
import os
import random
import select
import socket
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Iterator

import pytest

from meshwg import accel
from meshwg.core.lone import OUTCOME_STATS, finish_lone, finish_opened, open_lone, seal_lone
from meshwg.core.messages import COUNTER_NONCE, TRANSPORT_HEADER
from meshwg.device.device import LONE_DATAGRAM, LONE_PACKET
from tests.meshwg.core.harness import (TRANSPORT, Network, Node, established, ipv4_packet,
                                       ipv6_packet, seal_raw)

fast = accel.select(True, warn=False)
pytestmark = pytest.mark.skipif(fast is None or not hasattr(fast, "Crossing"),
                                reason="compiled data path without Crossing")

VNET = 10                          # bytes of the virtio header on a vnet_hdr frame
DEADLINE = 10.0                    # seconds a descriptor may take to become readable
FAMILIES = ("v4", "v6", "dual")    # a's socket: AF_INET, AF_INET6 on ::1, dual-stack


def _ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as sock:
            sock.bind(("::1", 0))
        return True
    except OSError:
        return False


IPV6 = _ipv6_loopback()


def readable(fd: int, timeout: float = DEADLINE) -> bool:
    return bool(select.select([fd], [], [], timeout)[0])


def wait_readable(fd: int) -> None:
    assert readable(fd), "nothing arrived before the deadline"


@dataclass
class Rig:
    """An established pair (a, b) with the compiled path, a's crossing between a TUN
    socketpair and a's UDP socket; b's UDP socket is a's peer endpoint."""
    net: Network
    a: Node
    b: Node
    family: str
    vnet: bool
    tun: socket.socket               # the crossing's end ("the TUN device")
    host: socket.socket              # the test's end (the kernel's side of the TUN device)
    udp: socket.socket               # a's UDP socket
    peer: socket.socket              # b's UDP socket (a's peer's endpoint)
    crossing: Any
    frame: bytearray
    closing: list = field(default_factory=list)

    @property
    def now(self) -> float:
        return self.net.now

    @property
    def kp(self):
        """a's current keypair for b (the send side)."""
        return self.a.peer(self.b).current

    def endpoint(self, sock: socket.socket) -> tuple[str, int]:
        """The (host, port) recv_one gives for a datagram from `sock` (::ffff: stripped)."""
        host, port = sock.getsockname()[:2]
        return (host[7:] if host.startswith("::ffff:") else host), port

    def point_at(self, sock: socket.socket) -> None:
        """a sends to b at `sock`."""
        self.a.protocol.set_endpoint(self.a.peer(self.b), self.endpoint(sock))

    def frame_of(self, packet: bytes, flags: int = 0, gso: int = 0) -> bytes:
        return (bytes((flags, gso)) + bytes(VNET - 2) if self.vnet else b"") + packet

    def to_tun(self, packet: bytes, **header: int) -> None:
        """The kernel queues `packet` at the TUN device (written before any read)."""
        self.host.send(self.frame_of(packet, **header))
        wait_readable(self.tun.fileno())

    def from_peer(self, datagram: bytes, sock: socket.socket | None = None) -> None:
        """`datagram` arrives at a's UDP socket from b's socket (or `sock`)."""
        (sock or self.peer).sendto(datagram, self.udp.getsockname()[:2] if self.family != "dual"
                                   else ("127.0.0.1", self.udp.getsockname()[1]))
        wait_readable(self.udp.fileno())

    def sent_to_peer(self) -> bytes:
        wait_readable(self.peer.fileno())
        return self.peer.recv(65535)

    def tun_written(self) -> bytes:
        wait_readable(self.host.fileno())
        return self.host.recv(65535)

    def quiet(self) -> None:
        """Nothing left unread on any descriptor."""
        for sock in (self.tun, self.host, self.udp, self.peer):
            assert not readable(sock.fileno(), 0), sock

    def close(self) -> None:
        for sock in (self.tun, self.host, self.udp, self.peer, *self.closing):
            sock.close()


def make_rig(family: str = "v4", vnet: bool = False) -> Rig:
    if family != "v4" and not IPV6:
        pytest.skip("no IPv6 on loopback")
    net, a, b = established()
    a.protocol.fastpath = b.protocol.fastpath = fast
    tun, host = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    if family == "v4":
        udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        udp.bind(("127.0.0.1", 0))
        peer = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        peer.bind(("127.0.0.1", 0))
    elif family == "v6":
        udp = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
        udp.bind(("::1", 0))
        peer = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
        peer.bind(("::1", 0))
    else:
        udp = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
        udp.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        udp.bind(("::", 0))
        peer = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        peer.bind(("127.0.0.1", 0))
    for sock in (tun, host, udp, peer):
        sock.setblocking(False)
    frame = bytearray(VNET + 65535)
    crossing = fast.Crossing(a.protocol, tun.fileno(), vnet, frame, udp.fileno(),
                             udp.family == socket.AF_INET6, False, LONE_PACKET, LONE_DATAGRAM)
    rig = Rig(net, a, b, family, vnet, tun, host, udp, peer, crossing, frame)
    rig.point_at(peer)
    # both sides' compiled ciphers made (the case "not made yet" undoes it)
    for kp in (a.peer(b).current, b.peer(a).current):
        kp.sealer(fast)
    return rig


@pytest.fixture
def rig(request) -> Iterator[Rig]:
    family, vnet = getattr(request, "param", ("v4", False))
    made = make_rig(family, vnet)
    try:
        yield made
    finally:
        made.close()


def send_state(rig: Rig) -> tuple:
    kp = rig.kp
    return (kp.send_next, Counter(rig.a.stats), rig.a.peer(rig.b).tx_bytes)


def windows(protocol) -> dict:
    """Every keypair's replay window (ring bytes, last) by receiver index."""
    return {index: (bytes(kp.replay.ring), kp.replay.last)
            for index, kp in protocol.keypairs_by_index.items()}


def restore(protocol, saved: dict) -> None:
    for index, (ring, last) in saved.items():
        replay = protocol.keypairs_by_index[index].replay
        replay.ring[:] = type(replay.ring)("Q", ring)
        replay.last = last


def sealed_by(kp, plaintext: bytes, counter: int) -> bytes:
    """A transport message sealed under `kp` (any keypair, old ones too)."""
    return (TRANSPORT_HEADER.pack(TRANSPORT, kp.remote_index, counter)
            + kp.send_aead.encrypt(COUNTER_NONCE.pack(counter), plaintext, None))


BOTH = [("v4", False), ("v6", True), ("dual", False)]


# ---------------------------------------------------------------------- tun()
@pytest.mark.parametrize("rig", BOTH, indirect=True, ids=lambda p: f"{p[0]}-vnet{int(p[1])}")
@pytest.mark.parametrize("v6", [False, True], ids=["inner4", "inner6"])
def test_tun_seals_and_sends_the_python_bytes(rig: Rig, v6: bool) -> None:
    a, b, kp = rig.a, rig.b, rig.kp
    for payload in (b"", b"ping", b"x" * 17, b"y" * 150):
        packet = a.packet_to(b, payload, v6=v6)
        counter = kp.send_next
        rig.to_tun(packet)
        crossed = rig.crossing.tun(rig.now)
        assert isinstance(crossed, tuple)
        peer, got_kp, size, got_counter, endpoint = crossed
        assert (peer, got_kp, got_counter) == (a.peer(b), kp, counter)
        assert endpoint == a.peer(b).endpoint == rig.endpoint(rig.peer)
        assert kp.send_next == counter + 1
        datagram = rig.sent_to_peer()
        assert size == len(datagram)
        expected = bytearray(len(datagram) + 64)
        n = kp.sealer(fast).seal(expected, 0, kp.remote_index, counter, packet, a.protocol.mtu)
        assert datagram == bytes(expected[:n])
        opened = open_lone(b.protocol, datagram, a.address, rig.now, bytearray(2048))
        assert opened is not None and bytes(opened.packet) == packet
        finish_lone(b.protocol, opened, rig.now)
    rig.quiet()


def test_tun_nothing_queued_and_frames_not_lone() -> None:
    for vnet in (False, True):
        rig = make_rig("v4", vnet)
        try:
            before = send_state(rig)
            assert rig.crossing.tun(rig.now) is None
            long = rig.a.packet_to(rig.b, bytes(LONE_PACKET - 19))     # LONE_PACKET + 1
            rig.to_tun(long)
            frame = rig.frame_of(long)
            assert rig.crossing.tun(rig.now) == len(frame)
            assert bytes(rig.frame[:len(frame)]) == frame              # read for the batch path
            exact = rig.a.packet_to(rig.b, bytes(LONE_PACKET - 20))    # LONE_PACKET: lone
            rig.to_tun(exact)
            assert isinstance(rig.crossing.tun(rig.now), tuple)
            rig.sent_to_peer()
            after = send_state(rig)
            assert after[0] == before[0] + 1
            if vnet:
                for header in ({"flags": 1}, {"gso": 1}, {"gso": 4}):
                    ping = rig.a.packet_to(rig.b, b"gso")
                    rig.to_tun(ping, **header)
                    assert rig.crossing.tun(rig.now) == VNET + len(ping)
                rig.host.send(bytes(VNET))                             # a header, no packet
                wait_readable(rig.tun.fileno())
                assert rig.crossing.tun(rig.now) == VNET
            assert send_state(rig) == after
            rig.quiet()
        finally:
            rig.close()


def declines(rig: Rig) -> list[tuple[str, Any, bytes]]:
    """(case, how to make it, packet): each a packet seal_lone returns None for (or, for
    the sealer not made yet, seals), made with the change the case names."""
    a, b = rig.a, rig.b
    timers = a.protocol.timers
    peer = a.peer(b)

    def no_route():
        pass

    def no_keypair():
        peer.current = None

    def no_endpoint():
        peer.endpoint = None

    def too_old():
        peer.current.created = rig.now - timers.reject_after_time

    def out_of_counters():
        peer.current.send_next = timers.reject_after_messages

    def sealer_not_made():
        peer.current._sealer = None

    return [("no route", no_route, ipv4_packet(a.ip4, "192.0.2.99", b"lost")),
            ("no route v6", no_route, ipv6_packet(a.ip6, "fd00::99", b"lost")),
            ("no keypair", no_keypair, a.packet_to(b, b"k")),
            ("no endpoint", no_endpoint, a.packet_to(b, b"e")),
            ("too old", too_old, a.packet_to(b, b"t")),
            ("out of counters", out_of_counters, a.packet_to(b, b"c")),
            ("sealer not made", sealer_not_made, a.packet_to(b, b"s")),
            ("short", no_route, b"\x45" + bytes(18)),
            ("short v6", no_route, a.packet_to(b, b"", v6=True)[:39]),
            ("version 5", no_route, b"\x55" + a.packet_to(b, b"5")[1:]),
            ("one byte", no_route, b"\x40")]


DECLINES = ("no route", "no route v6", "no keypair", "no endpoint", "too old",
            "out of counters", "sealer not made", "short", "short v6", "version 5", "one byte")


@pytest.mark.parametrize("vnet", [False, True], ids=["plain", "vnet"])
def test_tun_declines_where_seal_lone_does_with_nothing_changed(vnet: bool) -> None:
    for index in range(len(DECLINES)):
        rig = make_rig("v4", vnet)
        try:
            name, change, packet = declines(rig)[index]
            assert name == DECLINES[index]
            change()
            kp = rig.kp
            state = (send_state(rig) if kp is not None else None, windows(rig.a.protocol))
            rig.to_tun(packet)
            crossed = rig.crossing.tun(rig.now)
            assert isinstance(crossed, memoryview), name
            assert bytes(crossed) == packet, name
            assert (send_state(rig) if kp is not None else None,
                    windows(rig.a.protocol)) == state, name
            rig.quiet()
            # the Python lone path on the view it got agrees
            buf = bytearray(400)
            counter = kp.send_next if kp is not None else None
            sealed = seal_lone(rig.a.protocol, crossed, rig.now, buf)
            if name == "sealer not made":
                assert sealed is not None and sealed.counter == counter
                expected = bytearray(400)
                n = kp.sealer(fast).seal(expected, 0, kp.remote_index, counter, packet,
                                         rig.a.protocol.mtu)
                assert bytes(buf[:sealed.size]) == bytes(expected[:n])
                # made now: the crossing takes the next one
                rig.to_tun(packet)
                assert rig.crossing.tun(rig.now)[3] == counter + 1
                rig.sent_to_peer()
            else:
                assert sealed is None, name
        finally:
            rig.close()


def test_tun_declines_endpoints_it_cannot_address() -> None:
    """An endpoint the socket cannot send to (IPv6 on an AF_INET socket, a scoped IPv6
    address, a host name) goes back to Python with nothing changed."""
    for family, endpoint in (("v4", ("::1", 9)), ("v6", ("fe80::1%lo", 9)),
                             ("v4", ("localhost", 9)), ("v4", ("127.0.0.1", 70000))):
        rig = make_rig(family)
        try:
            rig.a.peer(rig.b).endpoint = endpoint
            before = send_state(rig)
            packet = rig.a.packet_to(rig.b, b"where")
            rig.to_tun(packet)
            crossed = rig.crossing.tun(rig.now)
            assert isinstance(crossed, memoryview) and bytes(crossed) == packet, endpoint
            assert send_state(rig) == before
            rig.quiet()
        finally:
            rig.close()


def test_tun_routes_follow_the_table() -> None:
    """A destination moved to no peer is declined at once (the route memo forgotten)."""
    rig = make_rig()
    try:
        a, b = rig.a, rig.b
        packet = a.packet_to(b, b"r")
        rig.to_tun(packet)
        assert isinstance(rig.crossing.tun(rig.now), tuple)
        rig.sent_to_peer()
        a.protocol.remove_allowed_ips(a.peer(b), [ipaddress.ip_network(f"{b.ip4}/32")])
        rig.to_tun(packet)
        assert isinstance(rig.crossing.tun(rig.now), memoryview)
        assert seal_lone(a.protocol, packet, rig.now, bytearray(400)) is None
        rig.quiet()
    finally:
        rig.close()


# ---------------------------------------------------------------------- udp()
@pytest.mark.parametrize("rig", BOTH, indirect=True, ids=lambda p: f"{p[0]}-vnet{int(p[1])}")
def test_udp_opens_writes_and_moves_the_window_like_open_lone(rig: Rig) -> None:
    a, b = rig.a, rig.b
    protocol = a.protocol
    source = rig.endpoint(rig.peer)
    for counter, inner in ((5, b.packet_to(a, b"pong")), (3, b.packet_to(a, b"six", v6=True)),
                           (4000, b.packet_to(a, b"far")), (7, b.packet_to(a, b"old"))):
        datagram = seal_raw(b, a, inner, counter)
        before = windows(protocol)
        rig.from_peer(datagram)
        got = rig.crossing.udp(rig.now)
        assert isinstance(got, tuple) and len(got) == 7
        peer, kp, size, got_counter, got_source, outcome, reply = got
        assert (peer, kp, size, got_counter, got_source, outcome, reply) == (
            a.peer(b), a.peer(b).current, len(datagram), counter, source, 0, None)
        assert rig.tun_written() == rig.frame_of(inner)
        crossed = windows(protocol)
        # open_lone on the same datagram from the same window: the same window after
        restore(protocol, before)
        opened = open_lone(protocol, datagram, source, rig.now, bytearray(2048))
        assert opened is not None and bytes(opened.packet) == inner
        assert windows(protocol) == crossed != before
        # the same datagram again: declined, as open_lone declines it, window unchanged
        rig.from_peer(datagram)
        assert rig.crossing.udp(rig.now) == (datagram, len(datagram), source)
        assert windows(protocol) == crossed
        assert open_lone(protocol, datagram, source, rig.now, bytearray(2048)) is None
        finish_opened(protocol, peer, kp, size, source, outcome, rig.now)
    rig.quiet()


def test_udp_declines_as_recv_one_gives_with_nothing_changed(rig: Rig) -> None:
    a, b = rig.a, rig.b
    protocol = a.protocol
    timers = protocol.timers
    source = rig.endpoint(rig.peer)
    kp = a.peer(b).current
    forged = bytearray(seal_raw(b, a, b.packet_to(a, b"forged"), 11))
    forged[-1] ^= 1
    unknown = bytearray(seal_raw(b, a, b.packet_to(a, b"who"), 12))
    unknown[4:8] = b"\xff\xff\xff\x7f"
    word = bytearray(seal_raw(b, a, b.packet_to(a, b"word"), 13))
    word[1] = 1                                       # type byte 4, but not the word 4

    def expire():
        kp.created = rig.now - timers.reject_after_time

    def unmake():
        kp._opener = None

    cases = [("forged", bytes(forged), None),
             ("unknown receiver", bytes(unknown), None),
             ("header word", bytes(word), None),
             ("at the counter limit", seal_raw(b, a, b"", timers.reject_after_messages), None),
             ("keypair expired", seal_raw(b, a, b"", 14), expire),
             ("opener not made", seal_raw(b, a, b"", 15), unmake),
             ("longer than udp_stop",
              seal_raw(b, a, b.packet_to(a, bytes(LONE_DATAGRAM - 32 - 19)), 16), None),
             ("initiation", b"\x01" + bytes(147), None),
             ("response", b"\x02" + bytes(91), None),
             ("cookie", b"\x03" + bytes(63), None),
             ("short transport", b"\x04" + bytes(30), None),
             ("one byte", b"\x04", None),
             ("empty", b"", None)]
    for name, datagram, change in cases:
        saved = (kp.created, kp._opener)
        if change is not None:
            change()
        before = (windows(protocol), Counter(a.stats), a.peer(b).rx_bytes)
        rig.from_peer(datagram)
        got = rig.crossing.udp(rig.now)
        assert got == (datagram, len(datagram), source), name
        assert (windows(protocol), Counter(a.stats), a.peer(b).rx_bytes) == before, name
        python = open_lone(protocol, datagram, source, rig.now, bytearray(2048))
        # the Python lone path takes a datagram too long for the crossing, and makes the
        # opener the crossing does not
        assert (python is not None) == (name in ("longer than udp_stop", "opener not made")), name
        kp.created, kp._opener = saved
    assert rig.crossing.udp(rig.now) is None          # nothing queued
    rig.quiet()


def test_udp_outcomes_counted_like_open_lone() -> None:
    """Keepalive (1), malformed inner packet (2), inner source not routed to the peer (3):
    nothing written to the TUN device; finish_opened counts and books them as open_lone
    and finish_lone do (same stats, same rx bytes) for a datagram of the same kind."""
    rig = make_rig("v4", True)
    try:
        a, b = rig.a, rig.b
        protocol = a.protocol
        source = rig.endpoint(rig.peer)
        inners = {0: b.packet_to(a, b"ok"), 1: b"", 2: b"\x45" + bytes(10),
                  3: ipv4_packet("10.9.9.9", a.ip4, b"spoof")}
        counter = 100
        for outcome, inner in inners.items():
            deltas = []
            for compiled in (True, False):
                counter += 1
                datagram = seal_raw(b, a, inner, counter)
                stats, rx = Counter(a.stats), a.peer(b).rx_bytes
                if compiled:
                    rig.from_peer(datagram)
                    got = rig.crossing.udp(rig.now)
                    assert len(got) == 7 and got[5] == outcome and got[6] is None
                    assert stats == Counter(a.stats)            # counting is the caller's
                    finish_opened(protocol, *got[:3], got[4], got[5], rig.now)
                    if outcome == 0:
                        assert rig.tun_written() == rig.frame_of(inner)
                else:
                    opened = open_lone(protocol, datagram, source, rig.now, bytearray(2048))
                    assert (opened.packet is not None) == (outcome == 0)
                    finish_lone(protocol, opened, rig.now)
                deltas.append((Counter(a.stats) - stats, a.peer(b).rx_bytes - rx))
            assert deltas[0] == deltas[1], outcome
            if OUTCOME_STATS[outcome] is not None:
                assert deltas[0][0][OUTCOME_STATS[outcome]] == 1
        rig.quiet()
    finally:
        rig.close()


@pytest.mark.parametrize("rig", BOTH, indirect=True, ids=lambda p: f"{p[0]}-vnet{int(p[1])}")
def test_udp_answers_a_queued_reply(rig: Rig) -> None:
    """A reply frame queued at the TUN device before the call is sealed and sent to the
    peer's endpoint in the same call: the Python seal's bytes, counter taken."""
    a, b = rig.a, rig.b
    kp = a.peer(b).current
    echo = a.packet_to(b, b"echo reply")
    rig.to_tun(echo)
    counter = kp.send_next
    request = b.packet_to(a, b"echo request")
    rig.from_peer(seal_raw(b, a, request, 21))
    got = rig.crossing.udp(rig.now)
    assert got[5] == 0 and isinstance(got[6], tuple)
    assert got[6] == (a.peer(b), kp, got[6][2], counter, rig.endpoint(rig.peer))
    assert kp.send_next == counter + 1
    assert rig.tun_written() == rig.frame_of(request)
    datagram = rig.sent_to_peer()
    expected = bytearray(400)
    n = kp.sealer(fast).seal(expected, 0, kp.remote_index, counter, echo, a.protocol.mtu)
    assert datagram == bytes(expected[:n]) and got[6][2] == n
    opened = open_lone(b.protocol, datagram, a.address, rig.now, bytearray(2048))
    assert opened is not None and bytes(opened.packet) == echo
    # a queued answer tun() would not take comes back as tun() gives it, nothing sent
    for counter, answer, kind in ((22, ipv4_packet(a.ip4, "192.0.2.99", b"lost"), memoryview),
                                  (23, a.packet_to(b, bytes(LONE_PACKET)), int)):
        rig.to_tun(answer)
        sent = kp.send_next
        rig.from_peer(seal_raw(b, a, request, counter))
        got = rig.crossing.udp(rig.now)
        assert got[5] == 0 and isinstance(got[6], kind) and kp.send_next == sent
        assert (bytes(got[6]) == answer if kind is memoryview
                else got[6] == len(rig.frame_of(answer)))
        assert rig.tun_written() == rig.frame_of(request)
    rig.quiet()


def test_udp_no_answer_from_elsewhere_or_an_old_keypair() -> None:
    """The reply is read only when the datagram came from the peer's endpoint under its
    current keypair: otherwise reply None and the frame still queued."""
    rig = make_rig("v4", False)
    other = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    other.bind(("127.0.0.1", 0))
    other.setblocking(False)
    rig.closing.append(other)
    try:
        a, b, net = rig.a, rig.b, rig.net
        echo = a.packet_to(b, b"echo reply")
        rig.to_tun(echo)
        # from another address: opened and written (roaming is finish_opened's), no reply
        request = b.packet_to(a, b"from elsewhere")
        rig.from_peer(seal_raw(b, a, request, 30), sock=other)
        got = rig.crossing.udp(rig.now)
        assert got[4] == rig.endpoint(other) and got[5] == 0 and got[6] is None
        assert rig.tun_written() == rig.frame_of(request)
        assert readable(rig.tun.fileno(), 0)                    # the echo still queued
        # under the previous keypair (a new handshake since): no reply either
        old_b = b.peer(a).current
        a.protocol.set_endpoint(a.peer(b), b.address)           # the harness's address
        net.now += 1.0
        a.initiate(b)
        net.pump()
        assert b.peer(a).current is not old_b
        rig.point_at(rig.peer)
        old = sealed_by(old_b, b.packet_to(a, b"old keys"), 31)
        rig.from_peer(old)
        got = rig.crossing.udp(rig.now)
        assert got[1] is not a.peer(b).current and got[5] == 0 and got[6] is None
        rig.tun_written()
        # the echo, still queued, goes out now under the new keypair
        kp = a.peer(b).current
        kp.sealer(fast)
        crossed = rig.crossing.tun(rig.now)
        assert crossed[1] is kp and crossed[3] == kp.send_next - 1
        opened = open_lone(b.protocol, rig.sent_to_peer(), a.address, rig.now, bytearray(2048))
        assert bytes(opened.packet) == echo
        # nothing queued: an answer-less write gives reply None
        rig.from_peer(seal_raw(b, a, b.packet_to(a, b"x"), 32))
        assert rig.crossing.udp(rig.now)[6] is None
        rig.tun_written()
        rig.quiet()
    finally:
        rig.close()


# ---------------------------------------------------------------------- poll()
@pytest.mark.timeout(120)          # poll waits without a timeout: a bug must not hang CI
def test_poll_wakes_locks_and_releases() -> None:
    rig = make_rig("v4", False)
    wake_r, wake_w = os.pipe()
    bad_r, bad_w = os.pipe()
    lock = threading.Lock()
    try:
        a, b = rig.a, rig.b
        for kp in (a.peer(b).current,):
            kp.created = time.monotonic()            # poll's clock is time.monotonic's
        # wake_fd: no lock, nothing read
        os.write(wake_w, b"w")
        assert rig.crossing.poll(lock, wake_r) == (4, False, None, 0.0)
        assert not lock.locked()
        # TUN and wake_fd both ready: the caller's to read
        rig.to_tun(a.packet_to(b, b"both"))
        assert rig.crossing.poll(lock, wake_r) == (5, False, None, 0.0)
        assert not lock.locked()
        os.read(wake_r, 1)
        # only the TUN device: crossed under the lock, sealed with poll's clock
        before = time.monotonic()
        ready, locked, result, now = rig.crossing.poll(lock, wake_r)
        after = time.monotonic()
        assert (ready, locked) == (1, True) and lock.locked()
        lock.release()
        assert before <= now <= after
        assert isinstance(result, tuple) and result[1] is a.peer(b).current
        opened = open_lone(b.protocol, rig.sent_to_peer(), a.address, rig.now, bytearray(2048))
        assert bytes(opened.packet) == a.packet_to(b, b"both")
        # the TUN device and the UDP socket both ready: the caller's to read
        rig.to_tun(a.packet_to(b, b"queued"))
        rig.from_peer(seal_raw(b, a, b.packet_to(a, b"queued"), 39))
        assert rig.crossing.poll(lock, wake_r) == (3, False, None, 0.0)
        assert not lock.locked()
        rig.tun.recv(65535)
        rig.udp.recv(65535)
        # only the UDP socket
        pong = b.packet_to(a, b"pong")
        rig.from_peer(seal_raw(b, a, pong, 40))
        ready, locked, result, now = rig.crossing.poll(lock, wake_r)
        assert (ready, locked) == (2, True) and lock.locked()
        lock.release()
        assert len(result) == 7 and result[5] == 0
        assert rig.tun_written() == pong
        # the crossing raises: the lock is released, the error propagates
        os.write(bad_w, b"x")
        broken = fast.Crossing(a.protocol, rig.tun.fileno(), False, rig.frame, bad_r, False,
                               False, LONE_PACKET, LONE_DATAGRAM)
        with pytest.raises(OSError):
            broken.poll(lock, wake_r)
        assert not lock.locked()
        rig.quiet()
    finally:
        for fd in (wake_r, wake_w, bad_r, bad_w):
            os.close(fd)
        rig.close()


# ---------------------------------------------------------------------- hostile input
def mutate(rng: random.Random, data: bytes) -> bytes:
    data = bytearray(data)
    kind = rng.randrange(4)
    if kind == 0 and data:
        data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
    elif kind == 1:
        data = data[:rng.randrange(len(data) + 1)]
    elif kind == 2:
        data += bytes(rng.randrange(256) for _ in range(rng.randrange(1, 40)))
    else:
        at = rng.randrange(len(data) + 1)
        data[at:at + 4] = rng.randbytes(4)
    return bytes(data)


def test_hostile_datagrams_decided_like_open_lone() -> None:
    """Random, mutated and replayed datagrams: never an exception; declined exactly when
    open_lone declines (then the windows untouched), opened to the same window and
    outcome when it opens; the TUN device gets exactly the opened inner packets."""
    rng = random.Random(11)
    rig = make_rig("v4", True)
    try:
        a, b = rig.a, rig.b
        protocol = a.protocol
        source = rig.endpoint(rig.peer)
        index = a.peer(b).current.local_index
        good = [seal_raw(b, a, inner, c) for c, inner in enumerate(
            (b.packet_to(a, b"g"), b"", b"\x45" + bytes(30), b.packet_to(a, b"6", v6=True),
             ipv4_packet("10.9.9.9", a.ip4, b"s")), 1)]
        opened_count = declined = 0
        for step in range(2500):
            kind = rng.randrange(5)
            if kind == 0:
                data = rng.randbytes(rng.randrange(0, 300))
            elif kind == 1:
                data = TRANSPORT_HEADER.pack(TRANSPORT, rng.choice((index, rng.getrandbits(32))),
                                             rng.getrandbits(64)) + rng.randbytes(rng.randrange(300))
            elif kind == 2:
                data = mutate(rng, rng.choice(good))
            elif kind == 3:
                data = rng.choice(good)                                 # replayed
            else:                                                       # fresh, any inner
                inner = rng.choice((b.packet_to(a, rng.randbytes(rng.randrange(60))),
                                    rng.randbytes(rng.randrange(80)), b""))
                data = seal_raw(b, a, inner, rng.randrange(10_000))
            if not data:
                data = b"\x04"
            before = windows(protocol)
            stats = Counter(a.stats)
            rig.from_peer(data)
            got = rig.crossing.udp(rig.now)
            crossed = windows(protocol)
            assert Counter(a.stats) == stats
            restore(protocol, before)
            opened = (open_lone(protocol, data, source, rig.now, bytearray(2048))
                      if len(data) <= LONE_DATAGRAM else None)
            python_delta = Counter(a.stats) - stats
            a.stats.clear()
            a.stats.update(stats)
            if len(got) == 3:
                declined += 1
                assert got == (data, len(data), source), step
                assert crossed == before, step
                assert opened is None, step
            else:
                opened_count += 1
                assert opened is not None, step
                assert crossed == windows(protocol), step
                outcome = got[5]
                assert got[:5] == (opened.peer, opened.kp, opened.size, opened.counter, source)
                assert (outcome == 0) == (opened.packet is not None), step
                if outcome:
                    assert python_delta == Counter({OUTCOME_STATS[outcome]: 1}), step
                else:
                    assert rig.tun_written() == rig.frame_of(bytes(opened.packet)), step
            restore(protocol, crossed)
            assert not readable(rig.host.fileno(), 0), step
        assert opened_count > 100 and declined > 1000
        rig.quiet()
    finally:
        rig.close()


def test_hostile_frames_never_change_state_unless_sealed() -> None:
    """Random frames (any virtio header, any version, any length, routed or not): never
    an exception; a decline leaves send_next and the stats as they were and seal_lone
    agrees on the view; a seal takes exactly one counter and gives seal_lone's bytes."""
    rng = random.Random(12)
    rig = make_rig("v6", True)
    try:
        a, b = rig.a, rig.b
        kp = a.peer(b).current
        sealed_count = declined = batch = 0
        for step in range(2500):
            kind = rng.randrange(4)
            if kind == 0:
                packet = rng.randbytes(rng.randrange(1, 300))
            elif kind == 1:
                packet = a.packet_to(b, rng.randbytes(rng.randrange(0, 260)),
                                     v6=rng.random() < 0.5)
            elif kind == 2:
                packet = mutate(rng, a.packet_to(b, b"m", v6=rng.random() < 0.5)) or b"\x60"
            else:
                packet = bytes((rng.choice((0x40, 0x60, 0x00, 0x50, 0xf0)),)) + rng.randbytes(
                    rng.randrange(0, 60))
            header = {"flags": rng.choice((0, 0, 0, 1)), "gso": rng.choice((0, 0, 0, 1, 4))}
            state = send_state(rig)
            rig.to_tun(packet, **header)
            counter = kp.send_next
            crossed = rig.crossing.tun(rig.now)
            if isinstance(crossed, int):
                batch += 1
                assert header != {"flags": 0, "gso": 0} or len(packet) > LONE_PACKET, step
                assert crossed == VNET + len(packet) and send_state(rig) == state, step
            elif isinstance(crossed, memoryview):
                declined += 1
                assert bytes(crossed) == packet and send_state(rig) == state, step
                assert seal_lone(a.protocol, crossed, rig.now, bytearray(400)) is None, step
                kp.send_next = counter              # seal_lone may take one past a limit
            else:
                sealed_count += 1
                assert kp.send_next == counter + 1 and crossed[3] == counter, step
                datagram = rig.sent_to_peer()
                expected = bytearray(400)
                kp.send_next = counter
                python = seal_lone(a.protocol, packet, rig.now, expected)
                assert python is not None and bytes(expected[:python.size]) == datagram, step
                assert crossed == (python.peer, python.kp, python.size, python.counter,
                                   python.endpoint), step
            assert not readable(rig.peer.fileno(), 0), step
        assert sealed_count > 300 and declined > 300 and batch > 300
        rig.quiet()
    finally:
        rig.close()


def test_poll_timeout_returns_nothing_ready_unlocked() -> None:
    """poll's timeout (the device waits DEFER_MS with bookkeeping pending): with nothing
    ready it returns ready 0 without the lock, after 0 ms or a short wait alike; what
    arrives during the wait is crossed as without a timeout."""
    rig = make_rig("v4", False)
    wake_r, wake_w = os.pipe()
    lock = threading.Lock()
    try:
        a, b = rig.a, rig.b
        a.peer(b).current.created = time.monotonic()
        assert rig.crossing.poll(lock, wake_r, 0) == (0, False, None, 0.0)
        assert rig.crossing.poll(lock, wake_r, 20) == (0, False, None, 0.0)
        assert not lock.locked()
        rig.to_tun(a.packet_to(b, b"in time"))
        ready, locked, result, _now = rig.crossing.poll(lock, wake_r, 10_000)
        assert (ready, locked) == (1, True) and lock.locked()
        lock.release()
        assert isinstance(result, tuple) and result[1] is a.peer(b).current
    finally:
        os.close(wake_r)
        os.close(wake_w)
        rig.close()
