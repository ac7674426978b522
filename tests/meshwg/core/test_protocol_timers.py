"""meshwg.protocol timers: rekey/reject after time and messages, handshake retransmission
and giving up, passive and persistent keepalives, key zeroing.

Two WireGuardProtocol instances wired together in memory (protocol_harness) on a virtual
clock: `run_until(t)` fires every deadline on the way, so the default 120/180/540-second
timers run in milliseconds. Where a test injects shorter durations it says so.
"""

from __future__ import annotations

import pytest

from meshwg.core.constants import (REJECT_AFTER_MESSAGES, REKEY_AFTER_MESSAGES,
                              REKEY_TIMEOUT_JITTER_MAX)
from meshwg.core.timers import Timers
from tests.meshwg.core.harness import (INITIATION, KEEPALIVE_SIZE, RESPONSE, TRANSPORT, Datagram,
                              counter_of, established, pair, seal_raw)

# short sessions: rekey at 20 s, reject at 40 s, so rekey-on-receive at 40 - 10 - 5 = 25 s
SHORT = Timers(rekey_after_time=20, reject_after_time=40)
JITTER = REKEY_TIMEOUT_JITTER_MAX
EPS = 1e-3


def from_node(name: str):
    return lambda d: d.sender == name


def drop_all(d: Datagram) -> bool:
    return True


def times(datagrams: list[Datagram]) -> list[float]:
    return [d.sent_at for d in datagrams]


def gaps(values: list[float]) -> list[float]:
    return [y - x for x, y in zip(values, values[1:])]


# ---------------------------------------------------------------------- rekey / reject: time
def test_initiator_rekeys_when_sending_after_rekey_after_time() -> None:
    net, a, b = established(timers=SHORT)
    t0 = net.now
    first = a.peer(b).current
    net.run_until(t0 + 20 - EPS)
    assert len(a.send(a.packet_to(b, b"young"))) == 1
    assert net.sent(INITIATION, a, since=t0 + EPS) == []

    net.run_until(t0 + 20 + EPS)
    assert len(b.send(b.packet_to(a, b"responder"))) == 1    # the responder does not rekey
    assert net.sent(INITIATION, b) == []
    sealed = a.send(a.packet_to(b, b"old"))
    assert len(sealed) == 1                                  # still sealed with the old key
    assert [d.kind for d in net.wire if d.sender == "a"] == [TRANSPORT, INITIATION]
    net.pump()
    assert a.peer(b).current is not first and a.peer(b).previous is first
    assert b.received[-1][1] == a.packet_to(b, b"old")


def test_nothing_sealed_or_opened_with_a_keypair_older_than_reject_after_time() -> None:
    net, a, b = established(timers=SHORT)
    t0 = net.now
    net.run_until(t0 + 40 - EPS)
    (late,) = b.send(b.packet_to(a, b"sealed at 39.999"))   # b (responder) does not rekey
    net.wire.clear()

    net.run_until(t0 + 40)
    net.deliver(late)                                        # arrives at age 40: refused
    assert a.received == [] and a.stats["expired_keypair"] == 1
    pa, pb = a.peer(b), b.peer(a)
    assert a.send(a.packet_to(b, b"a at 40")) == []          # not sealed: staged
    assert b.send(b.packet_to(a, b"b at 40")) == []
    assert all(d.kind == INITIATION for d in net.wire)
    assert list(pa.staged) == [a.packet_to(b, b"a at 40")]
    net.pump()
    # the staged packets went out under the new sessions
    assert b.received[-1][1] == a.packet_to(b, b"a at 40")
    assert a.received[-1][1] == b.packet_to(a, b"b at 40")
    for d in net.sent(TRANSPORT, since=t0 + 40):
        assert d.data[4:8] != late.data[4:8]
    assert pa.current.created >= t0 + 40 and pb.current.created >= t0 + 40


def test_initiator_rekeys_on_receive_near_reject_after_time() -> None:
    net, a, b = established(timers=SHORT)
    t0 = net.now
    age = SHORT.rekey_on_receive_age
    assert age == 40 - 10 - 5
    net.run_until(t0 + age - EPS)
    b.send(b.packet_to(a, b"before"))
    net.wire.clear()                    # a's own traffic is not the point here
    for d in net.sent(TRANSPORT, b, since=t0 + age - EPS):
        net.deliver(d)
    assert len(a.received) == 1
    assert net.sent(INITIATION, since=t0 + EPS) == []

    net.now = t0 + age + EPS
    (d,) = b.send(b.packet_to(a, b"after"))
    net.wire.remove(d)
    net.deliver(d)
    assert len(a.received) == 2
    assert [x.kind for x in net.sent(INITIATION, since=t0 + EPS)] == [INITIATION]
    assert net.sent(INITIATION, b) == []                    # the responder never does this
    net.pump()
    assert a.peer(b).current.created == pytest.approx(t0 + age + EPS)


# ---------------------------------------------------------------------- rekey / reject: messages
@pytest.mark.parametrize("side", ["initiator", "responder"])
def test_rekey_after_messages(side: str) -> None:
    net, a, b = established()
    sender, receiver = (a, b) if side == "initiator" else (b, a)
    net.now += 6                                  # past the rekey_timeout of the first handshake
    kp = sender.peer(receiver).current
    kp.set_counter(REKEY_AFTER_MESSAGES - 1)
    (d,) = sender.send(sender.packet_to(receiver, b"last before rekey"))
    assert counter_of(d) == REKEY_AFTER_MESSAGES - 1
    assert net.sent(INITIATION, sender, since=net.now) == []
    (d,) = sender.send(sender.packet_to(receiver, b"first over"))
    assert counter_of(d) == REKEY_AFTER_MESSAGES
    assert len(net.sent(INITIATION, sender, since=net.now)) == 1
    net.pump()
    assert [p for _, p in receiver.received][-2:] == [
        sender.packet_to(receiver, b"last before rekey"), sender.packet_to(receiver, b"first over")]
    assert sender.peer(receiver).current is not kp


def test_reject_after_messages() -> None:
    net, a, b = established()
    net.now += 6
    kp = a.peer(b).current
    kp.set_counter(REJECT_AFTER_MESSAGES - 1)
    (d,) = a.send(a.packet_to(b, b"last one"))
    assert counter_of(d) == REJECT_AFTER_MESSAGES - 1
    is_initiation = lambda x: x.kind == INITIATION           # noqa: E731
    net.pump(drop=is_initiation)            # (a also asked for a rekey: that one is lost)
    assert b.received[-1][1] == a.packet_to(b, b"last one")

    # an authenticated message with counter >= REJECT_AFTER_MESSAGES is not opened
    forged = seal_raw(a, b, a.packet_to(b, b"too far"), REJECT_AFTER_MESSAGES)
    assert net.inject(b, forged, a.address) is None
    assert b.stats["expired_keypair"] == 1

    # the sender seals nothing more with it: the packet waits for the next handshake
    assert a.send(a.packet_to(b, b"staged")) == []
    assert list(a.peer(b).staged) == [a.packet_to(b, b"staged")]
    assert a.peer(b).current is kp
    net.advance(6)                          # the retransmitted initiation gets through
    assert b.received[-1][1] == a.packet_to(b, b"staged")
    assert a.peer(b).current is not kp


# ---------------------------------------------------------------------- retransmission
def test_initiation_retransmitted_after_rekey_timeout_plus_jitter() -> None:
    net, a, b = pair()
    t0 = net.now
    a.send(a.packet_to(b))
    first = a.peer(b).retransmit_at
    assert t0 + 5 <= first <= t0 + 5 + JITTER
    net.run_until(first - EPS, drop=drop_all)
    assert len(net.sent(INITIATION, a)) == 1
    net.run_until(t0 + 40, drop=drop_all)
    sent = net.sent(INITIATION, a)
    assert times(sent)[1] == first
    assert len(sent) == 8
    for gap in gaps(times(sent)):
        assert 5 <= gap <= 5 + JITTER
    assert len({d.data[4:8] for d in sent}) == len(sent)           # fresh sender index each
    assert len({d.data[8:40] for d in sent}) == len(sent)          # and fresh ephemeral


def test_retransmission_gives_up_after_rekey_attempt_time() -> None:
    net, a, b = pair()
    t0 = net.now
    packet = a.packet_to(b, b"never delivered")
    a.send(packet)
    net.run_until(t0 + 200, drop=drop_all)
    timers = a.protocol.timers
    sent = net.sent(INITIATION, a)
    assert len(sent) == 1 + timers.max_handshake_attempts == 19
    assert timers.rekey_attempt_time <= sent[-1].sent_at - t0 <= timers.rekey_attempt_time + 18 * JITTER
    assert a.stats["handshake_gave_up"] == 1
    pa = a.peer(b)
    assert len(pa.staged) == 0 and pa.handshake_state is None and pa.retransmit_at is None

    net.run_until(t0 + 400)                     # b reachable again: nothing was kept
    assert len(net.sent(INITIATION, a)) == 19 and b.received == []
    later = a.packet_to(b, b"later")
    a.send(later)                               # new data starts a new attempt
    net.pump()
    assert [p for _, p in b.received] == [later]


def test_at_most_one_initiation_per_rekey_timeout_while_data_keeps_flowing() -> None:
    net, a, b = pair()
    t0 = net.now
    for i in range(300):                        # a packet every 100 ms for 30 s, b silent
        net.run_until(t0 + i * 0.1, drop=drop_all)
        a.send(a.packet_to(b, b"%d" % i))
    sent = times(net.sent(INITIATION, a))
    assert 5 <= len(sent) <= 7
    assert min(gaps(sent)) >= 5
    assert a.stats["handshake_gave_up"] == 0


def test_jitter_is_within_a_third_of_a_second_and_scales_with_rekey_timeout() -> None:
    samples = [Timers().jitter() for _ in range(2000)]
    assert min(samples) >= 0 and max(samples) <= JITTER and max(samples) > 0.25
    short = [Timers(rekey_timeout=1).jitter() for _ in range(2000)]
    assert max(short) <= JITTER / 5


# ---------------------------------------------------------------------- keepalives
def test_passive_keepalive_when_data_received_and_nothing_sent() -> None:
    net, a, b = established()
    t1 = net.now + 1
    net.run_until(t1)
    a.send(a.packet_to(b))
    net.run_until(t1 + 10 - EPS)
    assert net.sent(TRANSPORT, b, since=t1) == []
    net.run_until(t1 + 10 + EPS)
    (ka,) = net.sent(TRANSPORT, b, since=t1)
    assert len(ka.data) == KEEPALIVE_SIZE and ka.sent_at == pytest.approx(t1 + 10)
    assert a.stats["keepalives_received"] == 1 and a.received == []
    net.run_until(t1 + 100)                      # one keepalive per burst of data, no more
    assert len(net.sent(TRANSPORT, b, since=t1)) == 1
    assert net.sent(INITIATION, since=t1) == []  # the keepalive satisfied a's timer


def test_no_passive_keepalive_when_data_goes_back() -> None:
    net, a, b = established()
    t1 = net.now + 1
    net.run_until(t1)
    a.send(a.packet_to(b))
    net.run_until(t1 + 3)
    b.send(b.packet_to(a, b"answer"))
    net.run_until(t1 + 11)
    assert [len(d.data) > KEEPALIVE_SIZE for d in net.sent(TRANSPORT, b, since=t1)] == [True]


def test_new_handshake_when_data_sent_and_nothing_received() -> None:
    net, a, b = established()
    t1 = net.now + 1
    net.run_until(t1)
    a.send(a.packet_to(b))
    drop_b = from_node("b")                      # b -> a is cut
    net.run_until(t1 + 15 - EPS, drop=drop_b)
    assert net.sent(INITIATION, a, since=t1) == []
    net.run_until(t1 + 15 + JITTER + EPS, drop=drop_b)
    (init,) = net.sent(INITIATION, a, since=t1)
    assert t1 + 15 <= init.sent_at <= t1 + 15 + JITTER
    # once b can answer, the new handshake completes
    net.run_until(t1 + 40)
    assert a.peer(b).current.created >= t1 + 15


def test_persistent_keepalive_every_interval_of_silence_and_at_once_when_enabled() -> None:
    # (everything within REKEY_AFTER_TIME: an older keypair would also rekey on send)
    net, a, b = established()
    t1 = net.now + 1
    net.run_until(t1)
    received_before = b.stats["keepalives_received"]
    a.protocol.set_persistent_keepalive(a.peer(b), 25, net.now)
    net.collect()
    assert [len(d.data) for d in net.sent(TRANSPORT, a, since=t1)] == [KEEPALIVE_SIZE]
    net.run_until(t1 + 75 + EPS)
    kas = net.sent(TRANSPORT, a, since=t1)
    assert all(len(d.data) == KEEPALIVE_SIZE for d in kas)
    assert times(kas) == pytest.approx([t1, t1 + 25, t1 + 50, t1 + 75])
    assert b.stats["keepalives_received"] - received_before == 4

    # what a sends resets the interval, what it receives does not: a's data at +80 makes
    # b send a passive keepalive at +90, and a's next persistent keepalive is due at +105
    net.run_until(t1 + 80)
    a.send(a.packet_to(b))
    net.run_until(t1 + 116)
    assert times(net.sent(TRANSPORT, b, since=t1 + 76)) == pytest.approx([t1 + 90])
    assert times(net.sent(TRANSPORT, a, since=t1 + 76)) == pytest.approx([t1 + 80, t1 + 105])

    a.protocol.set_persistent_keepalive(a.peer(b), 0, net.now)   # off: silence
    net.run_until(t1 + 300)
    assert net.sent(since=t1 + 116) == []


def test_persistent_keepalive_on_both_ends_of_an_idle_pair_flows_both_ways() -> None:
    # wireguard-go postpones the persistent keepalive on receive too, so the end whose
    # timer fires first silences the other for good (on a real link latency decides;
    # here b's longer interval does): one end then hears nothing, and a mesh member
    # would take its working path for a silent one (and the silent end's NAT mapping
    # lives only as long as its NAT refreshes on inbound packets)
    net, a, b = established()
    t1 = net.now + 1
    net.run_until(t1)
    a.protocol.set_persistent_keepalive(a.peer(b), 10, net.now)
    b.protocol.set_persistent_keepalive(b.peer(a), 15, net.now)
    net.run_until(t1 + 600)                      # idle, rekeys included
    for node, interval in ((a, 10), (b, 15)):
        sent = times(net.sent(sender=node, since=t1))   # keepalives and rekey handshakes
        assert len(net.sent(TRANSPORT, node, since=t1)) >= 600 // interval - 5
        assert max(gaps(sent + [t1 + 600])) <= interval + EPS


def test_persistent_keepalive_without_session_starts_handshake() -> None:
    net, a, b = pair()
    a.protocol.set_persistent_keepalive(a.peer(b), 25, net.now)
    net.pump()
    assert [d.kind for d in net.log] == [INITIATION, RESPONSE, TRANSPORT]
    assert len(net.log[2].data) == KEEPALIVE_SIZE
    assert b.peer(a).current is not None


# ---------------------------------------------------------------------- key zeroing
def test_keys_zeroed_after_three_times_reject_after_time() -> None:
    net, a, b = established()
    t0 = net.now
    limit = 3 * a.protocol.timers.reject_after_time
    assert limit == 540
    kps = a.peer(b).keypairs() + b.peer(a).keypairs()
    net.run_until(t0 + limit - EPS)
    assert a.peer(b).current is not None and b.peer(a).current is not None
    net.run_until(t0 + limit + EPS)
    for node, other in ((a, b), (b, a)):
        assert node.peer(other).keypairs() == []
        assert node.protocol.keypairs_by_index == {}
        assert node.stats["keys_zeroed"] == 1
    assert all(kp.send_aead is None and kp.receive_aead is None for kp in kps)
    # traffic afterwards starts from a fresh handshake
    a.send(a.packet_to(b, b"after zeroing"))
    net.pump()
    assert b.received[-1][1] == a.packet_to(b, b"after zeroing")


def test_new_handshake_postpones_key_zeroing() -> None:
    net, a, b = established()
    t0 = net.now
    net.run_until(t0 + 300)
    a.initiate(b)
    net.pump()
    net.run_until(t0 + 600)                       # past t0 + 540, before t0 + 840
    assert a.peer(b).current is not None and b.peer(a).current is not None
    net.run_until(t0 + 840 + EPS)
    assert a.peer(b).keypairs() == [] and b.peer(a).keypairs() == []


# ---------------------------------------------------------------------- timer values
def test_timer_overrides_are_validated() -> None:
    t = Timers().with_overrides({"rekey_after_time": 3, "reject_after_messages": 1000})
    assert t.rekey_after_time == 3.0 and t.reject_after_messages == 1000
    assert t.reject_after_time == 180
    with pytest.raises(ValueError, match="unknown timer 'rekey_after'"):
        Timers().with_overrides({"rekey_after": 3})
    with pytest.raises(ValueError, match="rekey_timeout must be positive"):
        Timers().with_overrides({"rekey_timeout": 0})
    assert Timers().max_handshake_attempts == 18
    assert Timers().rekey_on_receive_age == 165
