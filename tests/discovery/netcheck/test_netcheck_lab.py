"""`meshwg netcheck` in the NAT lab against the real rendezvous daemon (its observation
responder on the WireGuard port + 2 and + 3): `hard NAT: no` behind the port-rewriting NAT,
`yes` behind the symmetric one, the rendezvous read from a member state directory."""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from pathlib import Path

import pytest

from discovery.lab import mesh as mesh_lab
from discovery.lab.engines import meshwg_argv
from discovery.lab.netns import Cleanup
from discovery.netcheck.facts import own_facts
from discovery.stores.member import MemberState
from tests.conftest import require_netns

pytestmark = pytest.mark.netns


@pytest.fixture(scope="module")
def lab():
    require_netns()
    with Cleanup() as cleanup:
        workdir = Path(tempfile.mkdtemp(prefix="mwnetcheck"))
        cleanup.push("workdir", lambda: shutil.rmtree(workdir, ignore_errors=True))
        lab = mesh_lab.build_topology(cleanup, workdir, symmetric=True)
        rv = lab.rendezvous
        rv.state_dir.parent.mkdir(parents=True, exist_ok=True)
        rv.meshwg("rendezvous", "init", "--state", rv.state_dir, "--network", mesh_lab.MESH_NETWORK,
                  "--endpoint", f"{mesh_lab.RENDEZVOUS_ADDRESS}:{mesh_lab.RENDEZVOUS_PORT}",
                  "--zone", mesh_lab.ZONE, "--listen-port", mesh_lab.RENDEZVOUS_PORT,
                  "--interface", rv.interface)
        lab.start_rendezvous()
        yield lab


def member_state(workdir: Path, label: str) -> Path:
    """A member state directory naming the lab's rendezvous (as `meshwg join` leaves one)."""
    path = workdir / label / "netcheck-state"
    MemberState(private_key=bytes(range(32)), name=label, address="10.99.0.5",
                network=mesh_lab.MESH_NETWORK, zone=mesh_lab.ZONE, mesh_id="m",
                rendezvous_public_key=bytes(32),
                rendezvous_endpoint=f"{mesh_lab.RENDEZVOUS_ADDRESS}:{mesh_lab.RENDEZVOUS_PORT}",
                dns_address="10.99.0.1").save(path)
    return path


def netcheck(lab, label: str, *extra: str):
    node = lab.members[label]
    state = member_state(lab.workdir, label)
    return node.ns.run(meshwg_argv("netcheck", "--state", state, *extra), timeout=15).stdout


def test_port_rewriting_nat_is_not_hard(lab) -> None:
    out = netcheck(lab, "a1")
    lines = out.splitlines()
    assert "UDP: reachable" in lines and "hard NAT: no" in lines, out
    assert "hairpin: no" in lines, out
    assert any(line.startswith("reflexive IPv4: 198.18.1.1:") for line in lines), out


def test_symmetric_nat_is_hard_and_the_member_may_cite_it(lab) -> None:
    out = netcheck(lab, "c")
    assert any(line.startswith("hard NAT: yes") for line in out.splitlines()), out
    # kept in the state directory, where the member daemon reads it at start
    assert own_facts(lab.workdir / "c" / "netcheck-state", time.time()) == ({4}, True)


def test_json_report_shape(lab) -> None:
    out = netcheck(lab, "b", "--json")
    report = json.loads(out)
    assert report["rendezvous"] == f"{mesh_lab.RENDEZVOUS_ADDRESS}:{mesh_lab.RENDEZVOUS_PORT}"
    assert report["ports"] == [mesh_lab.RENDEZVOUS_PORT + 2, mesh_lab.RENDEZVOUS_PORT + 3]
    assert report["udp"] is True and report["ipv4"] is True and report["hard_nat"] is False
    assert report["hairpin"] is False and report["portmap"] is None
    assert report["reflexive_ipv4"].startswith(lab.routers["nat2"].public_address + ":")
    assert report["families"]["ipv4"]["behind_nat"] is True
    assert isinstance(report["latency_ms"], float)
    assert report["ipv6"] in (None, False) and report["reflexive_ipv6"] is None
