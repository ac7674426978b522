"""meshwg.replay.ReplayWindow against the kernel/wireguard-go replay test table."""

from __future__ import annotations

import pytest

from meshwg.core.constants import REJECT_AFTER_MESSAGES
from meshwg.core.replay import WINDOW_SIZE, ReplayWindow

W = WINDOW_SIZE
R = REJECT_AFTER_MESSAGES
A, X = True, False   # accept / reject

# (step, counter, expected) from wireguard-go replay/replay_test.go (kernel selftest/counter.c)
TABLE = [
    (1, 0, A), (2, 1, A), (3, 1, X), (4, 9, A), (5, 8, A), (6, 7, A), (7, 7, X),
    (8, 8129, A), (9, 8128, A), (10, 8128, X), (11, 8127, A), (12, 2, A), (13, 2, X),
    (14, 8145, A), (15, 3, X), (16, 8145, X), (17, 32516, A), (18, 24388, A),
    (19, 10, X), (20, 24387, X), (21, 24386, X), (22, 24389, A), (23, 24388, X), (24, 0, X),
    (25, R, X), (26, R - 1, A), (27, R, X), (28, R - 1, X), (29, R - 2, A), (30, R + 1, X),
    (31, R + 2, X), (32, R - 2, X), (33, R - 3, A), (34, 0, X),
]


def test_constants():
    assert W == 8128
    assert R == 2**64 - 2**13 - 1


def test_table_in_order():
    window = ReplayWindow()
    results = [(step, counter, window.check(counter)) for step, counter, _ in TABLE]
    assert results == [(step, counter, expected) for step, counter, expected in TABLE]


def test_reset_forgets_everything():
    window = ReplayWindow()
    for _, counter, _ in TABLE:
        window.check(counter)
    window.reset()
    assert window.check(0)
    assert window.check(1)
    assert not window.check(1)


def _fresh() -> ReplayWindow:
    return ReplayWindow()


def test_bulk_1_to_w_then_0():
    window = _fresh()
    assert all(window.check(i) for i in range(1, W + 1))
    assert window.check(0)
    assert not window.check(0)
    assert not window.check(0)


def test_bulk_2_to_w_plus_1_then_1_and_0():
    window = _fresh()
    assert all(window.check(i) for i in range(2, W + 2))
    assert window.check(1)
    assert not window.check(0)


def test_bulk_descending_from_w_plus_1():
    window = _fresh()
    assert all(window.check(i) for i in range(W + 1, 0, -1))


def test_bulk_descending_from_w_plus_2_then_0():
    window = _fresh()
    assert all(window.check(i) for i in range(W + 2, 1, -1))
    assert not window.check(0)


def test_bulk_descending_from_w_then_w_plus_1_and_0():
    window = _fresh()
    assert all(window.check(i) for i in range(W, 0, -1))
    assert window.check(W + 1)
    assert not window.check(0)


def test_bulk_descending_from_w_then_0_and_w_plus_1():
    window = _fresh()
    assert all(window.check(i) for i in range(W, 0, -1))
    assert window.check(0)
    assert window.check(W + 1)


@pytest.mark.parametrize("jump", [64, 8128, 8192, 10**6, 2**40])
def test_big_jump(jump):
    window = _fresh()
    assert window.check(5)
    top = 5 + jump
    assert window.check(top)
    assert not window.check(top)
    assert not window.check(5)                      # a replay, or now too old
    if top - W - 1 >= 0:
        assert not window.check(top - W - 1)        # just behind the window
    edge = top - W
    if edge >= 0 and edge != 5:
        assert window.check(edge)                   # the oldest counter still in the window


def test_negative_counter_refused():
    assert not _fresh().check(-1)
