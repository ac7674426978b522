"""The lone-packet path (meshwg.core.lone) against the batch path: the same wire bytes
for the same counter, and for every kind of input (good, hostile, unroutable) the same
packets delivered, the same counters and the same peer state as encrypt_batch /
receive_batch alone, run the way the device runs it (the lone call first; when it gives
None, the batch call on the same input)."""

from __future__ import annotations

import ipaddress
from collections import Counter

import pytest

from meshwg import accel
from meshwg.core.allowedips import RECENT_MAX, AllowedIPs
from meshwg.core.lone import finish_lone, open_lone, seal_lone
from meshwg.core.messages import TRANSPORT_HEADER
from tests.meshwg.core.harness import (Network, Node, established, ipv4_packet, ipv6_packet,
                                       seal_raw)

fast = accel.select(True, warn=False)
pytestmark = pytest.mark.skipif(fast is None, reason="compiled data path not built")


def compiled_pair():
    net, a, b = established()
    a.protocol.fastpath = b.protocol.fastpath = fast
    return net, a, b


def send_like_device(node: Node, packet: bytes, lone: bool) -> list[bytes]:
    """TUN -> UDP as Device._data_loop does it: the datagrams that go out."""
    p, now = node.protocol, node.net.now
    if lone:
        buf = bytearray(400)
        sealed = seal_lone(p, packet, now, buf)
        if sealed is not None:
            finish_lone(p, sealed, now)
            return [bytes(buf[:sealed.size])]
    out = []
    for view, size, _endpoint in p.encrypt_batch((packet,), now):
        data = bytes(view)
        out += [data[i:i + size] for i in range(0, len(data), size)]
    return out


def receive_like_device(node: Node, datagram: bytes, source, lone: bool) -> list[bytes]:
    """UDP -> TUN as Device._data_loop does it: the packets written to the TUN device."""
    p, now = node.protocol, node.net.now
    if lone:
        opened = open_lone(p, datagram, source, now, bytearray(2048))
        if opened is not None:
            finish_lone(p, opened, now)
            return [] if opened.packet is None else [bytes(opened.packet)]
    packets, _admitted = p.receive_batch(((datagram, len(datagram), source),), now)
    return [bytes(x) for x in packets]


def peer_state(node: Node, other: Node) -> tuple:
    peer = node.peer(other)
    return (peer.tx_bytes, peer.rx_bytes, peer.endpoint, peer.keepalive_at is None,
            peer.new_handshake_at is None, peer.unanswered_at is None, peer.last_rx,
            peer.current is not None and peer.current.replay.last)


def test_same_bytes_for_the_same_counter() -> None:
    _net, a, b = compiled_pair()
    kp = a.peer(b).current
    for packet in (a.packet_to(b, b"x" * n) for n in (0, 1, 15, 16, 17, 100, 200)):
        for v6 in (False, True):
            packet = a.packet_to(b, packet[20:], v6=v6)
            kp.set_counter(41)
            (batch,) = send_like_device(a, packet, lone=False)
            kp.set_counter(41)
            (lone,) = send_like_device(a, packet, lone=True)
            assert lone == batch
            assert TRANSPORT_HEADER.unpack_from(lone)[2] == 41


def test_send_decisions_and_bookkeeping_match() -> None:
    """Each packet through a fresh pair on each path: same datagrams (by what they carry),
    same counters, same peer state; unroutable and malformed packets counted alike."""
    def packets(a: Node, b: Node) -> list[bytes]:
        return [a.packet_to(b, b"ping"), a.packet_to(b, b"six", v6=True),
                ipv4_packet(a.ip4, "192.0.2.9", b"no route"), b"\x45\x00", b"\x10" * 40, b"",
                a.packet_to(b, b"y" * 300)]      # not lone-sized: still the same outcome
    results = []
    for lone in (False, True):
        net, a, b = compiled_pair()
        delivered = []
        for packet in packets(a, b):
            for datagram in send_like_device(a, packet, lone):
                delivered += receive_like_device(b, datagram, a.address, lone=False)
        results.append((delivered, Counter(a.stats), peer_state(a, b)))
    assert results[0] == results[1]
    assert len(results[0][0]) == 3


def test_no_keypair_or_counters_left_to_the_batch_path() -> None:
    """Packets the peer cannot send now are staged by the batch path on both ways, and a
    keypair out of counters is not used by the lone path."""
    for lone in (False, True):
        net, a, b = compiled_pair()
        kp = a.peer(b).current
        kp.set_counter(a.protocol.timers.reject_after_messages)
        assert send_like_device(a, a.packet_to(b, b"late"), lone) == []
        assert len(a.peer(b).staged) == 1
        a.peer(b).current = None
        assert seal_lone(a.protocol, a.packet_to(b, b"none"), net.now, bytearray(400)) is None


def test_receive_decisions_and_bookkeeping_match() -> None:
    """Good, replayed, forged, keepalive, inner-malformed, spoofed-source, unknown-index
    and handshake-typed datagrams, each through a fresh pair on each path: the same
    packets reach the TUN side, the same counters, the same peer state (roaming too)."""
    def datagrams(a: Node, b: Node) -> list[tuple[bytes, tuple]]:
        good = seal_raw(a, b, a.packet_to(b, b"hello"), 10)
        forged = bytearray(seal_raw(a, b, a.packet_to(b, b"forged"), 11))
        forged[-1] ^= 1
        unknown = bytearray(seal_raw(a, b, a.packet_to(b, b"x"), 12))
        unknown[4:8] = b"\xff\xff\xff\x7f"
        return [(good, a.address), (good, a.address),                 # the second: replayed
                (bytes(forged), a.address),
                (seal_raw(a, b, b"", 13), a.address),                     # keepalive
                (seal_raw(a, b, b"\x45" + bytes(10), 14), a.address),     # inner malformed
                (seal_raw(a, b, ipv4_packet("10.9.9.9", b.ip4, b"spoof"), 15), a.address),
                (seal_raw(a, b, ipv6_packet(a.ip6, b.ip6, b"v6"), 16), ("198.51.100.7", 9)),
                (bytes(unknown), a.address),
                (b"\x01" + bytes(40), a.address),                        # not transport
                (seal_raw(a, b, a.packet_to(b, b"z" * 300), 17), a.address)]
    results = []
    for lone in (False, True):
        net, a, b = compiled_pair()
        delivered = []
        before = Counter(b.stats)
        for datagram, source in datagrams(a, b):
            delivered += receive_like_device(b, datagram, source, lone)
        results.append((delivered, Counter(b.stats) - before, peer_state(b, a),
                        [type(e).__name__ for e in b.events]))
    assert results[0] == results[1]
    assert len(results[0][0]) == 3
    stats = results[0][1]
    for reason in ("replayed", "decrypt_failed", "keepalives_received", "inner_malformed",
                   "inner_source_not_allowed", "unknown_index"):
        assert stats[reason] == 1, reason


def test_responder_confirms_its_keypair_on_a_lone_packet() -> None:
    """The responder's first transport message under the new keypair completes its
    handshake (finish_lone does receive_batch's bookkeeping)."""
    net, a, b = compiled_pair()
    net.now += 1.0
    a.initiate(b)
    net.deliver(net.wire.pop(0))                  # the initiation; b answers
    net.collect()
    net.deliver(net.wire.pop(0))                  # the response: a has its new keypair
    net.collect()
    net.wire.clear()
    assert b.peer(a).next is not None
    buf = bytearray(400)
    sealed = seal_lone(a.protocol, a.packet_to(b, b"first"), net.now, buf)
    assert sealed is not None
    finish_lone(a.protocol, sealed, net.now)
    opened = open_lone(b.protocol, bytes(buf[:sealed.size]), a.address, net.now, bytearray(2048))
    assert opened is not None and bytes(opened.packet) == a.packet_to(b, b"first")
    finish_lone(b.protocol, opened, net.now)
    assert b.peer(a).next is None and b.peer(a).current is opened.kp


def test_routes_follow_every_change_of_the_table() -> None:
    """The lone path remembers routes per address (AllowedIPs.lookup_recent): a network
    moved to another peer, removed or re-added changes where the next lone packet goes
    (or sends it to the batch path) at once, for the destination and the inner source."""
    net = Network()
    a, b, c = (net.add_node(name, i) for i, name in enumerate("abc", 1))
    net.connect(a, b)
    net.connect(a, c, allowed_b=[f"{c.ip4}/32"])
    for other in (b, c):
        a.initiate(other)
        net.pump()
    for node in (a, b, c):
        node.protocol.fastpath = fast
    p, buf = a.protocol, bytearray(400)
    to_b = a.packet_to(b, b"x")

    def route(packet: bytes):
        sealed = seal_lone(p, packet, net.now, buf)
        if sealed is not None:
            finish_lone(p, sealed, net.now)
        return None if sealed is None else sealed.peer

    assert route(to_b) is a.peer(b) and route(to_b) is a.peer(b)
    p.add_allowed_ips(a.peer(c), [ipaddress.ip_network(f"{b.ip4}/32")])    # moved to c
    assert route(to_b) is a.peer(c)
    p.remove_allowed_ips(a.peer(c), [ipaddress.ip_network(f"{b.ip4}/32")])
    assert route(to_b) is None
    p.add_allowed_ips(a.peer(b), [ipaddress.ip_network("10.0.0.0/24")])
    p.add_allowed_ips(a.peer(c), [ipaddress.ip_network("10.0.0.0/16")])
    assert route(to_b) is a.peer(b)                      # the longer prefix
    p.set_allowed_ips(a.peer(b), [])
    assert route(to_b) is a.peer(c)
    # inner sources: b's packets are accepted from b only while b owns its address
    q = b.protocol
    for owner, accepted in ((a.peer(b), 1), (a.peer(c), 0)):
        p.set_allowed_ips(owner, [ipaddress.ip_network(f"{b.ip4}/32")])
        before = a.stats["inner_source_not_allowed"]
        kp = b.peer(a).current
        sealed = seal_lone(q, b.packet_to(a, b"from b"), net.now, buf)
        finish_lone(q, sealed, net.now)
        opened = open_lone(p, bytes(buf[:sealed.size]), b.address, net.now, bytearray(2048))
        assert opened is not None and opened.kp.peer is a.peer(b) and kp is sealed.kp
        finish_lone(p, opened, net.now)
        assert (opened.packet is not None) == bool(accepted)
        assert a.stats["inner_source_not_allowed"] - before == 1 - accepted


def test_recent_routes_are_bounded_and_forgotten() -> None:
    """lookup_recent gives lookup's answer for every address, keeps at most RECENT_MAX,
    and forgets on insert, remove and remove_peer."""
    table = AllowedIPs()
    table.insert(ipaddress.ip_network("10.0.0.0/8"), "p")
    table.insert(ipaddress.ip_network("10.1.0.0/16"), "q")
    addresses = [bytes((10, i & 3, i >> 2 & 255, 1)) for i in range(3 * RECENT_MAX)]
    for address in addresses + [bytes(4), bytes(16), b"\x01"]:
        assert table.lookup_recent(address) == table.lookup(address)
        assert len(table.recent) <= RECENT_MAX
    one = bytes((10, 1, 2, 3))
    for change, expected in ((lambda: table.insert(ipaddress.ip_network("10.1.2.0/24"), "r"), "r"),
                             (lambda: table.remove(ipaddress.ip_network("10.1.2.0/24")), "q"),
                             (lambda: table.remove_peer("q"), "p"),
                             (lambda: table.insert(ipaddress.ip_network("10.1.0.0/16"), "p"), "p"),
                             (lambda: table.remove_peer("p"), None)):
        table.lookup_recent(one)
        change()
        assert table.lookup_recent(one) == table.lookup(one) == expected


def test_no_counter_is_used_twice() -> None:
    """Lone and batch seals interleaved, through a rekey (new keypair), a keypair change
    mid-way and the counter limit: every (keypair, counter) pair on the wire is unique,
    and what b opens is every packet exactly once."""
    net, a, b = compiled_pair()
    seen: set[tuple[int, int]] = set()
    opened = 0
    for step in range(60):
        if step == 20:                                # a new handshake: a new keypair
            net.now += 1.0
            a.initiate(b)
            net.pump()
        if step == 40:                                # near the end of the counters
            a.peer(b).current.set_counter(a.protocol.timers.reject_after_messages - 10)
        lone = step % 3 != 0
        for datagram in send_like_device(a, a.packet_to(b, b"n%d" % step), lone):
            receiver, counter = TRANSPORT_HEADER.unpack_from(datagram)[1:]
            assert (receiver, counter) not in seen
            seen.add((receiver, counter))
            opened += len(receive_like_device(b, datagram, a.address, lone=True))
        net.pump()                                    # handshakes the protocol started
    assert opened == len(seen) >= 50
