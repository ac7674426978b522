"""Fixed keys for the targets, so that seeds written once stay valid (a seed handshake
message must carry a mac1 the fuzzed responder accepts)."""

from __future__ import annotations

import hashlib

from meshwg.core.crypto import public_key


def private(label: str) -> bytes:
    return hashlib.sha256(b"meshwg fuzz key " + label.encode()).digest()


def public(label: str) -> bytes:
    return public_key(private(label))


def lan_private(label: str):
    """A fixed Ed25519 LAN key (discovery.lan.lankey) for the mDNS targets."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    return Ed25519PrivateKey.from_private_bytes(private("lan " + label))
