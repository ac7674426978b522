"""Interface addresses, MTU, link state and routes, set through pyroute2 (netlink)."""

from __future__ import annotations

import errno
import ipaddress
import logging
from typing import Iterable

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from meshwg.util.errors import MeshwgError

log = logging.getLogger("meshwg.netconfig")


class NetconfigError(MeshwgError):
    """An address, route or link change the kernel refused; one line naming it."""


def _index(ipr: IPRoute, name: str) -> int:
    found = ipr.link_lookup(ifname=name)
    if not found:
        raise NetconfigError(f"interface {name} not found")
    return found[0]


def configure_link(name: str, addresses: Iterable, mtu: int) -> None:
    """Set MTU, add addresses (IPv4Interface/IPv6Interface) and bring the link up."""
    with IPRoute() as ipr:
        idx = _index(ipr, name)
        try:
            ipr.link("set", index=idx, mtu=mtu)
            for iface in addresses:
                iface = ipaddress.ip_interface(iface)
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
