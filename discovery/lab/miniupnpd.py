"""Debian's miniupnpd (UPnP IGD, NAT-PMP and PCP) on a lab :class:`NatRouter`.

miniupnpd 2.3 (package miniupnpd-iptables) edits netfilter through libiptc, that is the
legacy iptables tables, so its chains are made with ``iptables-legacy`` as its
``iptables_init.sh`` makes them: ``MINIUPNPD`` in nat PREROUTING and filter FORWARD for
the uplink, ``MINIUPNPD-POSTROUTING`` in nat POSTROUTING. The router's own (nft) filter
drops unsolicited inbound traffic, so the helper also accepts forwarded connections that
a mapping DNATed (``--ctstate DNAT``), as a home router with port mapping does.

miniupnpd refuses to map on a reserved external address (198.18.0.0/15 among them), so a
port-mapping lab gives its router an ordinary-looking address on an isolated fake
internet (:data:`PORTMAP_INTERNET`); nothing leaves the namespaces.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from discovery.lab.nat import NatRouter
from discovery.lab.netns import Daemon, poll

MINIUPNPD = "/usr/sbin/miniupnpd"
PORTMAP_INTERNET = ("11.0.0.0/24", "11.0.0.1")   # network, gateway: not reserved to miniupnpd
HTTP_PORT = 5000


def unavailable_reason() -> str | None:
    """Why miniupnpd cannot run here (package or iptables-legacy missing), or None."""
    if not Path(MINIUPNPD).exists():
        return "miniupnpd is not installed (Debian package miniupnpd)"
    if shutil.which("iptables-legacy") is None:
        return "iptables-legacy is missing (Debian package iptables)"
    return None


class MiniUpnpd:
    """miniupnpd serving ``router``'s LAN, with NAT-PMP/PCP on and UPnP on or off.

    ``min_lifetime`` is the shortest PCP lifetime it grants (seconds; its default is 120).
    The registry stops it and removes its files; stop it early with :meth:`stop`.
    """

    def __init__(self, router: NatRouter, upnp: bool = True, natpmp: bool = True,
                 min_lifetime: int = 120):
        self.router = router
        ns = router.ns
        self.dir = Path(tempfile.mkdtemp(prefix="mwlab-miniupnpd-"))
        router.cleanup.push("remove miniupnpd files",
                            lambda: shutil.rmtree(self.dir, ignore_errors=True))
        up = router.uplink
        legacy = "iptables-legacy"
        ns.run([legacy, "-w", "-t", "nat", "-N", "MINIUPNPD"])
        ns.run([legacy, "-w", "-t", "nat", "-I", "PREROUTING", "-i", up, "-j", "MINIUPNPD"])
        ns.run([legacy, "-w", "-t", "nat", "-N", "MINIUPNPD-POSTROUTING"])
        ns.run([legacy, "-w", "-t", "nat", "-I", "POSTROUTING", "-o", up,
                "-j", "MINIUPNPD-POSTROUTING"])
        ns.run([legacy, "-w", "-t", "filter", "-N", "MINIUPNPD"])
        ns.run([legacy, "-w", "-t", "filter", "-I", "FORWARD", "-i", up, "!", "-o", up,
                "-j", "MINIUPNPD"])
        ns.run(["iptables", "-I", "FORWARD", "-i", up, "-m", "conntrack",
                "--ctstate", "DNAT", "-j", "ACCEPT"])
        lan = router.lan
        self.config = self.dir / "miniupnpd.conf"
        self.config.write_text("\n".join([
            f"ext_ifname={up}",
            f"listening_ip={router.lan_bridge.name}",
            f"http_port={HTTP_PORT}",
            f"enable_natpmp={'yes' if natpmp else 'no'}",
            f"enable_upnp={'yes' if upnp else 'no'}",
            f"min_lifetime={min_lifetime}",
            "secure_mode=yes",
            "system_uptime=no",
            "uuid=6f1c2a4e-8d3b-4f5a-9e7c-1b2d3e4f5a6b",
            f"lease_file={self.dir / 'leases'}",
            f"allow 1024-65535 {lan} 1024-65535",
            "deny 0-65535 0.0.0.0/0 0-65535",
            ""]))
        self.upnp, self.natpmp = upnp, natpmp
        self.daemon: Daemon = ns.popen([MINIUPNPD, "-d", "-f", self.config,
                                        "-P", self.dir / "miniupnpd.pid"], name="miniupnpd")
        poll(self._listening, 10, lambda: f"miniupnpd listening\n{self.daemon.output()}")

    def _listening(self) -> bool:
        """Its NAT-PMP/PCP socket (UDP 5351) and HTTP socket are bound, as configured."""
        self.daemon.check_alive()
        ns = self.router.ns
        udp = ns.run(["ss", "-Hlnu", "sport", "= :5351"], check=False).stdout
        tcp = ns.run(["ss", "-Hlnt", "sport", f"= :{HTTP_PORT}"], check=False).stdout
        return ((not self.natpmp or "5351" in udp)
                and (not self.upnp or str(HTTP_PORT) in tcp))

    def redirects(self) -> str:
        """The DNAT rules it has installed (``iptables-legacy -t nat -S MINIUPNPD``)."""
        return self.router.ns.run(["iptables-legacy", "-w", "-t", "nat", "-S", "MINIUPNPD"]
                                  ).stdout

    def stop(self) -> None:
        self.daemon.stop()
