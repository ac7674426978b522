"""A member's relay pool (discovery.relay.pool) on loopback with real relay servers and
clients (no namespaces): both ends pick the same relay, traffic flows through it, and when
it stops answering binds both ends move to the other within PROBE_INTERVAL + DEAD_AFTER
(polled, with a generous deadline)."""

from __future__ import annotations

import socket
import time

import pytest

from meshwg.core import crypto

from discovery.lab.netns import poll
from discovery.relay.choice import DEAD_AFTER, PROBE_INTERVAL, Relay
from discovery.relay.pool import RelayPool
from discovery.relay.server import RelayServer


class _End:
    """A member: an engine stand-in (one UDP socket) and its relay pool."""

    def __init__(self):
        self.private = crypto.generate_private_key()
        self.public = crypto.public_key(self.private)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(5.0)
        self.pool = RelayPool(self.private, self.sock.getsockname()[1])


@pytest.fixture
def mesh():
    a, b = _End(), _End()
    servers = [RelayServer(crypto.generate_private_key(), host="127.0.0.1",
                           members=[a.public, b.public]).start() for _ in range(2)]
    relays = [Relay(s.public_key, ("127.0.0.1", s.port), f"p{i}") for i, s in enumerate(servers)]
    a.pool.set_peers([b.public])
    b.pool.set_peers([a.public])
    for end in (a, b):
        end.pool.set_relays(relays)
    try:
        yield a, b, servers, relays
    finally:
        for end in (a, b):
            end.pool.stop()
            end.sock.close()
        for server in servers:
            server.stop()


def _plans(a, b, current):
    now = time.time()
    return (a.pool.plan({b.public: current.get(a.public)}, now),
            b.pool.plan({a.public: current.get(b.public)}, now))


def test_both_ends_choose_one_relay_and_move_together_when_it_dies(mesh) -> None:
    a, b, servers, relays = mesh
    def chosen():
        pa, pb = _plans(a, b, {})
        both_bound = all(c.bound for end in (a, b) for c in end.pool.clients.values())
        return (pa, pb) if both_bound and b.public in pa.names else None

    plans = poll(chosen, 10, "both pools to bind at both relays")
    name = plans[0].names[b.public]
    assert plans[1].names[a.public] == name             # the same ranking on both ends
    assert len(plans[0].others[b.public]) == 1
    # traffic through the chosen relay, both ways, from the engines' proxies
    a.sock.sendto(b"from a", plans[0].endpoints[b.public])
    data, source = b.sock.recvfrom(100)
    assert data == b"from a"
    b.sock.sendto(b"from b", source)
    assert a.sock.recvfrom(100)[0] == b"from b"
    poll(lambda: a.pool.peer_counters()[b.public] == (6, 6), 10,
         lambda: f"A's relayed byte counters (rx, tx) = (6, 6): {a.pool.peer_counters()}")

    # the pair is relayed (engines on the proxies); the chosen relay stops answering
    current = {a.public: plans[0].endpoints[b.public], b.public: plans[1].endpoints[a.public]}
    _plans(a, b, current)                                   # probes are asked for
    dead = next(s for s, r in zip(servers, relays) if r.name == name)
    dead.stop()
    started = time.monotonic()

    def moved():
        pa, pb = _plans(a, b, current)
        return (pa, pb) if pa.names.get(b.public) not in (None, name) and \
            pb.names.get(a.public) == pa.names.get(b.public) else None

    pa, pb = poll(moved, 30, f"both ends to leave relay {name}", interval=0.1)
    elapsed = time.monotonic() - started
    assert elapsed < 30
    # the old relay's proxy is now one of the "others": a path there moves at once
    assert current[a.public] in pa.others[b.public]
    a.sock.sendto(b"again", pa.endpoints[b.public])
    assert b.sock.recvfrom(100)[0] == b"again"
    print(f"failover after {elapsed:.2f} s (PROBE_INTERVAL {PROBE_INTERVAL} + DEAD_AFTER {DEAD_AFTER})")
