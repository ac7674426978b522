"""Relay choice (discovery.relay.choice), free of I/O: both ends of a pair rank the relays
alike, member relays carry pairs before the rendezvous's, a pair's own member relays only
when it is the only one, a pair stays on the relay its engine uses while that answers, and
a relay that stops answering binds is left within PROBE_INTERVAL + DEAD_AFTER seconds."""

from __future__ import annotations

from discovery.relay.choice import (DEAD_AFTER, MAX_RELAYS, PROBE_INTERVAL, Relay, RelayHealth,
                                    choose, ranking, usable_relays)

A, B = b"a" * 32, b"b" * 32
RDV = Relay(b"r" * 32, ("198.18.0.10", 51821), "rendezvous", rendezvous=True)
P1 = Relay(b"p" * 32, ("198.18.0.20", 51831), "p1")
P2 = Relay(b"q" * 32, ("198.18.0.21", 51832), "p2")
OWN = Relay(A, ("198.18.0.22", 51833), "a")         # member A itself offers a relay
T0 = 1000.0


def test_both_ends_of_a_pair_compute_the_same_ranking() -> None:
    relays = [RDV, P1, P2, OWN]
    assert ranking(A, B, relays) == ranking(B, A, list(reversed(relays)))


def test_member_relays_rank_before_the_rendezvous_and_the_pair_s_own_member_last() -> None:
    order = ranking(A, B, [OWN, RDV, P1, P2])
    assert set(order[:2]) == {P1, P2}
    assert order[2:] == [RDV, OWN]


def test_pairs_spread_over_the_member_relays() -> None:
    members = [bytes([i]) * 32 for i in range(1, 21)]
    firsts = {ranking(x, y, [P1, P2])[0].name for x in members for y in members if x < y}
    assert firsts == {"p1", "p2"}


def test_choose_takes_the_best_live_relay_and_none_when_none_answers() -> None:
    relays = [RDV, P1, P2]
    best, second = ranking(A, B, relays)[:2]
    alive = {r.public_key for r in relays}
    assert choose(A, B, relays, alive) == best
    assert choose(A, B, relays, alive - {best.public_key}) == second
    assert choose(A, B, relays, {RDV.public_key}) == RDV
    assert choose(A, B, relays, set()) is None
    assert choose(A, B, relays, set(), current=P2.public_key) == P2     # nothing better: stay


def test_choose_stays_on_the_relay_in_use_while_it_answers() -> None:
    """The other end moved first (roaming already points our engine at that relay's
    proxy): we answer through it rather than moving back."""
    relays = [RDV, P1, P2]
    best, second = ranking(A, B, relays)[:2]
    alive = {r.public_key for r in relays}
    assert choose(A, B, relays, alive, current=second.public_key) == second
    assert choose(A, B, relays, alive - {second.public_key}, current=second.public_key) == best


def test_a_pair_on_the_rendezvous_relay_moves_to_a_member_relay_once_it_answers() -> None:
    relays = [RDV, P1]
    assert choose(A, B, relays, {RDV.public_key}) == RDV                   # P1 not known yet
    assert choose(A, B, relays, {RDV.public_key, P1.public_key}, current=RDV.public_key) == P1
    assert choose(B, A, relays, {RDV.public_key, P1.public_key}, current=P1.public_key) == P1
    assert choose(A, B, relays, {RDV.public_key}, current=P1.public_key) == RDV   # P1 died


def test_a_pair_s_own_member_relays_it_only_when_it_is_the_only_relay() -> None:
    relays = [OWN, RDV]
    assert choose(A, B, relays, {OWN.public_key, RDV.public_key}, current=OWN.public_key) == RDV
    assert choose(A, B, relays, {OWN.public_key}, current=None) == OWN
    assert choose(B, A, relays, {OWN.public_key}) == OWN


def test_usable_relays_puts_the_rendezvous_first_dedupes_and_caps() -> None:
    members = [Relay(bytes([i]) * 32, ("198.18.0.30", 1000 + i), f"m{i}") for i in range(10, 0, -1)]
    chosen = usable_relays([*members, RDV, members[0]])
    assert len(chosen) == MAX_RELAYS and chosen[0] == RDV
    assert [r.name for r in chosen[1:]] == ["m1", "m2", "m3"]     # smallest keys: same set everywhere


def test_relay_is_alive_while_binds_are_answered_and_down_after_dead_after() -> None:
    health = RelayHealth()
    key = P1.public_key
    assert not health.alive(key, None, T0)                       # never answered
    assert health.alive(key, T0, T0)                             # answered, never asked since
    assert health.probes_due([key], {key: T0}, T0) == [key]
    health.asked(key, T0 + 1)
    assert health.alive(key, T0, T0 + 1 + DEAD_AFTER - 0.1)        # unanswered, not for long
    assert not health.alive(key, T0, T0 + 1 + DEAD_AFTER)          # unanswered DEAD_AFTER: down
    assert health.alive(key, T0 + 1.05, T0 + 1 + DEAD_AFTER)       # answered: up again
    assert health.probes_due([key], {key: T0}, T0 + 10) == []      # the client retries by itself


def test_probes_come_every_probe_interval_and_the_deadline_covers_the_verdict() -> None:
    health = RelayHealth()
    key = P1.public_key
    assert health.next_deadline([key], {key: T0}, T0) == T0        # never asked: at once
    health.asked(key, T0)
    # unanswered: the verdict can change when DEAD_AFTER ends
    assert health.next_deadline([key], {key: T0 - 5}, T0) == T0 + DEAD_AFTER
    # answered: the next probe
    assert health.next_deadline([key], {key: T0 + 0.01}, T0 + 0.01) == T0 + PROBE_INTERVAL
    assert health.probes_due([key], {key: T0 + 0.01}, T0 + PROBE_INTERVAL - 0.1) == []
    assert health.probes_due([key], {key: T0 + 0.01}, T0 + PROBE_INTERVAL) == [key]
    # down: looked at again every PROBE_INTERVAL for the answer to the client's retries
    assert health.next_deadline([key], {key: T0 - 5}, T0 + 10) == T0 + 10 + PROBE_INTERVAL
    health.forget_others([])
    assert health.alive(key, T0 - 5, T0 + 10)                     # forgotten: no verdict held


def test_failover_both_ends_leave_a_dead_relay_for_the_same_one() -> None:
    """The relay both ends use stops answering: each end, on its own, finds it down within
    PROBE_INTERVAL + DEAD_AFTER and picks the same next relay."""
    relays = [RDV, P1, P2]
    first = choose(A, B, relays, {r.public_key for r in relays})
    ends = {A: RelayHealth(), B: RelayHealth()}
    for end in ends.values():
        end.asked(first.public_key, T0 + PROBE_INTERVAL)          # the relay died just before
    later = T0 + PROBE_INTERVAL + DEAD_AFTER
    picks = set()
    for me, other in ((A, B), (B, A)):       # every relay last answered at T0
        alive = {r.public_key for r in relays if ends[me].alive(r.public_key, T0, later)}
        assert first.public_key not in alive
        picks.add(choose(me, other, relays, alive, current=first.public_key))
    assert len(picks) == 1 and picks.pop() not in (first, None)
