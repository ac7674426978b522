"""The path manager (discovery.paths): candidate tiers, backoff, upgrades, honesty."""

import ipaddress

from discovery.traversal.paths import BACKOFF_MAX, Candidates, PathManager

KEY = b"k" * 32
LAN = ("10.1.0.5", 51820)
REFLEXIVE = ("198.18.2.1", 40007)
HOST_FAR = ("10.2.0.7", 51820)


def manager():
    return PathManager(local_networks=[ipaddress.ip_network("10.1.0.0/24")], silence_timeout=25)


def test_lan_tier_is_probed_first_then_everything():
    pm = manager()
    pm.update_candidates(KEY, Candidates(lan=[LAN], reflexive=REFLEXIVE, host=[HOST_FAR]), now=0)
    assert pm.probes_due(0) == {KEY: [LAN]}
    assert pm.probes_due(0.5) == {}                       # not before the next round
    assert pm.probes_due(1.0) == {KEY: [LAN, REFLEXIVE, HOST_FAR]}


def test_host_candidate_on_our_subnet_counts_as_lan():
    pm = manager()
    pm.update_candidates(KEY, Candidates(reflexive=REFLEXIVE, host=[LAN, HOST_FAR]), now=0)
    assert pm.peers[KEY].candidates.lan == [LAN]
    assert pm.probes_due(0) == {KEY: [LAN]}


def test_backoff_doubles_and_is_capped():
    pm = manager()
    pm.update_candidates(KEY, Candidates(reflexive=REFLEXIVE), now=0)
    times = []
    t = 0.0
    while t < 400:
        if pm.probes_due(t):
            times.append(t)
        t += 0.25
    gaps = [b - a for a, b in zip(times, times[1:])]
    assert gaps[:5] == [1, 2, 4, 8, 16]
    assert max(gaps) == BACKOFF_MAX
    assert len(times) < 20          # bounded probe traffic: no flood


def test_working_path_stops_probing_and_is_described():
    pm = manager()
    pm.update_candidates(KEY, Candidates(reflexive=REFLEXIVE), now=0)
    pm.probes_due(0)
    pm.observe(KEY, REFLEXIVE, last_handshake=1, rx_bytes=92, now=1)
    assert pm.is_working(KEY, 1)
    assert pm.probes_due(2) == {}
    assert pm.describe(KEY, 2)[0] == "direct"


def test_lan_path_described_as_lan_and_preferred():
    pm = manager()
    pm.update_candidates(KEY, Candidates(reflexive=REFLEXIVE), now=0)
    pm.observe(KEY, REFLEXIVE, last_handshake=1, rx_bytes=92, now=1)
    # a LAN candidate appears while the internet path works: probe it (upgrade)
    pm.update_candidates(KEY, Candidates(lan=[LAN], reflexive=REFLEXIVE), now=2)
    assert pm.probes_due(2) == {KEY: [LAN]}
    assert pm.probes_due(3) == {}                 # upgrades are rate limited
    pm.observe(KEY, LAN, last_handshake=3, rx_bytes=200, now=3)
    assert pm.describe(KEY, 3)[0] == "lan"
    pm.observe(KEY, LAN, last_handshake=3, rx_bytes=300, now=29)   # keepalives keep arriving
    assert pm.probes_due(30) == {}


def test_silent_path_is_reprobed_at_once():
    pm = manager()
    pm.update_candidates(KEY, Candidates(reflexive=REFLEXIVE), now=0)
    pm.observe(KEY, REFLEXIVE, last_handshake=1, rx_bytes=92, now=1)
    pm.observe(KEY, REFLEXIVE, last_handshake=1, rx_bytes=92, now=20)
    assert pm.probes_due(20) == {}
    pm.observe(KEY, REFLEXIVE, last_handshake=1, rx_bytes=92, now=27)   # silent > 25 s
    assert not pm.is_working(KEY, 27)
    assert pm.probes_due(27) == {KEY: [REFLEXIVE]}
    assert "silent" in pm.describe(KEY, 27)[1]


def test_reflexive_change_triggers_probe_of_new_mapping():
    pm = manager()
    pm.update_candidates(KEY, Candidates(reflexive=REFLEXIVE), now=0)
    pm.probes_due(0)
    pm.observe(KEY, REFLEXIVE, last_handshake=1, rx_bytes=92, now=1)
    moved = ("198.18.3.1", 40011)
    pm.observe(KEY, REFLEXIVE, last_handshake=1, rx_bytes=200, now=5)    # still looks alive
    pm.update_candidates(KEY, Candidates(reflexive=moved), now=6)
    assert pm.is_working(KEY, 6)
    assert pm.probes_due(6) == {KEY: [moved]}        # at once, not after the silence timeout


def test_own_address_change_reprobes_working_paths_at_once():
    pm = manager()
    pm.update_candidates(KEY, Candidates(lan=[LAN], reflexive=REFLEXIVE), now=0)
    pm.observe(KEY, LAN, last_handshake=1, rx_bytes=92, now=1)
    assert pm.probes_due(1) == {}
    pm.path_may_have_moved(KEY, 2)
    assert pm.probes_due(2) == {KEY: [LAN, REFLEXIVE]}
    assert pm.probes_due(2.5) == {}


def test_no_answer_is_reported_honestly():
    pm = manager()
    pm.update_candidates(KEY, Candidates(reflexive=REFLEXIVE), now=0)
    for t in range(0, 60):
        pm.probes_due(t)
        pm.observe(KEY, None, None, 0, t)
    path, reason = pm.describe(KEY, 60)
    assert path == "none"
    assert "did not answer" in reason and "no relay" in reason
    assert "symmetric" not in reason and "per destination" not in reason   # no netcheck facts


def test_no_candidates_is_none_with_reason():
    pm = manager()
    pm.update_candidates(KEY, Candidates(), now=0)
    assert pm.probes_due(0) == {}
    assert pm.describe(KEY, 0) == ("none", pm.describe(KEY, 0)[1])
    assert "no candidate" in pm.describe(KEY, 0)[1]
