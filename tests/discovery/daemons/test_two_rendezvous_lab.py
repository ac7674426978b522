"""A member with two rendezvous (issue 10, part 5) in the mesh lab: members behind NATs
join with a format-3 token naming the lab's rendezvous A and a second one, B, on the
fake internet; each keeps a tunnel to both, reads the directory at A, reports to both.
A is killed with -9: each member reads the directory at B from then on (failover) and
keeps its link to the other member; `meshwg status` lists both rendezvous and says A
does not answer.

Relayed links survive too: b (port-rewriting NAT) and c (symmetric NAT) have no direct
path; each member's relay pool holds the relays of both rendezvous it keeps tunnels to.
The pair is relayed through A's relay (B's relay port is blocked until then, so the pair
starts on A's), B's relay is then bound at both ends, and c pings b every 0.2 s across the
kill -9 of A: the pair moves to B's relay (PROBE_INTERVAL + DEAD_AFTER) and the longest
gap is printed.

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
MEMBERS = ("a1", "b", "c")
B_RELAY_NAME = f"rendezvous {B_ADDRESS}:{B_PORT}"     # how members name B's relay
A_RELAY_NAME = "rendezvous"                           # the one they enrolled at
GAP_PINGS = 150                                       # c -> b every 0.2 s across the kill
BLOCK_B_RELAY = ["INPUT", "-p", "udp", "--dport", str(B_PORT + 1), "-j", "DROP"]


def _rows(node) -> dict[str, dict]:
    return {row["endpoint"]: row for row in node.status().get("rendezvous", [])}


def _relayed_via(b, c, name: str) -> bool:
    """b and c relayed to each other, both through the relay `name`."""
    bc, cb = b.peers_by_name().get("c") or {}, c.peers_by_name().get("b") or {}
    return all(row.get("path") == "relay" and row.get("relay") == name for row in (bc, cb))


def _pair(b, c) -> str:
    try:
        return f"b->c {b.peers_by_name().get('c')}; c->b {c.peers_by_name().get('b')}"
    except Exception as exc:  # noqa: BLE001 - only for the message
        return str(exc)


def _relay_alive(node, name: str) -> bool:
    return any(row["name"] == name and row["bound"] and row["alive"]
               for row in node.status().get("relays", []))


def _longest_gap(ping_output: str, count: int) -> tuple[int, float]:
    """(answered, longest gap in s between answered icmp_seq) of `count` pings at 0.2 s."""
    seqs = sorted({int(line.split("icmp_seq=")[1].split()[0])
                   for line in ping_output.splitlines() if "icmp_seq=" in line and "time=" in line})
    gaps = [after - before for before, after in zip([0] + seqs, seqs + [count + 1])]
    return len(seqs), (max(gaps) - 1) * 0.2


@pytest.fixture(scope="module")
def lab():
    with mesh_lab.build_lab(start=False, symmetric=True) as lab:
        mesh_lab.init_rendezvous(lab)
        with RendezvousState.open(lab.rendezvous.state_dir) as a:
            mesh_id = a.mesh_id
        b = lab.add_public_node("rz2", B_ADDRESS, B_PORT)
        b.ns.run(["iptables", "-I", *BLOCK_B_RELAY])     # b and c start on A's relay
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

    # b and c (symmetric NAT: no direct path) are relayed through A's relay; then B's
    # relay answers too and both ends bind there (the pair stays on A's: same class)
    bn, c = b, lab.members["c"]
    poll(lambda: _relayed_via(bn, c, A_RELAY_NAME), 90, lambda: f"b and c relayed via A: {_pair(bn, c)}")
    lab.b.ns.run(["iptables", "-D", *BLOCK_B_RELAY])
    for node in (bn, c):
        poll(lambda: _relay_alive(node, B_RELAY_NAME), 30,
             lambda: f"{node.label} to bind at B's relay: {node.status().get('relays')}")
    poll(lambda: c.ping(bn.mesh_address, count=1) is not None, 30, "c to ping b through A's relay")
    assert _relayed_via(bn, c, A_RELAY_NAME), _pair(bn, c)
    pinger = c.ns.popen(["ping", "-n", "-c", GAP_PINGS, "-i", "0.2", "-W", "1", bn.mesh_address],
                        "gap-ping")

    killed = time.monotonic()
    lab.rendezvous.daemon.signal(signal.SIGKILL)
    poll(lambda: _relayed_via(bn, c, B_RELAY_NAME), 60, lambda: f"b and c relayed via B: {_pair(bn, c)}")
    moved = time.monotonic() - killed
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
    # the relayed pair pings through B's relay; how long c's pings went unanswered
    pinger.wait(GAP_PINGS * 0.2 + 30)
    answered, gap = _longest_gap(pinger.stdout(), GAP_PINGS)
    print(f"relayed pair b-c: on B's relay {moved:.1f} s after kill -9 of A; "
          f"{answered}/{GAP_PINGS} pings at 0.2 s answered, longest gap {gap:.1f} s")
    assert answered >= GAP_PINGS // 2, pinger.stdout()[-2000:]
    assert c.ping(bn.mesh_address, count=3) is not None and bn.ping(c.mesh_address, count=3) is not None
    assert _relayed_via(bn, c, B_RELAY_NAME) and not _relay_alive(c, A_RELAY_NAME), _pair(bn, c)
