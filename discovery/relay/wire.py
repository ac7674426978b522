"""The relay's datagram format and keys, free of I/O: members reach each other through a
relay (the rendezvous, or a member with a public address) when no direct path works.

Every datagram is one of::

    BIND      magic(4) type(1) member_id(8) timestamp(8)          mac(16)   member -> relay
    BIND_ACK  magic(4) type(1) member_id(8) timestamp(8)          mac(16)   relay -> member
    SEND      magic(4) type(1) sender_id(8) destination_id(8) payload mac(16)   member -> relay
    DELIVER   magic(4) type(1) sender_id(8) destination_id(8) payload mac(16)   relay -> member

`mac` is keyed BLAKE2s-128 (meshwg.core.crypto.mac) over everything before it, keyed with
the member's relay key (relay_key), which both ends derive without an exchange: HKDF
(HMAC-BLAKE2s) over X25519(member private, relay public) = X25519(relay private, member
public), salted with both public keys. A member id is the first 8 bytes of BLAKE2s over a
label and the member's public key. The relay turns a SEND into a DELIVER of exactly the
same size (same ids, same payload, the destination's MAC): it never amplifies. The payload
is the members' own WireGuard datagram, which the relay cannot read.

A BIND's timestamp (nanoseconds since the epoch) must grow strictly per member: a
replayed or older bind is refused (BindClock).
"""

from __future__ import annotations

import hmac
import struct
from dataclasses import dataclass

from meshwg.core import crypto
from meshwg.util.errors import MeshwgError

MAGIC = b"MWR1"
BIND, BIND_ACK, SEND, DELIVER = 1, 2, 3, 4
ID_SIZE = 8
MAC_SIZE = 16
_HEAD = struct.Struct("!4sB8s")                 # magic, type, first id
_BIND_BODY = struct.Struct("!Q")                # timestamp (ns)
BIND_SIZE = _HEAD.size + _BIND_BODY.size + MAC_SIZE          # 37 bytes
SEND_OVERHEAD = _HEAD.size + ID_SIZE + MAC_SIZE               # 37 bytes
MAX_DATAGRAM = 65507                            # the largest UDP/IPv4 payload
MAX_PAYLOAD = MAX_DATAGRAM - SEND_OVERHEAD
_ID_LABEL = b"meshwg relay id v1"
_KEY_LABEL = b"meshwg relay key v1"
BIND_WINDOW_NS = 120 * 10**9                    # a first bind may be this old (or early)


class Malformed(MeshwgError, ValueError):
    """A datagram that is no relay datagram (size, magic, type)."""


class BadMac(MeshwgError, ValueError):
    """A datagram whose MAC does not verify under the key it claims."""


def member_id(public_key: bytes) -> bytes:
    """The 8-byte id naming a member in relay datagrams."""
    return crypto.hash_(_ID_LABEL, public_key)[:ID_SIZE]


def relay_key(own_private: bytes, own_public: bytes, other_public: bytes, member_side: bool) -> bytes:
    """The 32-byte relay key of one (member, relay) pair: on the member
    relay_key(member_private, member_public, relay_public, True), on the relay
    relay_key(relay_private, relay_public, member_public, False); both give the same key.
    Raises crypto.WeakKeyError for a low-order public key."""
    member_public, relay_public = (own_public, other_public) if member_side else (other_public, own_public)
    shared = crypto.dh(own_private, other_public)
    return crypto.kdf(crypto.hash_(_KEY_LABEL, member_public, relay_public), shared, 1)[0]


@dataclass(frozen=True)
class Datagram:
    """A parsed relay datagram (MAC not yet checked: see verify)."""

    kind: int
    first_id: bytes          # BIND*: the member; SEND/DELIVER: the sender
    timestamp: int = 0       # BIND*: nanoseconds
    second_id: bytes = b""   # SEND/DELIVER: the destination
    payload: bytes = b""
    signed: bytes = b""      # the bytes the MAC covers
    tag: bytes = b""


def _seal(key: bytes, body: bytes) -> bytes:
    return body + crypto.mac(key, body)


def encode_bind(kind: int, key: bytes, member: bytes, timestamp_ns: int) -> bytes:
    """A BIND (member -> relay) or BIND_ACK (relay -> member) sealed with `key`."""
    return _seal(key, _HEAD.pack(MAGIC, kind, member) + _BIND_BODY.pack(timestamp_ns))


def encode_send(kind: int, key: bytes, sender: bytes, destination: bytes, payload: bytes) -> bytes:
    """A SEND (member -> relay) or DELIVER (relay -> member) sealed with `key`."""
    if len(payload) > MAX_PAYLOAD:
        raise Malformed(f"relay payload of {len(payload)} bytes exceeds {MAX_PAYLOAD}")
    return _seal(key, _HEAD.pack(MAGIC, kind, sender) + destination + payload)


def parse(data: bytes) -> Datagram:
    """Split a received datagram; raises Malformed (never anything else) when it is not
    one. Bounded: sizes are checked before anything is read."""
    if len(data) < BIND_SIZE or len(data) > MAX_DATAGRAM:
        raise Malformed(f"relay datagram of {len(data)} bytes")
    magic, kind, first = _HEAD.unpack_from(data)
    if magic != MAGIC:
        raise Malformed("relay datagram with the wrong magic")
    signed, tag = bytes(data[:-MAC_SIZE]), bytes(data[-MAC_SIZE:])
    if kind in (BIND, BIND_ACK):
        if len(data) != BIND_SIZE:
            raise Malformed(f"relay bind of {len(data)} bytes (want {BIND_SIZE})")
        (timestamp,) = _BIND_BODY.unpack_from(data, _HEAD.size)
        return Datagram(kind, first, timestamp=timestamp, signed=signed, tag=tag)
    if kind in (SEND, DELIVER):
        second = bytes(data[_HEAD.size:_HEAD.size + ID_SIZE])
        payload = bytes(data[_HEAD.size + ID_SIZE:-MAC_SIZE])
        return Datagram(kind, first, second_id=second, payload=payload, signed=signed, tag=tag)
    raise Malformed(f"relay datagram of unknown type {kind}")


def verify(datagram: Datagram, key: bytes) -> None:
    """Raises BadMac unless the datagram's MAC verifies under `key` (constant time)."""
    if not hmac.compare_digest(crypto.mac(key, datagram.signed), datagram.tag):
        raise BadMac("relay datagram with a bad MAC")


def forward(datagram: Datagram, destination_key: bytes) -> bytes:
    """The DELIVER the relay sends for a verified SEND: same ids, same payload, the
    destination's MAC; exactly as long as the SEND."""
    return encode_send(DELIVER, destination_key, datagram.first_id, datagram.second_id,
                       datagram.payload)


class BindClock:
    """Per-member bind timestamps: accept(member, ts, now_ns) is True when `ts` is later
    than every bind accepted before from that member and, for the first one, within
    BIND_WINDOW_NS of `now_ns` (a bind recorded before a relay restart cannot be
    replayed long after)."""

    def __init__(self) -> None:
        self.last: dict[bytes, int] = {}

    def accept(self, member: bytes, timestamp_ns: int, now_ns: int) -> bool:
        last = self.last.get(member)
        if last is None:
            if abs(timestamp_ns - now_ns) > BIND_WINDOW_NS:
                return False
        elif timestamp_ns <= last:
            return False
        self.last[member] = timestamp_ns
        return True

    def forget(self, member: bytes) -> None:
        self.last.pop(member, None)
