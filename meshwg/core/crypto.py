"""Thin wrappers over well-kept libraries for the primitives WireGuard uses.

No primitive is implemented here: BLAKE2s comes from hashlib, X25519 and
ChaCha20-Poly1305 from `cryptography`, XChaCha20-Poly1305 from libsodium (PyNaCl).
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import os
import struct

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from nacl import bindings as sodium

from meshwg.core.messages import COUNTER_NONCE
from meshwg.util.errors import MeshwgError

KEY_SIZE = 32
XNONCE_SIZE = 24
_ZERO32 = bytes(32)
_pack_nonce = COUNTER_NONCE.pack


class DecryptionError(MeshwgError):
    """An AEAD tag did not verify."""


class WeakKeyError(MeshwgError):
    """A Diffie-Hellman result was all zeros (a low-order public key)."""


def hash_(*parts: bytes) -> bytes:
    h = hashlib.blake2s()
    for p in parts:
        h.update(p)
    return h.digest()


def mac(key: bytes, data: bytes) -> bytes:
    """Keyed BLAKE2s with a 16-byte digest (WireGuard's MAC)."""
    return hashlib.blake2s(data, key=key, digest_size=16).digest()


def hmac_blake2s(key: bytes, data: bytes) -> bytes:
    return hmac.new(key, data, hashlib.blake2s).digest()


def kdf(key: bytes, data: bytes, n: int) -> tuple[bytes, ...]:
    """HKDF with HMAC-BLAKE2s, returning n (1..3) 32-byte outputs."""
    prk = hmac_blake2s(key, data)
    out = []
    prev = b""
    for i in range(1, n + 1):
        prev = hmac_blake2s(prk, prev + bytes([i]))
        out.append(prev)
    return tuple(out)


def clamp(private: bytes) -> bytes:
    b = bytearray(private)
    b[0] &= 248
    b[31] = (b[31] & 127) | 64
    return bytes(b)


def generate_private_key() -> bytes:
    return clamp(os.urandom(32))


# Loading a private key costs a scalar multiplication in OpenSSL (it derives the public
# key): about as much as the exchange itself. A handshake uses the static key and its
# ephemeral key two or three times each, so the last few loaded keys are kept.
_private_key_object = functools.lru_cache(maxsize=8)(X25519PrivateKey.from_private_bytes)


def public_key(private: bytes) -> bytes:
    return _private_key_object(private).public_key().public_bytes_raw()


def dh(private: bytes, public: bytes) -> bytes:
    try:
        shared = _private_key_object(private).exchange(X25519PublicKey.from_public_bytes(public))
    except ValueError as exc:  # cryptography refuses an all-zero shared secret
        raise WeakKeyError(str(exc)) from None
    if shared == _ZERO32:
        raise WeakKeyError("all-zero shared secret")
    return shared


def counter_nonce(counter: int) -> bytes:
    """The 12-byte AEAD nonce of a transport counter (messages.COUNTER_NONCE)."""
    return _pack_nonce(counter)


class Aead:
    """ChaCha20-Poly1305 (RFC 8439) with WireGuard's 64-bit little-endian counter nonce.

    Keep one instance per key: the key schedule is set up once.
    """

    __slots__ = ("_cipher",)

    def __init__(self, key: bytes):
        self._cipher = ChaCha20Poly1305(key)

    def seal(self, counter: int, plaintext: bytes, aad: bytes = b"") -> bytes:
        return self._cipher.encrypt(counter_nonce(counter), plaintext, aad or None)

    def open(self, counter: int, ciphertext: bytes, aad: bytes = b"") -> bytes:
        try:
            return self._cipher.decrypt(counter_nonce(counter), ciphertext, aad or None)
        except InvalidTag:
            raise DecryptionError("bad authentication tag") from None


def aead_seal(key: bytes, counter: int, plaintext: bytes, aad: bytes = b"") -> bytes:
    return Aead(key).seal(counter, plaintext, aad)


def aead_open(key: bytes, counter: int, ciphertext: bytes, aad: bytes = b"") -> bytes:
    return Aead(key).open(counter, ciphertext, aad)


def xaead_seal(key: bytes, nonce: bytes, plaintext: bytes, aad: bytes = b"") -> bytes:
    """XChaCha20-Poly1305 (libsodium's IETF construction)."""
    return sodium.crypto_aead_xchacha20poly1305_ietf_encrypt(plaintext, aad or None, nonce, key)


def xaead_open(key: bytes, nonce: bytes, ciphertext: bytes, aad: bytes = b"") -> bytes:
    try:
        return sodium.crypto_aead_xchacha20poly1305_ietf_decrypt(ciphertext, aad or None, nonce, key)
    except Exception:
        raise DecryptionError("bad authentication tag") from None


TAI64_BASE = 0x400000000000000A


def tai64n(unix_time: float) -> bytes:
    """TAI64N label, nanoseconds rounded down to a multiple of 2**24 as the references do."""
    seconds = int(unix_time)
    nanos = int((unix_time - seconds) * 1e9)
    nanos -= nanos % (1 << 24)
    return struct.pack(">QI", TAI64_BASE + seconds, nanos)
