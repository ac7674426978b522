"""Each rendezvous writes the endpoints it observes into the zone (issue 10,
discovery.daemons.zone_publish): two running rendezvous A and C on a BIND primary with a Knot
secondary, and two members that each reach only one of them: a1 (behind nat1) cannot reach
C and b (behind nat2) cannot reach A (iptables in their namespaces), so C never has a1's
tunnel and A never has b's.

Shown: the endpoint A observes for a1 (its engine's, a1's NAT mapping) is in the zone (SRV
at the BIND primary, asked with the read key, and at the Knot secondary) and is served by
C's directory (dig through b's tunnel to C); b's endpoint, observed by C, reaches a1 through
A; a1 and b, whose rendezvous differ, reach each other over a direct path. While A cannot
reach the primary, its write of a1's new endpoint waits, and lands once the primary answers.
"""

from __future__ import annotations

import json
import time

import pytest

from meshwg.core.keys import decode_key

from discovery.dnssd.names import instance_label
from discovery.lab import mesh as mesh_lab
from discovery.lab.dns_servers import dig, dig_status
from discovery.lab.netns import poll
# the two-rendezvous lab: A and a second rendezvous running (B there, C here), no member joined
from tests.discovery.daemons.test_zone_two_rendezvous_lab import B_ADDRESS as C_ADDRESS
from tests.discovery.daemons.test_zone_two_rendezvous_lab import lab  # noqa: F401 (fixture)
from tests.discovery.daemons.test_zone_rendezvous_mesh_lab import DNS_ADDRESS

pytestmark = pytest.mark.netns


def _srv_port(result) -> int | None:
    """The port of the first SRV record in dig's answer, or None."""
    for line in result.stdout.splitlines():
        fields = line.split()
        if not line.startswith(";") and len(fields) == 8 and fields[3] == "SRV":
            return int(fields[6])
    return None


def _instance(node) -> str:
    return f"{instance_label(decode_key(node.public_key))}._wireguard._udp.{mesh_lab.ZONE}"


def test_an_endpoint_observed_at_a_is_served_by_c_and_members_of_both_meet(lab) -> None:
    a1, b, a, c = lab.members["a1"], lab.members["b"], lab.rendezvous, lab.b
    # each member reaches one rendezvous only (removed with the namespaces)
    a1.ns.run(["iptables", "-A", "OUTPUT", "-d", C_ADDRESS, "-j", "DROP"])
    b.ns.run(["iptables", "-A", "OUTPUT", "-d", mesh_lab.RENDEZVOUS_ADDRESS, "-j", "DROP"])
    lab.join(a1, lab.invite())
    started = time.monotonic()
    lab.join(b, c.meshwg("invite", "--state", c.state_dir).stdout.strip())
    poll(lambda: a1.ping(b.mesh_address, count=1) is not None, 120,
         lambda: f"a1 to reach b through the mesh: {a1.peers_by_name().get('b')}")
    print(f"b joins at C -> a1 (reading at A) pings b: {time.monotonic() - started:.1f} s")
    poll(lambda: a1.peers_by_name()["b"].get("path") == "direct", 60,
         lambda: f"a1's path to b to be direct: {a1.peers_by_name().get('b')}")
    assert b.ping(a1.mesh_address, count=3) is not None

    # neither rendezvous ever had the other's member's tunnel
    assert c.wg.latest_handshakes()[a1.public_key] == 0
    assert a.wg.latest_handshakes()[b.public_key] == 0

    # what A observes for a1 is in the zone, at the primary and the secondary
    observed = a.wg.endpoints()[a1.public_key]
    assert observed.startswith(mesh_lab.SITES["nat1"][0] + ":"), observed
    port = int(observed.rsplit(":", 1)[1])
    # (BIND with the read key; Knot, which has no such key, answers member addresses)
    for server, key in ((lab.dns_primary, lab.dns_primary.keys.read), (lab.knot, None)):
        poll(lambda: _srv_port(server.dig(_instance(a1), "SRV", key_file=key)) == port, 30,
             lambda: f"{server} to serve a1's SRV with port {port}: "
                     f"{server.dig(_instance(a1), 'SRV', key_file=key).stdout}")

    # C serves it (b asks C through its tunnel), and b's endpoint (C's) reached a1 via A
    saved = json.loads((b.state_dir / "member.json").read_text())
    answer = dig(b.ns, saved["dns_address"], int(saved["dns_port"]), _instance(a1), "SRV")
    assert dig_status(answer) == "NOERROR" and _srv_port(answer) == port, answer.stdout
    assert c.wg.endpoints()[b.public_key] == a1.wg.endpoints()[b.public_key]


def test_a_write_the_primary_missed_lands_when_it_answers_again(lab) -> None:
    """Continues the test above. A cannot reach the primary (iptables) while a1 comes back
    on another port: A sees a1's new endpoint, the zone keeps the old one; once the primary
    answers again, A's pending write lands and C serves the new endpoint."""
    a1, b, a = lab.members["a1"], lab.members["b"], lab.rendezvous
    old = a.wg.endpoints()[a1.public_key]
    drop = ["OUTPUT", "-d", DNS_ADDRESS, "-j", "DROP"]
    a.ns.run(["iptables", "-A", *drop])
    try:
        a1.daemon.stop()
        a1.listen_port += 100           # a new socket: a new NAT mapping
        lab.join(a1)
        poll(lambda: a.wg.endpoints()[a1.public_key] not in (old, "(none)"), 60,
             lambda: f"A to see a1's new endpoint (was {old}): {a.wg.endpoints()}")
        port = int(a.wg.endpoints()[a1.public_key].rsplit(":", 1)[1])
        key = lab.dns_primary.keys.read
        assert _srv_port(lab.dns_primary.dig(_instance(a1), "SRV", key_file=key)) == \
            int(old.rsplit(":", 1)[1])
    finally:
        a.ns.run(["iptables", "-D", *drop])
    back = time.monotonic()
    poll(lambda: _srv_port(lab.dns_primary.dig(_instance(a1), "SRV", key_file=key)) == port, 90,
         lambda: f"A's write of a1's port {port} to land at the primary: "
                 f"{lab.dns_primary.dig(_instance(a1), 'SRV', key_file=key).stdout}")
    print(f"primary reachable again -> A's pending write at the primary: "
          f"{time.monotonic() - back:.1f} s")
    saved = json.loads((b.state_dir / "member.json").read_text())
    poll(lambda: _srv_port(dig(b.ns, saved["dns_address"], int(saved["dns_port"]),
                                _instance(a1), "SRV")) == port, 30, "C to serve a1's new port")
    assert b.ping(a1.mesh_address, count=3) is not None
