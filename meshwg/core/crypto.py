"""Thin wrappers over well-kept libraries for the primitives WireGuard uses.

No primitive is implemented here: BLAKE2s comes from hashlib, HMAC-BLAKE2s from the
standard library's hmac (OpenSSL's HMAC), ChaCha20-Poly1305 from `cryptography`, X25519 and
XChaCha20-Poly1305 from libsodium (PyNaCl).
"""

from __future__ import annotations

import hashlib
import hmac
import os
import struct

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from nacl import bindings as sodium
from nacl import exceptions as sodium_exceptions

from meshwg.core.messages import COUNTER_NONCE
from meshwg.util.errors import MeshwgError

KEY_SIZE = 32
XNONCE_SIZE = 24
_ZERO32 = bytes(32)
_blake2s = hashlib.blake2s
_hmac_digest = hmac.digest
_pack_nonce = COUNTER_NONCE.pack


class DecryptionError(MeshwgError):
    """An AEAD tag did not verify."""


class WeakKeyError(MeshwgError):
    """A Diffie-Hellman result was all zeros (a low-order public key)."""


def hash_(*parts: bytes) -> bytes:
    return _blake2s(b"".join(parts)).digest()


def mac(key: bytes, data: bytes) -> bytes:
    """Keyed BLAKE2s with a 16-byte digest (WireGuard's MAC)."""
    return hashlib.blake2s(data, key=key, digest_size=16).digest()


def hmac_blake2s(key: bytes, data: bytes) -> bytes:
    """HMAC-BLAKE2s (RFC 2104), computed by the standard library's one-shot hmac.digest
    (OpenSSL's HMAC over BLAKE2s-256)."""
    return _hmac_digest(key, data, "blake2s")


def kdf(key: bytes, data: bytes, n: int) -> tuple[bytes, ...]:
    """HKDF with HMAC-BLAKE2s (WireGuard whitepaper section 5.4: Kdf_n), returning n (1..3)
    32-byte outputs: T0 = HMAC(key, data), Ti = HMAC(T0, T(i-1) || i). Each HMAC is the
    standard library's hmac.digest (OpenSSL's HMAC)."""
    prk = _hmac_digest(key, data, "blake2s")
    out = []
    prev = b""
    for i in range(1, n + 1):
        prev = _hmac_digest(prk, prev + bytes((i,)), "blake2s")
        out.append(prev)
    return tuple(out)


def clamp(private: bytes) -> bytes:
    b = bytearray(private)
    b[0] &= 248
    b[31] = (b[31] & 127) | 64
    return bytes(b)


def generate_private_key() -> bytes:
    return clamp(os.urandom(32))


def public_key(private: bytes) -> bytes:
    """X25519 public key of a private key (libsodium's fixed-base multiplication, which
    clamps as RFC 7748 section 5 says; about half the cost of loading an OpenSSL key)."""
    return sodium.crypto_scalarmult_base(private)


def dh(private: bytes, public: bytes) -> bytes:
    """X25519(private, public) (RFC 7748), by libsodium: no key object to build per call.

    Raises WeakKeyError for a public key that is not 32 bytes or gives the all-zero
    shared secret (a low-order point; libsodium refuses it)."""
    if len(public) != KEY_SIZE or len(private) != KEY_SIZE:
        raise WeakKeyError(f"X25519 keys of {len(private)} and {len(public)} bytes, "
                           f"expected {KEY_SIZE}")
    try:
        shared = sodium.crypto_scalarmult(private, public)
    except sodium_exceptions.RuntimeError:      # libsodium: all-zero shared secret
        raise WeakKeyError("all-zero shared secret") from None
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
    """One message under a key used once (the handshake's): no Aead kept."""
    return ChaCha20Poly1305(key).encrypt(_pack_nonce(counter), plaintext, aad or None)


def aead_open(key: bytes, counter: int, ciphertext: bytes, aad: bytes = b"") -> bytes:
    try:
        return ChaCha20Poly1305(key).decrypt(_pack_nonce(counter), ciphertext, aad or None)
    except InvalidTag:
        raise DecryptionError("bad authentication tag") from None


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
