"""Publishes this member on the LAN over mDNS (records: discovery.lan.records), signed
with its LAN key when it has one (discovery.lan.lankey): then :meth:`MdnsAnnouncer.resign`
is due every RESIGN_PERIOD seconds (the member's loop calls it)."""

from __future__ import annotations

import ipaddress
import threading
import time
from typing import Iterable

from zeroconf import DNSAddress, DNSOutgoing, ServiceInfo
from zeroconf.const import _CLASS_IN, _CLASS_UNIQUE, _FLAGS_AA, _FLAGS_QR_RESPONSE, _TYPE_A, _TYPE_AAAA

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from discovery.lan.interfaces import DEFAULT_TUNNEL_INTERFACE
from discovery.lan.lankey import RESIGN_PERIOD, signable_addresses, signed_txt
from discovery.lan.records import SERVICE_TYPE, encode_txt, host_name, instance_name, validate_identity
from discovery.lan.service import MdnsService


class MdnsAnnouncer:
    """Publishes this member on the LAN."""

    def __init__(
        self,
        mesh_id: str,
        public_key: bytes,
        name: str,
        mesh_address: str,
        port: int,
        interfaces: list[str] | None = None,
        exclude_interfaces: Iterable[str] = (DEFAULT_TUNNEL_INTERFACE,),
        *,
        service: MdnsService | None = None,
        ipv6: bool = True,
        lan_key: Ed25519PrivateKey | None = None,
    ) -> None:
        validate_identity(mesh_id, public_key, name, mesh_address, port)
        self.lan_key = lan_key          # signs the announcement (None: unsigned)
        self.signed_at: float | None = None   # time.time() of the signature announced
        self.mesh_id, self.public_key, self.name = mesh_id, public_key, name
        self.mesh_address, self.port = mesh_address, port
        self.service = service or MdnsService(interfaces, exclude_interfaces, ipv6)
        self._info: ServiceInfo | None = None
        self._lock = threading.Lock()

    def _service_info(self, addresses: list[str]) -> ServiceInfo:
        properties = encode_txt(self.mesh_id, self.public_key, self.name, self.mesh_address)
        if self.lan_key is not None:    # only the signed addresses are announced
            addresses = signable_addresses(addresses)
            now = time.time()
            properties.update(signed_txt(self.lan_key, self.mesh_id, self.public_key, self.port,
                                         addresses, int(now)))
            self.signed_at = now
        return ServiceInfo(
            SERVICE_TYPE,
            instance_name(self.mesh_id, self.public_key),
            port=self.port,
            properties=properties,
            server=host_name(self.mesh_id, self.public_key),
            parsed_addresses=addresses,
        )

    @property
    def resign_at(self) -> float | None:
        """time.time() when :meth:`resign` is due (None: unsigned or not started)."""
        return None if self.signed_at is None or self._info is None else self.signed_at + RESIGN_PERIOD

    def resign(self) -> None:
        """Announce the same records under a fresh signature (``ts``): a signature is good
        for discovery.lan.lankey.MAX_AGE seconds only."""
        with self._lock:
            if self._info is None or self.lan_key is None:
                return
            info = self._service_info(self._info.parsed_addresses())
            self.service.zeroconf.update_service(info)
            self._info = info

    @property
    def addresses(self) -> list[str]:
        """LAN addresses currently announced."""
        return self._info.parsed_addresses() if self._info else []

    def start(self) -> None:
        """Register (probe, then announce) the service."""
        with self._lock:
            if self._info is not None:
                return
            zc = self.service.acquire()
            info = self._service_info(self.service.lan_addresses())
            try:
                zc.register_service(info)
            except Exception:
                self.service.release()
                raise
            self._info = info

    def update_addresses(self) -> None:
        """Re-read LAN addresses and re-announce now (call on a netlink address change)."""
        with self._lock:
            if self._info is None:
                return
            # New records first, then new sockets: announcing the old records again from a new
            # socket would refresh them in every cache and defeat the cache-flush bit of the
            # new A/AAAA records (RFC 6762 10.2 only flushes records older than one second).
            self.service.rescan()
            old = set(self._info.parsed_addresses())
            info = self._service_info(self.service.lan_addresses())
            zc = self.service.zeroconf
            zc.update_service(info)
            self._info = info
            self.service.rebind()
            # Goodbyes for addresses we lost, so caches drop them now even if they heard them
            # less than a second ago (then the cache-flush bit alone would not flush them).
            gone = old - set(info.parsed_addresses())
            if gone:
                zc.send(address_goodbyes(host_name(self.mesh_id, self.public_key), gone))

    def stop(self) -> None:
        """Unregister (goodbye packets) and release the shared Zeroconf."""
        with self._lock:
            if self._info is None:
                return
            try:
                self.service.zeroconf.unregister_service(self._info)
            finally:
                self._info = None
                self.service.release()


def address_goodbyes(server: str, addresses: Iterable[str]) -> DNSOutgoing:
    """An mDNS response withdrawing A/AAAA records of ``server`` (TTL 0, RFC 6762 10.1)."""
    out = DNSOutgoing(_FLAGS_QR_RESPONSE | _FLAGS_AA)
    for text in addresses:
        addr = ipaddress.ip_address(text.split("%", 1)[0])
        rtype = _TYPE_A if addr.version == 4 else _TYPE_AAAA
        out.add_answer_at_time(DNSAddress(server, rtype, _CLASS_IN | _CLASS_UNIQUE, 0, addr.packed), 0)
    return out
