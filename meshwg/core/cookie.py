"""WireGuard's cookie mechanism (mac1, mac2 and cookie replies), free of I/O and clock.

mac1 proves the sender knows our static public key; mac2 proves it can receive at its
source address (it holds a cookie we sent there). Responder side: CookieChecker.
Initiator side (and a responder answering with message 2): CookieGenerator.
Semantics follow wireguard-go's device/cookie.go; times are seconds from any one clock.
"""

from __future__ import annotations

import hashlib
import hmac
import os

from meshwg.core.constants import COOKIE_REFRESH_TIME, INITIATION_SIZE, LABEL_COOKIE, LABEL_MAC1, RESPONSE_SIZE
from meshwg.core.crypto import DecryptionError, XNONCE_SIZE, hash_, mac, xaead_open, xaead_seal
from meshwg.core.messages import INITIATION_MAC1_OFFSET, RESPONSE_MAC1_OFFSET, CookieReply

MAC_SIZE = 16
_NO_MAC = bytes(MAC_SIZE)                   # mac2 without a cookie
COOKIE_SECRET_SIZE = 32

_MAC1_OFFSETS = {INITIATION_SIZE: INITIATION_MAC1_OFFSET, RESPONSE_SIZE: RESPONSE_MAC1_OFFSET}


def mac1_offset(message: bytes | bytearray | memoryview) -> int | None:
    """Offset of mac1 in a handshake message (mac2 follows 16 bytes later), None otherwise."""
    return _MAC1_OFFSETS.get(len(message))


class CookieChecker:
    """Responder side: verifies mac1/mac2 of incoming handshakes and builds cookie replies."""

    __slots__ = ("_mac1_key", "_mac1_keyed", "_cookie_key", "_secret", "_secret_set",
                 "cookie_refresh_time")

    def __init__(self, local_static_public: bytes, *,
                 cookie_refresh_time: float = COOKIE_REFRESH_TIME) -> None:
        self.cookie_refresh_time = cookie_refresh_time   # secret lifetime (seconds)
        self._mac1_key = hash_(LABEL_MAC1, local_static_public)
        # mac()'s keyed BLAKE2s with the key already absorbed: each mac1 check copies it
        # (a copy costs less than keying a new one; same digest)
        self._mac1_keyed = hashlib.blake2s(key=self._mac1_key, digest_size=MAC_SIZE)
        self._cookie_key = hash_(LABEL_COOKIE, local_static_public)
        self._secret = bytes(COOKIE_SECRET_SIZE)
        self._secret_set: float | None = None      # None: no secret yet, mac2 never valid

    def verify_mac1(self, message: bytes) -> bool:
        offset = mac1_offset(message)
        if offset is None:
            return False
        keyed = self._mac1_keyed.copy()
        keyed.update(bytes(message[:offset]))
        return hmac.compare_digest(keyed.digest(), bytes(message[offset:offset + MAC_SIZE]))

    def verify_mac2(self, message: bytes, source: bytes, now: float) -> bool:
        """True if mac2 carries a cookie we handed to `source` with the current secret."""
        offset = mac1_offset(message)
        if offset is None or not self._secret_fresh(now):
            return False
        cookie = mac(self._secret, source)
        mac2_at = offset + MAC_SIZE
        expected = mac(cookie, bytes(message[:mac2_at]))
        return hmac.compare_digest(expected, bytes(message[mac2_at:mac2_at + MAC_SIZE]))

    def create_reply(self, message: bytes, receiver_index: int, source: bytes, now: float,
                     nonce: bytes | None = None) -> bytes:
        """A 64-byte cookie reply to `message` (whose sender index is `receiver_index`)."""
        offset = mac1_offset(message)
        if offset is None:
            raise ValueError(f"cookie reply to a message of {len(message)} bytes, "
                             f"expected {INITIATION_SIZE} or {RESPONSE_SIZE}")
        if not self._secret_fresh(now):
            self._secret = os.urandom(COOKIE_SECRET_SIZE)
            self._secret_set = now
        if nonce is None:
            nonce = os.urandom(XNONCE_SIZE)
        elif len(nonce) != XNONCE_SIZE:
            raise ValueError(f"cookie nonce of {len(nonce)} bytes, expected {XNONCE_SIZE}")
        cookie = mac(self._secret, source)
        mac1 = bytes(message[offset:offset + MAC_SIZE])
        encrypted = xaead_seal(self._cookie_key, nonce, cookie, mac1)
        return CookieReply(receiver_index, nonce, encrypted).build()

    def _secret_fresh(self, now: float) -> bool:
        return self._secret_set is not None and now - self._secret_set <= self.cookie_refresh_time


class CookieGenerator:
    """Initiator side: fills mac1/mac2 of outgoing handshakes and takes in cookie replies."""

    __slots__ = ("_mac1_keyed", "_remote", "_cookie_key", "_cookie", "_cookie_set", "_last_mac1",
                 "cookie_refresh_time")

    def __init__(self, remote_static_public: bytes, *,
                 cookie_refresh_time: float = COOKIE_REFRESH_TIME) -> None:
        self.cookie_refresh_time = cookie_refresh_time   # how long a received cookie is used
        self._mac1_keyed = hashlib.blake2s(key=hash_(LABEL_MAC1, remote_static_public),
                                           digest_size=MAC_SIZE)   # as CookieChecker's
        self._remote = remote_static_public
        self._cookie_key: bytes | None = None      # made with the first cookie reply
        self._cookie = bytes(MAC_SIZE)
        self._cookie_set: float | None = None      # None: no cookie received
        self._last_mac1: bytes | None = None       # mac1 of the last handshake we sent

    @property
    def last_mac1(self) -> bytes | None:
        return self._last_mac1

    def has_cookie(self, now: float) -> bool:
        """True while a received cookie is young enough to be used for mac2."""
        return self._cookie_set is not None and now - self._cookie_set <= self.cookie_refresh_time

    def add_macs(self, message: bytearray | bytes, now: float) -> bytes:
        """The message with mac1 (and mac2 when we hold a fresh cookie) filled in.

        A bytearray is also updated in place. mac2 stays zero without a fresh cookie.
        """
        offset = mac1_offset(message)
        if offset is None:
            raise ValueError(f"macs for a message of {len(message)} bytes, "
                             f"expected {INITIATION_SIZE} or {RESPONSE_SIZE}")
        if isinstance(message, bytes):         # no copy to update: one join (a handshake each)
            head = message[:offset]
            keyed = self._mac1_keyed.copy()
            keyed.update(head)
            self._last_mac1 = mac1 = keyed.digest()
            head += mac1
            return head + (mac(self._cookie, head) if self.has_cookie(now) else _NO_MAC)
        out = message if isinstance(message, bytearray) else bytearray(message)
        keyed = self._mac1_keyed.copy()
        keyed.update(bytes(out[:offset]))
        mac1 = keyed.digest()
        out[offset:offset + MAC_SIZE] = mac1
        self._last_mac1 = mac1
        mac2_at = offset + MAC_SIZE
        if self.has_cookie(now):
            out[mac2_at:] = mac(self._cookie, bytes(out[:mac2_at]))
        else:
            out[mac2_at:] = bytes(MAC_SIZE)
        return bytes(out)

    def consume_reply(self, reply: CookieReply, now: float) -> bool:
        """Decrypt and keep the cookie of `reply`; False if it does not answer our last mac1."""
        if self._last_mac1 is None:
            return False
        if self._cookie_key is None:
            self._cookie_key = hash_(LABEL_COOKIE, self._remote)
        try:
            cookie = xaead_open(self._cookie_key, reply.nonce, reply.encrypted_cookie,
                                self._last_mac1)
        except DecryptionError:
            return False
        if len(cookie) != MAC_SIZE:
            return False
        self._cookie = cookie
        self._cookie_set = now
        return True
