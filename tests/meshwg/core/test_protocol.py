"""meshwg.core.protocol: two or three WireGuardProtocol instances wired together in memory.

Handshakes, keypair rotation, replay, roaming, cryptokey routing, cookies under load,
hostile input, padding and configuration changes. The clock is virtual (see
protocol_harness); nothing sleeps and no socket is opened. Timer behaviour is in
test_protocol_timers.py.
"""

from __future__ import annotations

import ipaddress
import os
import random
import struct

import pytest

from meshwg.core.constants import (COOKIE_REPLY_SIZE, INITIATION_SIZE, RATELIMIT_BURST,
                              RESPONSE_SIZE, UNDER_LOAD_HOLD_TIME, UNDER_LOAD_QUEUE_SIZE)
from meshwg.core.cookie import CookieGenerator
from meshwg.core.crypto import generate_private_key
from meshwg.core.events import EndpointChanged, HandshakeCompleted
from tests.meshwg.core.harness import (COOKIE_REPLY, INITIATION, KEEPALIVE_SIZE, RESPONSE, TRANSPORT,
                              Network, Node, established, ipv4_packet, ipv6_packet, pair,
                              seal_raw)

PSK = bytes(range(32))

# every counter a dropped datagram may land in
DROP_COUNTERS = ("malformed", "unknown_index", "expired_keypair", "decrypt_failed", "replayed",
                 "inner_malformed", "inner_source_not_allowed", "bad_mac1", "handshake_failed",
                 "unknown_peer", "replayed_initiation", "initiation_flood", "bad_cookie_reply",
                 "rate_limited", "cookie_replies_sent", "no_private_key")


def drops(node: Node) -> int:
    return sum(node.stats[k] for k in DROP_COUNTERS)


def events(node: Node, kind: type) -> list:
    return [e for e in node.events if isinstance(e, kind)]


# ---------------------------------------------------------------------- handshakes
@pytest.mark.parametrize("psk", [None, PSK], ids=["no-psk", "psk"])
@pytest.mark.parametrize("initiator", ["a", "b"])
def test_staged_packet_triggers_handshake_and_arrives_after_it(initiator: str, psk) -> None:
    net, a, b = pair(psk=psk)
    first, second = (a, b) if initiator == "a" else (b, a)
    packet = first.packet_to(second, b"hello")

    assert first.send(packet) == []                      # no session: staged, not sealed
    assert [d.kind for d in net.wire] == [INITIATION]
    assert len(net.wire[0].data) == INITIATION_SIZE
    net.pump()

    assert [d.kind for d in net.log[:3]] == [INITIATION, RESPONSE, TRANSPORT]
    assert len(net.log[1].data) == RESPONSE_SIZE
    assert [p for _, p in second.received] == [packet]
    assert first.peer(second).current.is_initiator
    assert not second.peer(first).current.is_initiator
    assert len(events(first, HandshakeCompleted)) == len(events(second, HandshakeCompleted)) == 1
    assert len(first.peer(second).staged) == 0
    # and the session works both ways now
    reply = second.packet_to(first, b"hi back")
    assert len(second.send(reply)) == 1
    net.pump()
    assert [p for _, p in first.received] == [reply]


def test_mismatched_preshared_key_gives_no_session() -> None:
    net = Network()
    a = net.add_node("a", 1)
    b = net.add_node("b", 2)
    net.connect(a, b, psk=PSK, psk_b=bytes(reversed(PSK)))
    a.send(a.packet_to(b))
    net.pump()

    assert net.sent(RESPONSE, b)                              # b answered (psk is in msg 2)
    assert a.stats["handshake_failed"] == 1                   # ...which a cannot read
    assert a.peer(b).current is None and b.peer(a).current is None
    assert b.received == [] and a.received == []
    assert not events(a, HandshakeCompleted) and not events(b, HandshakeCompleted)


def test_psk_on_one_side_only_gives_no_session() -> None:
    net = Network()
    a = net.add_node("a", 1)
    b = net.add_node("b", 2)
    net.connect(a, b, psk=PSK, psk_b=bytes(32))
    a.send(a.packet_to(b))
    net.pump()
    assert a.stats["handshake_failed"] == 1
    assert a.peer(b).current is None and b.received == []


def test_simultaneous_initiations_both_deliver() -> None:
    net, a, b = pair()
    pa, pb = a.packet_to(b, b"from a"), b.packet_to(a, b"from b")
    a.send(pa)
    b.send(pb)
    assert [d.kind for d in net.wire] == [INITIATION, INITIATION]
    net.pump()
    assert [p for _, p in b.received] == [pa]
    assert [p for _, p in a.received] == [pb]
    # both can still talk afterwards
    a.send(a.packet_to(b, b"again"))
    b.send(b.packet_to(a, b"again"))
    net.pump()
    assert len(a.received) == len(b.received) == 2


def test_responder_sends_only_after_initiator_confirms_keypair() -> None:
    net, a, b = pair()
    a.initiate(b)
    net.deliver(net.wire.pop(0))                               # initiation -> b
    response = net.wire.pop(0)
    assert response.kind == RESPONSE
    pb = b.peer(a)
    assert pb.next is not None and pb.current is None

    early = b.packet_to(a, b"too early")
    assert b.send(early) == []                                 # staged: nothing sealed
    assert not net.sent(TRANSPORT, b)
    net.wire.clear()                                           # b's own initiation: lost

    net.deliver(response)                                      # response -> a
    confirm = net.wire.pop(0)
    assert confirm.kind == TRANSPORT and len(confirm.data) == KEEPALIVE_SIZE
    assert pb.current is None                                  # still unconfirmed at b
    assert b.send(b.packet_to(a, b"still early")) == []

    next_kp = pb.next
    net.deliver(confirm)                                       # a's first transport -> b
    assert pb.current is next_kp and pb.next is None           # next -> current
    assert len(events(b, HandshakeCompleted)) == 1
    net.pump()
    assert [p for _, p in a.received] == [early, b.packet_to(a, b"still early")]
    assert len(b.send(b.packet_to(a, b"now"))) == 1            # sealed directly


def test_confirmed_responder_stops_retransmitting_its_own_initiation() -> None:
    """b staged a packet before the keypair was confirmed, so it sent its own
    initiation; once a's transport confirms the session that handshake is no longer
    needed (wireguard-go: timersHandshakeComplete stops the retransmit timer)."""
    net, a, b = pair()
    a.initiate(b)
    net.deliver(net.wire.pop(0))
    response = net.wire.pop(0)
    b.send(b.packet_to(a))
    assert [d.kind for d in net.wire] == [INITIATION]
    net.wire.clear()                                           # b's initiation is lost
    net.deliver(response)
    net.pump()                                                 # confirm + staged packet
    assert b.peer(a).current is not None
    assert len(net.sent(INITIATION, b)) == 1
    net.advance(30)
    assert len(net.sent(INITIATION, b)) == 1                   # no retransmission


def test_keypair_rotation_across_two_handshakes() -> None:
    net, a, b = established()
    pa, pb = a.peer(b), b.peer(a)
    first_a, first_b = pa.current, pb.current
    assert first_a.remote_index == first_b.local_index

    in_flight = a.send(a.packet_to(b, b"old key, a->b"))       # sealed, not yet delivered
    net.wire.clear()
    net.now += 10
    a.initiate(b)
    init = net.wire.pop(0)
    net.deliver(init)
    response = net.wire.pop(0)
    # responder: new keypair waits in next, current unchanged, still usable to send
    assert pb.next is not None and pb.current is first_b
    back = b.send(b.packet_to(a, b"old key, b->a"))
    assert len(back) == 1 and net.wire.pop(0) is back[0]

    net.deliver(response)                                       # a: previous <- current
    confirm = net.wire.pop(0)
    assert pa.previous is first_a and pa.current is not first_a and pa.next is None
    net.deliver(back[0])                                        # old-key packet at a
    assert a.received[-1][1] == b.packet_to(a, b"old key, b->a")

    net.deliver(confirm)                                        # b: next -> current
    assert pb.previous is first_b and pb.current.local_index == pa.current.remote_index
    net.deliver(in_flight[0])                                   # old-key packet at b
    assert b.received[-1][1] == a.packet_to(b, b"old key, a->b")

    # a third handshake drops the oldest keypair: its datagrams no longer open
    stale = seal_raw(a, b, a.packet_to(b), 99)                  # under the second keypair
    old_index = first_b.local_index
    net.now += 10
    a.initiate(b)
    net.pump()
    assert pa.previous is not first_a and pb.previous is not first_b
    assert old_index not in b.protocol.keypairs_by_index
    assert first_a.send_aead is None and first_b.receive_aead is None   # zeroed
    before = b.stats["unknown_index"]
    net.inject(b, struct.pack("<IIQ", 4, old_index, 5) + bytes(32), a.address)
    assert b.stats["unknown_index"] == before + 1
    assert net.inject(b, stale, a.address) == a.packet_to(b)    # second keypair: previous


# ---------------------------------------------------------------------- replay
def test_duplicated_transport_datagram_is_dropped_and_counted() -> None:
    net, a, b = established()
    (d,) = a.send(a.packet_to(b, b"once"))
    net.pump()
    assert len(b.received) == 1
    net.deliver(d)
    net.deliver(d, source=("198.51.100.9", 4444))             # replayed from elsewhere
    assert len(b.received) == 1
    assert b.stats["replayed"] == 2
    assert b.peer(a).endpoint == a.address                     # ...does not move the endpoint


def test_old_initiation_is_rejected() -> None:
    net, a, b = pair()
    a.initiate(b)
    older = net.wire.pop(0)
    net.now += 1
    a.initiate(b)
    newer = net.wire.pop(0)

    net.deliver(newer)
    assert [d.kind for d in net.wire] == [RESPONSE]
    net.wire.clear()
    net.now += 1
    net.deliver(newer)                                         # same timestamp
    net.deliver(older)                                         # older timestamp
    assert net.wire == []
    assert b.stats["replayed_initiation"] == 2
    # a replayed initiation from elsewhere does not move the endpoint either
    net.deliver(newer, source=("198.51.100.9", 4444))
    assert b.peer(a).endpoint == a.address


def test_initiations_faster_than_50_per_second_are_dropped() -> None:
    net, a, b = pair()
    # distinct, increasing timestamps (50 ms apart at a)
    initiations = [a.initiate(b, at=net.now + i * 0.05) for i in range(60)]
    net.wire.clear()
    start = net.now + 10
    accepted = []
    for i, d in enumerate(initiations):   # arriving every 6 ms at b
        net.now = start + i * 0.006
        net.deliver(d)
        if net.wire:
            accepted.append(net.now)
            net.wire.clear()
    gaps = [y - x for x, y in zip(accepted, accepted[1:])]
    assert len(accepted) == 15 and min(gaps) >= 0.02 - 1e-9
    assert b.stats["initiation_flood"] == 45


def test_replayed_response_is_ignored() -> None:
    net, a, b = pair()
    a.initiate(b)
    net.deliver(net.wire.pop(0))
    response = net.wire[0]
    net.pump()
    current = a.peer(b).current
    net.deliver(response, source=("198.51.100.9", 4444))
    assert a.peer(b).current is current
    assert a.peer(b).endpoint == b.address
    assert a.stats["unknown_index"] == 1


# ---------------------------------------------------------------------- roaming
NEW_A = ("198.51.100.1", 40000)
NEW_B = ("198.51.100.2", 40001)


def test_endpoint_follows_authenticated_transport() -> None:
    net, a, b = established()
    net.move(a, NEW_A)
    a.send(a.packet_to(b))
    net.pump()
    assert b.peer(a).endpoint == NEW_A
    assert [e.endpoint for e in events(b, EndpointChanged)] == [NEW_A]
    b.send(b.packet_to(a, b"reply"))                            # goes to the new address
    net.pump()
    assert [p for _, p in a.received] == [b.packet_to(a, b"reply")]


def test_endpoint_follows_initiation_and_response() -> None:
    net, a, b = established()
    net.move(a, NEW_A)
    net.now += 10
    a.initiate(b)          # initiation from NEW_A
    net.deliver(net.wire.pop(0))
    assert b.peer(a).endpoint == NEW_A

    net.move(b, NEW_B)                                          # b moves before its response
    response = net.wire.pop(0)
    net.deliver(response, source=NEW_B)
    assert a.peer(b).endpoint == NEW_B
    net.pump()
    assert b.peer(a).current is not None


def test_cookie_reply_does_not_move_endpoint() -> None:
    net, a, b = pair()
    b.backlog = UNDER_LOAD_QUEUE_SIZE
    a.initiate(b)
    net.deliver(net.wire.pop(0))
    (reply,) = net.wire
    assert reply.kind == COOKIE_REPLY
    net.wire.clear()
    net.deliver(reply, source=NEW_B)
    assert a.stats["cookie_replies_accepted"] == 1               # it was a genuine reply
    assert a.peer(b).endpoint == b.address
    assert not events(a, EndpointChanged)


@pytest.mark.parametrize("kind", [INITIATION, RESPONSE, TRANSPORT])
def test_unauthenticated_datagram_does_not_move_endpoint(kind: int) -> None:
    net, a, b = established()
    net.now += 10
    if kind == TRANSPORT:
        (genuine,) = a.send(a.packet_to(b))
        receiver, sender = b, a
    elif kind == INITIATION:
        a.initiate(b)
        genuine = net.wire[0]
        receiver, sender = b, a
    else:
        b.initiate(a)
        net.deliver(net.wire.pop(0))
        genuine = net.wire[0]
        receiver, sender = b, a   # the response goes to b (the initiator here)
    net.wire.clear()
    endpoint = receiver.peer(sender).endpoint
    before = drops(receiver)
    data = genuine.data
    # flip bits the receiver authenticates (mac2 is only checked under load)
    last = len(data) - 1 if kind == TRANSPORT else len(data) - 17
    for position in (len(data) // 2, last, len(data) - 40, 20):
        forged = bytearray(data)
        forged[position] ^= 0x01
        net.inject(receiver, bytes(forged), NEW_A)
        assert receiver.peer(sender).endpoint == endpoint
    assert drops(receiver) == before + 4
    assert not events(receiver, EndpointChanged)
    net.deliver(genuine, source=NEW_A)                          # the real one does move it
    assert receiver.peer(sender).endpoint == NEW_A


def test_staged_packets_flushed_on_confirmation_go_to_the_new_endpoint() -> None:
    net, a, b = pair()
    a.initiate(b)
    net.deliver(net.wire.pop(0))
    response = net.wire.pop(0)
    b.send(b.packet_to(a, b"staged"))
    net.wire.clear()
    net.deliver(response)
    confirm = net.wire.pop(0)
    net.move(a, NEW_A)                                          # a roams before confirming
    net.deliver(confirm, source=NEW_A)
    staged = net.sent(TRANSPORT, b)
    assert staged and all(d.destination == NEW_A for d in staged)


# ---------------------------------------------------------------------- cryptokey routing
def test_packet_without_route_is_dropped() -> None:
    net, a, b = established()
    assert a.send(ipv4_packet(a.ip4, "10.9.9.9"), ipv6_packet(a.ip6, "fd00::99")) == []
    assert a.stats["no_route"] == 2
    assert net.wire == []


def test_inner_source_outside_allowed_ips_is_dropped() -> None:
    net, a, b = established()
    (d,) = a.send(ipv4_packet("10.0.0.77", b.ip4, b"spoofed"))  # a routes by destination
    (d6,) = a.send(ipv6_packet("fd00::77", b.ip6, b"spoofed"))
    net.pump()
    assert b.received == []
    assert b.stats["inner_source_not_allowed"] == 2
    # genuine sources pass
    a.send(a.packet_to(b), a.packet_to(b, v6=True))
    net.pump()
    assert len(b.received) == 2


def test_inner_source_owned_by_another_peer_is_dropped() -> None:
    net = Network()
    a, b, c = (net.add_node(n, i) for i, n in enumerate("abc", 1))
    net.connect(a, b)
    net.connect(a, c)
    for src, dst in ((a, b), (a, c)):
        src.initiate(dst)
    net.pump()
    # b sends a packet claiming c's address: a has a route for it, but to c
    b.protocol.add_allowed_ips(b.peer(a), [ipaddress.ip_network(f"{c.ip4}/32")])
    b.send(ipv4_packet(c.ip4, a.ip4, b"i am c"))
    net.pump()
    assert a.received == [] and a.stats["inner_source_not_allowed"] == 1


@pytest.mark.parametrize("v6", [False, True], ids=["ipv4", "ipv6"])
def test_longest_prefix_picks_the_peer(v6: bool) -> None:
    net = Network()
    a = net.add_node("a", 1)
    wide = net.add_node("wide", 2)
    narrow = net.add_node("narrow", 3)
    net.connect(a, wide, allowed_b=["10.0.0.0/16", "fd00::/64"])
    net.connect(a, narrow, allowed_b=["10.0.5.0/24", "fd00::5:0/112"])
    dst_narrow, dst_wide = ("fd00::5:7", "fd00::6:7") if v6 else ("10.0.5.7", "10.0.6.7")
    make = ipv6_packet if v6 else ipv4_packet
    src = a.ip6 if v6 else a.ip4
    to_narrow, to_wide = make(src, dst_narrow, b"n"), make(src, dst_wide, b"w")
    a.send(to_narrow, to_wide)
    net.pump()
    assert [p for _, p in narrow.received] == [to_narrow]
    assert [p for _, p in wide.received] == [to_wide]


def test_ipv6_packets_cross_the_tunnel() -> None:
    net, a, b = established()
    p = ipv6_packet(a.ip6, b.ip6, os.urandom(300))
    a.send(p)
    net.pump()
    assert [q for _, q in b.received] == [p]


# ---------------------------------------------------------------------- cookies under load
def test_under_load_initiation_without_mac2_gets_cookie_reply_then_retry_completes() -> None:
    net, a, b = pair()
    b.backlog = UNDER_LOAD_QUEUE_SIZE
    packet = a.packet_to(b, b"through the cookie")
    a.send(packet)
    first = net.wire[0]
    assert first.data[-16:] == bytes(16)                       # no cookie yet: mac2 zero
    net.pump()
    replies = net.sent(COOKIE_REPLY, b)
    assert len(replies) == 1 and len(replies[0].data) == COOKIE_REPLY_SIZE
    assert net.sent(RESPONSE) == []
    assert b.stats["cookie_replies_sent"] == 1 and a.stats["cookie_replies_accepted"] == 1
    assert b.received == [] and b.peer(a).next is None

    net.advance(a.protocol.timers.rekey_timeout + 0.34)         # retry after rekey_timeout
    retry = net.sent(INITIATION, a)[-1]
    assert retry is not first and retry.data[-16:] != bytes(16)  # carries mac2
    assert len(net.sent(RESPONSE, b)) == 1
    assert [p for _, p in b.received] == [packet]
    assert b.protocol.is_under_load(net.now)                    # it was under load all along


def test_mac2_is_bound_to_the_source_address() -> None:
    net, a, b = pair()
    b.backlog = UNDER_LOAD_QUEUE_SIZE
    a.initiate(b)
    net.pump()                                                  # cookie for a.address
    net.now += 1
    a.initiate(b)
    with_mac2 = net.wire.pop(0)
    net.deliver(with_mac2, source=("192.0.2.1", 9999))          # other port: new cookie
    assert [d.kind for d in net.wire] == [COOKIE_REPLY]
    assert b.stats["cookie_replies_sent"] == 2


def test_per_source_rate_limit_while_under_load() -> None:
    net, a, b = pair()
    b.backlog = UNDER_LOAD_QUEUE_SIZE
    a.initiate(b)
    net.pump()                                                  # a now holds a cookie
    burst = [a.initiate(b, at=net.now + 0.05 * (i + 1)) for i in range(RATELIMIT_BURST + 5)]
    net.wire.clear()
    net.now += 1.0
    for d in burst:                                             # all in the same instant
        net.deliver(d)
    assert b.stats["rate_limited"] == 5
    assert b.stats["cookie_replies_sent"] == 1                  # all carried a valid mac2
    # another source is not limited by a's bucket
    net.deliver(burst[-1], source=("203.0.113.5", 51821))
    assert b.stats["cookie_replies_sent"] == 2 and b.stats["rate_limited"] == 5


def test_not_under_load_without_backlog_and_flag_held_one_second() -> None:
    net, a, b = pair()
    p = b.protocol
    assert not p.is_under_load(net.now)
    assert not p.is_under_load(net.now, UNDER_LOAD_QUEUE_SIZE - 1)
    assert p.is_under_load(net.now, UNDER_LOAD_QUEUE_SIZE)
    assert p.is_under_load(net.now + UNDER_LOAD_HOLD_TIME - 0.01, 0)
    assert not p.is_under_load(net.now + UNDER_LOAD_HOLD_TIME + 0.01, 0)
    # and without load, an initiation without mac2 is answered normally
    net.now += 2
    a.initiate(b)
    net.pump()
    assert net.sent(COOKIE_REPLY) == [] and b.peer(a).current is not None


# ---------------------------------------------------------------------- hostile input
def _hostile_corpus(net: Network, a: Node, b: Node, rng: random.Random) -> list[bytes]:
    net.now += 10
    a.initiate(b)
    initiation = net.wire.pop(0).data
    (transport,) = a.send(a.packet_to(b, b"x" * 40))
    net.wire.clear()
    response = b"\x02\x00\x00\x00" + bytes(RESPONSE_SIZE - 4)
    cookie = b"\x03\x00\x00\x00" + bytes(COOKIE_REPLY_SIZE - 4)
    corpus: list[bytes] = [b"", b"\x01", b"\x04\x00\x00", bytes(4), b"\xff" * 200]
    for n in (1, 3, 4, 16, 31, 32, 33, 64, 91, 92, 93, 147, 148, 149, 1500):
        corpus.append(bytes(rng.getrandbits(8) for _ in range(n)))
        for kind in (1, 2, 3, 4):
            corpus.append(bytes([kind, 0, 0, 0]) + bytes(rng.getrandbits(8) for _ in range(n)))
    for genuine in (initiation, transport.data, response, cookie):
        corpus.extend(genuine[:n] for n in range(0, len(genuine), 7))          # truncated
        # bit flips where the receiver authenticates (mac2 only counts under load)
        covered = len(genuine) - 16 if genuine[0] in (1, 2) else len(genuine)
        for _ in range(40):
            flipped = bytearray(genuine)
            flipped[rng.randrange(covered)] ^= 1 << rng.randrange(8)
            corpus.append(bytes(flipped))
        corpus.append(genuine + b"\x00")                                       # too long
    # well-formed initiations with a valid mac1 but garbage inside (anyone knowing b's
    # public key can compute mac1)
    mac1 = CookieGenerator(b.public_key)
    for _ in range(20):
        body = b"\x01\x00\x00\x00" + bytes(rng.getrandbits(8) for _ in range(INITIATION_SIZE - 4))
        corpus.append(mac1.add_macs(body, net.now))
    corpus.append(mac1.add_macs(b"\x01\x00\x00\x00" + bytes(INITIATION_SIZE - 4), net.now))
    return corpus


@pytest.mark.parametrize("entry", ["receive_datagram", "receive_batch"])
def test_hostile_datagrams_never_raise_and_are_counted(entry: str) -> None:
    net, a, b = established()
    rng = random.Random(1234)
    corpus = _hostile_corpus(net, a, b, rng)
    p = b.protocol
    sessions = (b.peer(a).previous, b.peer(a).current, b.peer(a).next)
    endpoint = b.peer(a).endpoint
    received = len(b.received)
    before = drops(b)
    handled = 0
    for data in corpus:
        # one datagram at a time, or the device's way: a batch (the receive thread),
        # then the admitted handshake messages (the handshake worker)
        if entry == "receive_datagram":
            assert p.receive_datagram(data, NEW_A, net.now) is None
        else:
            packets, admitted = p.receive_batch([(data, len(data), NEW_A)], net.now)
            assert packets == []
            for handshake in admitted:
                p.process_handshake(handshake, net.now)
        handled += 1
    b.protocol.take_datagrams()
    # every datagram was dropped and counted, nothing changed
    assert drops(b) - before == handled
    assert (b.peer(a).previous, b.peer(a).current, b.peer(a).next) == sessions
    assert b.peer(a).endpoint == endpoint and len(b.received) == received


def test_authenticated_but_malformed_inner_packets_are_dropped() -> None:
    net, a, b = established()
    good = a.packet_to(b, b"0123456789")
    bad = [
        b"\x00" * 16,                                            # version 0
        b"\x45" + bytes(10),                                     # IPv4 shorter than a header
        good[:2] + struct.pack("!H", len(good) + 16) + good[4:] + bytes(12),  # claims more
        good[:2] + struct.pack("!H", 12) + good[4:],             # total length < 20
        ipv6_packet(a.ip6, b.ip6)[:30],                          # IPv6 shorter than a header
        ipv6_packet(a.ip6, b.ip6, b"abc")[:4] + b"\x01\x00" + ipv6_packet(a.ip6, b.ip6, b"abc")[6:],
    ]
    for counter, plaintext in enumerate(bad, start=100):
        assert net.inject(b, seal_raw(a, b, plaintext, counter), a.address) is None
    assert b.stats["inner_malformed"] == len(bad)
    assert b.received == []


# ---------------------------------------------------------------------- padding
@pytest.mark.parametrize("payload_len", [0, 1, 5, 11, 12, 27, 100, 1000])
def test_sealed_length_is_padded_to_16_and_trimmed_on_receipt(payload_len: int) -> None:
    net, a, b = established()
    for v6 in (False, True):
        packet = a.packet_to(b, os.urandom(payload_len), v6=v6)
        (d,) = a.send(packet)
        sealed = len(d.data) - 32
        assert sealed % 16 == 0 and sealed - len(packet) < 16 and sealed >= len(packet)
        net.pump()
        assert b.received[-1][1] == packet


def test_padding_is_capped_at_the_mtu() -> None:
    net, a, b = established(mtu=1420)                            # 1420 = 88 * 16 + 12
    packet = a.packet_to(b, os.urandom(1419 - 20))
    (d,) = a.send(packet)
    assert len(d.data) - 32 == 1420
    net.pump()
    assert b.received[-1][1] == packet
    full = a.packet_to(b, os.urandom(1420 - 20))
    (d,) = a.send(full)
    assert len(d.data) - 32 == 1420


def test_inner_packet_trimmed_to_its_ip_length() -> None:
    """Bytes after the IP total length (link-layer padding) never reach the TUN device."""
    net, a, b = established()
    packet = a.packet_to(b, b"abc")
    (d,) = a.send(packet + b"\xee" * 9)
    net.pump()
    assert b.received[-1][1] == packet
    packet6 = a.packet_to(b, b"abc", v6=True)
    a.send(packet6 + b"\xee" * 5)
    net.pump()
    assert b.received[-1][1] == packet6


# ---------------------------------------------------------------------- configuration
def test_removing_a_peer_drops_its_keypairs_and_routes() -> None:
    net, a, b = established()
    pb = a.peer(b)
    keypairs = pb.keypairs()
    indexes = [kp.local_index for kp in keypairs]
    (in_flight,) = b.send(b.packet_to(a))
    net.wire.clear()
    a.protocol.remove_peer(b.public_key)

    assert b.public_key not in a.protocol.peers
    assert all(i not in a.protocol.keypairs_by_index for i in indexes)
    assert all(kp.send_aead is None and kp.receive_aead is None for kp in keypairs)
    assert a.protocol.allowed_ips.lookup(ipaddress.ip_address(b.ip4).packed) is None
    assert a.send(a.packet_to(b), a.packet_to(b, v6=True)) == []
    assert a.stats["no_route"] == 2 and net.wire == []
    net.deliver(in_flight)
    assert a.received == [] and a.stats["unknown_index"] == 1
    assert a.protocol.next_deadline() is None


def test_changing_the_private_key_expires_sessions() -> None:
    net, a, b = established()
    pb = a.peer(b)
    old = pb.current
    a.protocol.set_private_key(generate_private_key())
    assert pb.keypairs() == [] and old.send_aead is None
    assert old.local_index not in a.protocol.keypairs_by_index
    # the new key is unknown to b: a's initiation is refused, nothing gets through
    net.now += 10
    assert a.send(a.packet_to(b)) == []
    net.pump()
    assert b.stats["unknown_peer"] == 1 and b.received == []


def test_setting_the_same_private_key_keeps_sessions() -> None:
    """`wg setconf`/`syncconf` re-send the unchanged private key: sessions must survive
    (wireguard-go returns early when the key is unchanged)."""
    net, a, b = established()
    current = a.peer(b).current
    a.protocol.set_private_key(a.private_key)
    assert a.peer(b).current is current
    assert len(a.send(a.packet_to(b))) == 1
    net.pump()
    assert len(b.received) == 1


def test_removing_the_private_key_stops_handshakes() -> None:
    net, a, b = established()
    a.protocol.set_private_key(None)
    assert a.peer(b).keypairs() == []
    a.send(a.packet_to(b))
    assert net.wire == []
    net.now += 10
    b.initiate(a)
    net.pump()
    assert a.stats["no_private_key"] == 1
