"""A relay server and two member clients on 127.0.0.1 (real sockets, no namespaces): each
client stands for a member whose engine is a plain UDP socket."""

import socket

import pytest

from meshwg.core import crypto

from discovery.lab.netns import poll
from discovery.relay import wire
from discovery.relay.client import RelayClient
from discovery.relay.server import RelayServer


class _Engine:
    """A stand-in for a member's WireGuard engine: one UDP socket on loopback."""

    def __init__(self):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(5.0)
        self.port = self.sock.getsockname()[1]
        self.private = crypto.generate_private_key()
        self.public = crypto.public_key(self.private)


@pytest.fixture
def relay_pair():
    relay_private = crypto.generate_private_key()
    a, b = _Engine(), _Engine()
    server = RelayServer(relay_private, host="127.0.0.1", members=[a.public, b.public]).start()
    relay = ("127.0.0.1", server.port)
    clients = [RelayClient(e.private, server.public_key, relay, e.port).start() for e in (a, b)]
    clients[0].set_peers([b.public])
    clients[1].set_peers([a.public])
    try:
        poll(lambda: all(c.bound for c in clients), 5.0, "both clients bound at the relay")
        yield server, a, b, clients
    finally:
        for c in clients:
            c.stop()
        server.stop()
        a.sock.close()
        b.sock.close()


def test_relay_forwards_between_bound_members_both_ways(relay_pair) -> None:
    server, a, b, (ca, cb) = relay_pair
    a.sock.sendto(b"handshake from a" * 8, ca.endpoint(b.public))
    data, source = b.sock.recvfrom(4096)
    assert data == b"handshake from a" * 8
    assert source == cb.endpoint(a.public)          # b's engine sees a at a's proxy
    b.sock.sendto(b"reply", source)
    data, source = a.sock.recvfrom(4096)
    assert (data, source) == (b"reply", ca.endpoint(b.public))
    assert server.counters["forwarded_datagrams"] == 2
    assert server.counters["forwarded_bytes"] == 2 * wire.SEND_OVERHEAD + 128 + 5
    poll(lambda: ca.peer_counters()[b.public] == (5, 128) and cb.peer_counters()[a.public] == (128, 5),
         5.0, lambda: f"relayed (rx, tx) bytes: {ca.peer_counters()} {cb.peer_counters()}")


def test_stranger_datagrams_are_dropped_and_counted(relay_pair) -> None:
    server, a, b, (ca, cb) = relay_pair
    stranger = _Engine()
    try:
        relay = ("127.0.0.1", server.port)
        key = wire.relay_key(stranger.private, stranger.public, server.public_key, member_side=True)
        ident = wire.member_id(stranger.public)
        stranger.sock.sendto(wire.encode_bind(wire.BIND, key, ident, 1), relay)
        stranger.sock.sendto(wire.encode_send(wire.SEND, key, ident, wire.member_id(b.public), b"x"), relay)
        stranger.sock.sendto(b"not a relay datagram", relay)
        poll(lambda: server.counters["dropped_unknown_member"] == 2
             and server.counters["dropped_malformed"] == 1, 5.0, lambda: f"drops counted: {server.counters}")
        assert server.counters["forwarded_datagrams"] == 0
    finally:
        stranger.sock.close()


def test_member_cannot_make_the_relay_send_to_an_address_that_did_not_bind(relay_pair) -> None:
    """A member names a destination key that never bound (here: its own spoofed target):
    nothing is sent anywhere; and a datagram from a non-engine port never enters the relay."""
    server, a, b, (ca, cb) = relay_pair
    victim = _Engine()
    try:
        victim.sock.settimeout(0.0)
        key = wire.relay_key(a.private, a.public, server.public_key, member_side=True)
        send = wire.encode_send(wire.SEND, key, wire.member_id(a.public), wire.member_id(victim.public), b"x" * 100)
        victim.sock.sendto(send, ("127.0.0.1", server.port))    # "from" the victim's address
        poll(lambda: server.counters["dropped_unbound_destination"] == 1, 5.0,
             lambda: f"unbound destination counted: {server.counters}")
        victim.sock.sendto(b"smuggled", ca.endpoint(b.public))   # not from a's engine port
        poll(lambda: ca.counters["dropped"] == 1, 5.0, lambda: f"client drops: {ca.counters}")
        assert server.counters["forwarded_datagrams"] == 0
        with pytest.raises(BlockingIOError):
            victim.sock.recvfrom(4096)
    finally:
        victim.sock.close()


def test_clients_bind_again_after_the_relay_restarts(relay_pair) -> None:
    """A restarted relay knows no binding; rebind() (the member calls it on a new session
    with the rendezvous) makes forwarding work again at once."""
    server, a, b, (ca, cb) = relay_pair
    port, private = server.port, server.private_key
    server.stop()
    fresh = RelayServer(private, host="127.0.0.1", port=port, members=[a.public, b.public]).start()
    try:
        for client in (ca, cb):
            client.rebind()
        poll(lambda: len(fresh.bound()) == 2, 5.0, lambda: f"both bound again: {fresh.counters}")
        a.sock.sendto(b"after restart", ca.endpoint(b.public))
        assert b.sock.recvfrom(4096)[0] == b"after restart"
    finally:
        fresh.stop()
