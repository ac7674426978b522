"""Interface addresses, MTU, link state and routes, set through pyroute2 (netlink), or
for an interface's start-up (configure_link) through the ioctls of netdevice(7) and
ipv6(7), which need no netlink library: importing pyroute2 takes 0.4-1.4 s, most of a
`meshwg join`'s start-up, so it is imported only where netlink is used."""

from __future__ import annotations

import errno
import fcntl
import ipaddress
import logging
import os
import socket
import struct
from typing import TYPE_CHECKING, Iterable

from meshwg.util.errors import MeshwgError

if TYPE_CHECKING:
    from pyroute2 import IPRoute

log = logging.getLogger("meshwg.netconfig")


class NetconfigError(MeshwgError):
    """An address, route or link change the kernel refused; one line naming it."""


def _index(ipr: IPRoute, name: str) -> int:
    found = ipr.link_lookup(ifname=name)
    if not found:
        raise NetconfigError(f"interface {name} not found")
    return found[0]


# netdevice(7) and ipv6(7): <linux/sockios.h>, <net/if.h>, <linux/ipv6.h>
SIOCGIFFLAGS = 0x8913
SIOCSIFFLAGS = 0x8914
SIOCSIFADDR = 0x8916
SIOCSIFNETMASK = 0x891C
SIOCSIFMTU = 0x8922
IFF_UP = 0x1
IFREQ_SIZE = 40             # struct ifreq: the name, then a 24-byte union
IN6_IFREQ = struct.Struct("=16sIi")     # struct in6_ifreq: address, prefix length, index


def _ifreq(name: bytes, payload: bytes) -> bytes:
    return (name + payload).ljust(IFREQ_SIZE, b"\0")


def _sockaddr_in(ip: ipaddress.IPv4Address) -> bytes:
    return struct.pack("=H2s4s8x", socket.AF_INET, b"\0\0", ip.packed)


def configure_link(name: str, addresses: Iterable, mtu: int) -> None:
    """Set MTU, add addresses (IPv4Interface/IPv6Interface) and bring the link up.

    Through ioctls with at most one IPv4 address (an ioctl sets an interface's primary
    IPv4 address and its netmask, with the prefix route; IPv6 addresses are added), so
    the engine's start imports no netlink library; through netlink for more."""
    wanted = [ipaddress.ip_interface(iface) for iface in addresses]
    if sum(iface.version == 4 for iface in wanted) > 1:
        return _configure_link_netlink(name, wanted, mtu)
    try:
        index = socket.if_nametoindex(name)
    except OSError:
        raise NetconfigError(f"interface {name} not found") from None
    key = name.encode()[:15].ljust(16, b"\0")
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            fcntl.ioctl(sock, SIOCSIFMTU, _ifreq(key, struct.pack("=i", mtu)))
            for iface in wanted:
                if iface.version == 4:
                    fcntl.ioctl(sock, SIOCSIFADDR, _ifreq(key, _sockaddr_in(iface.ip)))
                    fcntl.ioctl(sock, SIOCSIFNETMASK, _ifreq(key, _sockaddr_in(iface.netmask)))
                    continue
                with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as sock6:
                    try:
                        fcntl.ioctl(sock6, SIOCSIFADDR, IN6_IFREQ.pack(
                            iface.ip.packed, iface.network.prefixlen, index))
                    except OSError as exc:
                        if exc.errno != errno.EEXIST:
                            raise
            flags = struct.unpack_from("=H", fcntl.ioctl(sock, SIOCGIFFLAGS, _ifreq(key, b"")), 16)[0]
            fcntl.ioctl(sock, SIOCSIFFLAGS, _ifreq(key, struct.pack("=H", flags | IFF_UP)))
    except OSError as exc:
        raise NetconfigError(f"configuring {name}: {os.strerror(exc.errno) if exc.errno else exc}") from None


def _configure_link_netlink(name: str, addresses: list, mtu: int) -> None:
    from pyroute2 import IPRoute
    from pyroute2.netlink.exceptions import NetlinkError
    with IPRoute() as ipr:
        idx = _index(ipr, name)
        try:
            ipr.link("set", index=idx, mtu=mtu)
            for iface in addresses:
                try:
                    ipr.addr("add", index=idx, address=str(iface.ip), prefixlen=iface.network.prefixlen)
                except NetlinkError as exc:
                    if exc.code != errno.EEXIST:
                        raise
            ipr.link("set", index=idx, state="up")
        except NetlinkError as exc:
            raise NetconfigError(f"configuring {name}: {exc.args[1] if len(exc.args) > 1 else exc}") from None


def add_routes(name: str, networks: Iterable) -> list:
    """Route each allowed-IP network through the interface; returns those added.

    Default routes (/0) are skipped: they need wg-quick's policy routing, which `meshwg up`
    adds itself (meshwg.netlink.routing); logged for other callers.
    """
    from pyroute2 import IPRoute
    from pyroute2.netlink.exceptions import NetlinkError
    added = []
    with IPRoute() as ipr:
        idx = _index(ipr, name)
        for net in networks:
            net = ipaddress.ip_network(net, strict=False)
            if net.prefixlen == 0:
                log.info("not routing %s through %s here: a default route needs policy routing "
                         "(meshwg up adds it with Table = auto)", net, name)
                continue
            try:
                ipr.route("add", dst=str(net.network_address), dst_len=net.prefixlen, oif=idx)
                added.append(net)
            except NetlinkError as exc:
                if exc.code != errno.EEXIST:
                    log.warning("route %s via %s: %s", net, name, exc)
    return added


def delete_routes(name: str, networks: Iterable) -> None:
    from pyroute2 import IPRoute
    from pyroute2.netlink.exceptions import NetlinkError
    with IPRoute() as ipr:
        try:
            idx = _index(ipr, name)
        except NetconfigError:
            return
        for net in networks:
            net = ipaddress.ip_network(net, strict=False)
            try:
                ipr.route("del", dst=str(net.network_address), dst_len=net.prefixlen, oif=idx)
            except NetlinkError:
                pass
