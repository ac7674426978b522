"""Links survive idle NATs (issue 8): members behind double NAT on both sides (a home NAT
behind a carrier NAT, 100.64.0.0/10 between them) and one behind a single NAT, every
router's UDP mappings expiring after 20 s of silence (nf_conntrack udp timeouts). The
mesh idles 90 s; then every pair pings at once and is answered on the path it had.

Why it holds: members keep each other alive with persistent keepalives every
MEMBER_KEEPALIVE (10) s, below the NATs' 20 s, and both ends of a pair send them (the
engine's persistent keepalive counts its own silence only, meshwg/core/receive.py), so
each end keeps its own mappings and hears the other within the 25 s silence check.
wg-quick's usual PersistentKeepalive = 25 would lose these mappings.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from discovery.lab import mesh as mesh_lab
from discovery.lab.nat import Internet, NatRouter
from discovery.lab.nat_types import double_nat, set_udp_timeouts
from discovery.lab.netns import Namespace, poll
from discovery.traversal.reconcile import MEMBER_KEEPALIVE

pytestmark = pytest.mark.netns

NAT_TIMEOUT = 20          # seconds: every router's UDP mapping lifetime
IDLE = 90.0               # seconds the mesh stays idle
SAMPLE = 5.0              # seconds between looks at the members' paths while idle
PING_DEADLINE = 5         # seconds for each pair's first ping reply after the idle


def _build(cleanup, workdir: Path) -> mesh_lab.MeshLab:
    internet = Internet(cleanup, mesh_lab.INTERNET, mesh_lab.INTERNET_GATEWAY)
    rv_ns = Namespace(cleanup, "rdv")
    internet.attach(rv_ns, mesh_lab.RENDEZVOUS_ADDRESS)
    rv_ns.run(["ip", "route", "add", "default", "via", mesh_lab.INTERNET_GATEWAY])
    rendezvous = mesh_lab._node(cleanup, workdir, "rendezvous", rv_ns, mesh_lab.RENDEZVOUS_PORT)
    routers: dict[str, NatRouter] = {}
    for site, public, home_lan, carrier_lan in (("x", "198.18.4.1", "10.4.0.0/24", "100.64.1.0/24"),
                                                ("y", "198.18.5.1", "10.5.0.0/24", "100.64.2.0/24")):
        carrier, home = double_nat(cleanup, internet, public, home_lan, carrier_lan=carrier_lan,
                                   tag=f"dn{site}")
        routers[f"{site}-carrier"], routers[site] = carrier, home
    routers["z"] = NatRouter(cleanup, internet, "198.18.6.1", "10.6.0.0/24", "rewrite", tag="natz")
    for router in routers.values():
        set_udp_timeouts(router, NAT_TIMEOUT)
    lab = mesh_lab.MeshLab(cleanup, workdir, internet, routers, rendezvous, {},
                           mesh_lab.DEFAULT_INTERVAL, symmetric=False)
    for port, site in enumerate(("x", "y", "z"), start=51831):
        lab.members[site] = lab.add_node(site, site, port)
    return lab


def _paths(lab: mesh_lab.MeshLab) -> dict[tuple[str, str], str]:
    view = lab.mesh_view()
    return {(a, b): view[a].get(b, {}).get("path", "missing") for a, b in lab.pairs()}


def _per_pair(lab: mesh_lab.MeshLab, table) -> dict[tuple[str, str], object]:
    """(a, b) -> what `table(a's node)` (by public key) says of b."""
    out = {}
    for a, node in lab.members.items():
        rows = table(node)
        for b, peer in lab.members.items():
            if a != b:
                out[a, b] = rows.get(peer.public_key)
    return out


def _endpoints(lab: mesh_lab.MeshLab) -> dict[tuple[str, str], object]:
    return _per_pair(lab, lambda node: node.wg.endpoints())


def _received(lab: mesh_lab.MeshLab) -> dict[tuple[str, str], object]:
    """(a, b) -> bytes a received from b."""
    return _per_pair(lab, lambda node: {k: rx for k, (rx, _tx) in node.wg.transfer().items()})


def test_mesh_behind_double_and_short_lived_nats_survives_90_s_idle(lab) -> None:
    assert MEMBER_KEEPALIVE < NAT_TIMEOUT
    workdir = Path(tempfile.mkdtemp(prefix="mwidle-"))
    lab.push(f"remove {workdir}", lambda: shutil.rmtree(workdir, ignore_errors=True))
    mesh = _build(lab, workdir)
    for router in mesh.routers.values():
        assert router.ns.read_sysctl("net.netfilter.nf_conntrack_udp_timeout") == str(NAT_TIMEOUT)

    mesh_lab.init_rendezvous(mesh)
    for node in mesh.members.values():
        mesh.join(node, mesh.invite(), wait=False)
    for node in mesh.members.values():
        mesh.wait_joined(node, timeout=60)

    # every pair direct: both double NATs map endpoint-independently at both levels
    poll(lambda: all(p == "direct" for p in _paths(mesh).values()), 90,
         lambda: f"every pair direct: {_paths(mesh)}", interval=0.5)
    before = _endpoints(mesh)
    received = _received(mesh)

    # idle: no traffic but the mesh's own; the paths stay as they were all along
    flaps = []
    end = time.monotonic() + IDLE
    while time.monotonic() < end:
        paths = _paths(mesh)
        flaps += [(pair, path) for pair, path in paths.items() if path != "direct"]
        time.sleep(SAMPLE)      # pacing the samples, not waiting for anything
    assert flaps == [], f"paths left direct while idle: {flaps}"
    assert _endpoints(mesh) == before
    after = _received(mesh)
    # keepalives went both ways on every pair (each end heard the other while idle)
    quiet = [pair for pair in received if (after[pair] or 0) <= (received[pair] or 0)]
    assert quiet == [], f"heard nothing while idle: {quiet}"

    # every pair at once, on the path it had
    def ping(pair: tuple[str, str]) -> bool:
        a, b = pair
        node = mesh.members[a]
        return node.ns.ping(mesh.members[b].mesh_address, count=1,
                            wait=PING_DEADLINE).returncode == 0
    with ThreadPoolExecutor(max_workers=len(before)) as pool:
        answered = dict(zip(before, pool.map(ping, before)))
    assert all(answered.values()), f"no reply within {PING_DEADLINE} s: {answered}"
    assert _endpoints(mesh) == before
