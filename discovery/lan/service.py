"""One python-zeroconf instance on explicitly chosen interfaces, shared by the announcer
and the browser of a member (discovery.lan.announcer, discovery.lan.browser).

It also notes which host (source address) announced each service instance of our type
(the PTR answers of ``_meshwg._udp``), at most MAX_SOURCES instances, so the browser can
bound the work one announcer costs (issue 9 case 4): python-zeroconf hands every response
to its RecordManager, whose per-response entry point a subclass observes.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from typing import Iterable, Sequence

from zeroconf import Zeroconf
from zeroconf.const import _TYPE_PTR

try:    # python-zeroconf's internals: without them, announcers are not told apart
    from zeroconf._handlers.record_manager import RecordManager
except ImportError:     # pragma: no cover -- a zeroconf that moved it
    RecordManager = None

from discovery.lan.interfaces import (
    DEFAULT_TUNNEL_INTERFACE, LocalInterface, local_interfaces, zeroconf_interfaces,
)

log = logging.getLogger(__name__)

MAX_SOURCES = 4096       # instances whose announcer is remembered (the oldest go first)
_WATCHED_TYPE = "_meshwg._udp.local."   # discovery.lan.records.SERVICE_TYPE


def _note_sources(sources: OrderedDict, msg) -> None:
    """Note the source address of each PTR answer of our type in `msg` (a DNSIncoming)."""
    source = msg.source[0] if msg.source else None
    if source is None:
        return
    for record in msg.answers():
        if record.type == _TYPE_PTR and record.name.lower() == _WATCHED_TYPE:
            name = record.alias.lower()
            sources.pop(name, None)
            sources[name] = source
            while len(sources) > MAX_SOURCES:
                sources.popitem(last=False)


if RecordManager is not None:
    class _SourceNotingRecordManager(RecordManager):
        """Zeroconf's RecordManager, noting the source of each PTR answer of our type."""

        def async_updates_from_response(self, msg) -> None:  # zeroconf's event loop thread
            _note_sources(self.zc.instance_sources, msg)
            super().async_updates_from_response(msg)

    class _Zeroconf(Zeroconf):
        """Zeroconf with :class:`_SourceNotingRecordManager` (Zeroconf.__init__ assigns
        the record manager once, before its sockets start)."""

        instance_sources: OrderedDict

        @property
        def record_manager(self):
            return self._noting_record_manager

        @record_manager.setter
        def record_manager(self, _default) -> None:
            self.instance_sources = OrderedDict()      # instance name (lower case) -> source IP
            self._noting_record_manager = _SourceNotingRecordManager(self)
else:   # pragma: no cover
    _Zeroconf = Zeroconf


class MdnsService:
    """One Zeroconf instance on explicitly chosen interfaces, shared by announcer and browser.

    ``interfaces``: interface names to use (None: all but loopback and ``exclude_interfaces``).
    ``ipv6``: also use IPv6 (multicast on ff02::fb, AAAA records).
    """

    def __init__(
        self,
        interfaces: Sequence[str] | None = None,
        exclude_interfaces: Iterable[str] = (DEFAULT_TUNNEL_INTERFACE,),
        ipv6: bool = True,
    ) -> None:
        self.interface_names = list(interfaces) if interfaces is not None else None
        self.exclude_interfaces = tuple(exclude_interfaces)
        self.ipv6 = ipv6
        self._lock = threading.Lock()
        self._zc: Zeroconf | None = None
        self._users = 0
        self.interfaces: list[LocalInterface] = []

    def scan(self) -> list[LocalInterface]:
        """Read the chosen interfaces and their current addresses."""
        return local_interfaces(self.interface_names, self.exclude_interfaces)

    def acquire(self) -> Zeroconf:
        """Start (first user) or share the Zeroconf instance."""
        with self._lock:
            if self._zc is None:
                self.interfaces = self.scan()
                choice, version = zeroconf_interfaces(self.interfaces, self.ipv6)
                if not choice:  # e.g. before DHCP: sockets come with the first rebind()
                    log.warning("mdns: no LAN address yet on %s (excluded %s)",
                                self.interface_names or "any interface", list(self.exclude_interfaces))
                self._zc = _Zeroconf(interfaces=choice, ip_version=version)
            self._users += 1
            return self._zc

    def release(self) -> None:
        """Drop one user; the last one closes Zeroconf (sending goodbyes for what is left)."""
        with self._lock:
            if self._users == 0:
                return
            self._users -= 1
            if self._users == 0 and self._zc is not None:
                self._zc.close()
                self._zc = None

    @property
    def zeroconf(self) -> Zeroconf:
        if self._zc is None:
            raise RuntimeError("mdns: service not started")
        return self._zc

    def rescan(self) -> list[LocalInterface]:
        """Re-read the chosen interfaces' addresses (sockets untouched until rebind())."""
        with self._lock:
            self.interfaces = self.scan()
            return list(self.interfaces)

    def rebind(self) -> None:
        """Move Zeroconf's sockets to the interfaces found by the last rescan().

        Zeroconf re-announces every registration when a socket was added, so registrations
        should already carry their new addresses when this is called.
        """
        with self._lock:
            if self._zc is None:
                return
            choice, version = zeroconf_interfaces(self.interfaces, self.ipv6)
            self._zc.update_interfaces(choice, version)  # an empty choice drops every socket

    def announcer_of(self, name: str) -> str | None:
        """The source address of the last PTR answer that announced instance `name`."""
        sources = getattr(self._zc, "instance_sources", None)
        return sources.get(name.lower()) if sources is not None else None

    def lan_addresses(self) -> list[str]:
        """Addresses to announce: IPv4 (and IPv6 if enabled) of the chosen interfaces."""
        out: list[str] = []
        for iface in self.interfaces:
            out.extend(iface.ipv4)
            if self.ipv6:
                out.extend(iface.ipv6)
        return out
