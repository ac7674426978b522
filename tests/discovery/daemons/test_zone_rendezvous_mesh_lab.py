"""`meshwg rendezvous run` on a DNS directory (discovery.stores.zone_rendezvous.ZoneState):
the mesh lab's rendezvous created with ``--directory`` on a BIND primary on the fake
internet (discovery.lab.dns_servers), members behind NATs joining with its invites.

Covered: members enrolled into the zone get tunnels to the rendezvous and to each other
(ping through the tunnel); a member removed with `meshwg remove` (written to the zone)
disappears from the others' peers, the rendezvous having seen the zone's serial move; with
the primary killed (-9) the tunnels stay and removal is refused in one line; with it back, removal works and reaches the
running rendezvous. A second running rendezvous: test_zone_two_rendezvous_lab.py (this
module's zone_on_the_internet builds its zone).
"""

from __future__ import annotations

import json

import pytest

from discovery.lab import mesh as mesh_lab
from discovery.lab.dns_servers import BindPrimary, DnsKeys, unavailable_reason
from discovery.lab.netns import Namespace, poll

pytestmark = pytest.mark.netns

DNS_ADDRESS = "198.18.0.53"


def zone_on_the_internet(lab) -> tuple:
    """A BIND primary for the lab's zone on the fake internet (lab.dns_primary; skips when
    BIND is missing), the lab's rendezvous initialised on it (not started); the options
    that name the directory, for another rendezvous of the mesh."""
    reason = unavailable_reason()
    if reason:
        pytest.skip(reason)
    ns = Namespace(lab.cleanup, "zdns")
    lab.internet.attach(ns, DNS_ADDRESS)
    keys = DnsKeys.generate(lab.cleanup)
    lab.dns_primary = BindPrimary(ns, DNS_ADDRESS, mesh_lab.ZONE, keys,
                                  members=[mesh_lab.INTERNET])
    directory = ("--zone", mesh_lab.ZONE, "--directory", f"dns://{DNS_ADDRESS}",
                 "--tsig-key", keys.update, "--transfer-key", keys.transfer)
    rv = lab.rendezvous
    rv.state_dir.parent.mkdir(parents=True, exist_ok=True)
    rv.meshwg("rendezvous", "init", "--state", rv.state_dir, "--network",
              mesh_lab.MESH_NETWORK, "--endpoint",
              f"{mesh_lab.RENDEZVOUS_ADDRESS}:{mesh_lab.RENDEZVOUS_PORT}",
              "--listen-port", mesh_lab.RENDEZVOUS_PORT, "--interface", rv.interface, *directory)
    return directory


@pytest.fixture(scope="module")
def lab():
    with mesh_lab.build_lab(start=False) as lab:
        zone_on_the_internet(lab)
        lab.start_rendezvous("--no-relay")
        for label in ("a1", "b"):
            lab.join(lab.members[label], lab.invite())
        lab.rendezvous.mesh_address = lab.dns_server()[0]
        yield lab


def rendezvous_status(lab) -> tuple[dict, str]:
    """`meshwg rendezvous status --json` and the human text."""
    state = lab.rendezvous_state()
    doc = json.loads(lab.rendezvous_cli("rendezvous", "status", "--state", state, "--json").stdout)
    return doc, lab.rendezvous_cli("rendezvous", "status", "--state", state).stdout


def test_members_of_the_zone_reach_the_rendezvous_and_each_other(lab) -> None:
    a1, b = lab.members["a1"], lab.members["b"]
    assert a1.mesh_address != b.mesh_address
    poll(lambda: rendezvous_status(lab)[0]["members"] == 2, 30, "rendezvous status: 2 members",
         interval=0.5)
    doc, text = rendezvous_status(lab)
    assert doc["running"] and doc["directory"] == {
        "kind": "dns", "servers": f"dns://{DNS_ADDRESS}:53", "read_from": f"{DNS_ADDRESS}:53",
        "problem": None, "primary_problem": None}, doc
    assert f"directory: dns://{DNS_ADDRESS}:53, read from {DNS_ADDRESS}:53\n" \
           "  primary: answers" in text, text
    poll(lambda: a1.ping(lab.rendezvous.mesh_address, count=1) is not None, 60,
         "a1 to ping the rendezvous through the tunnel")
    poll(lambda: a1.ping(b.mesh_address, count=1) is not None, 90,
         "a1 to ping b through the mesh")


def test_a_removal_in_the_zone_reaches_the_other_members(lab) -> None:
    a1 = lab.members["a1"]
    poll(lambda: "b" in a1.peers_by_name(), 60, "a1 to know b")
    lab.remove_member("b")
    poll(lambda: "b" not in a1.peers_by_name(), 60, "a1 to drop b after its removal")
    # b is told: the rendezvous finds it absent from the zone and MACs its answer (issue 10)
    b = lab.members["b"]
    removed = poll(lambda: b.status().get("removed"), 90, "b's status to say it was removed",
                   interval=1.0)
    assert removed["by"] == json.loads((b.state_dir / "member.json").read_text())[
        "rendezvous_endpoint"], removed


def test_without_the_primary_links_stay_and_removal_waits_for_it(lab) -> None:
    a1 = lab.members["a1"]
    lab.dns_primary.kill()
    try:
        poll(lambda: a1.ping(lab.rendezvous.mesh_address, count=1) is not None, 30,
             "a1 to ping the rendezvous with the primary down")
        # no secondary here: the CLI cannot read the zone (with one, it reads there and says
        # the primary is not writable: tests/discovery/stores/test_zone_rendezvous_lab.py)
        shown = lab.rendezvous_cli("members", "--state", lab.rendezvous_state(), check=False)
        assert shown.returncode != 0 and f"cannot reach DNS server {DNS_ADDRESS}:53" in shown.stderr
        out = lab.rendezvous_cli("remove", "--state", lab.rendezvous_state(), "a1", check=False)
        err = out.stderr.strip()
        assert out.returncode != 0 and len(err.splitlines()) == 1, err
        assert f"primary DNS server {DNS_ADDRESS}:53 is not writable" in err, err
        assert a1.ping(lab.rendezvous.mesh_address, count=3) is not None
        # the running rendezvous says so in its status (it rechecks every 2 s)
        poll(lambda: rendezvous_status(lab)[0]["directory"]["primary_problem"], 30,
             "rendezvous status to say the primary does not answer", interval=0.5)
        doc, text = rendezvous_status(lab)
        assert f"cannot reach DNS server {DNS_ADDRESS}:53" in doc["directory"]["problem"], doc
        assert f"cannot reach DNS server {DNS_ADDRESS}:53" in doc["directory"]["primary_problem"]
        assert "  PROBLEM: no directory server answers: " in text, text
        assert "  PROBLEM: the primary is not writable: " in text, text
        assert "enrollment, invites and revocation wait for it" in text, text
    finally:
        lab.dns_primary.restart()
    poll(lambda: rendezvous_status(lab)[0]["directory"]["primary_problem"] is None, 60,
         "rendezvous status to see the primary back", interval=0.5)
    assert "  primary: answers" in rendezvous_status(lab)[1]
    lab.remove_member("a1")
    poll(lambda: a1.public_key not in lab.rendezvous.wg.endpoints(), 60,
         "the rendezvous to drop a1's peer after its removal")
