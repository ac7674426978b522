"""Watch the host's own addresses and report changes (added or removed, any interface).

The watcher listens on a netlink route socket subscribed to the kernel's IPv4 and IPv6
address groups only, so every message it gets is an address change; its thread blocks on
that socket without timeouts (meshwg.util.service.Service): nothing but a change wakes it.
"""

from __future__ import annotations

import logging
import socket
from typing import Callable

from meshwg.util.service import Service

# rtnetlink(7) multicast groups (<linux/rtnetlink.h>); not from pyroute2, whose import
# would cost `meshwg join` 0.4-1.4 s of start-up for two numbers
RTMGRP_IPV4_IFADDR = 0x10
RTMGRP_IPV6_IFADDR = 0x100

log = logging.getLogger("meshwg.netwatch")

_RECV_SIZE = 65536


class AddressWatcher:
    """Calls on_change() (from its own thread, once per burst of changes) when an address
    is added or removed in this network namespace."""

    def __init__(self, on_change: Callable[[], None]):
        self.on_change = on_change
        self._service: Service | None = None

    def start(self) -> "AddressWatcher":
        """Subscribe and start watching (raises OSError when netlink is unavailable)."""
        if self._service is not None:
            return self
        sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE)
        try:
            sock.bind((0, RTMGRP_IPV4_IFADDR | RTMGRP_IPV6_IFADDR))
            sock.setblocking(False)
        except OSError:
            sock.close()
            raise
        service = Service("netwatch")
        service.on_close(sock.close)
        service.spawn(self._run, service, sock)
        self._service = service
        return self

    def _run(self, service: Service, sock: socket.socket) -> None:
        while service.wait_readable(sock):
            changed = False
            while not service.stopping:
                try:
                    changed = bool(sock.recv(_RECV_SIZE)) or changed
                except (BlockingIOError, InterruptedError):
                    break
                except OSError:        # ENOBUFS: the kernel dropped messages; assume a change
                    changed = True
                    break
            if changed and not service.stopping:
                try:
                    self.on_change()
                except Exception:  # noqa: BLE001 -- the watcher outlives a failing handler
                    log.exception("address change handler failed")

    def stop(self) -> None:
        """Stop watching and close the socket."""
        service, self._service = self._service, None
        if service is not None:
            service.stop()
