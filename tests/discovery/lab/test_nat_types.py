"""The lab's NAT types behave as named (discovery.lab.nat, discovery.lab.nat_types), shown
with real traffic in namespaces and with `meshwg netcheck` against a responder on the fake
internet: endpoint-independent vs per-destination mapping, hairpinning, UDP blocked, double
NAT, short mapping timeouts, an IPv6-only host."""

from __future__ import annotations

import json
import sys

import pytest

from discovery.lab.engines import meshwg_argv
from discovery.lab.nat import Internet, NatRouter
from discovery.lab.nat_types import (HairpinRouter, add_ipv6, block_udp, double_nat,
                                     ipv6_only_host, set_udp_timeouts)
from discovery.lab.netns import Cleanup, Namespace, poll
from tests.conftest import require_netns

pytestmark = pytest.mark.netns

SERVER = "198.18.0.10"
SERVER6 = "fd5e:1ab::10"
WG_PORT = 51820                 # the responder answers on WG_PORT + 2 and + 3
RESPONDER = f"""
import signal, sys
signal.pthread_sigmask(signal.SIG_BLOCK, {{signal.SIGTERM, signal.SIGINT}})
from discovery.netcheck.responder import ObservationResponder, observe_ports
r = ObservationResponder(observe_ports({WG_PORT})).start()
print("ready", flush=True)
signal.sigwait({{signal.SIGTERM, signal.SIGINT}})
r.stop()
"""
RECEIVE = ("import socket, sys\n"
           "s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
           "s.bind(('0.0.0.0', int(sys.argv[1])))\n"
           "print('ready', flush=True)\n"
           "data, source = s.recvfrom(100)\n"
           "print(data.decode(), source[0], flush=True)\n")
SEND = ("import socket, sys\n"
        "s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
        "s.bind(('0.0.0.0', int(sys.argv[1])))\n"
        "for target in sys.argv[2:]:\n"
        "    host, port = target.rsplit(':', 1)\n"
        "    s.sendto(b'hello', (host, int(port)))\n")


class World:
    def __init__(self, cleanup: Cleanup):
        self.cleanup = cleanup
        self.internet = Internet(cleanup)
        self.server = Namespace(cleanup, "srv")
        self.internet.attach(self.server, SERVER)
        add_ipv6(self.server, SERVER6)
        self.server.run(["ip", "route", "add", "default", "via", self.internet.gateway])
        responder = self.server.popen_python(RESPONDER, name="responder")
        poll(lambda: responder.check_alive() or "ready" in responder.stdout(), 15,
             lambda: f"the responder to start\n{responder.output()}")
        self.rewrite = NatRouter(cleanup, self.internet, "198.18.1.1", "10.1.0.0/24", "rewrite", tag="rw")
        self.symmetric = NatRouter(cleanup, self.internet, "198.18.3.1", "10.3.0.0/24", "symmetric",
                                   tag="sym")
        self.hairpin = HairpinRouter(cleanup, self.internet, "198.18.5.1", "10.5.0.0/24")
        self.blocked = NatRouter(cleanup, self.internet, "198.18.6.1", "10.6.0.0/24", "rewrite", tag="blk")
        block_udp(self.blocked, allow=[f"{SERVER}:{WG_PORT}"])
        self.carrier, self.home = double_nat(cleanup, self.internet, "198.18.7.1", "10.7.0.0/24")
        self.short = NatRouter(cleanup, self.internet, "198.18.8.1", "10.8.0.0/24", "rewrite", tag="sht")
        set_udp_timeouts(self.short, 2)
        self.hosts = {name: router.add_host(name)
                      for name, router in (("rw", self.rewrite), ("sym", self.symmetric),
                                           ("hp", self.hairpin), ("blk", self.blocked),
                                           ("dbl", self.home), ("sht", self.short))}


@pytest.fixture(scope="module")
def world():
    require_netns()
    with Cleanup() as cleanup:
        yield World(cleanup)


def netcheck(host: Namespace, rendezvous: str = f"{SERVER}:{WG_PORT}") -> dict:
    out = host.run(meshwg_argv("netcheck", "--rendezvous", rendezvous, "--json"), timeout=15)
    return json.loads(out.stdout)


def receiver(ns: Namespace, port: int):
    proc = ns.popen([sys.executable, "-c", RECEIVE, port], name=f"recv{port}")
    poll(lambda: proc.check_alive() or "ready" in proc.stdout(), 10, "the receiver to bind")
    return proc


def test_rewrite_maps_independently_of_destination_symmetric_per_destination(world) -> None:
    easy = netcheck(world.hosts["rw"][0])
    assert easy["udp"] is True and easy["hard_nat"] is False
    assert easy["reflexive_ipv4"].startswith("198.18.1.1:")
    hard = netcheck(world.hosts["sym"][0])
    assert hard["udp"] is True and hard["hard_nat"] is True
    seen = hard["families"]["ipv4"]["reflexive_by_port"]
    assert len(set(seen.values())) == 2 and all(v.startswith("198.18.3.1:") for v in seen.values())


def test_hairpin_router_hairpins_the_default_one_does_not(world) -> None:
    assert netcheck(world.hosts["hp"][0])["hairpin"] is True
    assert netcheck(world.hosts["rw"][0])["hairpin"] is False
    assert netcheck(world.hosts["hp"][0])["hard_nat"] is False


def test_hairpin_port_forward_reaches_lan_host_from_lan_and_internet(world) -> None:
    owner, owner_address = world.hosts["hp"]
    other, other_address = world.hairpin.add_host("hp2")
    world.hairpin.forward(47100, owner_address)
    for sender, expected_source in ((other, world.hairpin.lan_gateway), (world.server, SERVER)):
        proc = receiver(owner, 47100)
        sender.run([sys.executable, "-c", SEND, 47200, f"{world.hairpin.public_address}:47100"])
        poll(lambda: "hello" in proc.stdout(), 10, lambda: f"the forwarded datagram\n{proc.output()}")
        assert proc.stdout().split()[-1] == expected_source
        proc.stop()


def test_blocked_udp_reaches_only_the_allowed_destination(world) -> None:
    host, _ = world.hosts["blk"]
    report = netcheck(host)
    assert report["udp"] is False and report["hairpin"] is None and report["hard_nat"] is None
    proc = receiver(world.server, WG_PORT)
    host.run([sys.executable, "-c", SEND, 47300, f"{SERVER}:{WG_PORT}"])
    poll(lambda: "hello" in proc.stdout(), 10, "the allowed datagram")
    assert host.ping(SERVER).returncode == 0           # only UDP is blocked


def test_double_nat_maps_through_the_carrier(world) -> None:
    host, _ = world.hosts["dbl"]
    report = netcheck(host)
    assert report["udp"] is True and report["hard_nat"] is False
    assert report["reflexive_ipv4"].startswith("198.18.7.1:")
    sources = {m["src"] for m in world.carrier.udp_mappings() if m.get("dst") == SERVER}
    assert sources and all(s.startswith("100.64.0.") for s in sources), sources
    assert world.home.public_address.startswith("100.64.0.")


def test_short_udp_timeout_expires_mappings_the_default_keeps_them(world) -> None:
    for name in ("sht", "rw"):
        world.hosts[name][0].run([sys.executable, "-c", SEND, 47400, f"{SERVER}:9"])

    def mapped(router: NatRouter) -> bool:
        return any(m.get("sport") == "47400" for m in router.udp_mappings())

    assert mapped(world.short) and mapped(world.rewrite)
    poll(lambda: not mapped(world.short), 10, "the short-lived mapping to expire")
    assert mapped(world.rewrite)                         # the default lifetime is 30 s


def test_ipv6_only_host_reaches_the_rendezvous_over_ipv6_only(lab) -> None:
    internet = Internet(lab)
    server = Namespace(lab, "srv6")
    internet.attach(server, SERVER)
    add_ipv6(server, SERVER6)
    responder = server.popen_python(RESPONDER, name="responder6")
    poll(lambda: responder.check_alive() or "ready" in responder.stdout(), 15, "the responder")
    host = ipv6_only_host(lab, internet, "fd5e:1ab::20")
    report = netcheck(host, f"[{SERVER6}]:{WG_PORT}")
    assert report["ipv6"] is True and report["ipv4"] is False
    assert report["reflexive_ipv6"] == f"[fd5e:1ab::20]:{report['reflexive_ipv6'].rsplit(':', 1)[1]}"
    assert report["families"]["ipv6"]["behind_nat"] is False
