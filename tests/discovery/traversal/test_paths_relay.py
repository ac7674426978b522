"""Path choice with a relay (discovery.traversal.paths, reconcile): a pair moves onto its
relay proxy when no direct path works, keeps probing direct candidates, is described as
"relay via NAME", and falls back to the relay when a direct path goes silent. No I/O."""

from __future__ import annotations

from meshwg.device.api import DeviceStatus, PeerStatus

from discovery.dnssd.member import MemberRecord
from discovery.traversal.paths import RELAY_AFTER, Candidates, PathManager
from discovery.traversal.reconcile import MEMBER_KEEPALIVE, MemberReconciler

K = b"k" * 32
RDV = b"r" * 32
PROXY = ("127.0.0.1", 40999)
REFLEXIVE = ("198.18.3.1", 1234)
T0 = 1_000_000.0


def _manager(candidates: Candidates | None = None) -> PathManager:
    paths = PathManager(silence_timeout=25.0)
    paths.update_candidates(K, candidates or Candidates(reflexive=REFLEXIVE), T0)
    paths.set_relay(K, PROXY, "rendezvous")
    return paths


def test_unanswered_probing_moves_the_pair_to_its_relay_after_relay_after() -> None:
    paths = _manager()
    paths.observe(K, None, None, 0, T0)
    assert paths.probes_due(T0) == {K: [REFLEXIVE, PROXY]}   # the relay answers in parallel
    assert paths.relays_due(T0) == {}
    assert paths.next_deadline(T0) <= T0 + RELAY_AFTER
    assert paths.relays_due(T0 + RELAY_AFTER) == {K: PROXY}


def test_no_candidates_uses_the_relay_at_once() -> None:
    paths = _manager(Candidates())
    paths.observe(K, None, None, 0, T0)
    assert paths.relays_due(T0) == {K: PROXY}


def test_relayed_pair_is_described_and_keeps_probing_direct_candidates() -> None:
    paths = _manager()
    paths.observe(K, None, None, 0, T0)
    paths.probes_due(T0)
    now = T0 + RELAY_AFTER
    paths.observe(K, PROXY, now, 148, now)               # handshake through the relay
    assert paths.is_working(K, now) and not paths.direct_working(K, now)
    path, reason = paths.describe(K, now)
    assert path == "relay" and reason.startswith("relay via rendezvous: "), reason
    assert paths.relays_due(now) == {}                   # already there
    later = now + 60
    paths.observe(K, PROXY, later, 400, later)
    assert paths.probes_due(later) == {K: [REFLEXIVE]}   # direct probing goes on, with backoff
    assert "no direct path" in paths.describe(K, later)[1]


def test_direct_answer_wins_and_a_silent_direct_path_falls_back_to_the_relay() -> None:
    paths = _manager()
    paths.observe(K, REFLEXIVE, T0, 148, T0)             # roaming moved it to a direct endpoint
    assert paths.describe(K, T0)[0] == "direct"
    assert paths.relays_due(T0) == {} and paths.probes_due(T0) == {}
    silent = T0 + 26                                      # > silence_timeout without rx
    paths.observe(K, REFLEXIVE, T0, 148, silent)
    assert paths.probes_due(silent) == {K: [REFLEXIVE, PROXY]}
    assert paths.relays_due(silent + RELAY_AFTER) == {K: PROXY}


def _status(endpoint=None, handshake=0, rx=0) -> DeviceStatus:
    peer = PeerStatus(public_key=K, preshared_key=None, endpoint=endpoint, last_handshake_sec=handshake,
                      last_handshake_nsec=0, tx_bytes=0, rx_bytes=rx,
                      persistent_keepalive=MEMBER_KEEPALIVE, allowed_ips=[])
    return DeviceStatus(private_key=None, listen_port=51820, fwmark=0, peers=[peer])


def test_reconciler_sets_the_proxy_endpoint_with_a_handshake_through_it() -> None:
    reconciler = MemberReconciler(RDV)
    directory = {K: MemberRecord(public_key=K, endpoint=REFLEXIVE, allowed_ips=[], name="c",
                                 mesh_address="", host_candidates=[])}
    status = _status()
    reconciler.reconcile(directory, {}, status, T0, relays={K: PROXY})
    plan = reconciler.reconcile(directory, {}, status, T0 + RELAY_AFTER, relays={K: PROXY})
    moves = [u for u in plan.update.peers if u.endpoint == PROXY]
    assert len(moves) == 1 and moves[0].probe_endpoints == [PROXY] and moves[0].update_only
    # no relay offered: nothing moves
    reconciler = MemberReconciler(RDV)
    reconciler.reconcile(directory, {}, status, T0)
    plan = reconciler.reconcile(directory, {}, status, T0 + RELAY_AFTER)
    assert not [u for u in plan.update.peers if u.endpoint is not None]


def test_idle_relayed_pair_stays_relayed_while_its_session_is_fresh() -> None:
    """Keepalives may flow one way only: a relayed pair without rx is kept until its
    handshake ages past REJECT_AFTER_TIME (rekeying needs an answer through the relay)."""
    from discovery.traversal.paths import REJECT_AFTER_TIME
    paths = _manager()
    paths.observe(K, PROXY, T0, 148, T0)
    quiet = T0 + 60
    paths.observe(K, PROXY, T0, 148, quiet)
    assert paths.describe(K, quiet)[0] == "relay"
    stale = T0 + REJECT_AFTER_TIME + 1
    paths.observe(K, PROXY, T0, 148, stale)
    assert paths.describe(K, stale)[0] == "none"


def test_move_to_the_relay_is_not_mixed_with_a_probe_round() -> None:
    """The engine allows one probe round per PROBE_MIN_INTERVAL and a new initiation
    replaces the one in flight: the relay's handshake goes alone."""
    reconciler = MemberReconciler(RDV)
    directory = {K: MemberRecord(public_key=K, endpoint=REFLEXIVE, allowed_ips=[], name="c",
                                 mesh_address="", host_candidates=[])}
    reconciler.reconcile(directory, {}, _status(), T0, relays={K: PROXY})
    plan = reconciler.reconcile(directory, {}, _status(), T0 + RELAY_AFTER, relays={K: PROXY})
    probes = [u.probe_endpoints for u in plan.update.peers if u.public_key == K and u.probe_endpoints]
    assert probes == [[PROXY]], probes


OTHER_PROXY = ("127.0.0.1", 40998)


def test_a_pair_on_another_relay_s_proxy_moves_to_the_chosen_relay_at_once() -> None:
    """discovery.relay.pool chose another relay (the one in use stopped answering binds): a
    path on the old relay's proxy is relayed, never direct, and moves at once."""
    paths = _manager()
    paths.set_relay(K, PROXY, "p2", others=[OTHER_PROXY])
    paths.observe(K, OTHER_PROXY, T0 - 1, 500, T0)
    assert not paths.direct_working(K, T0)
    assert paths.relays_due(T0) == {K: PROXY}
    path, reason = paths.describe(K, T0)
    assert path == "relay" and reason.startswith("relay via p2"), reason
    paths.observe(K, PROXY, T0 - 1, 600, T0 + 1)
    assert paths.relays_due(T0 + 1) == {}


def test_reconcile_names_each_peer_s_relay_and_moves_off_another_relay() -> None:
    rec = MemberReconciler(RDV)
    directory = {K: MemberRecord(public_key=K, endpoint=REFLEXIVE, allowed_ips=[], name="c")}
    status = _status(OTHER_PROXY, int(T0 - 1), 100)
    plan = rec.reconcile(directory, {}, status, T0, relays={K: PROXY}, relay_names={K: "p1"},
                         relay_others={K: [OTHER_PROXY]})
    moved = [u for u in plan.update.peers if u.endpoint == PROXY]
    assert moved and moved[0].probe_endpoints == [PROXY]
    assert rec.paths.describe(K, T0)[1].startswith("relay via p1")
