"""Names in the rendezvous's zone (wgsd's layout) and the key <-> instance label mapping.
No I/O.

* ``_wireguard._udp.ZONE``: the service; its PTR set lists the instances.
* ``B32._wireguard._udp.ZONE``: one member's instance; B32 is the lowercase RFC 4648
  base32 of its 32-byte public key, '=' padding kept (56 characters).
* ``_directory._wireguard._udp.ZONE``: the bulk directory (discovery.dnssd.bulk).
* ``_services._dns-sd._udp.ZONE``: the service enumeration name (RFC 6763 section 9).
* ``NAME.ZONE``: a member's (or, as ``rendezvous.ZONE``, the rendezvous's) mesh address as
  A/AAAA; NAME is its member name, one DNS label (the store's rule:
  discovery.stores.validate.validate_name).
"""

from __future__ import annotations

import base64
import binascii

import dns.name

from meshwg.core.keys import KEY_SIZE

LABEL_LEN = 56
SERVICE_LABELS = ("_wireguard", "_udp")
BULK_LABEL = "_directory"
META_LABELS = ("_services", "_dns-sd", "_udp")
RENDEZVOUS_LABEL = "rendezvous"     # the rendezvous's own host name (reserved for members)


def instance_label(public_key: bytes) -> str:
    """RFC 4648 base32 of a 32-byte key, '=' padding kept, lowercase (56 chars).
    Raises ValueError for anything but 32 bytes."""
    if not isinstance(public_key, (bytes, bytearray)) or len(public_key) != KEY_SIZE:
        raise ValueError(f"public key must be {KEY_SIZE} bytes, got {_describe(public_key)}")
    return base64.b32encode(bytes(public_key)).decode("ascii").lower()


def public_key_from_label(label: str | bytes) -> bytes:
    """Inverse of :func:`instance_label`; case-insensitive. Raises ValueError."""
    if isinstance(label, bytes):
        try:
            label = label.decode("ascii")
        except UnicodeDecodeError:
            raise ValueError("instance label is not ASCII") from None
    if len(label) != LABEL_LEN:
        raise ValueError(f"instance label must be {LABEL_LEN} chars, got {len(label)}")
    try:
        key = base64.b32decode(label.upper())
    except (binascii.Error, ValueError):
        raise ValueError(f"instance label {label!r} is not base32") from None
    if len(key) != KEY_SIZE:
        raise ValueError(f"instance label {label!r} does not decode to {KEY_SIZE} bytes")
    return key


def zone_name(zone: str | dns.name.Name) -> dns.name.Name:
    """The zone as an absolute dnspython name."""
    if isinstance(zone, dns.name.Name):
        return zone if zone.is_absolute() else zone.concatenate(dns.name.root)
    return dns.name.from_text(zone)


def service_name(zone: str | dns.name.Name) -> dns.name.Name:
    """``_wireguard._udp.ZONE``."""
    return dns.name.Name(SERVICE_LABELS).concatenate(zone_name(zone))


def instance_name(zone: str | dns.name.Name, public_key: bytes) -> dns.name.Name:
    """``B32._wireguard._udp.ZONE`` for a member key (ValueError unless 32 bytes)."""
    return dns.name.Name((instance_label(public_key),)).concatenate(service_name(zone))


def bulk_name(zone: str | dns.name.Name) -> dns.name.Name:
    """``_directory._wireguard._udp.ZONE``: the bulk directory (a zone of its own)."""
    return dns.name.Name((BULK_LABEL,)).concatenate(service_name(zone))


def meta_service_name(zone: str | dns.name.Name) -> dns.name.Name:
    """``_services._dns-sd._udp.ZONE`` (RFC 6763 section 9)."""
    return dns.name.Name(META_LABELS).concatenate(zone_name(zone))


def host_label(name: str) -> str:
    """`name` if it can stand as NAME in ``NAME.ZONE``: one non-empty DNS label of at most
    63 bytes that cannot be mistaken for the service names (no leading '_', no '.');
    ValueError otherwise."""
    if not isinstance(name, str) or not name or name.startswith("_") or "." in name \
            or len(name.encode("utf-8", "replace")) > 63:
        raise ValueError(f"member name {name!r} is not one DNS label")
    return name


def host_name(zone: str | dns.name.Name, name: str) -> dns.name.Name:
    """``NAME.ZONE``: where a member's mesh address is published (host_label's rule)."""
    return dns.name.Name((host_label(name),)).concatenate(zone_name(zone))


def _describe(value: object) -> str:
    if isinstance(value, (bytes, bytearray)):
        return f"{len(value)} bytes"
    return type(value).__name__
