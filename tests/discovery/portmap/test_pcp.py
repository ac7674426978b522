"""PCP MAP codec (RFC 6887), field by field; malformed replies rejected."""

import ipaddress
import struct

import pytest

from discovery.portmap import pcp
from discovery.portmap.errors import MalformedMessage

NONCE = bytes(range(1, 13))


def test_map_request_fields():
    data = pcp.encode_map_request(NONCE, "192.168.1.10", 51820, 7200, 40001)
    assert len(data) == 60                                       # 24 header + 36 MAP
    assert data[0] == 2 and data[1] == 1 and data[2:4] == b"\x00\x00"   # 7.1: version, R=0|MAP
    assert struct.unpack("!I", data[4:8])[0] == 7200
    assert data[8:24] == ipaddress.IPv6Address("::ffff:192.168.1.10").packed   # section 5
    assert data[24:36] == NONCE                                  # 11.1
    assert data[36] == 17 and data[37:40] == bytes(3)
    assert struct.unpack("!HH", data[40:44]) == (51820, 40001)
    assert data[44:60] == ipaddress.IPv6Address("::ffff:0.0.0.0").packed


def test_ipv6_client_address_is_carried_as_is():
    data = pcp.encode_map_request(NONCE, "2001:db8::5", 51820, 0)
    assert data[8:24] == ipaddress.IPv6Address("2001:db8::5").packed


@pytest.mark.parametrize("kwargs", [dict(nonce=b"short"), dict(internal_port=0),
                                    dict(external_port=70000), dict(lifetime=-1)])
def test_map_request_rejects_bad_arguments(kwargs):
    args = dict(nonce=NONCE, client_address="10.0.0.1", internal_port=1, lifetime=1)
    args.update(kwargs)
    with pytest.raises(ValueError):
        pcp.encode_map_request(**args)


def response(result=0, lifetime=3600, nonce=NONCE, external=40001, internal=51820,
             address="198.18.0.2", version=2, opcode=0x81, options=b""):
    header = struct.pack("!BBBBII12s", version, opcode, 0, result, lifetime, 77, bytes(12))
    body = struct.pack("!12sB3sHH16s", nonce, 17, bytes(3), internal, external,
                       ipaddress.IPv6Address(f"::ffff:{address}").packed)
    return header + body + options


def test_map_response():
    got = pcp.decode_map_response(response(), NONCE)
    assert got == pcp.MapResponse(NONCE, 17, 51820, 40001, "198.18.0.2", 3600, 77)


def test_options_are_skipped_when_well_formed():
    option = bytes([0x80, 0, 0, 5]) + b"abcde" + bytes(3)        # length 5, padded to 8
    assert pcp.decode_map_response(response(options=option)).external_port == 40001


def test_error_result_reports_code():
    with pytest.raises(pcp.PcpError) as info:
        pcp.decode_map_response(response(result=2, lifetime=30), NONCE)
    assert info.value.code == 2 and info.value.lifetime == 30
    assert "NOT_AUTHORIZED" in str(info.value)


def test_natpmp_server_answering_unsupported_version():
    # Section 9: a NAT-PMP-only server answers a PCP request with version 0, result 1.
    reply = bytes([0, 0x81, 0, 1]) + bytes(4)
    with pytest.raises(pcp.PcpError) as info:
        pcp.decode_map_response(reply + bytes(4))
    assert info.value.code == pcp.UNSUPP_VERSION and info.value.version == 0


@pytest.mark.parametrize("reply", [
    b"", response()[:23], response()[:59], response() + b"\x00",          # sizes
    response() + bytes(1044),                                            # > 1100 bytes
    response(version=3), response(opcode=0x01), response(opcode=0x82),  # version, R bit, op
    response(nonce=bytes(12)),                                           # another nonce
    response(internal=0), response(external=0),                          # ports
    response(options=bytes([1, 0, 0, 8]) + bytes(4)),                   # option overruns
])
def test_malformed_replies_are_rejected(reply):
    with pytest.raises(MalformedMessage):
        pcp.decode_map_response(reply, NONCE)


def test_deletion_reply_may_have_port_zero():
    assert pcp.decode_map_response(response(lifetime=0, external=0), NONCE).lifetime == 0
