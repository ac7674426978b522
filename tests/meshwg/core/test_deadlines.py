"""The deadline heap (meshwg.core.deadlines) finds exactly what a scan of every peer finds."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.meshwg.core import harness as harness
from meshwg.core.deadlines import DeadlineQueue
from meshwg.core.peer import TIMER_FIELDS, Peer
from meshwg.core.protocol import WireGuardProtocol
from meshwg.core.timers import Timers

N_PEERS = 6
times = st.floats(min_value=0.0, max_value=100.0, allow_nan=False)
ops = st.lists(st.one_of(
    st.tuples(st.just("arm"), st.integers(0, N_PEERS - 1), st.sampled_from(TIMER_FIELDS), times),
    st.tuples(st.just("disarm"), st.integers(0, N_PEERS - 1), st.sampled_from(TIMER_FIELDS)),
    st.tuples(st.just("detach"), st.integers(0, N_PEERS - 1)),
    st.tuples(st.just("attach"), st.integers(0, N_PEERS - 1)),
    st.tuples(st.just("tick"), times),
), max_size=60)


def scan_earliest(peers: list[Peer]) -> float | None:
    deadlines = [d for p in peers if (d := p.next_deadline()) is not None]
    return min(deadlines) if deadlines else None


def scan_due(peers: list[Peer], now: float) -> list[Peer]:
    return [p for p in peers if (d := p.next_deadline()) is not None and d <= now]


@settings(max_examples=300, deadline=None)
@given(ops)
def test_queue_agrees_with_a_scan(script) -> None:
    queue = DeadlineQueue()
    peers = [Peer(bytes([i]) * 32) for i in range(N_PEERS)]
    for i, peer in enumerate(peers):
        peer.order = i
        queue.attach(peer)
    attached = set(range(N_PEERS))
    for op in script:
        kind, args = op[0], op[1:]
        if kind == "arm":
            setattr(peers[args[0]], args[1], args[2])
        elif kind == "disarm":
            setattr(peers[args[0]], args[1], None)
        elif kind == "detach":
            queue.detach(peers[args[0]])
            attached.discard(args[0])
        elif kind == "attach" and args[0] not in attached:
            queue.attach(peers[args[0]])
            attached.add(args[0])
        elif kind == "tick":
            now = args[0]
            live = [peers[i] for i in sorted(attached)]
            expected = scan_due(live, now)
            assert queue.take_due(now) == expected
            for peer in expected:                 # what _tick_peer does, in short
                for name in TIMER_FIELDS:
                    t = getattr(peer, name)
                    if t is not None and t <= now:
                        setattr(peer, name, None)
                queue.requeue(peer)
        live = [peers[i] for i in sorted(attached)]
        assert queue.earliest() == scan_earliest(live)


def test_stale_entries_do_not_pile_up() -> None:
    """A timer pushed later on every packet (persistent keepalive) keeps one live entry."""
    queue = DeadlineQueue()
    peer = Peer(bytes(32))
    queue.attach(peer)
    for i in range(1000):
        peer.persistent_keepalive_at = 100.0 + i
    assert len(queue) == 1 and queue.earliest() == 1099.0


class ScanProtocol(WireGuardProtocol):
    """The reference: next_deadline and tick by scanning every peer, as before the heap."""

    def next_deadline(self) -> float | None:
        return scan_earliest(list(self.peers.values()))

    def tick(self, now: float) -> None:
        for peer in list(self.peers.values()):
            self._tick_peer(peer, now)


def run_mesh(protocol_class: type, monkeypatch: pytest.MonkeyPatch) -> list[tuple]:
    """Five nodes in a full mesh with short timers, persistent keepalives on some links,
    data bursts and a lossy wire; returns what went over the wire, in order."""
    monkeypatch.setattr(harness, "WireGuardProtocol", protocol_class)
    random.seed(7)                                   # timer jitter
    timers = Timers().with_overrides({"rekey_after_time": 20, "reject_after_time": 30,
                                      "rekey_timeout": 2, "keepalive_timeout": 3,
                                      "rekey_attempt_time": 9})
    net = harness.Network()
    nodes = [net.add_node(f"n{i}", i + 1, timers=timers) for i in range(5)]
    for i, a in enumerate(nodes):
        for b in nodes[i + 1:]:
            net.connect(a, b)
    nodes[0].protocol.set_persistent_keepalive(nodes[0].peer(nodes[1]), 4, net.now)
    nodes[2].protocol.set_persistent_keepalive(nodes[2].peer(nodes[4]), 7, net.now)
    nodes[4].protocol.set_persistent_keepalive(nodes[4].peer(nodes[1]), 5, net.now)
    lonely = nodes[0].protocol.add_peer(bytes(range(32)))   # no endpoint: its keepalive never
    nodes[0].protocol.set_persistent_keepalive(lonely, 3, net.now)   # goes out, tick re-arms it
    seen = [0]

    def lossy(d: harness.Datagram) -> bool:
        seen[0] += 1
        return seen[0] % 9 == 0

    for step in range(40):
        sender, receiver = nodes[step % 5], nodes[(step * 3 + 1) % 5]
        if sender is not receiver:
            sender.send(sender.packet_to(receiver, b"x" * step))
        if step == 20:                               # n3 goes silent: handshakes to it time out
            net.move(nodes[3], ("198.51.100.9", 1))
        net.run_until(net.now + 1.7, drop=lossy)
    return [(round(d.sent_at, 9), d.sender, d.kind, d.destination, len(d.data)) for d in net.log] + \
        [tuple(sorted(n.stats.items())) for n in nodes]


def test_protocol_fires_the_same_timers_as_a_scan(monkeypatch) -> None:
    reference = run_mesh(ScanProtocol, monkeypatch)
    ours = run_mesh(WireGuardProtocol, monkeypatch)
    assert len(reference) > 100
    assert ours == reference
