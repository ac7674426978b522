"""A member with two rendezvous (issue 10, part 5) in the mesh lab: members behind NATs
join with a format-3 token naming the lab's rendezvous A and a second one, B, on the
fake internet; each keeps a tunnel to both, reads the directory at A, reports to both.
A is killed with -9: each member reads the directory at B from then on (failover) and
keeps its link to the other member; `meshwg status` lists both rendezvous and says A
does not answer.

B is an embedded rendezvous given the same mesh id and members by hand (two embedded
rendezvous do not share membership: a shared mesh is the DNS directory's, tested with
the zone's lab); its own mesh address (.250) is outside what A hands out here.
"""

from __future__ import annotations

import signal
import time

import pytest

from discovery.enroll.tokens import RendezvousRef, decode_token, encode_token
from discovery.lab import mesh as mesh_lab
from discovery.lab.engines import meshwg_argv
from discovery.lab.netns import poll
from discovery.stores.rendezvous import RendezvousState
from meshwg.core.keys import encode_key

pytestmark = pytest.mark.netns

B_ADDRESS = "198.18.0.11"
B_PORT = 51830
B_MESH_ADDRESS = "10.99.0.250"
MEMBERS = ("a1", "b")


def _rows(node) -> dict[str, dict]:
    return {row["endpoint"]: row for row in node.status().get("rendezvous", [])}


@pytest.fixture(scope="module")
def lab():
    with mesh_lab.build_lab(start=False) as lab:
        mesh_lab.init_rendezvous(lab)
        with RendezvousState.open(lab.rendezvous.state_dir) as a:
            mesh_id = a.mesh_id
        b = lab.add_public_node("rz2", B_ADDRESS, B_PORT)
        state_b = RendezvousState.init(b.state_dir, mesh_lab.MESH_NETWORK, f"{B_ADDRESS}:{B_PORT}",
                                       mesh_lab.ZONE, B_PORT, b.interface, mesh_id=mesh_id,
                                       address=B_MESH_ADDRESS)
        other = RendezvousRef(state_b.public_key, f"{B_ADDRESS}:{B_PORT}", B_PORT, B_MESH_ADDRESS)
        state_b.close()
        for label in MEMBERS:
            token = decode_token(lab.invite())
            lab.join(lab.members[label], encode_token(token.__class__(**{
                **token.__dict__, "others": (other,)})))
        with RendezvousState.open(lab.rendezvous.state_dir) as a, RendezvousState.open(b.state_dir) as sb:
            for m in a.members():
                sb.add_member(m.name, m.public_key, m.mesh_address)
        b.daemon = b.ns.popen(meshwg_argv("rendezvous", "run", "--state", b.state_dir,
                                          "--interval", lab.interval), "rendezvous-b",
                              log_dir=str(b.log_dir))
        poll(lambda: "running" in b.daemon.stderr(), 30, lambda: f"B to start\n{b.daemon.output()}")
        lab.b = b
        lab.b_public_key = encode_key(other.public_key)
        yield lab


def test_members_keep_tunnels_to_both_and_fail_over_when_one_dies(lab) -> None:
    a1, b = lab.members["a1"], lab.members["b"]
    b_mesh = b.status()["self"]["mesh_address"]
    poll(lambda: a1.ping(b_mesh, count=1) is not None, 90, "a1 to reach b through the mesh")
    a_endpoint = f"{mesh_lab.RENDEZVOUS_ADDRESS}:{mesh_lab.RENDEZVOUS_PORT}"
    b_endpoint = f"{B_ADDRESS}:{B_PORT}"
    for node in (a1, b):     # both answer (the spare is asked every SERIAL_POLL), A read
        poll(lambda: all(r["answers"] and r["tunnel"] for r in _rows(node).values())
             and len(_rows(node)) == 2, 60,
             lambda: f"{node.label} to hold tunnels to both rendezvous: {_rows(node)}")
        assert _rows(node)[a_endpoint]["current"]
    for node in (a1, b):     # B carries their tunnels: it learnt them by handshake
        poll(lambda: lab.b.wg.show("latest-handshakes").count("\t") >= 2 and all(
            not line.endswith("\t0") for line in lab.b.wg.show("latest-handshakes").splitlines()),
             60, lambda: f"B to hold both members' tunnels: {lab.b.wg.show('latest-handshakes')}")

    killed = time.monotonic()
    lab.rendezvous.daemon.signal(signal.SIGKILL)
    took = {}
    for node in (a1, b):
        poll(lambda: _rows(node)[b_endpoint]["current"] and node.status()["directory"]["error"] is None,
             60, lambda: f"{node.label} to read the directory at B: {_rows(node)} "
                         f"{node.status()['directory']}")
        took[node.label] = time.monotonic() - killed
    print(f"failover to the second rendezvous (kill -9 -> directory read at B): "
          f"{', '.join(f'{k} {v:.1f} s' for k, v in took.items())}")
    assert _rows(a1)[a_endpoint]["answers"] is False
    # the links stay; the directory read at B still lists the other member
    assert a1.ping(b_mesh, count=3) is not None
    assert "b" in a1.peers_by_name() and "a1" in b.peers_by_name()
    text = a1.meshwg("status", "--interface", a1.interface).stdout
    assert f"rendezvous {b_endpoint} ({B_MESH_ADDRESS}): directory read here, answers" in text
    assert f"rendezvous {a_endpoint}" in text and "NOT ANSWERING" in text
    assert f"directory read at {b_endpoint}" in a1.peers_by_name()["rendezvous"]["reason"]
