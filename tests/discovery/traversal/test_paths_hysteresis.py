"""Hysteresis and fast fallback in path choice (issue 9 case 3; discovery.traversal.paths):
a working path is kept when a candidate answers, unless the candidate ranks better and
keeps answering over a trial; a path with data unanswered for ~1 s (the engine's
PathUnanswered) falls back to the relay at once and comes back only by trial. No I/O."""

from __future__ import annotations

import ipaddress

from meshwg.device.api import DeviceStatus, PeerStatus

from discovery.dnssd.member import MemberRecord
from discovery.traversal.paths import (FALSE_ALARM_WINDOW, FAST_PROBE_MAX, TRIAL_ANSWERS,
                                       TRIAL_INTERVAL, TRIAL_SPAN, TRIAL_TIMEOUT, Candidates,
                                       PathManager)
from discovery.traversal.reconcile import MemberReconciler

K = b"k" * 32
RDV = b"r" * 32
PROXY = ("127.0.0.1", 40999)
REFLEXIVE = ("198.18.3.1", 1234)
LAN = ("192.168.1.20", 51820)
STRANGER = ("192.168.1.66", 51820)
T0 = 1_000_000.0


def _working(candidates: Candidates, endpoint, relay=PROXY) -> tuple[PathManager, float]:
    """A pair working on `endpoint` (handshake and rx at T0)."""
    paths = PathManager([ipaddress.ip_network("192.168.1.0/24")], silence_timeout=25.0)
    paths.update_candidates(K, candidates, T0)
    paths.set_relay(K, relay, "rendezvous")
    paths.observe(K, endpoint, T0, 1000, T0)
    assert paths.is_working(K, T0)
    return paths, T0


def _tick(paths: PathManager, now: float, rx: int, endpoint) -> dict:
    """One reconciliation's worth: observe (traffic flowing), then what is due."""
    paths.observe(K, endpoint, T0, rx, now)
    moves = paths.moves_due(now)
    return {"moves": moves, "probes": {} if K in moves else paths.probes_due(now)}


def test_a_working_lan_path_ignores_a_stranger_claiming_the_peer() -> None:
    paths, now = _working(Candidates(lan=[LAN]), LAN)
    paths.probe_answered(K, LAN, 0.002, now)
    paths.update_candidates(K, Candidates(lan=[LAN, STRANGER]), now + 1)
    for i in range(1, 30):                         # 30 s of a working LAN path
        due = _tick(paths, now + i, 1000 + i, LAN)
        assert due["moves"] == {} and K not in due["probes"], due
    # a stranger relaying a handshake answers slower (same rank): never on trial
    for i in range(10):
        paths.probe_answered(K, STRANGER, 0.004, now + 30 + i)
        assert paths.moves_due(now + 30 + i) == {}
    assert paths.peers[K].trial is None


def test_a_better_candidate_is_adopted_only_after_answering_over_a_trial() -> None:
    paths, now = _working(Candidates(reflexive=REFLEXIVE), REFLEXIVE)
    paths.update_candidates(K, Candidates(lan=[LAN], reflexive=REFLEXIVE), now)
    due = _tick(paths, now, 1001, REFLEXIVE)
    assert due["probes"] == {K: [LAN]} and paths.probe_hold(K)   # held: endpoint stays
    t = now
    for n in range(1, TRIAL_ANSWERS + 1):
        t += 0.01
        paths.probe_answered(K, LAN, 0.01, t)
        if n < TRIAL_ANSWERS:
            assert paths.moves_due(t) == {}, n
            t += TRIAL_INTERVAL
            assert _tick(paths, t, 1001 + n, REFLEXIVE)["probes"] == {K: [LAN]}   # alone
    assert t - now >= TRIAL_SPAN
    assert paths.moves_due(t) == {K: LAN}
    assert paths.moves_due(t) == {}                 # once


def test_a_trial_that_stops_answering_is_dropped() -> None:
    paths, now = _working(Candidates(lan=[LAN], reflexive=REFLEXIVE), REFLEXIVE)
    _tick(paths, now, 1001, REFLEXIVE)
    paths.probe_answered(K, LAN, 0.01, now + 0.01)
    assert paths.peers[K].trial == LAN
    t = now + 0.01 + TRIAL_TIMEOUT + 0.5
    _tick(paths, t, 1002, REFLEXIVE)
    assert paths.peers[K].trial is None
    paths.probe_answered(K, LAN, 0.01, t + 0.1)     # answering again starts over
    assert paths.peers[K].trial_answers == [t + 0.1] and paths.moves_due(t + 0.1) == {}


def test_same_rank_needs_clearly_lower_rtt() -> None:
    other = ("198.18.9.9", 4000)
    paths, now = _working(Candidates(reflexive=REFLEXIVE, host=[other]), REFLEXIVE)
    paths.probe_answered(K, REFLEXIVE, 0.040, now)          # the current path's RTT
    paths.observe(K, REFLEXIVE, T0, 1000, now)
    paths.peers[K].round_held = True
    paths.probe_answered(K, other, 0.030, now + 0.1)        # a bit faster: not enough
    assert paths.peers[K].trial is None
    paths.probe_answered(K, other, 0.010, now + 0.2)        # a quarter: on trial
    assert paths.peers[K].trial == other


def test_unanswered_data_falls_back_to_the_relay_at_once_and_returns_by_trial() -> None:
    paths, now = _working(Candidates(reflexive=REFLEXIVE), REFLEXIVE)
    t = now + 30.0
    _tick(paths, t, 5000, REFLEXIVE)
    paths.path_unanswered(K, REFLEXIVE, 1.0, t)
    due = _tick(paths, t, 5000, REFLEXIVE)
    assert due["moves"] == {K: PROXY}
    assert not paths.is_working(K, t)
    # on the relay (its handshake done): the bad endpoint is probed in the background, held
    t += 0.2
    paths.observe(K, PROXY, t, 5200, t)
    rounds = []
    for i in range(1, 40):
        step = t + i * 0.5
        due = _tick(paths, step, 5200 + i, PROXY)
        assert due["moves"] == {}, due
        if K in due["probes"]:
            assert due["probes"][K] == [REFLEXIVE] and paths.probe_hold(K)
            rounds.append(step)
    assert all(b - a <= FAST_PROBE_MAX + 0.5 for a, b in zip(rounds, rounds[1:])), rounds
    assert paths.describe(K, t + 20)[0] == "relay"
    # the direct path answers again (drop removed): a trial, then back
    t += 20.0
    answers = 0
    while answers < TRIAL_ANSWERS:
        due = _tick(paths, t, 6000 + answers, PROXY)
        if K in due["probes"]:
            paths.probe_answered(K, REFLEXIVE, 0.01, t + 0.01)
            answers += 1
        assert due["moves"] == {}
        t += 0.5
    assert paths.moves_due(t) == {K: REFLEXIVE}


def test_a_relayed_pair_or_a_short_silence_is_not_judged() -> None:
    paths, now = _working(Candidates(reflexive=REFLEXIVE), PROXY)
    paths.path_unanswered(K, PROXY, 5.0, now)           # nothing below the relay
    assert paths.peers[K].bad is None
    paths, now = _working(Candidates(reflexive=REFLEXIVE), REFLEXIVE)
    paths.path_unanswered(K, REFLEXIVE, 0.5, now)       # under the grace
    paths.path_unanswered(K, ("198.18.0.1", 1), 3.0, now)   # not the current endpoint
    assert paths.peers[K].bad is None and _tick(paths, now, 1000, REFLEXIVE)["moves"] == {}


def test_a_false_alarm_doubles_the_silence_needed() -> None:
    paths, now = _working(Candidates(reflexive=REFLEXIVE), REFLEXIVE)
    paths.path_unanswered(K, REFLEXIVE, 1.0, now)
    assert _tick(paths, now, 1000, REFLEXIVE)["moves"] == {K: PROXY}
    paths.observe(K, PROXY, now, 1100, now + 0.1)
    # the left endpoint answers at once: a one-way flow, not a broken path
    paths.probe_answered(K, REFLEXIVE, 0.01, now + FALSE_ALARM_WINDOW / 2)
    assert paths.peers[K].grace == 2.0


def test_without_a_relay_every_other_candidate_is_probed_and_the_first_answer_wins() -> None:
    host = ("198.18.7.7", 5000)
    paths, now = _working(Candidates(reflexive=REFLEXIVE, host=[host]), REFLEXIVE, relay=None)
    paths.path_unanswered(K, REFLEXIVE, 1.2, now + 5)
    due = _tick(paths, now + 5, 1000, REFLEXIVE)
    assert due["moves"] == {} and due["probes"] == {K: [host]}   # not the bad one
    assert not paths.probe_hold(K)
    # the engine roamed to the answer (another endpoint): working again
    paths.observe(K, host, now + 5.1, 1100, now + 5.1)
    assert paths.is_working(K, now + 5.1) and paths.peers[K].bad is None


def test_reconcile_holds_the_probes_of_a_working_pair() -> None:
    paths, now = _working(Candidates(reflexive=REFLEXIVE), REFLEXIVE)
    reconciler = MemberReconciler(RDV, paths)
    directory = {K: MemberRecord(public_key=K, endpoint=REFLEXIVE, allowed_ips=["10.99.0.2/32"],
                                 name="b", mesh_address="10.99.0.2")}
    peer = PeerStatus(public_key=K, preshared_key=None, endpoint=REFLEXIVE, last_handshake_sec=int(now),
                      last_handshake_nsec=0, tx_bytes=0, rx_bytes=2000, persistent_keepalive=10,
                      allowed_ips=[ipaddress.ip_network("10.99.0.2/32")])
    status = DeviceStatus(private_key=None, listen_port=1, fwmark=0, peers=[peer])
    lan = {K: [LAN]}
    plan = reconciler.reconcile(directory, lan, status, now, relays={K: PROXY})
    (update,) = [u for u in plan.update.peers if u.probe_endpoints]
    assert update.probe_endpoints == [LAN] and update.probe_hold and update.endpoint is None


def test_a_path_adopted_by_trial_that_goes_bad_falls_back_to_the_one_it_replaced() -> None:
    # a stranger on the LAN relays handshakes well enough to pass a trial, then drops data
    paths, now = _working(Candidates(lan=[STRANGER], reflexive=REFLEXIVE), REFLEXIVE)
    t = now
    _tick(paths, t, 1001, REFLEXIVE)
    for n in range(TRIAL_ANSWERS):
        paths.probe_answered(K, STRANGER, 0.01, t + 0.01)
        t += TRIAL_INTERVAL + 0.01
        due = _tick(paths, t, 1002 + n, REFLEXIVE)
    assert due["moves"] == {K: STRANGER}
    paths.observe(K, STRANGER, now, 1100, t + 0.1)
    paths.path_unanswered(K, STRANGER, 1.0, t + 1.1)
    assert _tick(paths, t + 1.1, 1100, STRANGER)["moves"] == {K: REFLEXIVE}   # not the relay


def test_a_relayed_pair_that_never_fell_back_moves_at_the_first_direct_answer() -> None:
    paths, now = _working(Candidates(reflexive=REFLEXIVE), PROXY)
    due = _tick(paths, now + 60, 2000, PROXY)
    assert due["probes"] == {K: [REFLEXIVE]} and not paths.probe_hold(K)   # roams at once
    assert paths.move_pin(K) == 0.0
