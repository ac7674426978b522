"""Watch the host's own addresses through netlink (pyroute2) and report changes."""

from __future__ import annotations

import ipaddress
import logging
import threading
from typing import Callable

from pyroute2 import IPRoute

log = logging.getLogger("meshwg.netwatch")


def lan_addresses(exclude: tuple[str, ...] = ()) -> list[tuple[str, ipaddress._BaseNetwork, str]]:
    """(address, network, interface) for every global-scope address on interfaces other than
    loopback and `exclude` (the tunnel)."""
    out = []
    with IPRoute() as ipr:
        names = {link["index"]: link.get_attr("IFLA_IFNAME") for link in ipr.get_links()}
        for msg in ipr.get_addr():
            name = names.get(msg["index"], "")
            if name == "lo" or name in exclude:
                continue
            if msg["scope"] != 0:          # global scope only (no link-local)
                continue
            addr = msg.get_attr("IFA_ADDRESS")
            if addr is None:
                continue
            iface = ipaddress.ip_interface(f"{addr}/{msg['prefixlen']}")
            out.append((str(iface.ip), iface.network, name))
    return out


class AddressWatcher:
    """Calls on_change() (from its own thread) when an address is added or removed."""

    def __init__(self, on_change: Callable[[], None]):
        self.on_change = on_change
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._ipr: IPRoute | None = None

    def start(self) -> "AddressWatcher":
        self._ipr = IPRoute()
        self._ipr.bind()   # subscribe to link/address/route broadcasts
        self._thread = threading.Thread(target=self._run, name="netwatch", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stopping.is_set():
            try:
                messages = self._ipr.get()
            except Exception:
                if self._stopping.is_set():
                    break
                continue
            if any(m.get("event") in ("RTM_NEWADDR", "RTM_DELADDR") for m in messages):
                try:
                    self.on_change()
                except Exception:
                    log.exception("address change handler failed")

    def stop(self) -> None:
        self._stopping.set()
        if self._ipr is not None:
            try:
                self._ipr.close()
            except Exception:
                pass
