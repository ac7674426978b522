"""Several rendezvous relays in one member's pool (issue 10): the relay of each rendezvous a
member keeps a tunnel to joins the pool in the rendezvous class. Both ends of a pair rank
them alike (BLAKE2s within the class, member relays before them), a pair whose other end's
datagrams came through one of them stays there, the set is bounded by MAX_RELAYS, a
rendezvous dropped takes its relay out of the pool (the fixed one, the rendezvous enrolled
at, stays), and when the relay carrying a pair stops answering both ends move to the other
rendezvous's relay within PROBE_INTERVAL + DEAD_AFTER (real relay servers and clients on
loopback, no namespaces)."""

from __future__ import annotations

import time

import pytest

from meshwg.core import crypto

from discovery.lab.netns import poll
from discovery.relay.choice import (DEAD_AFTER, MAX_RELAYS, PROBE_INTERVAL, Relay, choose, ranking,
                                    usable_relays)
from discovery.relay.client import RelayClient
from discovery.relay.server import RelayServer
from tests.discovery.relay import test_pool as pool_test
from tests.discovery.relay.test_pool import _plans

A, B = b"a" * 32, b"b" * 32
R1 = Relay(b"r" * 32, ("198.18.0.10", 51822), "rendezvous", rendezvous=True)
R2 = Relay(b"s" * 32, ("198.18.0.11", 51831), "rendezvous 198.18.0.11:51830", rendezvous=True,
           tls=(("198.18.0.11", 443), b"\x01" * 32))
R3 = Relay(b"t" * 32, ("198.18.0.12", 51841), "rendezvous 198.18.0.12:51840", rendezvous=True)
P1 = Relay(b"p" * 32, ("198.18.0.20", 51851), "p1")
P2 = Relay(b"q" * 32, ("198.18.0.21", 51852), "p2")


def test_two_rendezvous_relays_rank_alike_on_both_ends_after_member_relays() -> None:
    for relays in ([R1, R2], [R2, R1, P1], [P1, R2, P2, R1]):
        order = ranking(A, B, relays)
        assert order == ranking(B, A, list(reversed(relays)))
        members = [r for r in relays if not r.rendezvous]
        assert set(order[:len(members)]) == set(members)
        assert set(order[len(members):]) == {R1, R2}
    # within the class the order is the BLAKE2s order of the pair's keys and the relay's,
    # so pairs spread over the rendezvous relays
    firsts = {ranking(bytes([i]) * 32, bytes([i + 100]) * 32, [R1, R2])[0] for i in range(40)}
    assert firsts == {R1, R2}


def test_usable_relays_keeps_every_rendezvous_relay_first_and_caps() -> None:
    many = [Relay(bytes([i]) * 32, ("198.18.0.30", 52000 + i), f"m{i}") for i in range(6)]
    used = usable_relays([*many, R3, R1, R2])
    assert len(used) == MAX_RELAYS
    assert used[:3] == [R1, R2, R3]                     # by key within the class
    assert used[3] == many[0]
    assert usable_relays([R2, R1]) == usable_relays([R1, R2])


def test_a_pair_moves_to_the_other_rendezvous_relay_when_one_dies() -> None:
    first = ranking(A, B, [R1, R2])[0]
    other = R2 if first == R1 else R1
    alive = {R1.public_key, R2.public_key}
    assert choose(A, B, [R1, R2], alive) == choose(B, A, [R2, R1], alive) == first
    alive.discard(first.public_key)
    assert choose(A, B, [R1, R2], alive, current=first.public_key) == other
    assert choose(B, A, [R2, R1], alive, current=first.public_key) == other
    # back alive: the pair stays where it is (same class, both ends there)
    alive.add(first.public_key)
    assert choose(A, B, [R1, R2], alive, current=other.public_key) == other


def test_ends_knowing_different_rendezvous_reply_through_the_shared_one() -> None:
    # A keeps R1 and R2, B keeps R1 and R3: B sends through R1 (its datagrams came through
    # R1, so A's engine points at R1's proxy): A stays there though R2 may rank first
    alive_a, alive_b = {R1.public_key, R2.public_key}, {R1.public_key, R3.public_key}
    assert choose(A, B, [R1, R2], alive_a, current=R1.public_key) == R1
    assert choose(B, A, [R1, R3], alive_b, current=R1.public_key) == R1
    # a member relay both know still wins over either (better class)
    assert choose(A, B, [R1, R2, P1], alive_a | {P1.public_key}, current=R1.public_key) == P1


class _End(pool_test._End):
    """A member (test_pool's: an engine stand-in and its relay pool), with the relay of
    the rendezvous it enrolled at fixed (a client it owns, as the member daemon does)."""

    def __init__(self, enrolled: RelayServer):
        super().__init__()
        endpoint = ("127.0.0.1", enrolled.port)
        self.fixed = RelayClient(self.private, enrolled.public_key, endpoint,
                                 self.pool.engine_port).start()
        self.pool.add_fixed(Relay(enrolled.public_key, endpoint, "rendezvous", rendezvous=True),
                            self.fixed)

    def close(self) -> None:
        self.pool.stop()
        self.fixed.stop()
        self.sock.close()


@pytest.fixture
def mesh():
    ends: list[_End] = []
    servers = [RelayServer(crypto.generate_private_key(), host="127.0.0.1").start() for _ in range(2)]
    try:
        ends = [_End(servers[0]), _End(servers[0])]
        for server in servers:
            server.set_members([end.public for end in ends])
        second = Relay(servers[1].public_key, ("127.0.0.1", servers[1].port),
                       f"rendezvous 127.0.0.1:{servers[1].port - 1}", rendezvous=True)
        a, b = ends
        a.pool.set_peers([b.public])
        b.pool.set_peers([a.public])
        for end in ends:
            end.pool.set_relays([second])          # the other kept rendezvous's relay
        yield a, b, servers, second
    finally:
        for end in ends:
            end.close()
        for server in servers:
            server.stop()


def test_pair_relayed_by_one_rendezvous_moves_to_the_other_when_it_dies(mesh) -> None:
    a, b, servers, second = mesh

    def chosen():
        pa, pb = _plans(a, b, {})
        bound = all(row["bound"] for end in (a, b) for row in end.pool.status())
        return (pa, pb) if bound and b.public in pa.names else None

    pa, pb = poll(chosen, 10, "both pools to bind at both rendezvous relays")
    rows = {row["name"]: row for row in a.pool.status()}
    assert set(rows) == {"rendezvous", second.name}
    assert all(row["rendezvous"] and row["alive"] and row["transport"] == "udp" for row in rows.values())
    name = pa.names[b.public]
    assert pb.names[a.public] == name                   # both ends on one rendezvous relay
    a.sock.sendto(b"via one", pa.endpoints[b.public])
    data, source = b.sock.recvfrom(100)
    assert data == b"via one"

    current = {a.public: pa.endpoints[b.public], b.public: source}
    _plans(a, b, current)                               # relayed: probes asked for
    dead = servers[0] if name == "rendezvous" else servers[1]
    dead.stop()                                         # that rendezvous is killed
    started = time.monotonic()

    def moved():
        pa, pb = _plans(a, b, current)
        return (pa, pb) if pa.names.get(b.public) not in (None, name) and \
            pb.names.get(a.public) == pa.names.get(b.public) else None

    pa, pb = poll(moved, 30, f"both ends to leave the relay of {name}", interval=0.1)
    elapsed = time.monotonic() - started
    assert current[a.public] in pa.others[b.public]     # the dead one's proxy: moved at once
    a.sock.sendto(b"via the other", pa.endpoints[b.public])
    assert b.sock.recvfrom(100)[0] == b"via the other"
    b.sock.sendto(b"back", pb.endpoints[a.public])
    assert a.sock.recvfrom(100)[0] == b"back"
    assert not {row["name"]: row for row in a.pool.status()}[name]["alive"]
    print(f"moved to the other rendezvous relay after {elapsed:.2f} s "
          f"(PROBE_INTERVAL {PROBE_INTERVAL} + DEAD_AFTER {DEAD_AFTER})")


def test_a_dropped_rendezvous_takes_its_relay_out_but_the_fixed_one_stays(mesh) -> None:
    a, b, servers, second = mesh
    client = a.pool.clients[second.public_key]
    a.pool.set_relays([])                               # the second rendezvous no longer kept
    assert set(a.pool.clients) == {servers[0].public_key}
    assert a.pool.clients[servers[0].public_key] is a.fixed
    assert client._stopping                             # its client stopped
    plan = a.pool.plan({b.public: None}, time.time())
    assert plan.names.get(b.public) in (None, "rendezvous")
    a.pool.set_relays([second])                         # kept again: a new client binds
    assert a.pool.clients[second.public_key] is not client
    poll(lambda: all(row["bound"] for row in a.pool.status()), 10, "A to bind at both again")
