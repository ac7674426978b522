"""`meshwg rendezvous run` on a DNS directory (discovery.stores.zone_rendezvous.ZoneState):
the mesh lab's rendezvous created with ``--directory`` on a BIND primary on the fake
internet (discovery.lab.dns_servers), members behind NATs joining with its invites.

Covered: members enrolled into the zone get tunnels to the rendezvous and to each other
(ping through the tunnel); a member removed with `meshwg remove` (written to the zone)
disappears from the others' peers, the rendezvous having seen the zone's serial move.
Not covered here: a second running rendezvous, the primary dying while the daemon runs.
"""

from __future__ import annotations

import pytest

from discovery.lab import mesh as mesh_lab
from discovery.lab.dns_servers import BindPrimary, DnsKeys, unavailable_reason
from discovery.lab.netns import Namespace, poll

pytestmark = pytest.mark.netns

DNS_ADDRESS = "198.18.0.53"


@pytest.fixture(scope="module")
def lab():
    reason = unavailable_reason()
    if reason:
        pytest.skip(reason)
    with mesh_lab.build_lab(start=False) as lab:
        ns = Namespace(lab.cleanup, "zdns")
        lab.internet.attach(ns, DNS_ADDRESS)
        keys = DnsKeys.generate(lab.cleanup)
        BindPrimary(ns, DNS_ADDRESS, mesh_lab.ZONE, keys, members=[mesh_lab.INTERNET])
        rv = lab.rendezvous
        rv.state_dir.parent.mkdir(parents=True, exist_ok=True)
        rv.meshwg("rendezvous", "init", "--state", rv.state_dir, "--network",
                  mesh_lab.MESH_NETWORK, "--endpoint",
                  f"{mesh_lab.RENDEZVOUS_ADDRESS}:{mesh_lab.RENDEZVOUS_PORT}",
                  "--zone", mesh_lab.ZONE, "--listen-port", mesh_lab.RENDEZVOUS_PORT,
                  "--interface", rv.interface, "--directory", f"dns://{DNS_ADDRESS}",
                  "--tsig-key", keys.update, "--transfer-key", keys.transfer)
        lab.start_rendezvous("--no-relay")
        for label in ("a1", "b"):
            lab.join(lab.members[label], lab.invite())
        rv.mesh_address = lab.dns_server()[0]
        yield lab


def test_members_of_the_zone_reach_the_rendezvous_and_each_other(lab) -> None:
    a1, b = lab.members["a1"], lab.members["b"]
    assert a1.mesh_address != b.mesh_address
    poll(lambda: a1.ping(lab.rendezvous.mesh_address, count=1) is not None, 60,
         "a1 to ping the rendezvous through the tunnel")
    poll(lambda: a1.ping(b.mesh_address, count=1) is not None, 90,
         "a1 to ping b through the mesh")


def test_a_removal_in_the_zone_reaches_the_other_members(lab) -> None:
    a1 = lab.members["a1"]
    poll(lambda: "b" in a1.peers_by_name(), 60, "a1 to know b")
    lab.remove_member("b")
    poll(lambda: "b" not in a1.peers_by_name(), 60, "a1 to drop b after its removal")
