"""What a member announces on the LAN over mDNS / DNS-SD, and what a browser accepts.
No I/O.

Every member publishes one service instance of type ``_meshwg._udp.local.``:

* instance label ``mwg-<16 base32 chars>``: a BLAKE2b digest of the mesh identifier and the
  member's public key, so it is short, unique per (mesh, key) and checkable by a browser;
* SRV port = the node's WireGuard listen port; A/AAAA = its LAN addresses (loopback and the
  meshwg tunnel interface itself are left out);
* TXT ``v=1``, ``pub=BASE64KEY``, ``mesh=MESHID``, ``addr=MESH_ADDRESS``, ``name=NAME``,
  and, signed with the member's LAN key, ``ip=``, ``ts=``, ``sig=`` (discovery.lan.lankey:
  who may use an announcement is decided there, against the directory).

Members browse for that type and keep only members of their own mesh, so two laptops behind
one NAT without hairpinning still learn each other's LAN addresses, with or without the
rendezvous. What was heard is hostile input: :func:`parse_announcement` accepts it as a
:class:`LanPeer` or raises MalformedAnnouncement naming the fault.
"""

from __future__ import annotations

import base64
import hashlib
import ipaddress
from dataclasses import dataclass, replace
from typing import Iterable, Mapping

from meshwg.core.keys import KEY_SIZE, KeyFormatError, decode_key, encode_key
from meshwg.util.errors import MeshwgError

from discovery.lan.lankey import Signature, parse_signature

SERVICE_TYPE = "_meshwg._udp.local."
TXT_VERSION = "1"
INSTANCE_PREFIX = "mwg-"
MAX_NAME_LENGTH = 63
MAX_MESH_ID_LENGTH = 63


class MalformedAnnouncement(MeshwgError, ValueError):
    """A service instance heard on the LAN does not follow our record layout."""


@dataclass
class LanPeer:
    """A member of our mesh seen on the LAN: its 32-byte key, mesh id, name, mesh
    address, LAN addresses (link-local IPv6 with ``%ifname``) and WireGuard port."""

    public_key: bytes
    mesh_id: str
    name: str
    mesh_address: str
    addresses: list[str]
    port: int
    last_seen: float  # time.time() when its records last arrived (resolved or changed)
    signature: Signature | None = None  # TXT ip/ts/sig (None: unsigned)


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
        "pub": encode_key(public_key),
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


def _text(properties: Mapping[bytes, bytes | None], key: bytes, optional: bool = False) -> str | None:
    value = properties.get(key)
    if value is None:
        if optional:
            return None
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
    Unusable addresses (loopback, multicast, unspecified) are left out.
    """
    if _text(properties, b"v") != TXT_VERSION:
        raise MalformedAnnouncement("TXT v is not 1")
    try:
        public_key = decode_key(_text(properties, b"pub"), "pub")
    except KeyFormatError:
        raise MalformedAnnouncement(f"TXT pub is not base64 of {KEY_SIZE} bytes") from None
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
    try:
        signature = parse_signature(*(_text(properties, k, optional=True) for k in (b"ip", b"ts", b"sig")))
    except ValueError as exc:
        raise MalformedAnnouncement(str(exc)) from None
    lan = sorted({a for a in addresses if usable_lan_address(a)})
    return LanPeer(public_key, mesh_id, name, mesh_address, lan, port, now, signature)


def same_peer_view(a: Mapping[bytes, LanPeer], b: Mapping[bytes, LanPeer]) -> bool:
    """Whether two peer tables differ only in last_seen."""
    if a.keys() != b.keys():
        return False
    return all(replace(a[k], last_seen=0.0) == replace(b[k], last_seen=0.0) for k in a)
