"""What the core tells the mesh about a path (issue 9 case 3): PathUnanswered when data
went out and nothing authenticated came back for Timers.unanswered_after, ProbeAnswered
for every answered probe, and probes that do not move a working endpoint (probe(hold=True)
on the prober, roam_on_initiation=False on the responder). Virtual clock, no I/O."""

from __future__ import annotations

from meshwg.core.events import EndpointChanged, PathUnanswered, ProbeAnswered
from meshwg.core.timers import Timers

from tests.meshwg.core.harness import TRANSPORT, Network

STRANGER = ("198.51.100.7", 7000)      # relays the handshake between two other addresses
CANDIDATE = ("203.0.113.9", 9000)      # where a probes b (the stranger's claim)


def _pair(unanswered_after: float = 1.0, keepalive: int = 0):
    net = Network()
    timers = Timers(unanswered_after=unanswered_after)
    a = net.add_node("a", 1, timers=timers)
    b = net.add_node("b", 2, timers=timers)
    net.connect(a, b)
    if keepalive:
        for me, other in ((a, b), (b, a)):
            me.protocol.set_persistent_keepalive(me.peer(other), keepalive, net.now)
    a.send(a.packet_to(b))
    net.pump()
    assert a.peer(b).current is not None
    net.advance(1.0)      # past the responder's initiation flood guard
    a.events.clear()
    b.events.clear()
    return net, a, b


def _unanswered(node) -> list[PathUnanswered]:
    return [e for e in node.events if isinstance(e, PathUnanswered)]


def test_data_without_an_answer_is_reported_after_unanswered_after() -> None:
    net, a, b = _pair()
    from_b = lambda d: d.sender == "b"  # noqa: E731 - b's path back to a is cut
    t0 = net.now
    a.send(a.packet_to(b))
    net.pump(from_b)
    net.run_until(t0 + 0.9, from_b)
    assert _unanswered(a) == []
    a.send(a.packet_to(b))
    net.run_until(t0 + 1.05, from_b)
    (event,) = _unanswered(a)
    assert event.public_key == b.public_key and event.endpoint == b.address
    # data still going out unanswered: reported again, with the silence so far
    a.send(a.packet_to(b))
    net.run_until(t0 + 2.2, from_b)
    assert len(_unanswered(a)) == 2 and _unanswered(a)[1].silent_for > 2.0


def test_answered_data_and_idle_keepalives_are_not_reported() -> None:
    net, a, b = _pair(keepalive=10)
    for _ in range(20):                       # a ping both ways every 0.5 s
        a.send(a.packet_to(b))
        b.send(b.packet_to(a))
        net.advance(0.5)
    net.advance(60.0)                         # then idle: persistent keepalives only
    assert _unanswered(a) == [] and _unanswered(b) == []


def test_off_by_default() -> None:
    net, a, b = _pair(unanswered_after=0.0)
    a.send(a.packet_to(b))
    net.advance(5.0, lambda d: d.sender == "b")
    assert _unanswered(a) == []


def _probe_through_stranger(hold: bool, responder_roams: bool):
    """a probes CANDIDATE; the initiation reaches b from the STRANGER's address, b's
    answer reaches a from CANDIDATE (a stranger relaying the handshake)."""
    net, a, b = _pair()
    b.protocol.roam_on_initiation = responder_roams
    assert a.protocol.probe(a.peer(b), [CANDIDATE], net.now, hold=hold)
    (initiation,) = a.protocol.take_datagrams()
    net.inject(b, initiation[0], STRANGER)
    (response,) = [d for d in net.wire if d.sender == "b"]
    net.wire.remove(response)
    assert response.destination == STRANGER       # answered where it came from
    net.now += 0.04
    net.inject(a, response.data, CANDIDATE)
    net.pump()
    return net, a, b


def test_a_held_probe_is_reported_and_moves_neither_endpoint() -> None:
    net, a, b = _probe_through_stranger(hold=True, responder_roams=False)
    assert a.peer(b).endpoint == b.address and b.peer(a).endpoint == a.address
    (answered,) = [e for e in a.events if isinstance(e, ProbeAnswered)]
    assert answered.endpoint == CANDIDATE and abs(answered.rtt - 0.04) < 1e-6
    assert not [e for e in a.events + b.events if isinstance(e, EndpointChanged)]
    # the new session works on the old path: a's data reaches b from a's own address
    a.send(a.packet_to(b, b"after"))
    net.pump()
    assert b.received[-1][1].endswith(b"after") and b.peer(a).endpoint == a.address
    assert all(d.destination in (a.address, b.address)
               for d in net.sent(TRANSPORT) if d.sent_at >= net.now)


def test_an_unheld_probe_roams_as_before() -> None:
    net, a, b = _probe_through_stranger(hold=False, responder_roams=True)
    assert a.peer(b).endpoint == CANDIDATE and b.peer(a).endpoint == STRANGER
    assert [e.endpoint for e in a.events if isinstance(e, ProbeAnswered)] == [CANDIDATE]


def test_a_responder_that_holds_moves_with_transport_data() -> None:
    net, a, b = _pair()
    b.protocol.roam_on_initiation = False
    new_address = ("192.0.2.77", 4444)
    net.move(a, new_address)                 # a rebinds and re-handshakes from there
    a.initiate(b)
    net.pump()
    assert b.peer(a).endpoint == new_address  # its confirming keepalive moved b


def test_a_moved_endpoint_is_announced_and_pinned_against_the_old_path() -> None:
    net, a, b = _pair()
    relay = ("127.0.0.1", 40999)              # where b's packets on the old path come from
    new_path = ("203.0.113.50", 5000)
    net.listening[new_path] = b
    a.protocol.move_endpoint(a.peer(b), new_path, net.now, pin=2.0)
    net.collect()
    (keepalive,) = net.wire
    assert keepalive.destination == new_path and keepalive.kind == TRANSPORT
    # something b sent before it followed, arriving from elsewhere, does not move a back
    (late,) = b.send(b.packet_to(a, b"late"))
    net.wire.clear()
    net.inject(a, late.data, relay)
    assert a.received[-1][1].endswith(b"late") and a.peer(b).endpoint == new_path
    net.now += 2.5                            # after the pin, roaming works as before
    (later,) = b.send(b.packet_to(a, b"later"))
    net.wire.clear()
    net.inject(a, later.data, relay)
    assert a.peer(b).endpoint == relay


def test_the_last_packet_of_an_exchange_is_answered_before_it_counts() -> None:
    net, a, b = _pair()
    for _ in range(5):                        # a ping and its reply, then nothing
        a.send(a.packet_to(b))
        net.pump()
        b.send(b.packet_to(a))
        net.advance(0.2)
    net.advance(5.0)                          # b's reply was the last data: a answers it
    assert _unanswered(a) == [] and _unanswered(b) == []
