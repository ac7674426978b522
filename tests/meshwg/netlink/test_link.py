"""An interface's start-up configuration (meshwg/netlink/link.py configure_link), in a
namespace made for the test: the ioctl path (one IPv4 address, any IPv6 ones: what the
engine's start uses, with no netlink library imported) leaves a TUN interface as the
netlink path does (addresses, prefixes, scope, prefix route, MTU, up), again without an
error when repeated; more than one IPv4 address goes through netlink; a missing
interface is a NetconfigError naming it."""

from __future__ import annotations

import json

import pytest

from discovery.lab.netns import Cleanup, Namespace

pytestmark = pytest.mark.netns

CONFIGURE = r"""
import json, sys
from meshwg.netlink import link
how, name, mtu, *addresses = sys.argv[1:]
configure = link.configure_link if how == "auto" else link._configure_link_netlink
try:
    configure(name, [__import__("ipaddress").ip_interface(a) for a in addresses], int(mtu))
except link.NetconfigError as exc:
    print(json.dumps({"error": str(exc)}))
else:
    print(json.dumps({"pyroute2": "pyroute2" in sys.modules}))
"""


def configure(ns: Namespace, how: str, name: str, mtu: int, *addresses: str) -> dict:
    out = ns.run_python(CONFIGURE, how, name, mtu, *addresses, timeout=120).stdout
    return json.loads(out.strip().splitlines()[-1])


def link_view(ns: Namespace, name: str) -> dict:
    """What `ip` shows of the interface: MTU, UP, addresses, IPv4 routes through it."""
    doc = json.loads(ns.run(["ip", "-j", "addr", "show", "dev", name]).stdout)[0]
    routes = json.loads(ns.run(["ip", "-j", "-4", "route", "show", "dev", name]).stdout)
    return {"mtu": doc["mtu"], "up": "UP" in doc["flags"],
            "addresses": sorted((a["family"], a["local"], a["prefixlen"], a["scope"])
                                for a in doc["addr_info"] if a["scope"] != "link"),
            "routes": sorted((r["dst"], r.get("scope"), r.get("prefsrc")) for r in routes)}


def test_ioctl_path_configures_as_netlink_does(lab: Cleanup) -> None:
    ns = Namespace(lab, "lk")
    for name in ("mt0", "mt1"):
        ns.run(["ip", "tuntap", "add", "dev", name, "mode", "tun"])
    wanted = ("10.77.0.5/16", "fd77::5/64")
    assert configure(ns, "auto", "mt0", 1380, *wanted) == {"pyroute2": False}
    assert configure(ns, "netlink", "mt1", 1380, *wanted) == {"pyroute2": True}
    by_ioctl, by_netlink = link_view(ns, "mt0"), link_view(ns, "mt1")
    assert by_ioctl == {"mtu": 1380, "up": True,
                        "addresses": [("inet", "10.77.0.5", 16, "global"),
                                      ("inet6", "fd77::5", 64, "global")],
                        "routes": [("10.77.0.0/16", "link", "10.77.0.5")]}
    assert by_netlink == by_ioctl
    # again (a restart on a kept interface): nothing changes, no error
    assert configure(ns, "auto", "mt0", 1380, *wanted) == {"pyroute2": False}
    assert link_view(ns, "mt0") == by_ioctl


def test_two_ipv4_addresses_go_through_netlink(lab: Cleanup) -> None:
    ns = Namespace(lab, "lk2")
    ns.run(["ip", "tuntap", "add", "dev", "mt2", "mode", "tun"])
    assert configure(ns, "auto", "mt2", 1420, "10.78.0.1/24", "10.79.0.1/24") == {"pyroute2": True}
    view = link_view(ns, "mt2")
    assert [a[1:3] for a in view["addresses"]] == [("10.78.0.1", 24), ("10.79.0.1", 24)]
    assert view["mtu"] == 1420 and view["up"]


def test_missing_interface_is_named(lab: Cleanup) -> None:
    ns = Namespace(lab, "lk3")
    assert configure(ns, "auto", "nope0", 1420, "10.80.0.1/24") == {
        "error": "interface nope0 not found"}
