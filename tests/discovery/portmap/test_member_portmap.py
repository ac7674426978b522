"""A member behind a symmetric NAT whose router runs miniupnpd: `meshwg join` maps its
WireGuard port (PCP), reports the mapped endpoint as a host candidate, shows it in
`meshwg status --json`, and a member behind another NAT reaches it directly through the
mapping (without the mapping this pair would need the relay)."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pytest

from discovery.lab import miniupnpd
from discovery.lab.mesh import MESH_NETWORK, ZONE, MeshLab, Node
from discovery.lab.miniupnpd import MiniUpnpd, PORTMAP_INTERNET
from discovery.lab.nat import Internet, NatRouter
from discovery.lab.netns import Namespace, poll, unique_name
from discovery.lab.wg import remove_uapi_socket

pytestmark = pytest.mark.netns

RENDEZVOUS = "11.0.0.10"
RENDEZVOUS_PORT = 51820


def _rendezvous(lab, internet: Internet, workdir: Path) -> Node:
    ns = Namespace(lab, "rdv")
    internet.attach(ns, RENDEZVOUS)
    ns.run(["ip", "route", "add", "default", "via", internet.gateway])
    interface = unique_name("mwrv")
    lab.push(f"remove socket {interface}", lambda: remove_uapi_socket(interface))
    return Node(label="rendezvous", ns=ns, interface=interface, listen_port=RENDEZVOUS_PORT,
                state_dir=workdir / "rendezvous" / "state", log_dir=workdir / "rendezvous")


def test_member_behind_symmetric_nat_gets_a_direct_path_through_its_mapping(lab):
    reason = miniupnpd.unavailable_reason()
    if reason:
        pytest.skip(reason)
    workdir = Path(tempfile.mkdtemp(prefix="mwlab-portmap-"))
    lab.push(f"remove {workdir}", lambda: shutil.rmtree(workdir, ignore_errors=True))
    internet = Internet(lab, *PORTMAP_INTERNET)
    home = NatRouter(lab, internet, "11.0.0.3", "10.3.0.0/24", "symmetric", tag="home")
    other = NatRouter(lab, internet, "11.0.0.2", "10.2.0.0/24", "rewrite", tag="other")
    upnpd = MiniUpnpd(home)
    rv = _rendezvous(lab, internet, workdir)
    mesh = MeshLab(lab, workdir, internet, {"home": home, "other": other}, rv, {}, 1.0, True)
    rv.state_dir.parent.mkdir(parents=True, exist_ok=True)
    rv.meshwg("rendezvous", "init", "--state", rv.state_dir, "--network", MESH_NETWORK,
              "--endpoint", f"{RENDEZVOUS}:{RENDEZVOUS_PORT}", "--zone", ZONE,
              "--listen-port", RENDEZVOUS_PORT, "--interface", rv.interface)
    mesh.start_rendezvous()
    c = mesh.add_node("home", "c", 51824)
    b = mesh.add_node("other", "b", 51823)
    for node in (c, b):
        mesh.join(node, mesh.invite())

    mapped = poll(lambda: c.status().get("portmap"), 20,
                  lambda: f"c's port mapping\n{c.daemon.output()}\n{upnpd.daemon.output()}")
    assert mapped["protocol"] == "pcp"
    assert mapped["endpoint"] == "11.0.0.3:51824"
    assert b.status().get("portmap") is None        # no port mapping on b's router

    def direct() -> bool:
        return (c.peers_by_name().get("b", {}).get("path") == "direct"
                and b.peers_by_name().get("c", {}).get("path") == "direct")
    poll(direct, 60, lambda: f"a direct c<->b path: c sees {c.peers_by_name().get('b')}, "
                             f"b sees {b.peers_by_name().get('c')}", interval=0.5)
    assert b.wg.endpoints()[c.public_key] == mapped["endpoint"]
    assert c.ping(b.mesh_address) is not None

    # Leaving deletes the mapping on the gateway.
    c.daemon.stop()
    assert "DNAT" not in upnpd.redirects()
