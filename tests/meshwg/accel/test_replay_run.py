"""The replay window applied in compiled code (meshwg.accel replay_run, and open_run with
the window passed in) against meshwg.core.replay.ReplayWindow.check: the same accept or
reject for every counter, in the same order, and the same window afterwards, for hostile
counters (at and past the limit, huge jumps, far behind, duplicates, any order); and
receive_batch deciding and counting a hostile UDP GRO run alike on both paths."""

from __future__ import annotations

import os
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from meshwg import accel
from meshwg.core.constants import REJECT_AFTER_MESSAGES
from meshwg.core.crypto import Aead
from meshwg.core.messages import transport_header
from meshwg.core.replay import WINDOW_SIZE, ReplayWindow
from tests.meshwg.core.harness import established
from tests.meshwg.core.test_replay import TABLE

fast = accel.select(True, warn=False)
pytestmark = pytest.mark.skipif(fast is None, reason="compiled data path not built")

R = REJECT_AFTER_MESSAGES
# counters near the interesting edges: 0, block and window edges, the limit, 2**64 - 1
edges = st.sampled_from([0, 1, 63, 64, 127, 128, WINDOW_SIZE - 1, WINDOW_SIZE,
                         WINDOW_SIZE + 1, WINDOW_SIZE + 64, 128 * 64, 129 * 64,
                         R - 2, R - 1, R, R + 1, 2**64 - 1])
counters = st.one_of(edges, st.integers(0, 3 * WINDOW_SIZE), st.integers(0, 2**64 - 1))


def python_run(window: ReplayWindow, run: list[int]) -> list[bool]:
    return [window.check(c) for c in run]


def compiled_run(window: ReplayWindow, run: list[int]) -> list[bool]:
    window.last, fresh = fast.replay_run(window.ring, window.last, window.limit, run)
    return fresh


def _state(window: ReplayWindow) -> tuple[int, list[int]]:
    return window.last, list(window.ring)


def receive_on_both_paths(net, a, b, batch) -> list[tuple]:
    """b's receive_batch of the same `batch` (from a) on the compiled, then the pure Python
    path, each from a reset replay window and a's endpoint: per path the drops counted,
    the packets delivered, the replay window and a's endpoint afterwards."""
    outcomes = []
    for path in (fast, None):
        b.protocol.fastpath = path
        kp = b.peer(a).current
        kp.replay.reset()
        b.peer(a).endpoint = a.address
        before = Counter(b.protocol.stats)
        packets, _h = b.protocol.receive_batch(batch, net.now)
        outcomes.append((Counter(b.protocol.stats) - before, [bytes(p) for p in packets],
                         _state(kp.replay), b.peer(a).endpoint))
    return outcomes


def test_the_kernel_table_in_one_run_and_one_by_one() -> None:
    expected = [accept for _step, _counter, accept in TABLE]
    run = [counter for _step, counter, _accept in TABLE]
    window = ReplayWindow()
    assert compiled_run(window, run) == expected
    window = ReplayWindow()
    assert [compiled_run(window, [c])[0] for c in run] == expected


@settings(max_examples=300, deadline=None)
@given(st.lists(st.lists(counters, max_size=60), max_size=6), st.sampled_from([R, 10**6, 1]))
def test_same_decisions_and_window_as_python(runs, limit) -> None:
    """Runs in turn on one window: each run's decisions and the window after it equal
    ReplayWindow.check's, whichever path decided the runs before."""
    py, c = ReplayWindow(limit), ReplayWindow(limit)
    for run in runs:
        assert compiled_run(c, run) == python_run(py, run)
        assert _state(c) == _state(py)
    # and the Python path goes on from the window the compiled one left
    follow = [0, 5, c.last, c.last + 1, c.last - WINDOW_SIZE]
    assert python_run(c, [x for x in follow if x >= 0]) == python_run(py, [x for x in follow
                                                                            if x >= 0])


@settings(max_examples=100, deadline=None)
@given(st.integers(0, 2**40), st.permutations(list(range(40))), st.lists(st.integers(0, 39)))
def test_reordered_and_duplicated_runs(base, order, dups) -> None:
    run = [base + i for i in order] + [base + i for i in dups]
    py, c = ReplayWindow(), ReplayWindow()
    assert compiled_run(c, run) == python_run(py, run)
    assert _state(c) == _state(py)


def test_hostile_arguments_refused_and_window_untouched() -> None:
    window = ReplayWindow()
    python_run(window, [5, 100, 9000])
    before = _state(window)
    for bad in ([1, -1], [1, 2**64], [1, "x"], [1, None]):
        with pytest.raises((OverflowError, TypeError, ValueError)):
            fast.replay_run(window.ring, window.last, window.limit, bad)
        assert _state(window) == before
    with pytest.raises(ValueError):
        fast.replay_run(bytearray(1023), 0, R, [1])
    with pytest.raises(ValueError):
        fast.replay_run(window.ring, 0, R, [0] * (fast.MAX_RUN + 1))
    with pytest.raises(TypeError):
        fast.replay_run(bytes(1024), 0, R, [1])               # read-only state
    with pytest.raises(TypeError):                             # a window needs all its state
        fast.Opener(bytes(32)).open_run(bytes(64), 0, 64, 64, 1, bytearray(64), 0,
                                        window.ring, 0)


def _sealed(key: bytes, receiver: int, counter: int, plain: bytes) -> bytes:
    return transport_header(receiver, counter) + Aead(key).seal(counter, plain)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.one_of(st.integers(0, 300), edges), st.booleans()),
                min_size=1, max_size=50),
       st.integers(0, 2**64 - 1))
def test_open_run_with_window_decides_as_python(messages, expire) -> None:
    """open_run(..., ring, last, limit, expire): per datagram -3 (counter >= expire, not
    opened), -1 (tag), -2 (replayed) or the plaintext, as the Python loop decides
    (expiry, decrypt, ReplayWindow.check) and the same window afterwards."""
    key = os.urandom(32)
    plain = os.urandom(48)
    data = bytearray()
    for counter, corrupt in messages:
        msg = bytearray(_sealed(key, 9, counter, plain))
        if corrupt:
            msg[20] ^= 1
        data += msg
    size = 16 + 48 + 16
    py, c = ReplayWindow(), ReplayWindow()
    expected = []
    for counter, corrupt in messages:
        if counter >= expire:
            expected.append(-3)
        elif corrupt:
            expected.append(-1)
        else:
            expected.append(48 if py.check(counter) else -2)
    out = bytearray(len(data))
    stop, results, c.last = fast.Opener(key).open_run(data, 0, len(data), size, 9, out, 0,
                                                      c.ring, c.last, c.limit, expire)
    assert stop == len(data)
    assert [plen for _c, _at, plen in results] == expected
    assert [counter for counter, _at, _plen in results] == [m[0] for m in messages]
    assert _state(c) == _state(py)
    for _counter, at, plen in results:
        if plen > 0:
            assert bytes(out[at:at + plen]) == plain


def test_receive_batch_hostile_gro_run_alike_on_both_paths() -> None:
    """One UDP GRO run holding replays, reordering, bad tags and a counter past the
    limit: both paths deliver the same packets and count the same drops, and leave the
    same replay window."""
    net, a, b = established()
    a.protocol.fastpath = None
    kp_a = a.peer(b).current
    packet = a.packet_to(b, os.urandom(1000))     # 1028 bytes: no padding
    key = kp_a._keys.send
    sealed = {c: _sealed(key, kp_a.remote_index, c, packet)
              for c in (0, 1, 2, 3, 200, 9000, R - 1, R)}
    bad = bytearray(sealed[3])
    bad[40] ^= 1
    order = [sealed[c] for c in (1, 0, 1, 2, 200, 3, 9000, 2, 0, R - 1, R, 200)] + [bytes(bad)]
    run = b"".join(order)
    size = len(order[0])
    assert all(len(d) == size for d in order)
    results = receive_on_both_paths(net, a, b, [(run, size, a.address)])
    assert results[0] == results[1]
    drops, delivered, _window, _endpoint = results[0]
    assert delivered == [packet] * 7                       # 1, 0, 2, 200, 3, 9000, R - 1
    # replayed: 1, 2, 0 again and 200 (now far behind R - 1); R is past the limit
    assert drops["replayed"] == 4 and drops["expired_keypair"] == 1
    assert drops["decrypt_failed"] == 1


def test_receive_batch_out_buffer_full_falls_back_one_datagram() -> None:
    """A run whose plaintexts do not fit in the caller's buffer: open_run takes what fits,
    the datagram that does not goes the Python way into a new buffer, the rest again in C."""
    net, a, b = established()
    a.protocol.fastpath = None
    packets = [a.packet_to(b, bytes([i]) * 1300) for i in range(6)]
    datagrams = [bytes(d) for d, _e in a.protocol.encrypt_packets(packets, net.now)]
    size = len(datagrams[0])
    b.protocol.fastpath = fast
    got, _h = b.protocol.receive_batch([(b"".join(datagrams), size, a.address)], net.now,
                                       bytearray(3000))
    assert [bytes(p) for p in got] == packets
