"""The first packet of a new pair (discovery.traversal.paths): every probe round of a pair
without a working path also goes through its relay, so the first answer (direct or
relayed) carries traffic at once, and direct probing goes on until a direct path
replaces the relay. No I/O."""

from __future__ import annotations

from discovery.traversal.paths import BACKOFF_START, Candidates, PathManager

K = b"k" * 32
PROXY = ("127.0.0.1", 40999)
LAN = ("10.1.0.12", 51840)
REFLEXIVE = ("198.18.3.1", 1234)
T0 = 1_000_000.0


def _manager(candidates: Candidates) -> PathManager:
    paths = PathManager(local_networks=[], silence_timeout=25.0)
    paths.update_candidates(K, candidates, T0)
    paths.set_relay(K, PROXY, "rendezvous")
    paths.observe(K, None, None, 0, T0)
    return paths


def test_first_round_probes_the_relay_with_the_direct_candidates() -> None:
    paths = _manager(Candidates(reflexive=REFLEXIVE))
    assert paths.probes_due(T0) == {K: [REFLEXIVE, PROXY]}
    assert paths.relays_due(T0) == {}          # no move needed: the relay's answer roams


def test_lan_round_probes_the_relay_too() -> None:
    paths = _manager(Candidates(lan=[LAN], reflexive=REFLEXIVE))
    assert paths.probes_due(T0) == {K: [LAN, PROXY]}
    assert paths.probes_due(T0 + BACKOFF_START) == {K: [LAN, REFLEXIVE, PROXY]}


def test_once_the_relay_answered_only_direct_candidates_are_probed() -> None:
    paths = _manager(Candidates(reflexive=REFLEXIVE))
    paths.probes_due(T0)
    now = T0 + 0.05
    paths.observe(K, PROXY, now, 92, now)     # the relay's answer came first: roamed there
    assert paths.describe(K, now)[0] == "relay"
    assert paths.probes_due(T0 + BACKOFF_START) == {K: [REFLEXIVE]}
    later = T0 + BACKOFF_START + 0.05
    paths.observe(K, REFLEXIVE, later, 184, later)   # then the direct answer: roamed back
    assert paths.describe(K, later)[0] == "direct"


def test_no_relay_no_relay_probe() -> None:
    paths = PathManager(silence_timeout=25.0)
    paths.update_candidates(K, Candidates(reflexive=REFLEXIVE), T0)
    paths.observe(K, None, None, 0, T0)
    assert paths.probes_due(T0) == {K: [REFLEXIVE]}


def test_a_suspect_working_path_is_probed_directly_only() -> None:
    paths = _manager(Candidates(reflexive=REFLEXIVE))
    paths.observe(K, REFLEXIVE, T0, 148, T0)
    paths.path_may_have_moved(K, T0 + 1)
    assert paths.probes_due(T0 + 1) == {K: [REFLEXIVE]}
