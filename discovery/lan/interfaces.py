"""This host's interfaces and addresses, as LAN discovery needs them. Reads the network
namespace the process lives in through ifaddr (getifaddrs(3)): mDNS's choice of
interfaces, and addresses with their prefixes. Neither pyroute2 nor zeroconf is imported
here at the top: `meshwg join` lists its addresses before it enrolls, and those imports
take up to 1.4 s and 0.6 s of its start-up."""

from __future__ import annotations

import fcntl
import ipaddress
import socket
import struct
from dataclasses import dataclass
from typing import TYPE_CHECKING, Iterable, Sequence

import ifaddr

if TYPE_CHECKING:
    from zeroconf import IPVersion

from discovery.lan.records import usable_lan_address

DEFAULT_TUNNEL_INTERFACE = "meshwg0"
_SIOCGIFFLAGS = 0x8913      # <linux/sockios.h>
_IFF_UP = 0x1               # <linux/if.h>


def interface_is_up(name: str) -> bool:
    """True when interface `name` is administratively up (IFF_UP). An interface that is
    down may still hold addresses: they are neither announced nor joined for mDNS."""
    request = struct.pack("16sH14s", name.encode()[:15], 0, b"")
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            reply = fcntl.ioctl(sock.fileno(), _SIOCGIFFLAGS, request)
    except OSError:          # gone meanwhile
        return False
    return bool(struct.unpack_from("16sH", reply)[1] & _IFF_UP)


@dataclass(frozen=True)
class LocalInterface:
    """One local interface chosen for mDNS, with its addresses."""

    name: str
    index: int
    ipv4: tuple[str, ...]
    ipv6: tuple[str, ...]  # without scope; link-local ones included


def local_interfaces(
    names: Sequence[str] | None = None,
    exclude: Iterable[str] = (DEFAULT_TUNNEL_INTERFACE,),
) -> list[LocalInterface]:
    """Interfaces to use: ``names`` if given, else every non-loopback one with an address;
    interfaces that are down are skipped either way."""
    excluded = set(exclude)
    chosen: list[LocalInterface] = []
    for adapter in ifaddr.get_adapters():
        ifname = adapter.nice_name
        if ifname in excluded or (names is not None and ifname not in names):
            continue
        if not interface_is_up(ifname):
            continue
        v4, v6 = [], []
        for ip in adapter.ips:
            if isinstance(ip.ip, tuple):
                text = ip.ip[0].split("%", 1)[0]
                if usable_lan_address(text):
                    v6.append(text)
            elif usable_lan_address(ip.ip):
                v4.append(ip.ip)
        if not v4 and not v6:
            continue
        chosen.append(LocalInterface(ifname, adapter.index, tuple(v4), tuple(v6)))
    return chosen


def zeroconf_interfaces(interfaces: Sequence[LocalInterface], ipv6: bool) -> tuple[list, IPVersion]:
    """Interface choice for Zeroconf: IPv4 addresses plus IPv6 interface indexes."""
    from zeroconf import IPVersion
    choice: list[str | int] = []
    for iface in interfaces:
        choice.extend(iface.ipv4)
    if ipv6:
        choice.extend(iface.index for iface in interfaces if iface.ipv6)
    has_v4 = any(isinstance(c, str) for c in choice)
    has_v6 = any(isinstance(c, int) for c in choice)
    if has_v4 and has_v6:
        return choice, IPVersion.All
    if has_v6:
        return choice, IPVersion.V6Only
    return choice, IPVersion.V4Only


def lan_addresses(exclude: tuple[str, ...] = ()) -> list[tuple[str, ipaddress._BaseNetwork, str]]:
    """(address, network, interface) for every global address (neither loopback nor
    link-local) on interfaces other than loopback and `exclude` (the tunnel): this host's
    candidates for peers on its LANs."""
    out = []
    for adapter in ifaddr.get_adapters():
        name = adapter.nice_name
        if name == "lo" or name in exclude or not interface_is_up(name):
            continue
        for entry in adapter.ips:
            text = entry.ip[0].split("%", 1)[0] if isinstance(entry.ip, tuple) else entry.ip
            iface = ipaddress.ip_interface(f"{text}/{entry.network_prefix}")
            if iface.ip.is_loopback or iface.ip.is_link_local:
                continue
            out.append((str(iface.ip), iface.network, name))
    return out
