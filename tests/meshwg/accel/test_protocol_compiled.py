"""The protocol's data-path tests again, with the compiled path sealing and opening
(WireGuardProtocol.fastpath set for every protocol a test makes), and the two paths
against each other: a pair where one side seals in C and the other opens in Python (and
back), encrypt_batch's bytes equal on both paths, hostile datagrams counted alike."""

from __future__ import annotations

import os
from collections import Counter

import pytest

from meshwg import accel
from meshwg.core.send import SendPath
from tests.meshwg.core.harness import established
# The pure Python path runs these in tests/meshwg/core; here they run on the compiled one.
from tests.meshwg.core.test_malformed_sizes import *  # noqa: F401,F403
from tests.meshwg.core.test_protocol import *  # noqa: F401,F403
from tests.meshwg.core.test_protocol_batch import *  # noqa: F401,F403
from tests.meshwg.core.test_send_frames import *  # noqa: F401,F403

fast = accel.select(True, warn=False)
pytestmark = pytest.mark.skipif(fast is None, reason="compiled data path not built")


@pytest.fixture(autouse=True)
def compiled_path(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(SendPath, "fastpath", fast)


def _payloads() -> list[bytes]:
    return [os.urandom(n) for n in (0, 1, 15, 16, 17, 100, 1000, 1380, 1392, 1400)]


@pytest.mark.parametrize("sender_fast,receiver_fast", [(True, False), (False, True)])
def test_one_side_compiled_the_other_python(sender_fast: bool, receiver_fast: bool,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(SendPath, "fastpath", None)
    net, a, b = established()
    a.protocol.fastpath = fast if sender_fast else None
    b.protocol.fastpath = fast if receiver_fast else None
    for sender, receiver in ((a, b), (b, a)):
        packets = [sender.packet_to(receiver, p) for p in _payloads()]
        receiver.received.clear()
        sender.send(*packets)
        net.pump()
        assert [p for _t, p in receiver.received] == packets
    # the compiled objects were made (and used) only on the compiled side
    assert (a.peer(b).current._sealer is not None) == sender_fast
    assert (b.peer(a).current._opener is not None) == receiver_fast


def test_encrypt_batch_bytes_equal_on_both_paths() -> None:
    net, a, b = established()
    packets = [a.packet_to(b, p) for p in _payloads()] + [a.packet_to(b, b"x" * 1300, v6=True)]
    kp = a.peer(b).current
    outputs = []
    for path in (fast, None):
        a.protocol.fastpath = path
        kp.set_counter(5)
        runs = a.protocol.encrypt_batch(packets, net.now, bytearray(65536))
        outputs.append([(bytes(view), size, endpoint) for view, size, endpoint in runs])
    assert outputs[0] == outputs[1] and outputs[0]


def test_hostile_transport_datagrams_counted_alike() -> None:
    """Short, truncated, bad tag, wrong type byte, unknown index, replayed: each path
    drops and counts them the same way."""
    net, a, b = established()
    a.protocol.fastpath = None
    good = [bytes(d) for d, _e in a.protocol.encrypt_packets(
        [a.packet_to(b, os.urandom(n)) for n in (10, 200, 1300)], net.now)]
    hostile = []
    for d in good:
        hostile += [d[:31], d[:-1], d[:16] + bytes(len(d) - 16), d[:-3] + b"abc",
                    b"\x05" + d[1:], d[:1] + b"\x01" + d[2:], d[:4] + b"\xff\xff\xff\xff" + d[8:],
                    d, d]                                 # the last a replay
    counts = []
    for path in (fast, None):
        b.protocol.fastpath = path
        before = Counter(b.protocol.stats)
        kp = b.peer(a).current
        kp.replay.reset()
        delivered = []
        for d in hostile:
            delivered += [bytes(p) for p in b.protocol.receive_batch([(d, len(d), a.address)],
                                                                     net.now)[0]]
        counts.append((Counter(b.protocol.stats) - before, delivered))
    assert counts[0] == counts[1]
    assert len(counts[0][1]) == 3 and counts[0][0]["decrypt_failed"] >= 9
