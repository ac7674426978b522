"""Validates the namespace lab (discovery/lab) itself with wireguard-go <-> wireguard-go
(no meshwg code)."""

from __future__ import annotations

import os

import pytest

from discovery.lab.engines import WireguardGo, start_wireguard, tunnel_pair
from discovery.lab.nat import Internet, NatRouter
from discovery.lab.netns import Cleanup, Namespace, PollTimeout, poll, run
from discovery.lab.traffic import tcp_transfer
from discovery.lab.wg import PeerConfig, keypair

pytestmark = pytest.mark.netns


def test_wireguard_go_pair_pings_both_ways_over_veth(lab: Cleanup) -> None:
    pair = tunnel_pair(lab, "wireguard-go", "wireguard-go")
    pair.ns_a.wait_ping(pair.tunnel_b, timeout=10)
    pair.ns_b.wait_ping(pair.tunnel_a, timeout=10)
    assert pair.a.latest_handshakes()[pair.b.public_key] > 0
    rx, tx = pair.a.transfer()[pair.b.public_key]
    assert rx > 0 and tx > 0
    assert pair.b.endpoints()[pair.a.public_key] == f"{pair.underlay_a}:{pair.port_a}"


def test_tcp_transfer_helper_moves_data_intact(lab: Cleanup) -> None:
    pair = tunnel_pair(lab, "wireguard-go", "wireguard-go")
    pair.ns_a.wait_ping(pair.tunnel_b, timeout=10)
    result = tcp_transfer(pair.ns_a, pair.ns_b, pair.tunnel_b, 2_000_000, timeout=30)
    assert result.intact, result
    rx_b, _ = pair.b.transfer()[pair.a.public_key]
    assert rx_b >= 2_000_000


def test_ipv6_inside_tunnel_over_ipv6_underlay(lab: Cleanup) -> None:
    pair = tunnel_pair(lab, "wireguard-go", "wireguard-go", underlay_v6=True,
                              endpoints="a")
    pair.ns_a.wait_ping(pair.tunnel6_b, timeout=10)
    assert pair.b.endpoints()[pair.a.public_key] == f"[{pair.underlay6_a}]:{pair.port_a}"


def test_nat_router_rewrites_ports_and_renumbers(lab: Cleanup) -> None:
    """A host behind a port-rewriting NAT keeps a tunnel to a public peer; the public peer
    sees the NAT's public address and a rewritten port, and the new address after renumbering."""
    internet = Internet(lab)
    public = Namespace(lab, "pub")
    internet.attach(public, "198.18.0.10")
    router = NatRouter(lab, internet, "198.18.0.20", "10.77.0.0/24")
    home, _ = router.add_host("home")
    keys_pub, keys_home = keypair(), keypair()
    pub = start_wireguard(lab, "wireguard-go", public, ["10.99.0.1/24"], 51820,
                          keys_pub, [PeerConfig(keys_home.public, ["10.99.0.2/32"])])
    behind = start_wireguard(
        lab, "wireguard-go", home, ["10.99.0.2/24"], 51820, keys_home,
        [PeerConfig(keys_pub.public, ["10.99.0.1/32"], endpoint="198.18.0.10:51820",
                    persistent_keepalive=1)])
    home.wait_ping("10.99.0.1", timeout=10)

    def seen() -> str:
        return pub.endpoints()[keys_home.public]
    first = seen()
    ip, port = first.rsplit(":", 1)
    assert ip == "198.18.0.20"
    assert 40000 <= int(port) <= 40100, f"port not rewritten: {first}"

    router.renumber("198.18.0.21")
    poll(lambda: seen().startswith("198.18.0.21:"), 10,
         lambda: f"public peer to see the renumbered NAT (sees {seen()})")
    public.wait_ping("10.99.0.2", timeout=10)
    assert behind.daemon.alive


def test_lab_close_removes_namespaces_processes_and_sockets() -> None:
    from tests.conftest import require_netns
    require_netns()
    lab = Cleanup()
    try:
        ns = Namespace(lab, "gone")
        wg = WireguardGo(lab, ns, "10.99.0.1/24")
        sleeper = ns.popen(["sleep", "600"], name="sleeper")
        assert wg.socket_path.exists()
    finally:
        problems = lab.close()
    assert problems == []
    assert ns.name not in run(["ip", "netns", "list"]).stdout
    assert not wg.daemon.alive and not sleeper.alive
    assert not wg.socket_path.exists()
    assert not os.path.exists(f"/proc/{sleeper.pid}/stat") or not sleeper.alive


def test_poll_reports_what_it_waited_for() -> None:
    with pytest.raises(PollTimeout, match="the impossible"):
        poll(lambda: False, 0.2, "the impossible")


_UDP_ECHO_SOURCE = r"""
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind((sys.argv[1], 9000))
s.settimeout(10)
print("listening", flush=True)
data, src = s.recvfrom(100)
print(f"{src[0]}:{src[1]}", flush=True)
"""

_UDP_SEND_TWO = r"""
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("0.0.0.0", 7000))
for target in sys.argv[1:]:
    s.sendto(b"x", (target, 9000))
"""


@pytest.mark.parametrize("mode,same_port", [("rewrite", True), ("symmetric", False)])
def test_nat_router_mapping_behaviour(lab: Cleanup, mode: str, same_port: bool) -> None:
    """One LAN socket sends to two public hosts: a rewriting NAT shows both the same
    rewritten port, a --random-fully NAT a different port per destination."""
    internet = Internet(lab)
    observers = []
    for i, ip in enumerate(("198.18.0.10", "198.18.0.11")):
        ns = Namespace(lab, f"obs{i}")
        internet.attach(ns, ip)
        d = ns.popen_python(_UDP_ECHO_SOURCE, ip, name=f"observer{i}")
        poll(lambda d=d: "listening" in d.stdout(), 10, lambda d=d: d.output())
        observers.append(d)
    home, _ = NatRouter(lab, internet, "198.18.0.20", "10.77.0.0/24", mode).add_host("home")
    home.run_python(_UDP_SEND_TWO, "198.18.0.10", "198.18.0.11")
    seen = []
    for d in observers:
        d.wait(timeout=10)
        seen.append(d.stdout().split()[-1])
    ips = {s.split(":")[0] for s in seen}
    ports = [int(s.split(":")[1]) for s in seen]
    assert ips == {"198.18.0.20"}, seen
    if mode == "rewrite":
        assert all(40000 <= p <= 40100 for p in ports), seen
    assert (ports[0] == ports[1]) == same_port, seen
