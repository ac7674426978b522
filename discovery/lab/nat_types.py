"""More NAT behaviours for the lab, beside discovery.lab.nat's three mapping modes.

* :class:`HairpinRouter`: a port-preserving NAT (``keep``) that hairpins: a LAN host that
  sends to the router's public address reaches the LAN host that owns that public port.
  Linux does none of this by default; here it is DNAT in PREROUTING on the LAN side plus a
  MASQUERADE of LAN-to-LAN traffic out of the LAN bridge (so the answer comes back through
  the router, and a host sending to itself does not see its own address as source). A host
  "owns" the public ports it uses itself (mapping ports equal local ports in ``keep``
  mode, so a DNAT to the sending host is the mapping lookup a hairpinning NAT does) and the
  ones :meth:`HairpinRouter.forward` gives it (a port forward, reachable from the internet
  and, hairpinned, from the LAN).
* :func:`block_udp`: the router drops outbound UDP except to ``allow``ed destinations
  (a network that lets UDP reach only the rendezvous, or none; TCP is untouched).
* :func:`set_udp_timeouts`: short idle lifetimes for UDP mappings (seconds), the router's
  ``net.netfilter.nf_conntrack_udp_timeout`` and ``_stream``.
* :func:`double_nat`: a home NAT whose uplink sits on a carrier NAT's LAN (RFC 6598's
  100.64.0.0/10 between them): :class:`LanUplink` lets a router's LAN serve as another
  router's internet.
* :func:`ipv6_only_host`: a public host with an IPv6 address only.
* :class:`SegmentedRouter`: a port-preserving NAT with two LAN segments that cannot see
  each other (no mDNS across, nothing forwarded between them), hairpinning or not.
"""

from __future__ import annotations

import ipaddress
import json

from discovery.lab.nat import Internet, NatRouter
from discovery.lab.netns import Bridge, Cleanup, Namespace

CARRIER_LAN = "100.64.0.0/24"     # RFC 6598 shared address space, between carrier and home NAT
IPV6_PREFIX = "fd5e:1ab::/64"     # ULA (RFC 4193) for the internet bridge's IPv6 hosts


class HairpinRouter(NatRouter):
    """A port-preserving NAT that hairpins (see the module docstring); other arguments as
    :class:`discovery.lab.nat.NatRouter`."""

    def __init__(self, cleanup: Cleanup, internet: "Internet | LanUplink", public_address: str,
                 lan: str, tag: str = "hpin"):
        super().__init__(cleanup, internet, public_address, lan, mode="keep", tag=tag)
        # LAN-to-LAN through the router: source becomes the router, so replies come back via it
        self.ns.run(["iptables", "-t", "nat", "-A", "POSTROUTING", "-o", self.lan_bridge.name,
                     "-s", str(self.lan), "-d", str(self.lan), "-j", "MASQUERADE"])

    def add_host(self, tag: str, address: str | None = None) -> tuple[Namespace, str]:
        host, address = super().add_host(tag, address)
        # A packet hairpinned to the host that sent it leaves the LAN bridge by the port it
        # came in on (the lab's bridge netfilter sees it at L2): the port needs hairpin mode.
        ports = json.loads(self.ns.run(["ip", "-j", "link", "show", "master",
                                        self.lan_bridge.name]).stdout)
        for port in ports:
            self.ns.run(["ip", "link", "set", "dev", port["ifname"], "type", "bridge_slave",
                         "hairpin", "on"])
        # the host's own mappings keep their ports: hairpinned, they lead back to it
        self.ns.run(["iptables", "-t", "nat", "-A", "PREROUTING", "-i", self.lan_bridge.name,
                     "-s", address, "-d", self.public_address, "-j", "DNAT",
                     "--to-destination", address])
        return host, address

    def forward(self, port: int, address: str, proto: str = "udp") -> None:
        """Forward public ``port`` to ``address`` (same port), from the internet and, by
        hairpinning, from the LAN; it takes precedence over the hosts' own ports."""
        target = f"{address}:{port}"
        self.ns.run(["iptables", "-t", "nat", "-I", "PREROUTING", "1", "-d", self.public_address,
                     "-p", proto, "--dport", port, "-j", "DNAT", "--to-destination", target])
        self.ns.run(["iptables", "-I", "FORWARD", "1", "-i", self.uplink, "-d", address,
                     "-p", proto, "--dport", port, "-j", "ACCEPT"])


def block_udp(router: NatRouter, allow: list[str] = ()) -> None:
    """Drop UDP from the router's LAN to the internet except to ``allow`` ("IP" or
    "IP:PORT" entries); TCP and everything else pass as before."""
    lan, up = router.lan_bridge.name, router.uplink
    for item in allow:
        host, _, port = item.partition(":")
        extra = ["--dport", port] if port else []
        router.ns.run(["iptables", "-I", "FORWARD", "1", "-i", lan, "-o", up, "-p", "udp",
                       "-d", host, *extra, "-j", "ACCEPT"])
    router.ns.run(["iptables", "-A", "FORWARD", "-i", lan, "-o", up, "-p", "udp", "-j", "DROP"])


def set_udp_timeouts(router: NatRouter, timeout: int, stream: int | None = None) -> None:
    """Idle UDP mappings expire after ``timeout`` seconds (``stream``: after traffic went
    both ways; default the same) in this router, as on a short-lived carrier or home NAT."""
    router.ns.sysctl("net.netfilter.nf_conntrack_udp_timeout", timeout)
    router.ns.sysctl("net.netfilter.nf_conntrack_udp_timeout_stream",
                     timeout if stream is None else stream)


class LanUplink:
    """A router's LAN seen as an internet by a router behind it (what NatRouter needs:
    ``network``, ``gateway``, ``cidr()`` and ``attach()``)."""

    def __init__(self, router: NatRouter):
        self.router = router
        self.network = router.lan
        self.gateway = router.lan_gateway

    def cidr(self, address: str) -> str:
        return f"{address}/{self.network.prefixlen}"

    def attach(self, host: Namespace, addresses: str | list[str], ifname: str = "eth0") -> str:
        listed = [addresses] if isinstance(addresses, str) else addresses
        return self.router.lan_bridge.attach(host, [self.cidr(a) for a in listed], ifname)


def double_nat(cleanup: Cleanup, internet: Internet, carrier_public: str, home_lan: str,
               carrier_mode: str = "rewrite", home_mode: str = "rewrite",
               carrier_lan: str = CARRIER_LAN, tag: str = "cg") -> tuple[NatRouter, NatRouter]:
    """(carrier, home): a carrier NAT on the internet at ``carrier_public`` with the
    100.64.0.0/10 ``carrier_lan`` behind it, and a home NAT on that LAN (its "public"
    address is the carrier LAN's next address) with ``home_lan`` behind it."""
    carrier = NatRouter(cleanup, internet, carrier_public, carrier_lan, carrier_mode,
                        tag=f"{tag}car")
    home = NatRouter(cleanup, LanUplink(carrier), carrier.next_lan_address(), home_lan,
                     home_mode, tag=f"{tag}home")
    return carrier, home


def ipv6_only_host(cleanup: Cleanup, internet: Internet, address: str, tag: str = "v6") -> Namespace:
    """A host on the internet bridge with ``address`` (in IPV6_PREFIX) and no IPv4 at all."""
    ip = ipaddress.ip_address(address)
    if ip.version != 6:
        raise ValueError(f"{address}: expected an IPv6 address")
    host = Namespace(cleanup, tag)
    internet.bridge.attach(host, [f"{address}/{ipaddress.ip_network(IPV6_PREFIX).prefixlen}"])
    return host


def add_ipv6(host: Namespace, address: str, ifname: str = "eth0") -> None:
    """Give a host on the internet bridge an IPv6 address too (dual stack)."""
    host.add_address(ifname, f"{address}/{ipaddress.ip_network(IPV6_PREFIX).prefixlen}")


class SegmentedRouter(NatRouter):
    """A port-preserving NAT (``keep``) with a second LAN segment, ``lan1`` (``second_lan``),
    beside ``lan0``: a home and a guest network. mDNS does not cross (multicast stays on its
    bridge) and the router forwards nothing from one segment to the other, so host
    candidates do not route either. With ``hairpin``, a host reaches a host of the other
    segment through the public address, as a hairpinning NAT does: the ports given to
    :meth:`hairpin_port` are DNATed from the LAN side (in ``keep`` mode a host's public
    port is its local port) and the hairpinned packets leave SNATed to the public address.
    Other arguments as :class:`discovery.lab.nat.NatRouter`."""

    def __init__(self, cleanup: Cleanup, internet: Internet, public_address: str, lan: str,
                 second_lan: str, hairpin: bool, tag: str = "seg"):
        super().__init__(cleanup, internet, public_address, lan, mode="keep", tag=tag)
        self.hairpin = hairpin
        self.second_lan = ipaddress.ip_network(second_lan)
        self.second_gateway = str(next(self.second_lan.hosts()))
        self._second_next = 10
        self.second_bridge = Bridge(self.ns, "lan1")
        self.ns.add_address(self.second_bridge.name,
                            f"{self.second_gateway}/{self.second_lan.prefixlen}")
        one, two = self.lan_bridge.name, self.second_bridge.name
        for into, out in ((one, two), (two, one)):       # only hairpinned (DNATed) flows cross
            self.ns.run(["iptables", "-A", "FORWARD", "-i", into, "-o", out, "-m", "conntrack",
                         "!", "--ctstate", "DNAT", "-j", "DROP"])
            if hairpin:
                self.ns.run(["iptables", "-t", "nat", "-A", "POSTROUTING", "-o", out,
                             "-m", "conntrack", "--ctstate", "DNAT", "-j", "SNAT",
                             "--to-source", public_address])

    def add_second_host(self, tag: str) -> tuple[Namespace, str]:
        """A new host namespace on the second segment (``eth0``); (namespace, address)."""
        host = Namespace(self.cleanup, tag)
        address = str(self.second_lan.network_address + self._second_next)
        self._second_next += 1
        self.second_bridge.attach(host, f"{address}/{self.second_lan.prefixlen}")
        host.run(["ip", "route", "add", "default", "via", self.second_gateway])
        return host, address

    def hairpin_port(self, port: int, address: str, proto: str = "udp") -> None:
        """LAN hosts sending to public ``port`` reach ``address`` (same port); the internet
        does not (no port forward). Raises ValueError on a router without ``hairpin``."""
        if not self.hairpin:
            raise ValueError(f"router {self.public_address} does not hairpin")
        self.ns.run(["iptables", "-t", "nat", "-A", "PREROUTING", "!", "-i", self.uplink,
                     "-d", self.public_address, "-p", proto, "--dport", port, "-j", "DNAT",
                     "--to-destination", f"{address}:{port}"])
