"""The observation probe: a padded request, answered with the source address it came from.

Request: MAGIC (4) | version (1) | TYPE_REQUEST (1) | transaction id (12) | zero padding,
REQUEST_SIZE bytes in all (at least MIN_REQUEST, at most MAX_REQUEST are accepted).
Answer: MAGIC | version | TYPE_ANSWER | transaction id | family (4 or 6) | port (2, big
endian) | address (4 or 16): 37 bytes at most, never more than the request it answers, so
the responder cannot amplify traffic towards a forged source (the reason STUN, RFC 8489
section 16, and Tailscale's netcheck pad their probes). I/O-free.
"""

from __future__ import annotations

import ipaddress
import os
import struct

MAGIC = b"MWNC"
VERSION = 1
TYPE_REQUEST = 1
TYPE_ANSWER = 2
TXID_SIZE = 12
REQUEST_SIZE = 64
MIN_REQUEST = 64
MAX_REQUEST = 1280
_HEAD = struct.Struct("!4sBB12s")
_TAIL = struct.Struct("!BH")

Endpoint = tuple[str, int]


def new_txid() -> bytes:
    return os.urandom(TXID_SIZE)


def encode_request(txid: bytes, size: int = REQUEST_SIZE) -> bytes:
    """A request of ``size`` bytes (MIN_REQUEST..MAX_REQUEST) carrying ``txid``."""
    if not MIN_REQUEST <= size <= MAX_REQUEST or len(txid) != TXID_SIZE:
        raise ValueError(f"request size {size} or txid length {len(txid)} out of range")
    head = _HEAD.pack(MAGIC, VERSION, TYPE_REQUEST, txid)
    return head + bytes(size - len(head))


def parse_request(data: bytes) -> bytes | None:
    """The txid of a well-formed request, or None (wrong size, magic, version or type)."""
    if not MIN_REQUEST <= len(data) <= MAX_REQUEST:
        return None
    magic, version, kind, txid = _HEAD.unpack_from(data)
    if magic != MAGIC or version != VERSION or kind != TYPE_REQUEST:
        return None
    return txid


def encode_answer(txid: bytes, observed: Endpoint) -> bytes:
    """The answer telling the sender it was seen as ``observed`` (ip, port). An IPv4
    address seen through a dual-stack socket (::ffff:a.b.c.d) is answered as IPv4."""
    ip = ipaddress.ip_address(observed[0].split("%")[0])
    if ip.version == 6 and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return (_HEAD.pack(MAGIC, VERSION, TYPE_ANSWER, txid) + _TAIL.pack(ip.version, observed[1])
            + ip.packed)


def parse_answer(data: bytes) -> tuple[bytes, Endpoint] | None:
    """(txid, observed endpoint) of a well-formed answer, or None."""
    if len(data) < _HEAD.size + _TAIL.size:
        return None
    magic, version, kind, txid = _HEAD.unpack_from(data)
    if magic != MAGIC or version != VERSION or kind != TYPE_ANSWER:
        return None
    family, port = _TAIL.unpack_from(data, _HEAD.size)
    raw = data[_HEAD.size + _TAIL.size:]
    if (family, len(raw)) not in ((4, 4), (6, 16)):
        return None
    return txid, (str(ipaddress.ip_address(raw)), port)
