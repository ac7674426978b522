"""LAN discovery of mesh members over mDNS / DNS-SD (python-zeroconf).

Every member publishes one service instance of type ``_meshwg._udp.local.``:

* instance label ``mwg-<16 base32 chars>``: a BLAKE2b digest of the mesh identifier and the
  member's public key, so it is short, unique per (mesh, key) and checkable by a browser;
* SRV port = the node's WireGuard listen port; A/AAAA = its LAN addresses (loopback and the
  meshwg tunnel interface itself are left out);
* TXT ``v=1``, ``pub=BASE64KEY``, ``mesh=MESHID``, ``addr=MESH_ADDRESS``, ``name=NAME``.

Members browse for that type and keep only members of their own mesh, so two laptops behind
one NAT without hairpinning still learn each other's LAN addresses, with or without the
rendezvous.

Layout: the pure part (instance names, TXT encoding, validation of what was heard into a
:class:`LanPeer`) does no I/O; :class:`MdnsService` (one shared Zeroconf instance bound to
explicitly chosen interfaces), :class:`MdnsAnnouncer` and :class:`MdnsBrowser` are the thin
threaded layer on top of python-zeroconf.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import ipaddress
import logging
import queue
import socket
import threading
import time
from dataclasses import dataclass, replace
from typing import Callable, Iterable, Mapping, Sequence

import ifaddr
from zeroconf import (
    DNSAddress,
    DNSOutgoing,
    IPVersion,
    ServiceBrowser,
    ServiceInfo,
    ServiceStateChange,
    Zeroconf,
)
from zeroconf.const import _CLASS_IN, _CLASS_UNIQUE, _FLAGS_AA, _FLAGS_QR_RESPONSE, _TYPE_A, _TYPE_AAAA

log = logging.getLogger(__name__)

SERVICE_TYPE = "_meshwg._udp.local."
TXT_VERSION = "1"
INSTANCE_PREFIX = "mwg-"
DEFAULT_TUNNEL_INTERFACE = "meshwg0"
KEY_SIZE = 32
MAX_NAME_LENGTH = 63
MAX_MESH_ID_LENGTH = 63
RESOLVE_TIMEOUT_MS = 3000
MAX_PEERS = 1024  # bound on the table a (hostile) LAN can make us keep
REFRESH_INTERVAL = 1.0  # seconds between cache re-reads in the browser (catches expiries)


# --------------------------------------------------------------------------------------------
# Pure part: names, TXT, validation (no I/O)
# --------------------------------------------------------------------------------------------

class MalformedAnnouncement(ValueError):
    """A service instance heard on the LAN does not follow our record layout."""


@dataclass
class LanPeer:
    """A member of our mesh seen on the LAN."""

    public_key: bytes
    mesh_id: str
    name: str
    mesh_address: str
    addresses: list[str]
    port: int
    last_seen: float  # time.time() when its records last arrived (resolved or changed)


def instance_label(mesh_id: str, public_key: bytes) -> str:
    """Short DNS-SD instance label derived from (mesh id, public key)."""
    digest = hashlib.blake2b(mesh_id.encode() + b"\0" + public_key, digest_size=10).digest()
    return INSTANCE_PREFIX + base64.b32encode(digest).decode().lower()


def instance_name(mesh_id: str, public_key: bytes) -> str:
    """Full service instance name, e.g. ``mwg-abcd....__meshwg._udp.local.``."""
    return f"{instance_label(mesh_id, public_key)}.{SERVICE_TYPE}"


def host_name(mesh_id: str, public_key: bytes) -> str:
    """Host name (SRV target) carrying the member's A/AAAA records."""
    return f"{instance_label(mesh_id, public_key)}.local."


def encode_txt(mesh_id: str, public_key: bytes, name: str, mesh_address: str) -> dict[str, str]:
    """TXT properties published by a member."""
    return {
        "v": TXT_VERSION,
        "pub": base64.b64encode(public_key).decode(),
        "mesh": mesh_id,
        "addr": mesh_address,
        "name": name,
    }


def validate_identity(mesh_id: str, public_key: bytes, name: str, mesh_address: str, port: int) -> None:
    """Raise ValueError (one line naming the bad value) for an unusable local identity."""
    if not mesh_id or len(mesh_id) > MAX_MESH_ID_LENGTH or not mesh_id.isprintable():
        raise ValueError(f"mdns: mesh id {mesh_id!r} must be 1-{MAX_MESH_ID_LENGTH} printable characters")
    if len(public_key) != KEY_SIZE:
        raise ValueError(f"mdns: public key must be {KEY_SIZE} bytes, got {len(public_key)}")
    if len(name) > MAX_NAME_LENGTH or not name.isprintable():
        raise ValueError(f"mdns: name {name!r} must be at most {MAX_NAME_LENGTH} printable characters")
    try:
        ipaddress.ip_interface(mesh_address)
    except ValueError:
        raise ValueError(f"mdns: mesh address {mesh_address!r} is not an IP address") from None
    if not 1 <= port <= 65535:
        raise ValueError(f"mdns: port {port} is not in 1-65535")


def _text(properties: Mapping[bytes, bytes | None], key: bytes) -> str:
    value = properties.get(key)
    if value is None:
        raise MalformedAnnouncement(f"TXT key {key.decode()!r} missing")
    try:
        text = value.decode("utf-8")
    except UnicodeDecodeError:
        raise MalformedAnnouncement(f"TXT key {key.decode()!r} is not UTF-8") from None
    if not text.isprintable():
        raise MalformedAnnouncement(f"TXT key {key.decode()!r} has unprintable characters")
    return text


def usable_lan_address(text: str) -> bool:
    """Whether an address heard in an A/AAAA record can be a LAN endpoint."""
    try:
        addr = ipaddress.ip_address(text.split("%", 1)[0])
    except ValueError:
        return False
    return not (addr.is_loopback or addr.is_multicast or addr.is_unspecified)


def parse_announcement(
    instance: str,
    properties: Mapping[bytes, bytes | None],
    addresses: Iterable[str],
    port: int | None,
    now: float,
) -> LanPeer:
    """Turn what was heard for one instance into a LanPeer, or raise MalformedAnnouncement.

    ``instance`` is the full service instance name; the label must match the one derived
    from the announced mesh id and key (one instance per member, no borrowed names).
    """
    if _text(properties, b"v") != TXT_VERSION:
        raise MalformedAnnouncement("TXT v is not 1")
    pub_text = _text(properties, b"pub")
    try:
        public_key = base64.b64decode(pub_text, validate=True)
    except (binascii.Error, ValueError):
        raise MalformedAnnouncement("TXT pub is not base64") from None
    if len(public_key) != KEY_SIZE:
        raise MalformedAnnouncement(f"TXT pub is {len(public_key)} bytes, not {KEY_SIZE}")
    mesh_id = _text(properties, b"mesh")
    if not mesh_id or len(mesh_id) > MAX_MESH_ID_LENGTH:
        raise MalformedAnnouncement("TXT mesh has a bad length")
    mesh_address = _text(properties, b"addr")
    try:
        ipaddress.ip_interface(mesh_address)
    except ValueError:
        raise MalformedAnnouncement("TXT addr is not an IP address") from None
    name = _text(properties, b"name")
    if len(name) > MAX_NAME_LENGTH:
        raise MalformedAnnouncement("TXT name too long")
    if instance.lower() != instance_name(mesh_id, public_key).lower():
        raise MalformedAnnouncement("instance name does not match mesh and key")
    if port is None or not 1 <= port <= 65535:
        raise MalformedAnnouncement(f"SRV port {port} out of range")
    lan = sorted({a for a in addresses if usable_lan_address(a)})
    return LanPeer(public_key, mesh_id, name, mesh_address, lan, port, now)


def same_peer_view(a: Mapping[bytes, LanPeer], b: Mapping[bytes, LanPeer]) -> bool:
    """Whether two peer tables differ only in last_seen."""
    if a.keys() != b.keys():
        return False
    return all(replace(a[k], last_seen=0.0) == replace(b[k], last_seen=0.0) for k in a)


# --------------------------------------------------------------------------------------------
# Interfaces and addresses of this host (reads the namespace the process lives in)
# --------------------------------------------------------------------------------------------

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
    """Interfaces to use: ``names`` if given, else every non-loopback one with an address."""
    excluded = set(exclude)
    chosen: list[LocalInterface] = []
    for adapter in ifaddr.get_adapters():
        ifname = adapter.nice_name
        if ifname in excluded or (names is not None and ifname not in names):
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


# --------------------------------------------------------------------------------------------
# Thin threaded layer over python-zeroconf
# --------------------------------------------------------------------------------------------

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
                self._zc = Zeroconf(interfaces=choice, ip_version=version)
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

    def lan_addresses(self) -> list[str]:
        """Addresses to announce: IPv4 (and IPv6 if enabled) of the chosen interfaces."""
        out: list[str] = []
        for iface in self.interfaces:
            out.extend(iface.ipv4)
            if self.ipv6:
                out.extend(iface.ipv6)
        return out


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
    ) -> None:
        validate_identity(mesh_id, public_key, name, mesh_address, port)
        self.mesh_id, self.public_key, self.name = mesh_id, public_key, name
        self.mesh_address, self.port = mesh_address, port
        self.service = service or MdnsService(interfaces, exclude_interfaces, ipv6)
        self._info: ServiceInfo | None = None
        self._lock = threading.Lock()

    def _service_info(self, addresses: list[str]) -> ServiceInfo:
        return ServiceInfo(
            SERVICE_TYPE,
            instance_name(self.mesh_id, self.public_key),
            port=self.port,
            properties=encode_txt(self.mesh_id, self.public_key, self.name, self.mesh_address),
            server=host_name(self.mesh_id, self.public_key),
            parsed_addresses=addresses,
        )

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


@dataclass
class BrowserCounters:
    """What the browser dropped, by reason."""

    malformed: int = 0
    other_mesh: int = 0
    own: int = 0
    unresolved: int = 0
    overflow: int = 0  # members beyond MAX_PEERS


@dataclass
class _Job:
    kind: str  # "resolve" | "remove" | "refresh" | "stop"
    name: str = ""


class MdnsBrowser:
    """Follows the members of one mesh on the LAN.

    ``on_change(peers)`` is called with a fresh copy of the table whenever a peer appears,
    disappears or changes (not for last_seen alone), always from the browser's own worker
    thread, one call at a time.
    """

    def __init__(
        self,
        mesh_id: str,
        own_public_key: bytes,
        on_change: Callable[[dict[bytes, LanPeer]], None] | None = None,
        *,
        service: MdnsService | None = None,
        interfaces: list[str] | None = None,
        exclude_interfaces: Iterable[str] = (DEFAULT_TUNNEL_INTERFACE,),
        ipv6: bool = True,
        refresh_interval: float = REFRESH_INTERVAL,
    ) -> None:
        self.mesh_id = mesh_id
        self.own_public_key = own_public_key
        self.on_change = on_change
        self.service = service or MdnsService(interfaces, exclude_interfaces, ipv6)
        self.refresh_interval = refresh_interval
        self.counters = BrowserCounters()
        self._lock = threading.Lock()
        self._by_instance: dict[str, LanPeer] = {}
        self._peers: dict[bytes, LanPeer] = {}
        self._jobs: queue.Queue[_Job] = queue.Queue()
        self._browser: ServiceBrowser | None = None
        self._worker: threading.Thread | None = None

    def peers(self) -> dict[bytes, LanPeer]:
        """Snapshot of the members of our mesh seen on the LAN, by public key."""
        with self._lock:
            return {k: replace(v, addresses=list(v.addresses)) for k, v in self._peers.items()}

    def start(self) -> None:
        """Start browsing."""
        if self._worker is not None:
            return
        zc = self.service.acquire()
        self._worker = threading.Thread(target=self._run, name="mdns-browser", daemon=True)
        self._worker.start()
        self._browser = ServiceBrowser(zc, SERVICE_TYPE, handlers=[self._on_state_change])

    def stop(self) -> None:
        """Stop browsing and release the shared Zeroconf."""
        if self._worker is None:
            return
        if self._browser is not None:
            self._browser.cancel()
            self._browser = None
        self._jobs.put(_Job("stop"))
        self._worker.join(timeout=5)
        self._worker = None
        self.service.release()

    # Called on zeroconf's browser thread: hand off, never block it.
    def _on_state_change(
        self, zeroconf: Zeroconf, service_type: str, name: str, state_change: ServiceStateChange
    ) -> None:
        kind = "remove" if state_change is ServiceStateChange.Removed else "resolve"
        self._jobs.put(_Job(kind, name))

    def _run(self) -> None:
        next_refresh = time.monotonic() + self.refresh_interval
        while True:
            try:
                job = self._jobs.get(timeout=max(0.0, next_refresh - time.monotonic()))
            except queue.Empty:
                job = _Job("refresh")
            if job.kind == "stop":
                return
            if job.kind == "refresh" or time.monotonic() >= next_refresh:
                # due even when events keep the queue busy
                next_refresh = time.monotonic() + self.refresh_interval
                if job.kind != "refresh":
                    self._jobs.put(_Job("refresh"))
            try:
                self._handle(job)
            except Exception:  # a bad packet must never kill discovery
                log.exception("mdns: browser job %s failed", job)

    def _handle(self, job: _Job) -> None:
        before = self.peers()
        if job.kind == "remove":
            with self._lock:
                self._by_instance.pop(job.name.lower(), None)
        elif job.kind == "resolve":
            self._resolve(job.name, request=True)
        else:  # refresh: re-read known instances from the cache (expired addresses, TTLs)
            with self._lock:
                names = list(self._by_instance)
            for name in names:
                self._resolve(name, request=False)
        with self._lock:
            self._peers = {p.public_key: p for p in self._by_instance.values()}
        after = self.peers()
        if not same_peer_view(before, after) and self.on_change is not None:
            try:
                self.on_change(after)
            except Exception:
                log.exception("mdns: on_change callback failed")

    def _resolve(self, name: str, request: bool) -> None:
        zc = self.service.zeroconf
        info = ServiceInfo(SERVICE_TYPE, name)
        complete = info.request(zc, RESOLVE_TIMEOUT_MS) if request else info.load_from_cache(zc)
        key = name.lower()
        if not complete:
            if request:
                self.counters.unresolved += 1
            else:  # records gone from the cache (expired without a goodbye)
                with self._lock:
                    self._by_instance.pop(key, None)
            return
        try:
            peer = parse_announcement(
                name, info.properties or {}, _scoped_addresses(info), info.port, time.time()
            )
        except MalformedAnnouncement as exc:
            self.counters.malformed += 1
            log.debug("mdns: dropped %s: %s", name, exc)
            with self._lock:
                self._by_instance.pop(key, None)
            return
        if peer.mesh_id != self.mesh_id:
            if request:
                self.counters.other_mesh += 1
            return
        if peer.public_key == self.own_public_key:
            if request:
                self.counters.own += 1
            return
        with self._lock:
            known = self._by_instance.get(key)
            if known is None and len(self._by_instance) >= MAX_PEERS:
                self.counters.overflow += 1
                return
            if not request and known is not None:
                peer.last_seen = known.last_seen  # a cache re-read is not a sighting
            self._by_instance[key] = peer


def _scoped_addresses(info: ServiceInfo) -> list[str]:
    """Addresses of a resolved service; link-local IPv6 get ``%ifname`` (our namespace)."""
    out = []
    for text in info.parsed_scoped_addresses():
        if "%" in text:
            addr, scope = text.split("%", 1)
            if scope.isdigit():
                try:
                    scope = socket.if_indextoname(int(scope))
                except OSError:
                    pass
            text = f"{addr}%{scope}"
        out.append(text)
    return out
