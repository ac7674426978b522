"""PCP (RFC 6887) MAP messages: I/O-free encoder and strict decoder.

Only what a client mapping one UDP port needs: the common request and response headers
(section 7.1, 7.2) and the MAP opcode (section 11.1), IPv4 addresses carried as
IPv4-mapped IPv6 (section 5). Options in replies are length-checked and skipped (section
7.3). Decoders raise :class:`MalformedMessage`, or :class:`PcpError` for a well-formed
reply with a non-zero result code (section 7.4).
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass

from discovery.portmap.errors import MalformedMessage, PortMapError

PORT = 5351                      # section 19.1: the server listens here
VERSION = 2                      # section 9
OP_MAP = 1                       # section 19.2
RESPONSE_BIT = 0x80              # the R bit of the opcode byte (section 7.2)
PROTO_UDP = 17
PROTO_TCP = 6
MAX_MESSAGE = 1100               # section 7: no PCP message is longer
NONCE_SIZE = 12                  # section 11.1
INITIAL_RETRANSMIT = 0.25        # seconds; section 8.1.1's IRT is 3 s, we bound it ourselves

# Section 7.4 result codes.
RESULTS = {0: "SUCCESS", 1: "UNSUPP_VERSION", 2: "NOT_AUTHORIZED", 3: "MALFORMED_REQUEST",
           4: "UNSUPP_OPCODE", 5: "UNSUPP_OPTION", 6: "MALFORMED_OPTION",
           7: "NETWORK_FAILURE", 8: "NO_RESOURCES", 9: "UNSUPP_PROTOCOL",
           10: "USER_EX_QUOTA", 11: "CANNOT_PROVIDE_EXTERNAL", 12: "ADDRESS_MISMATCH",
           13: "EXCESSIVE_REMOTE_PEERS"}
UNSUPP_VERSION = 1

_REQUEST_HEADER = struct.Struct("!BBHI16s")          # 24 bytes, section 7.1
_RESPONSE_HEADER = struct.Struct("!BBBBII12s")       # 24 bytes, section 7.2
_MAP = struct.Struct("!12sB3sHH16s")                 # 36 bytes, section 11.1


class PcpError(PortMapError):
    """The server answered with a non-zero result code (section 7.4)."""

    def __init__(self, code: int, lifetime: int = 0, version: int = VERSION):
        self.code, self.lifetime, self.version = code, lifetime, version
        super().__init__(f"PCP result {code} ({RESULTS.get(code, 'unknown')})")


@dataclass(frozen=True)
class MapResponse:
    """A successful MAP reply: the assigned external (address, port), lifetime in seconds
    and the server's epoch (seconds, section 8.5)."""
    nonce: bytes
    protocol: int
    internal_port: int
    external_port: int
    external_address: str
    lifetime: int
    epoch: int


def _ip16(address: str) -> bytes:
    """An address as PCP's 16 bytes: IPv6 as is, IPv4 as ::ffff:a.b.c.d (section 5)."""
    ip = ipaddress.ip_address(address)
    if ip.version == 4:
        return ipaddress.IPv6Address(f"::ffff:{ip}").packed
    return ip.packed


def _ip_text(raw: bytes) -> str:
    ip = ipaddress.IPv6Address(raw)
    return str(ip.ipv4_mapped) if ip.ipv4_mapped is not None else str(ip)


def encode_map_request(nonce: bytes, client_address: str, internal_port: int,
                       lifetime: int, external_port: int = 0,
                       external_address: str = "0.0.0.0", protocol: int = PROTO_UDP) -> bytes:
    """A MAP request (sections 7.1 + 11.1), 60 bytes. ``client_address`` is this host's
    source address towards the server; lifetime 0 deletes the mapping with that nonce
    (section 15). Suggested external port/address 0 leave the choice to the server."""
    if len(nonce) != NONCE_SIZE:
        raise ValueError(f"PCP nonce must be {NONCE_SIZE} bytes, got {len(nonce)}")
    if not 1 <= internal_port <= 0xFFFF or not 0 <= external_port <= 0xFFFF:
        raise ValueError(f"PCP port out of range: {internal_port} -> {external_port}")
    if not 0 <= lifetime <= 0xFFFFFFFF:
        raise ValueError(f"PCP lifetime {lifetime} out of range")
    header = _REQUEST_HEADER.pack(VERSION, OP_MAP, 0, lifetime, _ip16(client_address))
    body = _MAP.pack(nonce, protocol, bytes(3), internal_port, external_port,
                     _ip16(external_address))
    return header + body


def decode_map_response(data: bytes, nonce: bytes | None = None) -> MapResponse:
    """Parse a MAP reply. Checks: 24..1100 bytes and a multiple of 4 (section 7), version,
    the R bit and opcode, the result code, the nonce when given (section 11.3), the
    options' lengths (section 7.3)."""
    if 4 <= len(data) < _RESPONSE_HEADER.size and data[0] == 0 \
            and int.from_bytes(data[2:4], "big") == UNSUPP_VERSION:
        # Section 9 / appendix A: a NAT-PMP-only server answers in NAT-PMP's short form.
        raise PcpError(UNSUPP_VERSION, 0, 0)
    if len(data) < _RESPONSE_HEADER.size:
        raise MalformedMessage(f"PCP reply of {len(data)} bytes is too short")
    if len(data) > MAX_MESSAGE or len(data) % 4:
        raise MalformedMessage(f"PCP reply of {len(data)} bytes (max {MAX_MESSAGE}, "
                               "multiple of 4)")
    version, op, _, result, lifetime, epoch, _ = _RESPONSE_HEADER.unpack_from(data)
    if result == UNSUPP_VERSION and version != VERSION:
        # Section 9: a server of another version (NAT-PMP answers version 0) says so.
        raise PcpError(result, lifetime, version)
    if version != VERSION:
        raise MalformedMessage(f"PCP reply version {version}, expected {VERSION}")
    if op != OP_MAP | RESPONSE_BIT:
        raise MalformedMessage(f"PCP reply opcode {op:#x}, expected {OP_MAP | RESPONSE_BIT:#x}")
    if result != 0:
        raise PcpError(result, lifetime)
    end = _RESPONSE_HEADER.size + _MAP.size
    if len(data) < end:
        raise MalformedMessage(f"PCP MAP reply of {len(data)} bytes, expected >= {end}")
    got_nonce, protocol, _, internal, external, address = _MAP.unpack_from(
        data, _RESPONSE_HEADER.size)
    if nonce is not None and got_nonce != nonce:
        raise MalformedMessage("PCP MAP reply carries another request's nonce")
    _check_options(data, end)
    if internal == 0 or (lifetime and external == 0):
        raise MalformedMessage(f"PCP MAP reply maps port {internal} to {external}")
    return MapResponse(got_nonce, protocol, internal, external, _ip_text(address),
                       lifetime, epoch)


def _check_options(data: bytes, offset: int) -> None:
    """Walk the options after the opcode body: 4-byte header (code, reserved, length),
    data padded to a multiple of 4 (section 7.3); each must fit in the message."""
    while offset < len(data):
        if len(data) - offset < 4:
            raise MalformedMessage("PCP option header truncated")
        length = int.from_bytes(data[offset + 2:offset + 4], "big")
        padded = (length + 3) & ~3
        if offset + 4 + padded > len(data):
            raise MalformedMessage(f"PCP option of {length} bytes overruns the message")
        offset += 4 + padded
