"""WireGuard keys as text: base64 the way `wg genkey`, `wg pubkey` and wg-quick files use it."""

from __future__ import annotations

import base64
import binascii
import os

from meshwg.core import crypto
from meshwg.util.errors import MeshwgError

KEY_SIZE = 32
KEY_B64_LEN = 44  # base64 of 32 bytes: 43 characters and one '=' of padding


class KeyFormatError(MeshwgError, ValueError):
    """Text that is not a base64-encoded 32-byte WireGuard key."""


_SECRET_NAMES = ("privatekey", "presharedkey")


def is_secret_name(name: str) -> bool:
    """True when `name` (or a line starting with it) names a secret key: PrivateKey,
    PresharedKey, private_key, preshared-key, any case. Error messages never quote such a
    value (a near-miss of a key is most of the key: it would end up in logs)."""
    folded = "".join(ch for ch in name[:64].lower() if ch.isalnum())
    return folded.startswith(_SECRET_NAMES)


def quoted(name: str, text: str, limit: int = 40) -> str:
    """`text` for an error message about `name`: repr-quoted and cut to `limit` characters,
    or only its length when `name` (or `text` itself) names a secret key."""
    if is_secret_name(name) or is_secret_name(text):
        return f"<not shown: a secret, {len(text)} characters>"
    return repr(text if len(text) <= limit else f"{text[:limit]}...({len(text)} characters)")


def encode_key(raw: bytes) -> str:
    """Base64 text (44 characters) of a 32-byte key."""
    if len(raw) != KEY_SIZE:
        raise KeyFormatError(f"key: expected {KEY_SIZE} bytes, got {len(raw)}")
    return base64.b64encode(raw).decode("ascii")


def decode_key(text: str, what: str = "key") -> bytes:
    """The 32 bytes of a base64 key; KeyFormatError names `what` and the text if malformed."""
    stripped = text.strip()
    raw = b""
    if len(stripped) == KEY_B64_LEN and stripped.endswith("=") and not stripped.endswith("=="):
        try:
            raw = base64.b64decode(stripped.encode("ascii"), validate=True)
        except (binascii.Error, UnicodeEncodeError):
            pass
    if len(raw) != KEY_SIZE:
        raise KeyFormatError(f"{what}: not a valid base64 WireGuard key: {quoted(what, text, 64)}")
    return raw


def generate_private_key_b64() -> str:
    """A fresh clamped Curve25519 private key, like `wg genkey`."""
    return encode_key(crypto.generate_private_key())


def public_key_b64(private_b64: str) -> str:
    """The public key of a base64 private key, like `wg pubkey`."""
    return encode_key(crypto.public_key(decode_key(private_b64, "private key")))


def generate_psk_b64() -> str:
    """A fresh 32-byte random preshared key, like `wg genpsk`."""
    return encode_key(os.urandom(KEY_SIZE))
