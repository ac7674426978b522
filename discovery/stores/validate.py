"""Checks of the values a mesh stores and receives: member names, host candidates, zone
names, interface names, public keys. No I/O; each raises ValueError with one line naming
the bad value (callers turn it into StateError or a refusal)."""

from __future__ import annotations

import re

import dns.exception
import dns.name

from meshwg.core.keys import KEY_SIZE, decode_key
from meshwg.util.endpoint import EndpointError, parse_endpoint

MAX_CANDIDATES = 16
MAX_CANDIDATE_LENGTH = 255

_NAME_RE = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$")
_IFNAME_RE = re.compile(r"^[A-Za-z0-9_.-]{1,15}$")


def validate_name(name: str) -> str:
    """Return the member name if it is one DNS label of a-z, 0-9 and '-'; else ValueError."""
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise ValueError(f"invalid member name {name!r}: use 1-63 characters a-z, 0-9 "
                         f"and '-', not starting or ending with '-'")
    return name


def validate_candidates(candidates: list[str]) -> list[str]:
    """Check host candidates ("HOST:PORT" strings, at most MAX_CANDIDATES); the list
    unchanged, or ValueError naming the bad one."""
    if not isinstance(candidates, (list, tuple)):
        raise ValueError("host candidates must be a list of HOST:PORT strings")
    if len(candidates) > MAX_CANDIDATES:
        raise ValueError(f"{len(candidates)} host candidates given, at most {MAX_CANDIDATES} allowed")
    out = []
    for cand in candidates:
        if not isinstance(cand, str) or len(cand) > MAX_CANDIDATE_LENGTH or cand != cand.strip():
            raise ValueError(f"host candidate {cand!r} is not a HOST:PORT string")
        try:
            parse_endpoint(cand)
        except EndpointError as exc:
            raise ValueError(f"host candidate: {exc}") from None
        out.append(cand)
    return out


def normalize_zone(zone: str) -> str:
    """Lowercase, fully-qualified zone name ("mesh.internal."); ValueError otherwise."""
    try:
        name = dns.name.from_text(zone)
    except (dns.exception.DNSException, ValueError, TypeError, AttributeError) as exc:
        raise ValueError(f"invalid zone {zone!r}: {exc}") from None
    if name == dns.name.root:
        raise ValueError("zone must not be the DNS root")
    return name.to_text().lower()


def validate_interface_name(name: str) -> str:
    """A Linux interface name: 1-15 of A-Z a-z 0-9 _ . -; ValueError otherwise."""
    if not isinstance(name, str) or not _IFNAME_RE.match(name):
        raise ValueError(f"interface name {name!r}: use 1-15 of A-Z a-z 0-9 _ . -")
    return name


def public_key_bytes(public_key: bytes | str) -> bytes:
    """A 32-byte WireGuard public key from bytes or its base64 text; ValueError otherwise."""
    if isinstance(public_key, str):
        return decode_key(public_key, "public key")
    if not isinstance(public_key, bytes) or len(public_key) != KEY_SIZE:
        raise ValueError(f"a WireGuard public key is {KEY_SIZE} bytes")
    return public_key
