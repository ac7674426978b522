"""Hard-NAT traversal in namespaces (discovery.lab.hard_nat): a member behind a symmetric
NAT (MASQUERADE --random-fully) and one behind an endpoint-independent NAT with the home
router's address-and-port-dependent filter first meet on the relay, then go direct by
birthday-paradox probing: the easy member's engine sees the hard member at the hard NAT's
public address (some port other than the one the rendezvous saw), the hard member's at its
loopback proxy; ping works and the relay carries nothing for them any more."""

from __future__ import annotations

import pytest

from meshwg.util.endpoint import parse_endpoint

from discovery.lab.hard_nat import HARD_SITE, build
from discovery.lab.netns import poll

pytestmark = pytest.mark.netns

DIRECT_WITHIN = 90.0       # seconds: a deadline on a loaded CI machine, not a speed claim


@pytest.mark.parametrize("easy_mode", ["keep", "rewrite"])
def test_symmetric_and_cone_members_go_direct_by_birthday_probing(lab, tmp_path, easy_mode) -> None:
    hn = build(lab, tmp_path, easy_mode)
    assert hn.netcheck(hn.hard)["hard_nat"] is True
    assert hn.netcheck(hn.easy)["hard_nat"] is False
    hn.start_members({"hard": hn.mesh.invite(), "easy": hn.mesh.invite()})
    try:
        hn.wait_direct(DIRECT_WITHIN)
        # the easy end reaches the hard end at the symmetric NAT's public address
        host, _ = parse_endpoint(hn.endpoint_of(hn.easy, hn.hard))
        assert host == HARD_SITE[0]
        # the hard end reaches the easy end through its birthday proxy on loopback
        host, port = parse_endpoint(hn.endpoint_of(hn.hard, hn.easy))
        relay_proxies = {row.get("endpoint") for row in hn.hard.status()["peers"]
                         if row.get("path") == "relay"}
        assert host == "127.0.0.1" and f"{host}:{port}" not in relay_proxies
        assert "birthday probing" in hn.hard.peers_by_name()[hn.easy.label]["reason"]
        status = hn.hard.status()["hard_nat"]
        assert status["nat"] == "hard" and status["hits"] == 1 and status["successes"] >= 1
        assert hn.easy.status()["hard_nat"]["probes_sent"] > 0
        # traffic flows directly: 20 pings each way, and (beyond a relay bind or two) no
        # datagram reaches the relay meanwhile
        before = hn.relay_datagrams()
        assert hn.hard.ping(hn.easy.mesh_address, count=20, interval=0.05) is not None
        assert hn.easy.ping(hn.hard.mesh_address, count=20, interval=0.05) is not None
        assert hn.relay_datagrams() - before <= 4
        assert hn.paths() == ("direct", "direct")
    finally:
        hn.stop_members()


def test_without_netcheck_facts_the_pair_stays_on_the_relay(lab, tmp_path) -> None:
    """No NAT kinds known: no birthday attempt (nothing is sprayed), the relay carries it."""
    hn = build(lab, tmp_path, "keep")
    hn.start_members({"hard": hn.mesh.invite(), "easy": hn.mesh.invite()})
    try:
        poll(lambda: hn.paths() == ("relay", "relay"), DIRECT_WITHIN, "the relay path")
        assert hn.hard.status()["hard_nat"] is None and hn.easy.status()["hard_nat"] is None
        assert hn.hard.ping(hn.easy.mesh_address, count=3) is not None
    finally:
        hn.stop_members()
