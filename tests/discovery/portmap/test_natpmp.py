"""NAT-PMP codec (RFC 6886), field by field; malformed replies rejected."""

import struct

import pytest

from discovery.portmap import natpmp
from discovery.portmap.errors import MalformedMessage


def test_external_address_request_is_version_and_opcode():
    assert natpmp.encode_external_address_request() == b"\x00\x00"     # section 3.2


def test_map_request_fields():
    data = natpmp.encode_map_request(51820, 40001, 7200)
    # version 0, opcode 1 (UDP), reserved 0, internal port, suggested port, lifetime
    assert data == bytes([0, 1, 0, 0]) + struct.pack("!HHI", 51820, 40001, 7200)
    assert natpmp.encode_map_request(22, udp=False)[1] == natpmp.OP_MAP_TCP


def test_delete_request_has_zero_port_and_lifetime():
    assert natpmp.encode_delete_request(51820) == bytes([0, 1, 0, 0, 0xCA, 0x6C, 0, 0, 0, 0, 0, 0])


@pytest.mark.parametrize("args", [(0,), (70000,), (1, -1), (1, 0, -1), (1, 0, 1 << 32)])
def test_map_request_rejects_out_of_range(args):
    with pytest.raises(ValueError):
        natpmp.encode_map_request(*args)


def test_external_address_response():
    reply = bytes([0, 128, 0, 0]) + struct.pack("!I", 1234) + bytes([198, 18, 0, 2])
    got = natpmp.decode_external_address_response(reply)
    assert got == natpmp.ExternalAddress(epoch=1234, address="198.18.0.2")


def test_map_response():
    reply = bytes([0, 129, 0, 0]) + struct.pack("!IHHI", 99, 51820, 40001, 3600)
    assert natpmp.decode_map_response(reply) == natpmp.Mapping(99, 51820, 40001, 3600)


def test_error_result_is_reported_with_its_code():
    reply = bytes([0, 129, 0, 2]) + struct.pack("!IHHI", 0, 51820, 0, 0)
    with pytest.raises(natpmp.NatPmpError) as info:
        natpmp.decode_map_response(reply)
    assert info.value.code == 2 and "refused" in str(info.value)


GOOD_MAP = bytes([0, 129, 0, 0]) + struct.pack("!IHHI", 1, 51820, 40001, 3600)


@pytest.mark.parametrize("reply", [
    b"", b"\x00", GOOD_MAP[:15], GOOD_MAP + b"\x00",             # sizes
    bytes([1]) + GOOD_MAP[1:],                                   # version
    bytes([0, 130]) + GOOD_MAP[2:],                              # TCP reply to a UDP request
    bytes([0, 1]) + GOOD_MAP[2:],                                # a request, not a reply
    GOOD_MAP[:8] + b"\x00\x00" + GOOD_MAP[10:],                  # internal port 0
    GOOD_MAP[:10] + b"\x00\x00" + GOOD_MAP[12:],                 # external 0, lifetime > 0
])
def test_malformed_map_replies_are_rejected(reply):
    with pytest.raises(MalformedMessage):
        natpmp.decode_map_response(reply)


@pytest.mark.parametrize("reply", [b"\x00\x80\x00\x00" + bytes(7), b"\x00\x81" + bytes(10)])
def test_malformed_address_replies_are_rejected(reply):
    with pytest.raises(MalformedMessage):
        natpmp.decode_external_address_response(reply)
