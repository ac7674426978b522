"""NAT-PMP (RFC 6886) messages: I/O-free encoders and strict decoders.

Requests go to the gateway's UDP port 5351 (section 3.1); the client retransmits after
250 ms, doubling each time. All integers are big-endian. Decoders check size, version,
opcode and result code and raise :class:`MalformedMessage` (or :class:`NatPmpError` for a
well-formed non-zero result) for anything else.
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass

from discovery.portmap.errors import MalformedMessage, PortMapError

PORT = 5351                      # section 3.1: the gateway listens here
VERSION = 0                      # section 3.2
OP_EXTERNAL_ADDRESS = 0          # section 3.2
OP_MAP_UDP = 1                   # section 3.3
OP_MAP_TCP = 2
RESPONSE_BIT = 128               # section 3.2: response opcode = request opcode + 128
INITIAL_RETRANSMIT = 0.25        # seconds, section 3.1

# Section 3.5 result codes.
RESULTS = {0: "success", 1: "unsupported version", 2: "not authorized/refused",
           3: "network failure", 4: "out of resources", 5: "unsupported opcode"}

_ADDRESS_RESPONSE = struct.Struct("!BBHI4s")       # 12 bytes, section 3.2
_MAP_REQUEST = struct.Struct("!BBHHHI")            # 12 bytes, section 3.3
_MAP_RESPONSE = struct.Struct("!BBHIHHI")          # 16 bytes, section 3.3


class NatPmpError(PortMapError):
    """The gateway answered with a non-zero result code (section 3.5)."""

    def __init__(self, code: int):
        self.code = code
        super().__init__(f"NAT-PMP result {code} ({RESULTS.get(code, 'unknown')})")


@dataclass(frozen=True)
class ExternalAddress:
    """Section 3.2 response: seconds since the gateway's port-mapping table was
    (re)initialised, and its external IPv4 address."""
    epoch: int
    address: str


@dataclass(frozen=True)
class Mapping:
    """Section 3.3 response: the mapped external port and its lifetime in seconds."""
    epoch: int
    internal_port: int
    external_port: int
    lifetime: int


def _check_port(port: int, what: str, allow_zero: bool) -> None:
    if not (0 if allow_zero else 1) <= port <= 0xFFFF:
        raise ValueError(f"NAT-PMP {what} {port} out of range")


def encode_external_address_request() -> bytes:
    """Section 3.2: version 0, opcode 0."""
    return bytes((VERSION, OP_EXTERNAL_ADDRESS))


def encode_map_request(internal_port: int, external_port: int = 0, lifetime: int = 7200,
                       udp: bool = True) -> bytes:
    """Section 3.3: ask for (udp or tcp) internal_port, suggesting external_port (0: any),
    for lifetime seconds. Lifetime 0 with external_port 0 deletes the mapping (3.4)."""
    _check_port(internal_port, "internal port", allow_zero=False)
    _check_port(external_port, "external port", allow_zero=True)
    if not 0 <= lifetime <= 0xFFFFFFFF:
        raise ValueError(f"NAT-PMP lifetime {lifetime} out of range")
    return _MAP_REQUEST.pack(VERSION, OP_MAP_UDP if udp else OP_MAP_TCP, 0, internal_port,
                             external_port, lifetime)


def encode_delete_request(internal_port: int, udp: bool = True) -> bytes:
    """Section 3.4: a mapping request with lifetime 0 and external port 0."""
    return encode_map_request(internal_port, 0, 0, udp)


def _header(data: bytes, size: int, opcode: int) -> None:
    """Check length, version and opcode; raise NatPmpError for a non-zero result."""
    if len(data) < 4:
        raise MalformedMessage(f"NAT-PMP reply of {len(data)} bytes is too short")
    version, op, result = data[0], data[1], int.from_bytes(data[2:4], "big")
    if version != VERSION:
        raise MalformedMessage(f"NAT-PMP reply version {version}, expected {VERSION}")
    if op != opcode + RESPONSE_BIT:
        raise MalformedMessage(f"NAT-PMP reply opcode {op}, expected {opcode + RESPONSE_BIT}")
    if result != 0:
        # Section 3.5: error replies may be shorter (only the header is meaningful).
        raise NatPmpError(result)
    if len(data) != size:
        raise MalformedMessage(f"NAT-PMP reply of {len(data)} bytes, expected {size}")


def decode_external_address_response(data: bytes) -> ExternalAddress:
    """Parse a section 3.2 reply (exactly 12 bytes)."""
    _header(data, _ADDRESS_RESPONSE.size, OP_EXTERNAL_ADDRESS)
    _, _, _, epoch, raw = _ADDRESS_RESPONSE.unpack(data)
    return ExternalAddress(epoch, str(ipaddress.IPv4Address(raw)))


def decode_map_response(data: bytes, udp: bool = True) -> Mapping:
    """Parse a section 3.3 reply (exactly 16 bytes) to a UDP (or TCP) mapping request."""
    _header(data, _MAP_RESPONSE.size, OP_MAP_UDP if udp else OP_MAP_TCP)
    _, _, _, epoch, internal, external, lifetime = _MAP_RESPONSE.unpack(data)
    if internal == 0:
        raise MalformedMessage("NAT-PMP reply names internal port 0")
    if lifetime and external == 0:
        raise MalformedMessage("NAT-PMP reply maps to external port 0")
    return Mapping(epoch, internal, external, lifetime)
