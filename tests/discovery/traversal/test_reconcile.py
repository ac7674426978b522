"""Reconciliation without I/O (discovery.traversal.reconcile): directory + LAN + paths ->
engine updates and the next deadline. No root, no sockets."""

from __future__ import annotations

import ipaddress

from meshwg.device.api import DeviceStatus, PeerStatus
from discovery.dnssd.member import MemberRecord
from discovery.stores.rendezvous import Member
from discovery.traversal.paths import BACKOFF_START, OBSERVE_FRACTION, PathManager, REJECT_AFTER_TIME
from discovery.traversal.reconcile import (MEMBER_KEEPALIVE, MemberReconciler, directory_records,
                                           lan_endpoints, member_peer_updates, candidate_endpoints,
                                           publishable_endpoint, rendezvous_peer,
                                           rendezvous_peer_updates)

RDV = b"r" * 32
A = b"a" * 32
B = b"b" * 32
LAN_NET = ipaddress.ip_network("10.1.0.0/24")
A_LAN = ("10.1.0.11", 51822)
A_REFLEXIVE = ("198.18.1.1", 40001)
B_REFLEXIVE = ("198.18.2.1", 40002)


def net(text: str):
    return ipaddress.ip_network(text)


def record(key: bytes, address: str, endpoint=None, host=()) -> MemberRecord:
    return MemberRecord(public_key=key, endpoint=endpoint, allowed_ips=[f"{address}/32"],
                        name=key[:1].decode(), mesh_address=address, host_candidates=list(host))


def peer(key: bytes, allowed: list[str], endpoint=None, handshake: int = 0, rx: int = 0) -> PeerStatus:
    return PeerStatus(public_key=key, preshared_key=None, endpoint=endpoint,
                      last_handshake_sec=handshake, last_handshake_nsec=0, tx_bytes=0, rx_bytes=rx,
                      persistent_keepalive=MEMBER_KEEPALIVE, allowed_ips=[net(a) for a in allowed])


def status(*peers: PeerStatus) -> DeviceStatus:
    return DeviceStatus(private_key=b"p" * 32, listen_port=51821, fwmark=0, peers=list(peers))


def reconciler() -> MemberReconciler:
    return MemberReconciler(RDV, PathManager(local_networks=[LAN_NET], silence_timeout=25))


# ------------------------------------------------------------------ member: peers

def test_directory_members_become_peers_and_others_go_but_the_rendezvous_stays():
    directory = {A: record(A, "10.99.0.2"), B: record(B, "10.99.0.3")}
    engine = {RDV: peer(RDV, ["10.99.0.1/32"]), b"x" * 32: peer(b"x" * 32, ["10.99.0.9/32"]),
              A: peer(A, ["10.99.0.2/32"])}
    updates = member_peer_updates(directory, engine, keep=(RDV,))
    assert [(u.public_key, u.remove) for u in updates] == [(b"x" * 32, True), (B, False)]
    added = updates[1]
    assert added.allowed_ips == [net("10.99.0.3/32")] and added.replace_allowed_ips
    assert added.persistent_keepalive == MEMBER_KEEPALIVE
    assert added.endpoint is None                 # endpoints are the engine's and the prober's


def test_member_whose_mesh_address_changed_is_readdressed():
    updates = member_peer_updates({A: record(A, "10.99.0.7")}, {A: peer(A, ["10.99.0.2/32"])})
    assert [(u.public_key, u.allowed_ips) for u in updates] == [(A, [net("10.99.0.7/32")])]


def test_engine_equal_to_directory_needs_no_update():
    r = reconciler()
    directory = {A: record(A, "10.99.0.2")}
    st = status(peer(RDV, ["10.99.0.1/32"]), peer(A, ["10.99.0.2/32"], A_REFLEXIVE, 1000, 500))
    r.reconcile(directory, {}, st, now=1000)
    plan = r.reconcile(directory, {}, st, now=1000.5)
    assert plan.update.peers == []


def test_revoked_member_is_removed_and_its_path_forgotten():
    r = reconciler()
    st = status(peer(RDV, ["10.99.0.1/32"]), peer(A, ["10.99.0.2/32"], A_REFLEXIVE, 100, 92))
    r.reconcile({A: record(A, "10.99.0.2", A_REFLEXIVE)}, {}, st, now=100)
    assert A in r.paths.peers
    plan = r.reconcile({}, {}, st, now=101)
    assert [(u.public_key, u.remove) for u in plan.update.peers] == [(A, True)]
    assert A not in r.paths.peers


# ------------------------------------------------------------------ member: probes

def test_new_peer_is_added_then_probed_lan_first_in_one_update():
    r = reconciler()
    directory = {A: record(A, "10.99.0.2", A_REFLEXIVE)}
    plan = r.reconcile(directory, {A: [A_LAN]}, status(peer(RDV, ["10.99.0.1/32"])), now=0)
    add, probe = plan.update.peers
    assert add.public_key == A and not add.update_only
    assert probe.public_key == A and probe.update_only and probe.probe_endpoints == [A_LAN]
    assert plan.next_deadline == BACKOFF_START          # the next probe round
    later = r.reconcile(directory, {A: [A_LAN]}, status(peer(RDV, ["10.99.0.1/32"]),
                                                        peer(A, ["10.99.0.2/32"])), now=1)
    assert [u.probe_endpoints for u in later.update.peers] == [[A_LAN, A_REFLEXIVE]]


def test_lan_candidates_only_for_members_in_the_directory():
    r = reconciler()
    stranger = b"s" * 32
    plan = r.reconcile({}, {stranger: [("10.1.0.66", 51820)]}, status(peer(RDV, [])), now=0)
    assert plan.update.peers == [] and stranger not in r.paths.peers


def test_working_path_is_left_alone_and_looked_at_again_before_silence():
    r = reconciler()
    directory = {A: record(A, "10.99.0.2", A_REFLEXIVE)}
    r.reconcile(directory, {}, status(peer(A, ["10.99.0.2/32"])), now=0)
    st = status(peer(A, ["10.99.0.2/32"], A_REFLEXIVE, handshake=1, rx=92))
    plan = r.reconcile(directory, {}, st, now=1)
    assert plan.update.peers == []
    assert r.paths.describe(A, 1)[0] == "direct"
    # looked at again well within the silence timeout, so silence is noticed in time
    assert 1 < plan.next_deadline <= 1 + 25 / 2


def test_silent_path_is_probed_when_the_deadline_comes():
    r = reconciler()
    directory = {A: record(A, "10.99.0.2", A_REFLEXIVE)}
    r.reconcile(directory, {}, status(peer(A, ["10.99.0.2/32"])), now=0)
    st = status(peer(A, ["10.99.0.2/32"], A_REFLEXIVE, handshake=1, rx=92))
    now, plan = 1.0, r.reconcile(directory, {}, st, now=1)
    probes = []
    while now < 60 and not probes:              # follow the deadlines, no rx arrives
        now = plan.next_deadline
        plan = r.reconcile(directory, {}, st, now=now)
        probes = [u for u in plan.update.peers if u.probe_endpoints]
    assert probes and probes[0].probe_endpoints == [A_REFLEXIVE]
    assert 26 <= now <= 1 + 25 + 25 / OBSERVE_FRACTION + 1e-9, now   # within one look
    assert "silent" in r.paths.describe(A, now)[1]


def test_reflexive_address_moved_reprobes_at_once():
    r = reconciler()
    st = status(peer(A, ["10.99.0.2/32"], A_REFLEXIVE, handshake=1, rx=92))
    r.reconcile({A: record(A, "10.99.0.2", A_REFLEXIVE)}, {}, st, now=1)
    moved = ("198.18.1.2", 40009)
    st = status(peer(A, ["10.99.0.2/32"], A_REFLEXIVE, handshake=1, rx=200))
    plan = r.reconcile({A: record(A, "10.99.0.2", moved)}, {}, st, now=3)
    assert [u.probe_endpoints for u in plan.update.peers] == [[moved]]


def test_deadline_follows_probe_backoff_and_none_when_nothing_to_do():
    r = reconciler()
    plan = r.reconcile({}, {}, status(peer(RDV, [])), now=0)
    assert plan.next_deadline is None               # no peers: wait for events only
    directory = {B: record(B, "10.99.0.3", B_REFLEXIVE)}
    now, rounds = 0.0, []
    for _ in range(8):
        plan = r.reconcile(directory, {}, status(peer(B, ["10.99.0.3/32"])), now=now)
        if any(u.probe_endpoints for u in plan.update.peers):
            rounds.append(now)
        now = plan.next_deadline
    gaps = [b - a for a, b in zip(rounds, rounds[1:])]
    assert gaps[:4] == [1, 2, 4, 8], rounds      # every deadline is a probe round or a report
    assert "did not answer" in r.paths.describe(B, now)[1]


def test_handshake_ageing_out_is_a_deadline():
    r = reconciler()
    directory = {A: record(A, "10.99.0.2")}         # no candidates: nothing to probe
    st = status(peer(A, ["10.99.0.2/32"], A_REFLEXIVE, handshake=100, rx=92))
    plan = r.reconcile(directory, {}, st, now=100)
    assert plan.next_deadline <= 100 + REJECT_AFTER_TIME


def test_own_address_change_probes_rendezvous_and_current_endpoints():
    r = reconciler()
    st = status(peer(A, ["10.99.0.2/32"], A_LAN, handshake=1, rx=92))
    r.reconcile({A: record(A, "10.99.0.2", A_REFLEXIVE)}, {A: [A_LAN]}, st, now=1)
    update = r.own_addresses_changed(("198.18.0.10", 51820), now=2)
    assert [(u.public_key, u.probe_endpoints, u.update_only) for u in update.peers] == [
        (RDV, [("198.18.0.10", 51820)], True), (A, [A_LAN], True)]
    plan = r.reconcile({A: record(A, "10.99.0.2", A_REFLEXIVE)}, {A: [A_LAN]}, st, now=2)
    assert [u.probe_endpoints for u in plan.update.peers] == [[A_LAN, A_REFLEXIVE]]


def test_rendezvous_peer_keeps_the_mapping_open():
    pu = rendezvous_peer(RDV, ("198.18.0.10", 51820), "10.99.0.1")
    assert pu.endpoint == ("198.18.0.10", 51820) and pu.persistent_keepalive == 5
    assert pu.replace_allowed_ips and pu.allowed_ips == [net("10.99.0.1/32")]


def test_lan_endpoints_drop_scoped_addresses():
    assert lan_endpoints(["10.1.0.11", "fe80::1%eth0", "fd00::5"], 51822) == [
        ("10.1.0.11", 51822), ("fd00::5", 51822)]


# ------------------------------------------------------------------ rendezvous

def member(key: bytes, address: str, candidates=()) -> Member:
    return Member(name=key[:1].decode(), public_key=key, mesh_address=address, joined_at=0.0,
                  host_candidates=list(candidates))


def test_rendezvous_peers_follow_membership():
    members = [member(A, "10.99.0.2"), member(B, "10.99.0.3")]
    engine = {A: peer(A, ["10.99.0.2/32"]), b"x" * 32: peer(b"x" * 32, ["10.99.0.9/32"])}
    updates = rendezvous_peer_updates(members, engine)
    assert [(u.public_key, u.remove) for u in updates] == [(b"x" * 32, True), (B, False)]
    assert updates[1].allowed_ips == [net("10.99.0.3/32")] and updates[1].replace_allowed_ips
    assert rendezvous_peer_updates(members[:1], {A: peer(A, ["10.99.0.2/32"])}) == []


def test_rendezvous_restart_gives_members_their_last_endpoint_and_a_handshake():
    members = [member(A, "10.99.0.2"), member(B, "10.99.0.3")]
    last = {A: A_REFLEXIVE, B: B_REFLEXIVE}
    engine = {B: peer(B, ["10.99.0.3/32"], endpoint=("198.18.2.9", 40111))}   # B came back
    updates = rendezvous_peer_updates(members, engine, last)
    assert [(u.public_key, u.endpoint, u.probe_endpoints) for u in updates] == [
        (A, A_REFLEXIVE, [A_REFLEXIVE])]
    assert updates[0].allowed_ips == [net("10.99.0.2/32")]
    assert rendezvous_peer_updates(members, {A: peer(A, ["10.99.0.2/32"], A_REFLEXIVE),
                                             B: peer(B, ["10.99.0.3/32"], B_REFLEXIVE)}, last) == []


def test_directory_records_carry_engine_endpoints_and_valid_candidates():
    members = [member(A, "10.99.0.2", ["10.1.0.11:51822", "garbage", "[fd00::5]:51822"]),
               member(B, "10.99.0.3")]
    records = directory_records(members, {A: A_REFLEXIVE, B: ("fe80::2%eth0", 51823)})
    assert records[0].endpoint == A_REFLEXIVE
    assert records[0].host_candidates == [("10.1.0.11", 51822), ("fd00::5", 51822)]
    assert records[0].allowed_ips == ["10.99.0.2/32"] and records[0].name == "a"
    assert records[1].endpoint is None               # scoped link-local: not publishable
    assert directory_records(members, {A: A_REFLEXIVE, B: None}) == \
        directory_records(members, {A: A_REFLEXIVE})


def test_helpers():
    assert publishable_endpoint(None) is None
    assert publishable_endpoint(("198.18.1.1", 40001)) == ("198.18.1.1", 40001)
    assert candidate_endpoints(["1.2.3.4:5", "host:5", "1.2.3.4:0", "[fe80::1%eth0]:5"]) == [("1.2.3.4", 5)]
