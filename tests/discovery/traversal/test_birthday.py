"""The birthday-paradox planner (discovery.traversal.birthday): who tries, in which role,
when, for how long, how often, and what it asks the engine for. No I/O."""

from __future__ import annotations

import random

import pytest

from meshwg.device.api import PeerUpdate

from discovery.dnssd.member import MemberRecord
from discovery.traversal import birthday
from discovery.traversal.birthday import (
    EASY, EASY_DELAY, EASY_WINDOW, HARD, HARD_WINDOW, HIT_PROBE_INTERVAL, PROBES, RELEASE_AFTER,
    RETRY_MAX, RETRY_START, SOCKETS, START_AFTER, BirthdayPlanner, Pair, add_probes,
    hit_probability, nat_kind, pairs_from, role,
)
from discovery.traversal.paths import Candidates, PathManager

K = b"k" * 32
K2 = b"m" * 32
EASY_EP = ("198.18.2.1", 51823)       # the easy peer's reflexive endpoint
HARD_EP = ("198.18.3.1", 61000)       # the hard peer's (useless) reflexive endpoint
PROXY = ("127.0.0.1", 45000)
T0 = 1_000_000.0


def _stuck(peer_nat: str, endpoint=EASY_EP, since: float = T0) -> Pair:
    return Pair(peer_nat, endpoint, since)


def test_roles_need_one_hard_and_one_easy_side() -> None:
    assert role(HARD, EASY) == HARD
    assert role(EASY, HARD) == EASY
    assert role(HARD, HARD) is None and role(EASY, EASY) is None
    assert role(None, HARD) is None and role(EASY, None) is None
    assert nat_kind(True) == HARD and nat_kind(False) == EASY and nat_kind(None) is None


def test_hit_probability_matches_the_published_birthday_figures() -> None:
    assert hit_probability(256, 256) == pytest.approx(0.64, abs=0.01)
    assert hit_probability(256, 1024) == pytest.approx(0.98, abs=0.01)
    assert hit_probability(SOCKETS, PROBES) > 0.99
    assert hit_probability(0, 100) == 0.0 and hit_probability(10, 64_600) == 1.0


def test_draw_ports_are_distinct_and_in_range() -> None:
    ports = birthday.draw_ports(random.Random(1))
    assert len(ports) == PROBES == len(set(ports))
    assert all(1024 <= p <= 65535 for p in ports)


def test_the_hard_side_opens_sockets_towards_the_easy_reflexive_after_start_after() -> None:
    planner = BirthdayPlanner(HARD)
    step = planner.step(T0 + START_AFTER - 0.1, {K: _stuck(EASY)}, {}, {})
    assert step.start == [] and step.next_deadline == pytest.approx(T0 + START_AFTER)
    step = planner.step(T0 + START_AFTER, {K: _stuck(EASY)}, {}, {})
    [attempt] = step.start
    assert (attempt.role, attempt.target, attempt.sockets) == (HARD, EASY_EP, SOCKETS)
    assert attempt.ends == T0 + START_AFTER + HARD_WINDOW
    assert step.next_deadline == attempt.ends
    # nothing new while it runs
    assert planner.step(T0 + START_AFTER + 1, {K: _stuck(EASY)}, {}, {}).start == []


def test_the_easy_side_sprays_the_hard_public_ip_after_a_delay() -> None:
    planner = BirthdayPlanner(EASY, random.Random(7))
    step = planner.step(T0 + START_AFTER, {K: _stuck(HARD, HARD_EP)}, {}, {})
    [attempt] = step.start
    assert attempt.role == EASY and attempt.target == (HARD_EP[0], 0)
    assert len(attempt.ports) == PROBES
    assert attempt.spray_at == T0 + START_AFTER + EASY_DELAY
    assert attempt.ends == T0 + START_AFTER + EASY_WINDOW
    # the hard side's sockets wait longer than the easy side sprays
    assert HARD_WINDOW > EASY_WINDOW


@pytest.mark.parametrize("own, peer", [(HARD, HARD), (EASY, EASY), (None, HARD), (HARD, None)])
def test_no_attempt_without_one_hard_and_one_easy_side(own, peer) -> None:
    planner = BirthdayPlanner(own)
    step = planner.step(T0 + 100, {K: _stuck(peer)}, {}, {})
    assert step.start == [] and step.next_deadline is None


def test_no_attempt_while_a_direct_path_works_or_without_the_peer_endpoint() -> None:
    planner = BirthdayPlanner(HARD)
    assert planner.step(T0 + 100, {K: Pair(EASY, EASY_EP, None)}, {}, {}).start == []
    assert planner.step(T0 + 100, {K: Pair(EASY, None, T0)}, {}, {}).start == []


def test_a_direct_path_during_the_attempt_ends_it_as_a_success() -> None:
    planner = BirthdayPlanner(HARD)
    planner.step(T0 + START_AFTER, {K: _stuck(EASY)}, {}, {})
    step = planner.step(T0 + 6, {K: Pair(EASY, EASY_EP, None)}, {K: PROXY}, {K: PROXY})
    assert step.end == [K] and step.release == []
    assert planner.peers[K].successes == 1 and planner.attempt(K) is None
    assert planner.peers[K].last_success_after == pytest.approx(T0 + 6 - (T0 + START_AFTER))


def test_a_failed_attempt_ends_releases_and_backs_off_exponentially() -> None:
    planner = BirthdayPlanner(HARD)
    start = T0 + START_AFTER
    planner.step(start, {K: _stuck(EASY)}, {}, {})
    step = planner.step(start + HARD_WINDOW, {K: _stuck(EASY)}, {}, {})
    assert step.end == [K] and step.start == []
    assert step.next_deadline == start + HARD_WINDOW + RETRY_START
    again = start + HARD_WINDOW + RETRY_START
    assert planner.step(again - 0.1, {K: _stuck(EASY)}, {}, {}).start == []
    assert len(planner.step(again, {K: _stuck(EASY)}, {}, {}).start) == 1
    # the second failure waits twice as long, up to RETRY_MAX
    step = planner.step(again + HARD_WINDOW, {K: _stuck(EASY)}, {}, {})
    assert step.next_deadline == again + HARD_WINDOW + 2 * RETRY_START
    for _ in range(20):
        planner.peers[K].retry = min(RETRY_MAX, planner.peers[K].retry * 2)
    assert planner.peers[K].retry == RETRY_MAX


def test_a_failed_attempt_with_a_hit_that_never_worked_closes_the_found_path() -> None:
    planner = BirthdayPlanner(HARD)
    start = T0 + START_AFTER
    planner.step(start, {K: _stuck(EASY)}, {}, {})
    step = planner.step(start + HARD_WINDOW, {K: _stuck(EASY)}, {K: PROXY}, {})
    assert step.end == [K] and step.release == [K]


def test_a_hit_asks_for_handshakes_through_the_proxy_until_the_pair_is_direct() -> None:
    planner = BirthdayPlanner(HARD)
    start = T0 + START_AFTER
    planner.step(start, {K: _stuck(EASY)}, {}, {})
    step = planner.step(start + 2, {K: _stuck(EASY)}, {K: PROXY}, {})
    assert step.probes == {K: [PROXY]}
    assert step.next_deadline == start + 2 + HIT_PROBE_INTERVAL
    assert planner.step(start + 2.5, {K: _stuck(EASY)}, {K: PROXY}, {}).probes == {}
    assert planner.step(start + 3, {K: _stuck(EASY)}, {K: PROXY}, {}).probes == {K: [PROXY]}


def test_at_most_max_hard_hard_attempts_at_once() -> None:
    planner = BirthdayPlanner(HARD)
    keys = [bytes([i]) * 32 for i in range(birthday.MAX_HARD + 1)]
    pairs = {key: _stuck(EASY, ("198.18.9.9", 1 + i)) for i, key in enumerate(keys)}
    step = planner.step(T0 + START_AFTER, pairs, {}, {})
    assert len(step.start) == birthday.MAX_HARD
    first = step.start[0].key
    other = next(key for key in keys if key not in {a.key for a in step.start})
    # when the first succeeds, the other one starts
    pairs[first] = Pair(EASY, pairs[first].peer_endpoint, None)
    step = planner.step(T0 + START_AFTER + 5, pairs, {}, {})
    assert step.end == [first] and [a.key for a in step.start] == [other]


def test_an_unused_found_path_is_released_after_release_after() -> None:
    planner = BirthdayPlanner(HARD)
    planner.step(T0 + START_AFTER, {K: _stuck(EASY)}, {}, {})
    direct = {K: Pair(EASY, EASY_EP, None)}
    planner.step(T0 + 6, direct, {K: PROXY}, {K: PROXY})           # success
    step = planner.step(T0 + 10, direct, {K: PROXY}, {K: PROXY})
    assert step.release == [] and step.next_deadline is None
    # the engine moved elsewhere (a LAN path, the relay): the proxy goes after a while
    step = planner.step(T0 + 20, direct, {K: PROXY}, {K: ("10.0.0.2", 1)})
    assert step.release == [] and step.next_deadline == T0 + 20 + RELEASE_AFTER
    step = planner.step(T0 + 20 + RELEASE_AFTER, direct, {K: PROXY}, {K: ("10.0.0.2", 1)})
    assert step.release == [K]


def test_a_peer_that_left_ends_its_attempt_and_closes_its_path() -> None:
    planner = BirthdayPlanner(HARD)
    planner.step(T0 + START_AFTER, {K: _stuck(EASY)}, {}, {})
    step = planner.step(T0 + 5, {}, {K: PROXY}, {})
    assert step.end == [K] and step.release == [K] and K not in planner.peers


def test_pairs_from_reads_the_nat_key_and_the_path_managers_probing_time() -> None:
    paths = PathManager()
    paths.update_candidates(K, Candidates(reflexive=EASY_EP), T0)
    paths.observe(K, None, None, 0, T0)
    paths.probes_due(T0)                         # probing starts now
    directory = {K: MemberRecord(K, EASY_EP, ["10.99.0.2/32"], extra={"nat": EASY}),
                 K2: MemberRecord(K2, None, ["10.99.0.3/32"])}
    pairs = pairs_from(directory, paths, T0 + 1)
    assert pairs[K] == Pair(EASY, EASY_EP, T0)
    assert pairs[K2] == Pair(None, None, None)


def test_add_probes_replaces_a_probe_round_or_adds_an_update() -> None:
    other = ("198.18.2.1", 51823)
    relay = ("127.0.0.1", 40999)
    k3 = b"n" * 32
    peers = [PeerUpdate(public_key=K, update_only=True, probe_endpoints=[other, relay]),
             PeerUpdate(public_key=K2, persistent_keepalive=10),
             PeerUpdate(public_key=k3, update_only=True, endpoint=relay, probe_endpoints=[relay])]
    add_probes(peers, {K: [PROXY], K2: [PROXY], k3: [PROXY]})
    # only the found path: an initiation also sent through the relay could be answered
    # there first, and the copy through the proxy would be a replay
    assert peers[0].probe_endpoints == [PROXY]
    assert peers[1].probe_endpoints == []
    # a move onto the relay goes alone (the planner asks again a second later)
    assert peers[2].probe_endpoints == [relay]
    assert peers[3] == PeerUpdate(public_key=K2, update_only=True, probe_endpoints=[PROXY])
    assert len(peers) == 4
