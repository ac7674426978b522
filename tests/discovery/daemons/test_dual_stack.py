"""Dual stack (issue 8): a member is observed and published on every address family it has,
and its peers reach it on theirs.

In namespaces: the rendezvous is dual-stack on the lab internet (198.18.0.10 and
fd5e:1ab::10) under one name with both addresses ("rdv.lab.test", each member's
/etc/netns hosts file); the member "ds" sits behind a port-rewriting IPv4 NAT and has a
global IPv6 address of its own, and prefers IPv6 (its gai.conf, as a host with a real
global address does), so it reaches the rendezvous over IPv6 and the rendezvous's engine
sees it there only; "v4" is IPv4-only behind another port-rewriting NAT; "v6" is an
IPv6-only public host. The IPv4-only member must reach ds directly at ds's IPv4 NAT
mapping (the one ds observed for its engine's socket through the rendezvous's observation
responder, reported as a candidate), the IPv6-only member directly at ds's IPv6 address,
shown by `wg show endpoints` on both ends, and pings must go through.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import pytest

from discovery.lab import mesh as mesh_lab
from discovery.lab.nat import Internet, NatRouter
from discovery.lab.nat_types import IPV6_PREFIX, add_ipv6, ipv6_only_host
from discovery.lab.netns import Cleanup, Namespace, poll, unique_name
from discovery.lab.wg import remove_uapi_socket

pytestmark = pytest.mark.netns

RDV_NAME = "rdv.lab.test"
RDV_V4, RDV_V6 = mesh_lab.RENDEZVOUS_ADDRESS, "fd5e:1ab::10"
DS_V6, V6_ONLY = "fd5e:1ab::21", "fd5e:1ab::30"
DS_NAT, V4_NAT = ("198.18.1.1", "10.1.0.0/24"), ("198.18.2.1", "10.2.0.0/24")
PORTS = {"ds": 51831, "v4": 51832, "v6": 51833}
# glibc's default table ranks ULA below IPv4; here IPv6 goes first, as a global address would
PREFER_IPV6 = ("precedence ::1/128 50\nprecedence ::/0 40\nprecedence 2002::/16 30\n"
               "precedence ::/96 20\nprecedence ::ffff:0:0/96 10\n")


def _node(cleanup: Cleanup, workdir: Path, label: str, ns: Namespace) -> mesh_lab.Node:
    interface = unique_name(f"mw{label[:2]}")
    cleanup.push(f"remove socket {interface}", lambda: remove_uapi_socket(interface))
    node = mesh_lab.Node(label=label, ns=ns, interface=interface,
                         listen_port=PORTS.get(label, mesh_lab.RENDEZVOUS_PORT),
                         state_dir=workdir / label / "state", log_dir=workdir / label)
    node.state_dir.parent.mkdir(parents=True, exist_ok=True)
    return node


@pytest.fixture(scope="module")
def dual_stack_mesh():
    with Cleanup() as cleanup:
        workdir = Path(tempfile.mkdtemp(prefix="mwdual"))
        cleanup.push("workdir", lambda: shutil.rmtree(workdir, ignore_errors=True))
        internet = Internet(cleanup, mesh_lab.INTERNET, mesh_lab.INTERNET_GATEWAY)
        rv_ns = Namespace(cleanup, "rdv")
        internet.attach(rv_ns, RDV_V4)
        add_ipv6(rv_ns, RDV_V6)
        rv_ns.run(["ip", "route", "add", "default", "via", mesh_lab.INTERNET_GATEWAY])
        nat_ds = NatRouter(cleanup, internet, *DS_NAT, "rewrite", tag="dsnat")
        nat_v4 = NatRouter(cleanup, internet, *V4_NAT, "rewrite", tag="v4nat")
        ds_ns, _ = nat_ds.add_host("ds")
        prefix = int(IPV6_PREFIX.split("/")[1])
        internet.bridge.attach(ds_ns, [f"{DS_V6}/{prefix}"], ifname="eth1")   # global IPv6
        v4_ns, _ = nat_v4.add_host("v4")
        v6_ns = ipv6_only_host(cleanup, internet, V6_ONLY)
        hosts = f"127.0.0.1 localhost\n{RDV_V4} {RDV_NAME}\n{RDV_V6} {RDV_NAME}\n"
        for ns in (ds_ns, v4_ns, v6_ns):
            ns.etc_files({"hosts": hosts, **({"gai.conf": PREFER_IPV6} if ns is ds_ns else {})})
        rendezvous = _node(cleanup, workdir, "rendezvous", rv_ns)
        members = {label: _node(cleanup, workdir, label, ns)
                   for label, ns in (("ds", ds_ns), ("v4", v4_ns), ("v6", v6_ns))}
        lab = mesh_lab.MeshLab(cleanup, workdir, internet, {"dsnat": nat_ds, "v4nat": nat_v4},
                               rendezvous, members, interval=1.0, symmetric=False)
        rendezvous.meshwg("rendezvous", "init", "--state", rendezvous.state_dir,
                          "--network", mesh_lab.MESH_NETWORK,
                          "--endpoint", f"{RDV_NAME}:{mesh_lab.RENDEZVOUS_PORT}",
                          "--zone", mesh_lab.ZONE, "--listen-port", mesh_lab.RENDEZVOUS_PORT,
                          "--interface", rendezvous.interface)
        lab.start_rendezvous()
        for node in members.values():
            lab.join(node, lab.invite(), wait=False)
        for node in members.values():
            lab.wait_joined(node)
        yield lab


# argv: DNS address, port, zone, public key (base64): the member's record as the directory
# serves it, read through the tunnel
READ_RECORD = r"""
import json, sys
from discovery.dnssd.client import resolve_member
from meshwg.core.keys import decode_key
address, port, zone, key = sys.argv[1:]
record = resolve_member((address, int(port)), zone, decode_key(key), timeout=2.0)
print(json.dumps({"endpoint": record.endpoint, "candidates": record.host_candidates}))
"""


def _published(lab: mesh_lab.MeshLab, reader: mesh_lab.Node, member: mesh_lab.Node) -> dict:
    address, port = lab.dns_server()
    out = reader.ns.run_python(READ_RECORD, address, port, mesh_lab.ZONE, member.public_key)
    return json.loads(out.stdout)


def _endpoint_of(node: mesh_lab.Node, peer: mesh_lab.Node) -> str:
    return node.wg.endpoints().get(peer.public_key, "(none)")


def test_dual_stack_member_is_reached_directly_on_both_families(dual_stack_mesh) -> None:
    lab = dual_stack_mesh
    ds, v4, v6 = lab.members["ds"], lab.members["v4"], lab.members["v6"]
    # the scenario: ds talks to the rendezvous over IPv6, so the rendezvous's engine sees
    # only its IPv6 endpoint
    rdv = poll(lambda: ds.peers_by_name()["rendezvous"].get("endpoint"), 30,
               "ds to reach the rendezvous")
    assert rdv == f"[{RDV_V6}]:{mesh_lab.RENDEZVOUS_PORT}"
    # ... and the directory publishes ds on both families: the IPv6 endpoint the rendezvous
    # sees, and the IPv4 mapping ds observed for its engine's socket among its candidates
    def listed_on_ipv4() -> dict | None:
        record = _published(lab, v4, ds)
        return record if any(host == DS_NAT[0] for host, _ in record["candidates"]) else None

    record = poll(listed_on_ipv4, 30, "ds's IPv4 mapping in the directory", interval=0.5)
    assert record["endpoint"] == [DS_V6, PORTS["ds"]]

    wanted = [
        (v4, ds, f"{DS_NAT[0]}:"),                   # ds's IPv4 NAT mapping (port rewritten)
        (ds, v4, f"{V4_NAT[0]}:"),
        (v6, ds, f"[{DS_V6}]:{PORTS['ds']}"),
        (ds, v6, f"[{V6_ONLY}]:{PORTS['v6']}"),
    ]

    def direct() -> bool:
        return all(_endpoint_of(a, b).startswith(want) for a, b, want in wanted)

    def now() -> str:
        return "; ".join(f"{a.label}->{b.label}: {_endpoint_of(a, b)}" for a, b, _ in wanted)

    poll(direct, 90, lambda: f"direct endpoints; now: {now()}", interval=0.5)
    # the IPv4 mapping is the engine socket's: the port the NAT gave ds's WireGuard traffic
    port = int(_endpoint_of(v4, ds).rsplit(":", 1)[1])
    mapped = {int(m["rdport"]) for m in lab.routers["dsnat"].udp_mappings()
              if m.get("sport") == str(PORTS["ds"])}
    assert port in mapped

    for a, b in ((v4, ds), (v6, ds), (ds, v4), (ds, v6)):
        a.ns.wait_ping(b.mesh_address, timeout=20)
    assert direct(), now()


def test_losing_its_ipv6_the_member_moves_to_the_rendezvous_over_ipv4(dual_stack_mesh) -> None:
    """Runs last (it changes the lab): ds's IPv6 address goes away; ds reaches the
    rendezvous at its IPv4 address instead, is listed there at its IPv4 mapping, and the
    IPv4-only member still reaches it directly."""
    lab = dual_stack_mesh
    ds, v4 = lab.members["ds"], lab.members["v4"]
    prefix = int(IPV6_PREFIX.split("/")[1])
    ds.ns.del_address("eth1", f"{DS_V6}/{prefix}")
    poll(lambda: ds.peers_by_name()["rendezvous"].get("endpoint")
         == f"{RDV_V4}:{mesh_lab.RENDEZVOUS_PORT}", 30,
         lambda: f"ds to reach the rendezvous over IPv4 ({ds.peers_by_name()['rendezvous']})",
         interval=0.5)
    record = poll(lambda: (_published(lab, v4, ds)["endpoint"] or [""])[0] == DS_NAT[0], 30,
                  "ds listed at its IPv4 mapping", interval=0.5)
    assert record
    v4.ns.wait_ping(ds.mesh_address, timeout=20)
    ds.ns.wait_ping(v4.mesh_address, timeout=20)
    assert _endpoint_of(v4, ds).startswith(f"{DS_NAT[0]}:"), _endpoint_of(v4, ds)
