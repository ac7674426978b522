"""The fake internet and home NAT routers, in network namespaces (iptables + conntrack).

NAT behaviour in RFC 4787's terms (section 4.1 mapping, 5 filtering), by :class:`NatRouter`
``mode``:

* ``rewrite``: ``MASQUERADE --to-ports 40000-40100`` for UDP and TCP: endpoint-independent
  mapping with port rewriting (one public port per local socket, whatever the
  destination: what hole punching is built for);
* ``symmetric``: ``MASQUERADE --random-fully``: address-and-port-dependent mapping (a new
  public port per destination), where hole punching fails;
* ``keep``: plain MASQUERADE: endpoint-independent mapping that keeps the local port when
  it is free.

Filtering is the same for every mode, a home router's: inbound traffic on the uplink is
accepted only for a conntrack entry made by outbound traffic (address-and-port-dependent
filtering), so unsolicited packets are dropped and their entries never confirmed. No
hairpinning (Linux does none by default).
"""

from __future__ import annotations

import ipaddress

from discovery.lab.netns import Bridge, Cleanup, Namespace

PORT_RANGE = "40000-40100"
NAT_MODES = ("rewrite", "symmetric", "keep")


class Internet:
    """A fake internet: one bridge in its own namespace; public hosts attach with an address.

    The bridge namespace also holds ``gateway`` (an address on the bridge) that routers use
    as their default route, so renumbering can move a default route as on a real uplink.
    """

    def __init__(self, cleanup: Cleanup, network: str = "198.18.0.0/15",
                 gateway: str = "198.18.0.1"):
        self.network = ipaddress.ip_network(network)
        self.gateway = gateway
        self.ns = Namespace(cleanup, "inet")
        self.bridge = Bridge(self.ns)
        self.ns.add_address(self.bridge.name, self.cidr(gateway))

    def cidr(self, address: str) -> str:
        """``address`` with the internet's prefix length ("198.18.0.10/15")."""
        return f"{address}/{self.network.prefixlen}"

    def attach(self, host: Namespace, addresses: str | list[str], ifname: str = "eth0") -> str:
        """Give ``host`` public ``addresses`` (one, or a list, without prefix) on the
        internet; returns its interface name."""
        listed = [addresses] if isinstance(addresses, str) else addresses
        return self.bridge.attach(host, [self.cidr(a) for a in listed], ifname)


class NatRouter:
    """A home router: a LAN bridge (``lan0``) and NAT (see the module docstring) towards
    its uplink ``wan0`` on the internet.

    LAN hosts attach with :meth:`add_host`; they get a default route via the router and a
    224.0.0.0/4 route on the LAN for mDNS. Raises ValueError for an unknown ``mode``.
    """

    def __init__(self, cleanup: Cleanup, internet: Internet, public_address: str,
                 lan: str, mode: str = "rewrite", tag: str = "nat"):
        if mode not in NAT_MODES:
            raise ValueError(f"NAT mode {mode!r}: expected one of {', '.join(NAT_MODES)}")
        self.cleanup, self.internet, self.mode = cleanup, internet, mode
        self.public_address = public_address
        self.lan = ipaddress.ip_network(lan)
        self.lan_gateway = str(next(self.lan.hosts()))
        self._next_host = 10
        self.ns = Namespace(cleanup, tag)
        self.ns.sysctl("net.ipv4.ip_forward", 1)
        self.uplink = internet.attach(self.ns, public_address, "wan0")
        # Deleting the primary address must promote the new (secondary) one, not drop it.
        self.ns.sysctl(f"net.ipv4.conf.{self.uplink}.promote_secondaries", 1)
        self.ns.run(["ip", "route", "add", "default", "via", internet.gateway,
                     "dev", self.uplink, "src", public_address])
        self.lan_bridge = Bridge(self.ns, "lan0")
        self.ns.add_address(self.lan_bridge.name, f"{self.lan_gateway}/{self.lan.prefixlen}")
        self._install_rules()

    def _install_rules(self) -> None:
        up = self.uplink
        if self.mode == "rewrite":
            nat = [["-p", "udp", "-j", "MASQUERADE", "--to-ports", PORT_RANGE],
                   ["-p", "tcp", "-j", "MASQUERADE", "--to-ports", PORT_RANGE],
                   ["-j", "MASQUERADE"]]
        elif self.mode == "symmetric":
            nat = [["-j", "MASQUERADE", "--random-fully"]]
        else:
            nat = [["-j", "MASQUERADE"]]
        for rule in nat:
            self.ns.run(["iptables", "-t", "nat", "-A", "POSTROUTING", "-o", up, *rule])
        for chain in ("INPUT", "FORWARD"):
            self.ns.run(["iptables", "-A", chain, "-i", up, "-m", "conntrack",
                         "--ctstate", "ESTABLISHED,RELATED", "-j", "ACCEPT"])
            self.ns.run(["iptables", "-A", chain, "-i", up, "-j", "DROP"])

    def next_lan_address(self) -> str:
        """The next free LAN address (.10, .11, ...)."""
        address = str(self.lan.network_address + self._next_host)
        self._next_host += 1
        return address

    def add_host(self, tag: str, address: str | None = None) -> tuple[Namespace, str]:
        """A new LAN host namespace (interface ``eth0``); returns (namespace, address)."""
        host = Namespace(self.cleanup, tag)
        address = address or self.next_lan_address()
        self.lan_bridge.attach(host, f"{address}/{self.lan.prefixlen}")
        host.run(["ip", "route", "add", "default", "via", self.lan_gateway])
        host.run(["ip", "route", "add", "224.0.0.0/4", "dev", "eth0"])
        return host, address

    def renumber(self, new_address: str) -> None:
        """Move the uplink to ``new_address``: add it, move the default route, delete the old
        address and drop every mapping (``conntrack -F``), as an ISP renumbering does."""
        old = self.public_address
        self.ns.add_address(self.uplink, self.internet.cidr(new_address))
        self.ns.run(["ip", "route", "replace", "default", "via", self.internet.gateway,
                     "dev", self.uplink, "src", new_address])
        self.ns.del_address(self.uplink, self.internet.cidr(old))
        self.public_address = new_address
        self.flush_mappings()

    def flush_mappings(self) -> None:
        """Drop every NAT mapping, as a router reboot or mapping timeout does."""
        self.ns.run(["conntrack", "-F"], check=False)

    def udp_mappings(self) -> list[dict[str, str]]:
        """The router's UDP conntrack entries as dicts of the fields ``conntrack -L`` prints
        (the first src/dst/sport/dport are the original direction, ``r*`` the reply)."""
        out = self.ns.run(["conntrack", "-L", "-p", "udp"], check=False).stdout
        entries = []
        for line in out.splitlines():
            fields: dict[str, str] = {}
            for word in line.split():
                if "=" in word:
                    key, _, value = word.partition("=")
                    fields["r" + key if key in fields else key] = value
            if fields:
                entries.append(fields)
        return entries
