"""Relay datagrams over a byte stream (the relay over TLS on TCP, discovery.relay.tls):
each frame is a 2-byte big-endian length and one relay datagram (discovery.relay.wire)
of that length, so a member whose network blocks UDP speaks the same BIND / SEND /
DELIVER messages, MACs and rules as over UDP.

A length outside [wire.BIND_SIZE, wire.MAX_DATAGRAM] is no frame: the stream cannot be
resynchronised, so the reader reports it (FrameError) and the connection ends.
"""

from __future__ import annotations

import struct

from meshwg.util.errors import MeshwgError
from meshwg.util.service import StreamReader

from discovery.relay import wire

_LENGTH = struct.Struct("!H")
MIN_FRAME = wire.BIND_SIZE
MAX_FRAME = wire.MAX_DATAGRAM


class FrameError(MeshwgError, ValueError):
    """A frame length outside the bounds: the stream is not a relay stream."""


def encode_frame(datagram: bytes) -> bytes:
    """One frame carrying `datagram` (a relay datagram, MIN_FRAME..MAX_FRAME bytes)."""
    if not MIN_FRAME <= len(datagram) <= MAX_FRAME:
        raise FrameError(f"relay frame of {len(datagram)} bytes (want {MIN_FRAME}..{MAX_FRAME})")
    return _LENGTH.pack(len(datagram)) + datagram


def read_frame(reader: StreamReader) -> bytes | None:
    """The next frame's datagram; None when the stream ends (or the reader's time is up)
    first; FrameError for an out-of-bounds length, checked before the body is read."""
    head = reader.read_exact(_LENGTH.size)
    if head is None:
        return None
    (length,) = _LENGTH.unpack(head)
    if not MIN_FRAME <= length <= MAX_FRAME:
        raise FrameError(f"relay frame length {length} (want {MIN_FRAME}..{MAX_FRAME})")
    return reader.read_exact(length)
