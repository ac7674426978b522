"""Members learn the mesh's rendezvous from the directory (issue 10): the mesh lab's
rendezvous A on a BIND primary on the fake internet, members a1 and b joined with tokens
that name only A; then rendezvous C is created (a second `rendezvous init` on the same
zone, no --network) and runs with its relay over TLS.

Covered: C's zone entry carries its TLS relay port (tls=); a1 and b learn C from the list
A serves at ``_rendezvous.ZONE`` without a new token: their status lists C with a tunnel
that answers, and member.json keeps it (with its relay port) for a restart. Then A is
killed with -9: a1 reads the directory at C within seconds (printed: kill -> read at C),
the a1<->b link stays, and both still list each other as peers.
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
C_ADDRESS, C_PORT = "198.18.0.12", 51840
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


def test_members_learn_a_new_rendezvous_and_fail_over_to_it(lab) -> None:
    a1, b = lab.members["a1"], lab.members["b"]
    poll(lambda: a1.ping(b.mesh_address, count=1) is not None, 90, "a1 to reach b through the mesh")
    assert list(_rows(a1)) == [A_ENDPOINT] and _saved(a1) == {}

    c = lab.add_public_node("rz3", C_ADDRESS, C_PORT)
    c.meshwg("rendezvous", "init", "--state", c.state_dir, "--endpoint", C_ENDPOINT,
             "--listen-port", C_PORT, "--interface", c.interface, *lab.directory)
    started = time.monotonic()
    c.daemon = c.ns.popen(meshwg_argv("rendezvous", "run", "--state", c.state_dir,
                                      "--interval", lab.interval),
                          "rendezvous-c", log_dir=str(c.log_dir))
    poll(lambda: "running" in c.daemon.stderr(), 30, lambda: f"C to start\n{c.daemon.output()}")
    for node in (a1, b):     # learned from the directory at A: a tunnel to C that answers
        poll(lambda: C_ENDPOINT in _rows(node) and _rows(node)[C_ENDPOINT]["tunnel"]
             and _rows(node)[C_ENDPOINT]["answers"], 60,
             lambda: f"{node.label} to learn C and hold a tunnel to it: {_rows(node)}")
    print(f"a new rendezvous learned (C started -> a1 and b hold answering tunnels to it): "
          f"{time.monotonic() - started:.1f} s")
    poll(lambda: _saved(a1).get(C_ENDPOINT, {}).get("relay_tcp_port") == tls.DEFAULT_PORT, 30,
         lambda: f"a1's member.json to keep C with its TLS relay port: {_saved(a1)}")
    assert a1.status()["rendezvous_dropped"] == {}
    assert f"rendezvous {C_ENDPOINT}" in a1.meshwg("status", "--interface", a1.interface).stdout

    killed = time.monotonic()
    lab.rendezvous.daemon.signal(signal.SIGKILL)
    _reading_at(a1, C_ENDPOINT)
    print(f"failover (kill -9 of A -> a1 reads the directory at C): {time.monotonic() - killed:.1f} s")
    assert a1.ping(b.mesh_address, count=3) is not None
    _reading_at(b, C_ENDPOINT)
    assert b.ping(a1.mesh_address, count=3) is not None
    assert "b" in a1.peers_by_name() and "a1" in b.peers_by_name()
    assert A_ENDPOINT in _rows(a1)          # the one enrolled at is never forgotten
