"""meshwg.ratelimiter.RateLimiter: burst, refill, per-source buckets, garbage collection.
Time is injected; nothing sleeps."""

from __future__ import annotations

import ipaddress

import pytest

from meshwg.core.ratelimiter import GC_BATCH, RateLimiter

A = ipaddress.ip_address("192.0.2.1").packed
B = ipaddress.ip_address("192.0.2.2").packed
T0 = 5000.0


def _burst(limiter: RateLimiter, source: bytes, now: float, tries: int = 50) -> int:
    """How many of `tries` packets at the same instant pass."""
    return sum(limiter.allow(source, now) for _ in range(tries))


def test_burst_then_refusal():
    limiter = RateLimiter()
    results = [limiter.allow(A, T0) for _ in range(7)]
    assert results == [True] * 5 + [False] * 2


@pytest.mark.parametrize("rate,burst", [(20, 5), (10, 1), (100, 30)])
def test_burst_size_follows_parameters(rate, burst):
    assert _burst(RateLimiter(rate=rate, burst=burst), A, T0) == burst


def test_refill_over_time():
    limiter = RateLimiter(rate=20, burst=5)
    assert _burst(limiter, A, T0) == 5
    assert not limiter.allow(A, T0 + 0.049)            # less than 1/20 s: no new token
    assert limiter.allow(A, T0 + 0.051)                # one token earned
    assert not limiter.allow(A, T0 + 0.051)
    assert _burst(limiter, A, T0 + 0.051 + 0.1) == 2   # 0.1 s = two tokens
    assert _burst(limiter, A, T0 + 0.9) == 5           # capped at the burst


def test_steady_rate_is_sustained():
    limiter = RateLimiter(rate=20, burst=5)
    assert _burst(limiter, A, T0) == 5
    passed = sum(limiter.allow(A, T0 + i * 0.01) for i in range(1, 101))  # 100 Hz for 1 s
    assert 19 <= passed <= 21                          # 20 per second, give or take the edge


def test_sources_are_independent():
    limiter = RateLimiter()
    assert _burst(limiter, A, T0) == 5
    assert _burst(limiter, B, T0) == 5
    assert not limiter.allow(A, T0)
    assert len(limiter) == 2


def test_ipv6_grouped_by_64():
    limiter = RateLimiter()
    same_64 = [ipaddress.ip_address(f"2001:db8:1:2::{i:x}").packed for i in range(1, 8)]
    assert [limiter.allow(addr, T0) for addr in same_64] == [True] * 5 + [False] * 2
    other_64 = ipaddress.ip_address("2001:db8:1:3::1").packed
    assert limiter.allow(other_64, T0)
    assert len(limiter) == 2


def test_idle_entries_are_collected():
    limiter = RateLimiter()
    assert _burst(limiter, A, T0) == 5
    assert len(limiter) == 1
    limiter.allow(B, T0 + 0.5)
    assert len(limiter) == 2                           # A idle for only 0.5 s
    limiter.allow(B, T0 + 1.2)
    assert len(limiter) == 1                           # A idle > 1 s: gone, B kept
    assert _burst(limiter, A, T0 + 1.2) == 5           # A starts over with a full burst


def test_refused_packets_keep_an_entry_alive():
    limiter = RateLimiter()
    _burst(limiter, A, T0)
    for step in range(1, 30):                          # A keeps hammering every 0.5 s
        limiter.allow(A, T0 + step * 0.5)
    limiter.allow(B, T0 + 15.2)
    assert len(limiter) == 2


def test_collection_cost_is_bounded_per_call():
    limiter = RateLimiter()
    sources = [ipaddress.ip_address(f"10.0.{i // 256}.{i % 256}").packed for i in range(100)]
    for source in sources:
        limiter.allow(source, T0)
    assert len(limiter) == 100
    limiter.allow(A, T0 + 2)
    assert len(limiter) == 100 - GC_BATCH + 1          # only a batch collected per call
    for i in range(100):
        limiter.allow(A, T0 + 2 + i * 0.001)
    assert len(limiter) == 1                           # repeated calls drain the rest
    for source in sources:
        limiter.allow(source, T0 + 3)
    limiter.collect(T0 + 10)
    assert len(limiter) == 0


def test_table_limit_refuses_new_sources():
    limiter = RateLimiter(max_entries=2)
    assert limiter.allow(A, T0)
    assert limiter.allow(B, T0)
    third = ipaddress.ip_address("192.0.2.3").packed
    assert not limiter.allow(third, T0)
    assert limiter.allow(A, T0)                        # known sources still served
    assert limiter.allow(third, T0 + 2)                # room again after collection


def test_time_going_backwards_does_not_mint_tokens():
    limiter = RateLimiter()
    assert _burst(limiter, A, T0) == 5
    assert not limiter.allow(A, T0 - 10)
    assert not limiter.allow(A, T0 - 10)


def test_invalid_parameters():
    with pytest.raises(ValueError):
        RateLimiter(rate=0)
    with pytest.raises(ValueError):
        RateLimiter(burst=0)
