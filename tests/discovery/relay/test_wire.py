"""The relay datagram format (discovery.relay.wire) and the server's decisions on it
(RelayServer.handle, no socket): bounded parsing, MACs, binds, no amplification."""

import pytest

from meshwg.core import crypto

from discovery.relay import wire
from discovery.relay.server import RelayServer


def _pair():
    relay_priv, member_priv = crypto.generate_private_key(), crypto.generate_private_key()
    relay_pub, member_pub = crypto.public_key(relay_priv), crypto.public_key(member_priv)
    return relay_priv, relay_pub, member_priv, member_pub


def test_both_sides_derive_the_same_relay_key_and_others_differ() -> None:
    relay_priv, relay_pub, member_priv, member_pub = _pair()
    member_side = wire.relay_key(member_priv, member_pub, relay_pub, member_side=True)
    relay_side = wire.relay_key(relay_priv, relay_pub, member_pub, member_side=False)
    assert member_side == relay_side and len(member_side) == 32
    other = crypto.generate_private_key()
    assert wire.relay_key(other, crypto.public_key(other), relay_pub, True) != member_side


def test_bind_and_send_round_trip() -> None:
    key, a, b = bytes(range(32)), wire.member_id(b"A" * 32), wire.member_id(b"B" * 32)
    bind = wire.encode_bind(wire.BIND, key, a, 123456789)
    assert len(bind) == wire.BIND_SIZE
    parsed = wire.parse(bind)
    assert (parsed.kind, parsed.first_id, parsed.timestamp) == (wire.BIND, a, 123456789)
    wire.verify(parsed, key)
    send = wire.encode_send(wire.SEND, key, a, b, b"wireguard datagram")
    parsed = wire.parse(send)
    assert (parsed.kind, parsed.first_id, parsed.second_id, parsed.payload) == \
        (wire.SEND, a, b, b"wireguard datagram")
    assert len(send) == wire.SEND_OVERHEAD + len(b"wireguard datagram")
    wire.verify(parsed, key)


@pytest.mark.parametrize("data", [
    b"", b"MWR1", b"MWR1\x01" + bytes(10),                         # truncated
    b"XXXX\x01" + bytes(32),                                       # wrong magic
    b"MWR1\x09" + bytes(40),                                       # unknown type
    b"MWR1\x01" + bytes(40),                                       # bind of the wrong size
    b"MWR1\x03" + bytes(wire.MAX_DATAGRAM),                        # oversize
])
def test_parse_refuses_malformed_datagrams(data: bytes) -> None:
    with pytest.raises(wire.Malformed):
        wire.parse(data)


def test_forged_or_altered_mac_is_refused() -> None:
    key, a, b = bytes(32), wire.member_id(b"A" * 32), wire.member_id(b"B" * 32)
    send = bytearray(wire.encode_send(wire.SEND, key, a, b, b"payload"))
    with pytest.raises(wire.BadMac):
        wire.verify(wire.parse(bytes(send)), bytes([1]) * 32)       # the wrong key
    send[-20] ^= 1                                                 # one payload bit flipped
    with pytest.raises(wire.BadMac):
        wire.verify(wire.parse(bytes(send)), key)


def test_bind_clock_refuses_replays_older_and_stale_first_binds() -> None:
    clock, member, now = wire.BindClock(), b"m" * 8, 10**18
    assert clock.accept(member, now, now)
    assert not clock.accept(member, now, now)                     # replayed
    assert not clock.accept(member, now - 1, now)                 # older
    assert clock.accept(member, now + 1, now)
    assert not clock.accept(b"n" * 8, now - wire.BIND_WINDOW_NS - 1, now)   # stale first bind


class _Member:
    def __init__(self, relay_pub: bytes):
        self.private = crypto.generate_private_key()
        self.public = crypto.public_key(self.private)
        self.id = wire.member_id(self.public)
        self.key = wire.relay_key(self.private, self.public, relay_pub, member_side=True)

    def bind(self, stamp: int) -> bytes:
        return wire.encode_bind(wire.BIND, self.key, self.id, stamp)


def _server_with(n: int):
    relay_priv = crypto.generate_private_key()
    members = [_Member(crypto.public_key(relay_priv)) for _ in range(n)]
    return RelayServer(relay_priv, members=[m.public for m in members]), members


def test_server_forwards_same_size_deliver_to_the_bound_destination_only() -> None:
    server, (a, b) = _server_with(2)
    now_ns = 10**18
    ack, where = server.handle(a.bind(now_ns), ("192.0.2.1", 4000), now=0.0, now_ns=now_ns)
    assert where == ("192.0.2.1", 4000)
    wire.verify(wire.parse(ack), a.key)
    send = wire.encode_send(wire.SEND, a.key, a.id, b.id, b"x" * 148)
    assert server.handle(send, ("192.0.2.1", 4000), now=1.0) is None      # b not bound yet
    assert server.counters["dropped_unbound_destination"] == 1
    server.handle(b.bind(now_ns), ("198.51.100.7", 5000), now=1.0, now_ns=now_ns)
    out, where = server.handle(send, ("203.0.113.9", 1), now=2.0)        # any source: a's MAC counts
    assert where == ("198.51.100.7", 5000)
    assert len(out) == len(send)                                          # no amplification
    delivered = wire.parse(out)
    assert delivered.kind == wire.DELIVER and delivered.payload == b"x" * 148
    wire.verify(delivered, b.key)
    assert server.counters["forwarded_datagrams"] == 1
    assert server.counters["forwarded_bytes"] == len(send)


def test_server_drops_replayed_bind_strangers_bad_macs_and_unbound_senders() -> None:
    server, (a, b) = _server_with(2)
    now_ns = 10**18
    bind = a.bind(now_ns)
    assert server.handle(bind, ("192.0.2.1", 4000), now=0.0, now_ns=now_ns) is not None
    # a replay from elsewhere must not move a's binding
    assert server.handle(bind, ("203.0.113.66", 666), now=1.0, now_ns=now_ns) is None
    assert server.counters["dropped_replayed_bind"] == 1
    assert server.bound(now=1.0)[a.public] == ("192.0.2.1", 4000)
    stranger = _Member(server.public_key)
    assert server.handle(stranger.bind(now_ns), ("203.0.113.66", 666), now=1.0, now_ns=now_ns) is None
    assert server.counters["dropped_unknown_member"] == 1
    forged = wire.encode_send(wire.SEND, stranger.key, a.id, a.id, b"x")   # claims to be a
    assert server.handle(forged, ("203.0.113.66", 666), now=1.0) is None
    assert server.counters["dropped_bad_mac"] == 1
    unbound = wire.encode_send(wire.SEND, b.key, b.id, a.id, b"x")         # b never bound
    assert server.handle(unbound, ("203.0.113.66", 666), now=1.0) is None
    assert server.counters["dropped_unbound_sender"] == 1
    assert server.handle(b"garbage", ("203.0.113.66", 666), now=1.0) is None
    assert server.counters["dropped_malformed"] == 1
    assert server.counters["forwarded_datagrams"] == 0


def test_removed_member_loses_its_binding() -> None:
    server, (a, b) = _server_with(2)
    server.handle(a.bind(10**18), ("192.0.2.1", 4000), now=0.0, now_ns=10**18)
    server.set_members([b.public])
    assert a.public not in server.bound(now=0.0)
