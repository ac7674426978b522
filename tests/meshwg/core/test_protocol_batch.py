"""The batch data path of WireGuardProtocol: encrypt_batch (GSO runs sealed in place) and
receive_batch (GRO runs opened in place, handshake messages admitted) give the same
datagrams, packets, counters, timers and drops as the one-at-a-time calls."""

from __future__ import annotations

import struct

import pytest

from meshwg.conn.gso import UDP_GSO_MAX_BYTES, UDP_MAX_SEGMENTS
from meshwg.core.constants import MESSAGE_INITIATION
from meshwg.core.events import EndpointChanged
from meshwg.core.handshake import AdmittedHandshake
from tests.meshwg.core import harness as h
from tests.meshwg.core.harness import TRANSPORT, established, seal_raw


def _datagrams(runs) -> list[tuple[bytes, object]]:
    out = []
    for view, size, endpoint in runs:
        data = bytes(view)
        out += [(data[i:i + size], endpoint) for i in range(0, len(data), size)]
    return out


def test_runs_hold_equal_size_datagrams_the_peer_opens_in_order() -> None:
    net, a, b = established()
    packets = [a.packet_to(b, bytes([i]) * n) for i, n in enumerate([1380] * 5 + [100, 1380, 1380])]
    runs = a.protocol.encrypt_batch(packets, net.now, bytearray(1 << 16))
    # 1400-byte packets pad to 1408 (+32); the shorter datagram (120 -> 128 + 32) ends its run
    assert [(len(v), size) for v, size, _ in runs] == [(5 * 1440 + 160, 1440), (2 * 1440, 1440)]
    opened = [b.protocol.receive_datagram(d, a.address, net.now) for d, _ in _datagrams(runs)]
    assert opened == packets
    assert {e for _, _, e in runs} == {b.address}


def test_run_limits_and_a_full_buffer_start_new_runs() -> None:
    net, a, b = established()
    packets = [a.packet_to(b, b"x" * 1000) for _ in range(10)]   # 1020 -> 1024 + 32 bytes
    runs = a.protocol.encrypt_batch(packets, net.now, bytearray(4 * 1056),
                                    max_run_bytes=3 * 1056, max_run_datagrams=64)
    # 3 per run; the 4th fills the buffer, the rest go to a new (64 KiB) one
    assert [len(v) // 1056 for v, _, _ in runs] == [3, 1, 3, 3]
    runs = a.protocol.encrypt_batch(packets, net.now, bytearray(1 << 16), max_run_datagrams=4)
    assert [len(v) // 1056 for v, _, _ in runs] == [4, 4, 2]
    counters = [struct.unpack_from("<Q", d, 8)[0] for d, _ in _datagrams(runs)]
    assert counters == sorted(counters) and len(set(counters)) == 10


def test_batch_bookkeeping_equals_one_by_one() -> None:
    results = []
    for batched in (True, False):
        net, a, b = established()
        pa, peer = a.protocol, a.peer(b)
        peer.new_handshake_at = None
        packets = [a.packet_to(b, b"y" * n) for n in (0, 10, 1380, 77)]
        if batched:
            out = _datagrams(pa.encrypt_batch(packets, net.now))
        else:
            out = [d for p in packets for d in pa.encrypt_packets([p], net.now)]
        tx = peer.tx_bytes
        pb, bpeer = b.protocol, b.peer(a)
        bpeer.keepalive_at = None
        if batched:
            got, _ = pb.receive_batch([(d, len(d), a.address) for d, _ in out], net.now)
            got = [bytes(g) for g in got]
        else:
            got = [pb.receive_datagram(d, a.address, net.now) for d, _ in out]
            got = [g for g in got if g is not None]
        results.append((len(out), tx, peer.keepalive_at, peer.new_handshake_at is not None,
                        bpeer.rx_bytes, bpeer.keepalive_at, bpeer.new_handshake_at, got))
    assert results[0] == results[1]


def test_no_keypair_stages_copies_of_views() -> None:
    net, a, b = h.pair()
    packet = a.packet_to(b, b"staged")
    frame = bytearray(packet)
    assert a.protocol.encrypt_batch([memoryview(frame)], net.now) == []
    frame[:] = bytes(len(frame))            # the caller reuses its buffer
    assert list(a.peer(b).staged) == [packet]


def test_gro_run_opens_all_and_admits_handshakes_with_their_source() -> None:
    net, a, b = established()
    packets = [a.packet_to(b, bytes([i]) * 1380) for i in range(4)]
    datagrams = [d for d, _ in a.protocol.encrypt_packets(packets, net.now)]
    size = len(datagrams[0])
    handshake_like = bytes([1]) + bytes(size - 1)       # type 1 of the wrong size
    net.now += 10
    initiation = a.initiate(b).data                     # genuine, shorter: ends the run
    net.wire.clear()
    data = b"".join(datagrams[:2] + [handshake_like] + datagrams[2:] + [initiation])
    malformed = b.stats["malformed"]
    got, admitted = b.protocol.receive_batch([(data, size, a.address)], net.now,
                                             bytearray(3000))   # forces a new buffer
    assert [bytes(g) for g in got] == packets
    assert admitted == [AdmittedHandshake(MESSAGE_INITIATION, initiation, a.address)]
    assert b.stats["malformed"] == malformed + 1
    assert b.peer(a).rx_bytes >= 4 * size
    b.protocol.process_handshake(admitted[0], net.now)          # answered, once admitted
    assert [d[0][0] for d in b.protocol.take_datagrams()] == [h.RESPONSE]


def test_batch_drops_are_counted_and_roaming_is_reported_once() -> None:
    net, a, b = established()
    pb = b.protocol
    good = [d for d, _ in a.protocol.encrypt_packets([a.packet_to(b, b"z" * 100)] * 3, net.now)]
    size = len(good[0])
    forged = bytearray(good[1])
    forged[-1] ^= 1
    replayed = good[0]
    short = struct.pack("<IIQ", TRANSPORT, 1, 0)
    spoofed = seal_raw(a, b, h.ipv4_packet("10.9.9.9", b.ip4, b"s" * 100), 999)
    new_source = ("192.0.2.77", 4444)
    before = dict(pb.stats)
    pb.take_events()
    got, _ = pb.receive_batch(
        [(b"".join([good[0], bytes(forged), replayed, good[2]]), size, new_source),
         (short, len(short), new_source), (spoofed, len(spoofed), new_source)], net.now)
    assert len(got) == 2
    delta = {k: pb.stats[k] - before.get(k, 0) for k in pb.stats if pb.stats[k] != before.get(k, 0)}
    assert delta == {"decrypt_failed": 1, "replayed": 1, "malformed": 1,
                     "inner_source_not_allowed": 1}
    assert b.peer(a).endpoint == new_source
    assert pb.take_events() == [EndpointChanged(a.public_key, new_source)]


@pytest.mark.parametrize("view", [False, True])
def test_encrypt_batch_takes_views_and_pads_through_scratch(view: bool) -> None:
    net, a, b = established()
    packets = [a.packet_to(b, b"p" * n) for n in (1, 17, 1380)]
    inputs = [memoryview(bytearray(p)) if view else p for p in packets]
    out = _datagrams(a.protocol.encrypt_batch(inputs, net.now))
    assert [len(d) % 16 for d, _ in out][:2] == [0, 0]
    assert [b.protocol.receive_datagram(d, a.address, net.now) for d, _ in out] == packets


def test_runs_split_by_endpoint_and_size_as_udp_gso_needs() -> None:
    """A run is one endpoint and one datagram size; a shorter datagram ends it, a longer
    one or another endpoint starts a new one (a UDP_SEGMENT send's rules)."""
    net = h.Network()
    a, b, c = (net.add_node(n, i) for i, n in enumerate("abc", 1))
    net.connect(a, b)
    net.connect(a, c)
    a.initiate(b)
    a.initiate(c)
    net.pump()
    # IP lengths 100, 50 and 120 seal to 112 + 32, 64 + 32 and 128 + 32 bytes
    to_b = [a.packet_to(b, bytes([i]) * n) for i, n in enumerate((80, 80, 80, 30, 80))]
    to_c = [a.packet_to(c, bytes([i]) * n) for i, n in enumerate((80, 100))]
    runs = a.protocol.encrypt_batch(to_b + to_c, net.now)
    assert [(endpoint, size, -(-len(view) // size)) for view, size, endpoint in runs] == [
        (b.address, 144, 4), (b.address, 144, 1), (c.address, 144, 1), (c.address, 160, 1)]
    opened = [(endpoint, net.inject(net.listening[endpoint], d, a.address))
              for d, endpoint in _datagrams(runs)]
    assert opened == [(b.address, p) for p in to_b] + [(c.address, p) for p in to_c]


def test_runs_keep_to_udp_gso_limits() -> None:
    net, a, b = established()
    tiny = [a.packet_to(b, b"") for _ in range(200)]            # 20 bytes: 64 sealed
    runs = a.protocol.encrypt_batch(tiny, net.now, bytearray(1 << 16), UDP_GSO_MAX_BYTES,
                                    UDP_MAX_SEGMENTS)
    assert [len(view) // size for view, size, _ in runs] == [64, 64, 64, 8]
    full = [a.packet_to(b, bytes([i]) * 1380) for i in range(100)]   # 1440 sealed
    runs = a.protocol.encrypt_batch(full, net.now, bytearray(1 << 16), UDP_GSO_MAX_BYTES,
                                    UDP_MAX_SEGMENTS)
    assert all(len(view) <= UDP_GSO_MAX_BYTES for view, _, _ in runs)
    opened = [b.protocol.receive_datagram(d, a.address, net.now) for d, _ in _datagrams(runs)]
    assert opened == full


def test_hostile_inner_packets_in_one_run_dropped_and_counted() -> None:
    """One GRO run of equal-size transport messages whose inner packets are good IPv4 and
    IPv6, a spoofed source mid-run (both families), a truncated header, a bad version and
    a length past the data: the good ones are delivered in order, the rest counted (run
    here on the pure Python path, in tests/meshwg/accel on the compiled one)."""
    net, a, b = established()
    pb = b.protocol
    size = 80

    def v4(src: str, claim: int | None = None) -> bytes:
        packet = bytearray(h.ipv4_packet(src, b.ip4, b"4" * (size - 20)))
        if claim is not None:
            packet[2:4] = claim.to_bytes(2, "big")
        return bytes(packet)

    good4, good6 = v4(a.ip4), h.ipv6_packet(a.ip6, b.ip6, b"6" * (size - 40))
    spoofed6 = h.ipv6_packet("fd00::99", b.ip6, b"6" * 40)
    inner = [good4, good4, v4("10.9.9.9"), good4, good6, spoofed6, good6, bytes([0x75]) + good4[1:], v4(a.ip4, claim=size + 1), v4(a.ip4, claim=19),
             good4, good4]
    inner.append(good4[:19])          # the last of a run may be shorter: a truncated header
    datagrams = [seal_raw(a, b, p, 1000 + i) for i, p in enumerate(inner)]
    before = dict(pb.stats)
    got, _ = pb.receive_batch([(b"".join(datagrams), len(datagrams[0]), a.address)], net.now)
    assert [bytes(g) for g in got] == [good4, good4, good4, good6, good6, good4, good4]
    delta = {k: pb.stats[k] - before.get(k, 0) for k in pb.stats if pb.stats[k] != before.get(k, 0)}
    assert delta == {"inner_source_not_allowed": 2, "inner_malformed": 4}
