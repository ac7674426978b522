"""Relay datagrams as the relay and members read them (discovery.relay.wire: parse, then
verify under the key, then forward). Refusals: Malformed, BadMac."""

from __future__ import annotations

from discovery.relay import wire
from fuzz.targets._keys import private

ALLOWED = (wire.Malformed, wire.BadMac)
KEY, OTHER_KEY = private("relay-key-1"), private("relay-key-2")
MEMBER, PEER = b"\x01" * wire.ID_SIZE, b"\x02" * wire.ID_SIZE
TOKENS = (wire.MAGIC, bytes([wire.BIND]), bytes([wire.SEND]), bytes([wire.DELIVER]))


def one_input(data: bytes) -> None:
    datagram = wire.parse(data)
    wire.verify(datagram, KEY)
    if datagram.kind in (wire.SEND, wire.DELIVER):
        wire.forward(datagram, OTHER_KEY)


def seeds() -> dict[str, bytes]:
    return {
        "bind": wire.encode_bind(wire.BIND, KEY, MEMBER, 1_700_000_000 * 10**9),
        "bind-ack": wire.encode_bind(wire.BIND_ACK, KEY, MEMBER, 1_700_000_000 * 10**9),
        "send": wire.encode_send(wire.SEND, KEY, MEMBER, PEER, b"\x04\x00\x00\x00" + bytes(40)),
        "deliver": wire.encode_send(wire.DELIVER, KEY, PEER, MEMBER, b"hello"),
    }
