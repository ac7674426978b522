"""One mesh, two running rendezvous on one DNS directory (issue 10): the mesh lab's
rendezvous A and a second one, B (created with the same --directory, --tsig-key and
--zone, no --network), both `rendezvous run` on a BIND primary with a Knot secondary on
the fake internet (--directory dns://PRIMARY,dns://KNOT).

Covered: a token from A names B and one from B names A (the zone's registered rendezvous);
a1 joins with A's token, b with B's, both keep tunnels to both rendezvous (every zone
rendezvous has every zone member as a peer) and ping each other; A is killed with -9: their
link stays, a1 reads the directory at B (`meshwg status` says so), and a new member a2 joins
at B with B's token and pings a1. Then the primary is killed with -9: every link stays
(a1<->b, a2<->a1), `meshwg members` at B reads the Knot secondary and says the primary is
not writable, `meshwg remove` at B is refused in one line naming the primary; once the
primary is back, removing a2 at B works and a2's peer leaves a1's and b's interfaces.
"""

from __future__ import annotations

import json
import signal
import stat
import time
from pathlib import Path

import pytest

from discovery.enroll.tokens import decode_token
from discovery.lab import mesh as mesh_lab
from discovery.lab.dns_servers import BindPrimary, DnsKeys, KnotSecondary, unavailable_reason
from discovery.lab.engines import meshwg_argv
from discovery.lab.netns import Namespace, poll
from tests.discovery.daemons.test_zone_rendezvous_mesh_lab import DNS_ADDRESS

pytestmark = pytest.mark.netns

B_ADDRESS, B_PORT = "198.18.0.11", 51830
A_ENDPOINT = f"{mesh_lab.RENDEZVOUS_ADDRESS}:{mesh_lab.RENDEZVOUS_PORT}"
B_ENDPOINT = f"{B_ADDRESS}:{B_PORT}"
KNOT_ADDRESS = "198.18.0.54"
PRIMARY = f"{DNS_ADDRESS}:53"


def _rows(node) -> dict[str, dict]:
    return {row["endpoint"]: row for row in node.status().get("rendezvous", [])}


def _invite_at_b(lab) -> str:
    b = lab.b
    return b.meshwg("invite", "--state", b.state_dir).stdout.strip()


def _zone_with_a_secondary(lab) -> tuple:
    """A BIND primary (lab.dns_primary, NOTIFYing) and a Knot secondary (lab.knot) of the
    lab's zone on the fake internet (skips when either is missing), the lab's rendezvous
    initialised on both (not started); the options that name the directory."""
    reason = unavailable_reason()
    if reason:
        pytest.skip(reason)
    servers = {}
    for label, address in (("zdns", DNS_ADDRESS), ("zknot", KNOT_ADDRESS)):
        servers[label] = Namespace(lab.cleanup, label)
        lab.internet.attach(servers[label], address)
    keys = DnsKeys.generate(lab.cleanup)
    lab.dns_primary = BindPrimary(servers["zdns"], DNS_ADDRESS, mesh_lab.ZONE, keys,
                                  secondaries=[(KNOT_ADDRESS, 53)],
                                  members=[mesh_lab.RENDEZVOUS_ADDRESS, B_ADDRESS])
    lab.knot = KnotSecondary(servers["zknot"], KNOT_ADDRESS, lab.dns_primary)
    directory = ("--zone", mesh_lab.ZONE, "--directory", f"dns://{DNS_ADDRESS},dns://{KNOT_ADDRESS}",
                 "--tsig-key", keys.update, "--transfer-key", keys.transfer)
    rv = lab.rendezvous
    rv.state_dir.parent.mkdir(parents=True, exist_ok=True)
    rv.meshwg("rendezvous", "init", "--state", rv.state_dir, "--network", mesh_lab.MESH_NETWORK,
              "--endpoint", A_ENDPOINT, "--listen-port", mesh_lab.RENDEZVOUS_PORT,
              "--interface", rv.interface, *directory)
    return directory


@pytest.fixture(scope="module")
def lab():
    with mesh_lab.build_lab(start=False) as lab:
        directory = _zone_with_a_secondary(lab)
        b = lab.add_public_node("rz2", B_ADDRESS, B_PORT)
        b.meshwg("rendezvous", "init", "--state", b.state_dir, "--endpoint", B_ENDPOINT,
                 "--listen-port", B_PORT, "--interface", b.interface, *directory)
        lab.start_rendezvous("--no-relay")
        b.daemon = b.ns.popen(meshwg_argv("rendezvous", "run", "--state", b.state_dir,
                                          "--interval", lab.interval, "--no-relay"),
                              "rendezvous-b", log_dir=str(b.log_dir))
        poll(lambda: "running" in b.daemon.stderr(), 30, lambda: f"B to start\n{b.daemon.output()}")
        lab.b = b
        yield lab


def test_two_rendezvous_one_mesh_and_a_member_survives_one(lab) -> None:
    a1, b, a2 = lab.members["a1"], lab.members["b"], lab.members["a2"]
    token_a, token_b = lab.invite(), _invite_at_b(lab)
    assert [r.endpoint for r in decode_token(token_a).rendezvous] == [A_ENDPOINT, B_ENDPOINT]
    assert [r.endpoint for r in decode_token(token_b).rendezvous] == [B_ENDPOINT, A_ENDPOINT]
    lab.join(a1, token_a)
    lab.join(b, token_b)
    poll(lambda: a1.ping(b.mesh_address, count=1) is not None, 90, "a1 to reach b through the mesh")
    assert b.ping(a1.mesh_address, count=1) is not None
    for node in (a1, b):     # tunnels to both rendezvous, each answering
        poll(lambda: len(_rows(node)) == 2 and all(r["answers"] and r["tunnel"]
                                                   for r in _rows(node).values()), 60,
             lambda: f"{node.label} to hold tunnels to both rendezvous: {_rows(node)}")

    killed = time.monotonic()
    lab.rendezvous.daemon.signal(signal.SIGKILL)
    poll(lambda: _rows(a1)[B_ENDPOINT]["current"] and a1.status()["directory"]["error"] is None,
         60, lambda: f"a1 to read the directory at B: {_rows(a1)} {a1.status()['directory']}")
    print(f"failover (kill -9 of A -> a1 reads the directory at B): {time.monotonic() - killed:.1f} s")
    assert a1.ping(b.mesh_address, count=3) is not None
    assert "b" in a1.peers_by_name() and "a1" in b.peers_by_name()
    text = a1.meshwg("status", "--interface", a1.interface).stdout
    assert f"rendezvous {B_ENDPOINT}" in text and "directory read here" in text, text

    started = time.monotonic()
    lab.join(a2, _invite_at_b(lab))     # a new member at the survivor
    poll(lambda: a2.ping(a1.mesh_address, count=1) is not None, 90, "a2 to reach a1 through the mesh")
    print(f"a new member at B (invite, join, first ping to a1): {time.monotonic() - started:.1f} s")


def _at_b(lab, *args: str):
    return lab.b.meshwg(*args, "--state", lab.b.state_dir, check=False)


def test_without_the_primary_links_stay_and_a_removal_waits_for_it(lab) -> None:
    """Continues the test above (A is dead, a1, b and a2 are members)."""
    a1, b, a2 = lab.members["a1"], lab.members["b"], lab.members["a2"]
    serial = lab.dns_primary.serial()
    poll(lambda: lab.knot.serial() == serial, 60, "the secondary to have a2's enrolment")
    lab.dns_primary.kill()
    try:
        for node, peer in ((a1, b), (b, a1), (a2, a1), (a1, a2)):
            assert node.ping(peer.mesh_address, count=3) is not None, \
                f"{node.label} to ping {peer.label} with the primary down"
        shown = _at_b(lab, "members")
        assert shown.returncode == 0 and "primary is not writable" in shown.stdout, shown
        directory = json.loads(_at_b(lab, "members", "--json").stdout)["directory"]
        assert directory["read_from"] == f"{KNOT_ADDRESS}:53", directory
        assert "primary is not writable" in directory["primary"], directory
        refused = _at_b(lab, "remove", "a2")
        err = refused.stderr.strip()
        assert refused.returncode != 0 and len(err.splitlines()) == 1, err
        assert f"primary DNS server {PRIMARY} is not writable" in err, err
        assert all(a2.public_key in node.wg.endpoints() for node in (a1, b))
    finally:
        lab.dns_primary.restart()
    back = time.monotonic()
    removed = _at_b(lab, "remove", "a2")
    assert removed.returncode == 0, removed.stderr
    poll(lambda: all(a2.public_key not in node.wg.endpoints() for node in (a1, b)), 90,
         lambda: f"a2's peer to leave a1 and b: {a1.peers_by_name().keys()} {b.peers_by_name().keys()}")
    print(f"removal after the primary's return (primary answering -> a2's peer gone at a1 and b): "
          f"{time.monotonic() - back:.1f} s")
    assert a1.ping(b.mesh_address, count=3) is not None


def test_a_rendezvous_restarted_while_no_dns_server_answers_serves_the_last_membership(lab) -> None:
    """Continues the tests above (A is dead, a2 removed; a1 and b are members). B kept the
    zone it read last in its state directory (0600); with the primary and the secondary
    killed, B is killed and started again: it serves a1 and b from that copy (their peers
    on its interface, a1 reads the directory at B again) instead of nobody."""
    a1, b = lab.members["a1"], lab.members["b"]
    saved = Path(lab.b.state_dir) / "zone-cache.json"
    poll(lambda: saved.exists() and a1.public_key in saved.read_text()
         and b.public_key in saved.read_text(), 30, "B to save the zone it read")
    assert stat.S_IMODE(saved.stat().st_mode) == 0o600
    lab.dns_primary.kill()
    lab.knot.kill()
    lab.b.daemon.signal(signal.SIGKILL)
    poll(lambda: not lab.b.daemon.alive, 30, "B to die")
    restarted, restarted_at = time.monotonic(), time.time()
    lab.b.daemon = lab.b.ns.popen(meshwg_argv("rendezvous", "run", "--state", lab.b.state_dir,
                                              "--interval", lab.interval, "--no-relay"),
                                  "rendezvous-b2", log_dir=str(lab.b.log_dir))
    poll(lambda: all(n.public_key in lab.b.wg.show("peers") for n in (a1, b)), 60,
         lambda: f"B to serve a1 and b from its saved zone\n{lab.b.daemon.output()}")
    poll(lambda: _rows(a1)[B_ENDPOINT]["current"]
         and (_rows(a1)[B_ENDPOINT]["ok_at"] or 0) > restarted_at, 90,
         lambda: f"a1 to read the directory at the restarted B: {_rows(a1)}")
    print(f"B restarted with no DNS server: a1 reads the directory at B after "
          f"{time.monotonic() - restarted:.1f} s")
    assert "a1" in b.peers_by_name() and a1.ping(b.mesh_address, count=3) is not None
