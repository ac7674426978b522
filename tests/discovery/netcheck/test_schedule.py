"""When a member runs netcheck by itself (discovery.netcheck.schedule): no sockets, no clock."""

from discovery.netcheck.schedule import (FRESH, MIN_GAP, PERIOD, RETRY, SETTLE, START_DELAY,
                                         NetcheckSchedule)


def test_without_a_recent_report_the_first_check_comes_just_after_start():
    assert NetcheckSchedule(1000.0, None).due == 1000.0 + START_DELAY
    old = NetcheckSchedule(100_000.0, 100_000.0 - FRESH - 1)
    assert old.due == 100_000.0 + START_DELAY
    future = NetcheckSchedule(1000.0, 5000.0)         # a clock that went back: not fresh
    assert future.due == 1000.0 + START_DELAY


def test_a_recent_report_waits_for_its_period():
    assert NetcheckSchedule(1000.0, 900.0).due == 900.0 + PERIOD


def test_after_a_check_the_next_comes_a_period_later_and_failures_back_off():
    s = NetcheckSchedule(0.0, None)
    s.ran(10.0, found=True)
    assert s.due == 10.0 + PERIOD
    s.ran(20.0, found=False)
    assert s.due == 20.0 + RETRY
    s.ran(100.0, found=False)
    assert s.due == 100.0 + 2 * RETRY
    for _ in range(20):
        s.ran(200.0, found=False)
    assert s.due == 200.0 + PERIOD                  # never rarer than the period
    s.ran(300.0, found=True)
    s.ran(400.0, found=False)
    assert s.due == 400.0 + RETRY                   # a success resets the back-off


def test_an_address_change_brings_the_check_forward_at_most_once_per_gap():
    s = NetcheckSchedule(0.0, None)
    s.ran(10.0, found=True)
    s.addresses_changed(1000.0)
    assert s.due == 1000.0 + SETTLE
    s.ran(1002.0, found=True)
    s.addresses_changed(1003.0)                     # again at once: not before the gap
    assert s.due == 1002.0 + MIN_GAP
    s.addresses_changed(1004.0)
    assert s.due == 1002.0 + MIN_GAP
    late = NetcheckSchedule(0.0, None)              # a change never postpones a check
    late.addresses_changed(0.0)
    assert late.due == START_DELAY
