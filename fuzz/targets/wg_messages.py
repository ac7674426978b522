"""WireGuard message framing (meshwg.core.messages.parse): any datagram is one of the four
messages or MalformedPacket."""

from __future__ import annotations

from meshwg.core import messages
from meshwg.core.messages import MalformedPacket

ALLOWED = (MalformedPacket,)
TOKENS = (b"\x01\x00\x00\x00", b"\x02\x00\x00\x00", b"\x03\x00\x00\x00", b"\x04\x00\x00\x00")


def one_input(data: bytes) -> None:
    message = messages.parse(data)
    if isinstance(message, messages.Transport):
        messages.parse_transport_header(data)


def seeds() -> dict[str, bytes]:
    from fuzz.targets import receive
    return receive.handshake_seeds()
