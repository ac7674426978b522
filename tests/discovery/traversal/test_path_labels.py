"""Honest path labels and `none` reasons (discovery.traversal.paths describe()), no I/O."""

import ipaddress

from discovery.traversal.paths import GIVE_UP_REPORT_AFTER, Candidates, PathManager

KEY = b"k" * 32


def manager(*subnets: str) -> PathManager:
    nets = [ipaddress.ip_network(n) for n in subnets or ("10.1.0.0/24",)]
    return PathManager(local_networks=nets, silence_timeout=25)


def working(pm: PathManager, endpoint, candidates: Candidates) -> tuple[str, str]:
    pm.update_candidates(KEY, candidates, now=0)
    pm.observe(KEY, endpoint, last_handshake=1, rx_bytes=100, now=1)
    assert pm.is_working(KEY, 1)
    return pm.describe(KEY, 1)


def silent(pm: PathManager, candidates: Candidates) -> tuple[str, str]:
    pm.update_candidates(KEY, candidates, now=0)
    end = int(GIVE_UP_REPORT_AFTER) + 5
    for t in range(end):
        pm.probes_due(t)
        pm.observe(KEY, None, None, 0, t)
    return pm.describe(KEY, end)


def test_endpoint_on_our_subnet_is_lan():
    ep = ("10.1.0.7", 51820)
    path, reason = working(manager(), ep, Candidates(lan=[ep]))
    assert path == "lan" and "LAN" in reason


def test_mdns_candidate_outside_our_subnets_is_not_called_lan():
    ep = ("10.7.0.7", 51820)               # announced on the LAN, but in no subnet of ours
    path, reason = working(manager(), ep, Candidates(lan=[ep]))
    assert path == "direct (private address)" and "10.7.0.7" in reason


def test_public_or_reflexive_endpoint_is_direct():
    ep = ("203.0.113.9", 40007)
    assert working(manager(), ep, Candidates(reflexive=ep))[0] == "direct"
    ep = ("198.18.2.1", 40007)            # the lab's fake internet (RFC 2544) is not private
    assert working(manager(), ep, Candidates(reflexive=ep))[0] == "direct"


def test_private_and_carrier_nat_endpoints_off_our_lan_are_labelled_private():
    for host in ("192.168.5.4", "172.20.0.2", "100.64.3.2", "fd00::5"):
        path, _ = working(manager(), (host, 51820), Candidates(host=[(host, 51820)]))
        assert path == "direct (private address)", host


def test_ipv6_endpoint_in_our_ipv6_subnet_is_lan():
    ep = ("fd00:1::7", 51820)
    assert working(manager("fd00:1::/64"), ep, Candidates(host=[ep]))[0] == "lan"


def test_no_answer_without_netcheck_facts_blames_no_nat():
    path, reason = silent(manager(), Candidates(reflexive=("198.18.2.1", 40007)))
    assert path == "none"
    assert "1 candidate(s) did not answer" in reason
    assert "symmetric" not in reason and "per destination" not in reason


def test_no_answer_behind_our_hard_nat_says_so():
    pm = manager()
    pm.set_own_facts(families={4}, hard_nat=True)
    path, reason = silent(pm, Candidates(reflexive=("198.18.2.1", 40007)))
    assert path == "none" and "our own NAT maps per destination" in reason


def test_easy_nat_fact_does_not_blame_our_nat():
    pm = manager()
    pm.set_own_facts(families={4}, hard_nat=False)
    reason = silent(pm, Candidates(reflexive=("198.18.2.1", 40007)))[1]
    assert "did not answer" in reason and "our own NAT" not in reason


def test_no_common_address_family():
    pm = manager()
    pm.set_own_facts(families={4}, hard_nat=False)
    path, reason = silent(pm, Candidates(host=[("2001:db8::5", 51820)]))
    assert path == "none"
    assert "no common address family" in reason and "IPv4" in reason and "IPv6" in reason


def test_unknown_families_never_claim_a_family_mismatch():
    reason = silent(manager(), Candidates(host=[("2001:db8::5", 51820)]))[1]
    assert "address family" not in reason


def test_public_peer_sharing_our_public_subnet_is_direct_not_lan():
    # two servers on one public subnet: the peer's reflexive endpoint is on our subnet,
    # but it is its public address, not a LAN path
    ep = ("198.18.0.20", 51820)
    path, reason = working(manager("198.18.0.0/15"), ep, Candidates(reflexive=ep))
    assert path == "direct" and "public" in reason
    # a symmetric NAT's public mapping (not the reflexive endpoint the rendezvous saw) on
    # our public subnet is direct too
    mapped = ("198.18.4.1", 61000)
    assert working(manager("198.18.0.0/15"), mapped, Candidates(reflexive=ep))[0] == "direct"
    # the same peer reached at another endpoint of that subnet (announced on the LAN) is lan
    lan_ep = ("198.18.0.21", 51820)
    assert working(manager("198.18.0.0/15"), lan_ep,
                   Candidates(lan=[lan_ep], reflexive=ep))[0] == "lan"
