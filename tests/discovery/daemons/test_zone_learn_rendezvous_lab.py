"""Members learn the mesh's rendezvous from the directory (issue 10): the mesh lab's
rendezvous A on a BIND primary on the fake internet, members a1 and b joined with tokens
that name only A; then rendezvous B and C are created (more `rendezvous init` on the same
zone, no --network), C with its relay over TLS.

Covered: a1 and b learn B and C from the list A serves at ``_rendezvous.ZONE`` without a
new token: their status lists B with a tunnel that answers and C without one (two are
kept), member.json keeps both (C with the TLS relay port its zone entry carries, tls=) for
a restart. Then A and B are killed with -9: a1 and b read the directory at C within
seconds through a new tunnel (printed: kill -> read at C), the a1<->b link stays, and both
still list each other as peers; a1 restarted then reads at C (known from member.json only)
and reaches b again.
"""

from __future__ import annotations

import json
import signal
import time

import pytest

from discovery.enroll.tokens import decode_token
from discovery.lab import mesh as mesh_lab
from discovery.lab.engines import meshwg_argv
from discovery.lab.netns import poll
from discovery.relay import tls
from tests.discovery.daemons.test_zone_rendezvous_mesh_lab import zone_on_the_internet
from tests.discovery.daemons.test_zone_two_rendezvous_lab import _rows

pytestmark = pytest.mark.netns

A_ENDPOINT = f"{mesh_lab.RENDEZVOUS_ADDRESS}:{mesh_lab.RENDEZVOUS_PORT}"
B_ADDRESS, B_PORT = "198.18.0.11", 51830
C_ADDRESS, C_PORT = "198.18.0.12", 51840
B_ENDPOINT = f"{B_ADDRESS}:{B_PORT}"
C_ENDPOINT = f"{C_ADDRESS}:{C_PORT}"


def _reading_at(node, endpoint: str) -> None:
    """Wait until `node` reads the directory at the rendezvous at `endpoint`."""
    poll(lambda: _rows(node)[endpoint]["current"] and node.status()["directory"]["error"] is None,
         60, lambda: f"{node.label} to read the directory at {endpoint}: {_rows(node)} "
                     f"{node.status()['directory']}")


def _saved(node) -> dict[str, dict]:
    doc = json.loads((node.state_dir / "member.json").read_text())
    return {ref["endpoint"]: ref for ref in doc["other_rendezvous"]}


@pytest.fixture(scope="module")
def lab():
    with mesh_lab.build_lab(start=False) as lab:
        lab.directory = zone_on_the_internet(lab)
        lab.start_rendezvous("--no-relay")
        for label in ("a1", "b"):
            token = lab.invite()
            assert [r.endpoint for r in decode_token(token).rendezvous] == [A_ENDPOINT]
            lab.join(lab.members[label], token)
        yield lab


def _new_rendezvous(lab, label: str, address: str, port: int, *run: str):
    """Another rendezvous of the mesh: `rendezvous init` on the lab's zone (no --network),
    then `rendezvous run`."""
    node = lab.add_public_node(label, address, port)
    node.meshwg("rendezvous", "init", "--state", node.state_dir, "--endpoint", f"{address}:{port}",
                "--listen-port", port, "--interface", node.interface, *lab.directory)
    node.daemon = node.ns.popen(meshwg_argv("rendezvous", "run", "--state", node.state_dir,
                                            "--interval", lab.interval, *run),
                                f"rendezvous-{label}", log_dir=str(node.log_dir))
    poll(lambda: "running" in node.daemon.stderr(), 30,
         lambda: f"{label} to start\n{node.daemon.output()}")
    return node


def test_members_learn_new_rendezvous_and_fail_over_to_them(lab) -> None:
    a1, b = lab.members["a1"], lab.members["b"]
    poll(lambda: a1.ping(b.mesh_address, count=1) is not None, 90, "a1 to reach b through the mesh")
    assert list(_rows(a1)) == [A_ENDPOINT] and _saved(a1) == {}

    started = time.monotonic()
    rz2 = _new_rendezvous(lab, "rz2", B_ADDRESS, B_PORT, "--no-relay")
    for node in (a1, b):     # learned from the directory at A: a tunnel to B that answers
        poll(lambda: B_ENDPOINT in _rows(node) and _rows(node)[B_ENDPOINT]["tunnel"]
             and _rows(node)[B_ENDPOINT]["answers"], 60,
             lambda: f"{node.label} to learn B and hold a tunnel to it: {_rows(node)}")
    print(f"a new rendezvous learned (B init -> a1 and b hold answering tunnels to it): "
          f"{time.monotonic() - started:.1f} s")
    _new_rendezvous(lab, "rz3", C_ADDRESS, C_PORT)       # with its relay over TLS
    for node in (a1, b):     # known, no tunnel: two are kept (A, B)
        poll(lambda: C_ENDPOINT in _rows(node), 60, lambda: f"{node.label} to learn C: {_rows(node)}")
        assert not _rows(node)[C_ENDPOINT]["tunnel"], _rows(node)
    poll(lambda: _saved(a1).get(C_ENDPOINT, {}).get("relay_tcp_port") == tls.DEFAULT_PORT, 30,
         lambda: f"a1's member.json to keep C with its TLS relay port: {_saved(a1)}")
    assert _saved(a1)[B_ENDPOINT]["relay_tcp_port"] == 0
    assert a1.status()["rendezvous_dropped"] == {}
    assert f"rendezvous {C_ENDPOINT}" in a1.meshwg("status", "--interface", a1.interface).stdout

    killed = time.monotonic()
    for daemon in (lab.rendezvous.daemon, rz2.daemon):
        daemon.signal(signal.SIGKILL)
    _reading_at(a1, C_ENDPOINT)
    print(f"failover (kill -9 of A and B -> a1 reads the directory at C through a new tunnel): "
          f"{time.monotonic() - killed:.1f} s")
    assert _rows(a1)[C_ENDPOINT]["tunnel"]
    assert a1.ping(b.mesh_address, count=3) is not None
    _reading_at(b, C_ENDPOINT)
    assert b.ping(a1.mesh_address, count=3) is not None
    assert "b" in a1.peers_by_name() and "a1" in b.peers_by_name()
    assert A_ENDPOINT in _rows(a1)          # the one enrolled at is never forgotten

    a1.daemon.stop()                        # a restart knows C from member.json alone
    restarted = time.monotonic()
    lab.join(a1)
    _reading_at(a1, C_ENDPOINT)
    print(f"a1 restarted with A and B dead: reads the directory at C after "
          f"{time.monotonic() - restarted:.1f} s")
    poll(lambda: a1.ping(b.mesh_address, count=1) is not None, 60, "a1 to reach b after its restart")
