"""discovery.daemons.member.read_pace: directory reads come `interval` apart on average,
READ_BURST (3) in a row after a quiet spell (a member that joined with us is listed just
after our first reads: its NOTIFY is read at once, not an interval later). No I/O."""

from __future__ import annotations

import pytest

from discovery.daemons.member import READ_BURST, read_pace


def _reads(times: list[float], interval: float = 1.0) -> list[float]:
    """When each wanted read (at `times`) happens, each at once when allowed."""
    tokens, last, not_before, done = READ_BURST, float("-inf"), 0.0, []
    for t in times:
        t = max(t, not_before)
        tokens, wait = read_pace(tokens, t - last, interval)
        last, not_before = t, t + wait
        done.append(t)
    return done


def test_first_read_and_two_notifies_right_after_it_come_at_once() -> None:
    assert _reads([0.0, 0.05, 0.1]) == [0.0, 0.05, 0.1]


def test_a_storm_of_notifies_is_read_interval_apart() -> None:
    reads = _reads([0.0, 0.05, 0.1, 0.15, 0.2, 0.25])
    assert reads == pytest.approx([0.0, 0.05, 0.1, 1.0, 2.0, 3.0])
    # over any long run the rate is one read per interval (plus the burst)
    many = _reads([i * 0.01 for i in range(1000)])
    assert len([t for t in many if t <= 100.0]) <= 100 + READ_BURST


def test_the_burst_comes_back_after_quiet() -> None:
    reads = _reads([0.0, 0.05, 0.1, 0.15, 30.0, 30.05, 30.1])
    assert reads[4:] == [30.0, 30.05, 30.1]


def test_no_interval_no_pacing() -> None:
    assert read_pace(0.0, 0.0, 0.0) == (READ_BURST, 0.0)
