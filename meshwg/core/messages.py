"""WireGuard's four message types: strict parsing and building, no I/O.

Every parser checks the exact length (or the minimum, for transport data) and that the
three reserved bytes after the type are zero; anything else raises MalformedPacket.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from meshwg.core.constants import (COOKIE_REPLY_SIZE, INITIATION_SIZE, MESSAGE_COOKIE_REPLY,
                                   MESSAGE_INITIATION, MESSAGE_RESPONSE, MESSAGE_TRANSPORT,
                                   RESPONSE_SIZE, TRANSPORT_HEADER_SIZE, TRANSPORT_MIN_SIZE)
from meshwg.util.errors import MeshwgError


class MalformedPacket(MeshwgError, ValueError):
    """A datagram that is not a well-formed WireGuard message."""


_INITIATION = struct.Struct("<I I 32s 48s 28s 16s 16s")
_RESPONSE = struct.Struct("<I I I 32s 16s 16s 16s")
_COOKIE_REPLY = struct.Struct("<I I 24s 32s")

# The transport data header: type word (4), receiver index, counter; 16 bytes, little-endian.
TRANSPORT_HEADER = struct.Struct("<IIQ")
# The 12-byte ChaCha20-Poly1305 nonce of a transport counter: 4 zero bytes, the counter
# as 64-bit little-endian (whitepaper section 5.4.6).
COUNTER_NONCE = struct.Struct("<4xQ")

# The first four bytes as a little-endian word: type in the low byte, reserved bytes zero.
_WORD_INITIATION = MESSAGE_INITIATION
_WORD_RESPONSE = MESSAGE_RESPONSE
_WORD_COOKIE_REPLY = MESSAGE_COOKIE_REPLY
_WORD_TRANSPORT = MESSAGE_TRANSPORT

# Offsets of mac1 and mac2 in the handshake messages (the MACs cover everything before them).
INITIATION_MAC1_OFFSET = INITIATION_SIZE - 32
RESPONSE_MAC1_OFFSET = RESPONSE_SIZE - 32


@dataclass(slots=True)
class Initiation:
    sender: int
    ephemeral: bytes
    encrypted_static: bytes
    encrypted_timestamp: bytes
    mac1: bytes = bytes(16)
    mac2: bytes = bytes(16)

    def build(self) -> bytes:
        return _INITIATION.pack(_WORD_INITIATION, self.sender, self.ephemeral,
                                self.encrypted_static, self.encrypted_timestamp,
                                self.mac1, self.mac2)


@dataclass(slots=True)
class Response:
    sender: int
    receiver: int
    ephemeral: bytes
    encrypted_nothing: bytes
    mac1: bytes = bytes(16)
    mac2: bytes = bytes(16)

    def build(self) -> bytes:
        return _RESPONSE.pack(_WORD_RESPONSE, self.sender, self.receiver, self.ephemeral,
                              self.encrypted_nothing, self.mac1, self.mac2)


@dataclass(slots=True)
class CookieReply:
    receiver: int
    nonce: bytes
    encrypted_cookie: bytes

    def build(self) -> bytes:
        return _COOKIE_REPLY.pack(_WORD_COOKIE_REPLY, self.receiver, self.nonce,
                                  self.encrypted_cookie)


@dataclass(slots=True)
class Transport:
    receiver: int
    counter: int
    ciphertext: bytes

    def build(self) -> bytes:
        return TRANSPORT_HEADER.pack(_WORD_TRANSPORT, self.receiver, self.counter) + self.ciphertext


def message_type(data: bytes) -> int:
    """The message type of a datagram, or 0 when its first word is not a valid header."""
    if len(data) < 4:
        return 0
    word = int.from_bytes(data[:4], "little")
    return word if 1 <= word <= 4 else 0


def parse_initiation(data: bytes) -> Initiation:
    if len(data) != INITIATION_SIZE:
        raise MalformedPacket(f"initiation of {len(data)} bytes, expected {INITIATION_SIZE}")
    word, *rest = _INITIATION.unpack(data)
    if word != _WORD_INITIATION:
        raise MalformedPacket("bad initiation header")
    return Initiation(*rest)


def parse_response(data: bytes) -> Response:
    if len(data) != RESPONSE_SIZE:
        raise MalformedPacket(f"response of {len(data)} bytes, expected {RESPONSE_SIZE}")
    word, *rest = _RESPONSE.unpack(data)
    if word != _WORD_RESPONSE:
        raise MalformedPacket("bad response header")
    return Response(*rest)


def parse_cookie_reply(data: bytes) -> CookieReply:
    if len(data) != COOKIE_REPLY_SIZE:
        raise MalformedPacket(f"cookie reply of {len(data)} bytes, expected {COOKIE_REPLY_SIZE}")
    word, *rest = _COOKIE_REPLY.unpack(data)
    if word != _WORD_COOKIE_REPLY:
        raise MalformedPacket("bad cookie reply header")
    return CookieReply(*rest)


def parse_transport_header(data: bytes) -> tuple[int, int]:
    """(receiver index, counter) of a transport message; the ciphertext is data[16:]."""
    if len(data) < TRANSPORT_MIN_SIZE:
        raise MalformedPacket(f"transport message of {len(data)} bytes, minimum {TRANSPORT_MIN_SIZE}")
    word, receiver, counter = TRANSPORT_HEADER.unpack_from(data)
    if word != _WORD_TRANSPORT:
        raise MalformedPacket("bad transport header")
    return receiver, counter


def parse_transport(data: bytes) -> Transport:
    receiver, counter = parse_transport_header(data)
    return Transport(receiver, counter, bytes(data[TRANSPORT_HEADER_SIZE:]))


def parse(data: bytes) -> Initiation | Response | CookieReply | Transport:
    kind = message_type(data)
    if kind == MESSAGE_INITIATION:
        return parse_initiation(data)
    if kind == MESSAGE_RESPONSE:
        return parse_response(data)
    if kind == MESSAGE_COOKIE_REPLY:
        return parse_cookie_reply(data)
    if kind == MESSAGE_TRANSPORT:
        return parse_transport(data)
    raise MalformedPacket("unknown message type or nonzero reserved bytes")


def transport_header(receiver: int, counter: int) -> bytes:
    return TRANSPORT_HEADER.pack(_WORD_TRANSPORT, receiver, counter)
