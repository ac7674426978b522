"""encrypt_batch with TSO frames: an item (segments, size), the packets of one TUN read back
to back (meshwg.tun.tso), gives the same datagrams, runs, counters and bookkeeping as the
same packets one by one; it never crosses REJECT_AFTER_MESSAGES or a keypair change.

Here on the pure Python path; tests/meshwg/accel/test_protocol_compiled.py runs them again
with the compiled path, where a frame is sealed by one Sealer.seal_segments call."""

from __future__ import annotations

import struct

import pytest

from meshwg.core.constants import REJECT_AFTER_MESSAGES, REKEY_AFTER_MESSAGES
from meshwg.core.send import padding, segments_of
from tests.meshwg.core.harness import INITIATION, established


def _frame(sender, receiver, sizes: list[int], seed: int = 0, v6: bool = False) -> tuple:
    """A frame of IP packets from sender to receiver whose payloads have `sizes` bytes
    (every one the same but the last, as a TSO split makes them)."""
    packets = [sender.packet_to(receiver, bytes([(seed + i) & 0xFF]) * n, v6=v6)
               for i, n in enumerate(sizes)]
    return memoryview(b"".join(packets)), len(packets[0])


def _runs(protocol, items, now, **limits) -> list[tuple[bytes, int, object]]:
    runs = protocol.encrypt_batch(items, now, bytearray(1 << 20), **limits)
    return [(bytes(view), size, endpoint) for view, size, endpoint in runs]


def _flat(items) -> list[bytes]:
    return [bytes(p) for item in items for p in segments_of(item)]


def _counters(runs) -> list[int]:
    out = []
    for data, size, _endpoint in runs:
        out += [struct.unpack_from("<Q", data, i + 8)[0] for i in range(0, len(data), size)]
    return out


def _batch(a, b) -> list:
    return [a.packet_to(b, b"lone"),
            _frame(a, b, [1380] * 30 + [200], 1),
            _frame(a, b, [1380] * 44 + [1380], 2),      # last segment as long as the rest
            _frame(a, b, [1000] * 3 + [7], 3, v6=True),
            a.packet_to(b, b"z" * 1380),
            _frame(a, b, [500], 4),                       # a frame of one segment
            _frame(a, b, [1380] * 70 + [3], 5)]           # more than one GSO run


@pytest.mark.parametrize("limits", [{}, {"max_run_datagrams": 4},
                                    {"max_run_bytes": 3 * 1440, "max_run_datagrams": 64},
                                    {"max_run_bytes": 1000}])
def test_frames_give_the_runs_of_their_packets_one_by_one(limits) -> None:
    net, a, b = established()
    items = _batch(a, b)
    kp = a.peer(b).current
    kp.set_counter(11)
    framed = _runs(a.protocol, items, net.now, **limits)
    after_framed = kp.send_next
    kp.set_counter(11)
    flat = _runs(a.protocol, _flat(items), net.now, **limits)
    assert framed == flat
    assert after_framed == kp.send_next == 11 + len(_flat(items))
    assert _counters(framed) == list(range(11, kp.send_next))
    if "max_run_datagrams" in limits:
        assert all(len(data) // size <= limits["max_run_datagrams"] for data, size, _ in framed)
    # and the peer opens every one, in order
    opened = [b.protocol.receive_datagram(data[i:i + size], a.address, net.now)
              for data, size, _ in framed for i in range(0, len(data), size)]
    assert opened == _flat(items)


def test_frame_bookkeeping_equals_one_by_one() -> None:
    results = []
    for framed in (True, False):
        net, a, b = established()
        peer = a.peer(b)
        peer.new_handshake_at = peer.keepalive_at = None
        before = peer.tx_bytes
        items = [_frame(a, b, [1300] * 9 + [40], 9)]
        a.protocol.encrypt_batch(items if framed else _flat(items), net.now)
        results.append((peer.tx_bytes - before, peer.keepalive_at, peer.new_handshake_at is not None,
                        peer.current.send_next))
    assert results[0] == results[1]
    assert results[0][0] == sum(len(p) + padding(len(p), 1420) + 32 for p in _flat(items))


def test_a_frame_in_a_small_buffer_is_not_split_across_buffers() -> None:
    net, a, b = established()
    items = [a.packet_to(b, b"q" * 1380), _frame(a, b, [1380] * 20 + [10], 7)]
    runs = a.protocol.encrypt_batch(items, net.now, bytearray(5000))
    datagrams = [bytes(v)[i:i + s] for v, s, _ in runs for i in range(0, len(v), s)]
    opened = [b.protocol.receive_datagram(d, a.address, net.now) for d in datagrams]
    assert opened == _flat(items)
    # each run lies in one buffer: the first datagram's, then the frame's own
    assert len({v.obj is runs[0][0].obj for v, _, _ in runs}) == 2


def test_a_frame_at_the_counter_limit_seals_up_to_it_and_stages_the_rest() -> None:
    net, a, b = established()
    net.now += 6                                    # past the first handshake's rekey_timeout
    kp = a.peer(b).current
    kp.set_counter(REJECT_AFTER_MESSAGES - 3)
    items = [_frame(a, b, [1200] * 9 + [9], 3)]
    runs = _runs(a.protocol, items, net.now)
    assert _counters(runs) == [REJECT_AFTER_MESSAGES - 3, REJECT_AFTER_MESSAGES - 2,
                               REJECT_AFTER_MESSAGES - 1]
    assert list(a.peer(b).staged) == _flat(items)[3:]
    assert [d for d, _e in a.protocol.take_datagrams() if d[0] == INITIATION]
    # a frame that ends exactly at the limit is sealed whole
    net2, c, d = established()
    net2.now += 6
    c.peer(d).current.set_counter(REJECT_AFTER_MESSAGES - 4)
    runs = _runs(c.protocol, [_frame(c, d, [1200] * 3 + [9], 3)], net2.now)
    assert _counters(runs) == list(range(REJECT_AFTER_MESSAGES - 4, REJECT_AFTER_MESSAGES))
    assert list(c.peer(d).staged) == []


def test_a_frame_crossing_rekey_after_messages_starts_a_handshake() -> None:
    net, a, b = established()
    net.now += 6
    a.peer(b).current.set_counter(REKEY_AFTER_MESSAGES - 2)
    runs = _runs(a.protocol, [_frame(a, b, [1200] * 4 + [9], 3)], net.now)
    assert _counters(runs) == list(range(REKEY_AFTER_MESSAGES - 2, REKEY_AFTER_MESSAGES + 3))
    assert [d for d, _e in a.protocol.take_datagrams() if d[0] == INITIATION]


def test_frames_after_a_keypair_change_use_the_new_keypair_from_counter_zero() -> None:
    net, a, b = established()
    first = a.peer(b).current
    items = [_frame(a, b, [1380] * 5 + [100], 1), a.packet_to(b, b"x")]
    runs = _runs(a.protocol, items, net.now)
    assert {struct.unpack_from("<I", data, 4)[0] for data, _s, _e in runs} == {first.remote_index}
    net.now += 6
    a.initiate(b)                                   # a new handshake: the keypair rotates
    net.pump()
    second = a.peer(b).current
    assert second is not first
    runs = _runs(a.protocol, items, net.now)
    assert {struct.unpack_from("<I", data, 4)[0] for data, _s, _e in runs} == {second.remote_index}
    assert _counters(runs) == list(range(second.send_next - 7, second.send_next))
    opened = [b.protocol.receive_datagram(data[i:i + size], a.address, net.now)
              for data, size, _ in runs for i in range(0, len(data), size)]
    assert opened == _flat(items)


def test_frames_to_two_peers_and_a_peer_without_keypair() -> None:
    net, a, b = established()
    c = net.add_node("c", 3)
    net.connect(a, c)                               # no handshake yet: its frames are staged
    items = [_frame(a, b, [1380] * 3 + [5], 1), _frame(a, c, [1380] * 4 + [6], 2),
             _frame(a, b, [900] * 2 + [8], 3)]
    runs = _runs(a.protocol, items, net.now)
    assert {e for _d, _s, e in runs} == {b.address}
    assert list(a.peer(c).staged) == _flat(items[1:2])
    opened = [b.protocol.receive_datagram(data[i:i + size], a.address, net.now)
              for data, size, _ in runs for i in range(0, len(data), size)]
    assert opened == _flat(items[:1] + items[2:])


def test_a_frame_of_more_segments_than_one_call_seals_goes_packet_by_packet() -> None:
    net, a, b = established()
    items = [_frame(a, b, [0] * 4100, 1)]           # past the compiled path's MAX_RUN (4096)
    kp = a.peer(b).current
    kp.set_counter(5)
    framed = _runs(a.protocol, items, net.now)
    kp.set_counter(5)
    assert framed == _runs(a.protocol, _flat(items), net.now)
    assert len(_counters(framed)) == 4100
