"""meshwg.uapi.codec.parse_get: the get reply read back into a DeviceStatus (what `meshwg
show` and `meshwg status` do with a running interface), the inverse of format_get."""

from __future__ import annotations

import ipaddress

import pytest

from meshwg.device.api import DeviceStatus, PeerStatus
from meshwg.uapi.codec import UapiError, format_get, parse_get


def _lines(status: DeviceStatus) -> list[str]:
    lines = [line for line in format_get(status).split("\n") if line]
    assert lines[-1] == "errno=0"
    return lines[:-1]


def test_parse_get_is_the_inverse_of_format_get() -> None:
    status = DeviceStatus(private_key=bytes(range(1, 33)), listen_port=51820, fwmark=7, peers=[
        PeerStatus(public_key=bytes([9]) * 32, preshared_key=bytes([5]) * 32,
                   endpoint=("2001:db8::1", 4500), last_handshake_sec=1_700_000_000,
                   last_handshake_nsec=12, tx_bytes=1 << 40, rx_bytes=3, persistent_keepalive=25,
                   allowed_ips=[ipaddress.ip_network("10.0.0.2/32"), ipaddress.ip_network("fd00::/64")]),
        PeerStatus(public_key=bytes([8]) * 32, preshared_key=None, endpoint=None,
                   last_handshake_sec=0, last_handshake_nsec=0, tx_bytes=0, rx_bytes=0,
                   persistent_keepalive=0, allowed_ips=[]),
    ])
    assert parse_get(_lines(status)) == status


def test_parse_get_skips_unknown_keys_and_refuses_malformed_values() -> None:
    peer = "public_key=" + "ab" * 32
    assert parse_get(["listen_port=1", "newer_key=x", peer, "protocol_version=1"]).peers[0].public_key == bytes([0xAB]) * 32
    for bad in (["listen_port=-1"], [peer, "endpoint=nowhere"], [peer, "allowed_ip=10.0.0.0/99"],
                ["public_key=zz"]):
        with pytest.raises(UapiError):
            parse_get(bad)
