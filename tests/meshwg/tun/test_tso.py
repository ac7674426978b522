"""meshwg.tun.tso: one TUN read with a virtio_net_hdr -> wire-ready packets, checked
field by field against an independent parse (tests/meshwg/tun/reference.py)."""

from __future__ import annotations

import os
import random
import socket
import struct

import pytest

from meshwg.tun.tso import OffloadError
from meshwg.tun.vnet import (VIRTIO_NET_HDR_F_NEEDS_CSUM, VIRTIO_NET_HDR_GSO_TCPV4,
                             VIRTIO_NET_HDR_GSO_TCPV6, VIRTIO_NET_HDR_GSO_UDP_L4, ZERO_VNET_HDR)
from tests.meshwg.tun.reference import (DST4, SRC4, parse, ref_checksum, ref_l4_ok, split,
                                        tcp_packet, vnet_frame)

FIN, PSH, CWR = 0x01, 0x08, 0x80


def tso_frame(packet: bytes, mss: int, v6: bool, options: bytes = b"") -> bytearray:
    """A TCP super-packet as the kernel hands it over: NEEDS_CSUM, GSO_TCPV4/6."""
    l4 = 40 if v6 else 20
    return vnet_frame(packet, VIRTIO_NET_HDR_F_NEEDS_CSUM,
                      VIRTIO_NET_HDR_GSO_TCPV6 if v6 else VIRTIO_NET_HDR_GSO_TCPV4,
                      l4 + 20 + len(options), mss, l4, 16)


def check_segments(segments: list[bytes], payload: bytes, mss: int, *, seq: int, flags: int,
                   v6: bool, options: bytes, ip_id: int) -> None:
    """What the kernel's TSO makes: segments of mss payload bytes (the last shorter) with
    their own lengths, checksums, sequence numbers and IPv4 IDs; FIN and PSH on the last
    segment only, CWR on the first only, the options on every one."""
    l4 = 40 if v6 else 20
    assert len(segments) == max(1, -(-len(payload) // mss))
    for i, seg in enumerate(segments):
        info = parse(seg)
        assert info["total"] == len(seg)
        assert info["ip_ok"], f"segment {i}: bad IPv4 header checksum"
        assert info["tcp_ok"], f"segment {i}: bad TCP checksum"
        assert info["seq"] == (seq + i * mss) & 0xFFFFFFFF        # wraps around 2^32
        assert info["payload"] == payload[i * mss:(i + 1) * mss]
        last, first = i == len(segments) - 1, i == 0
        expected = flags & ~(FIN | PSH | CWR) | (flags & (FIN | PSH) if last else 0) \
            | (flags & CWR if first else 0)
        assert info["flags"] == expected
        assert seg[l4 + 20:l4 + 20 + len(options)] == options
        if not v6:
            assert info["id"] == (ip_id + i) & 0xFFFF


@pytest.mark.parametrize("v6", [False, True])
def test_tso_split_of_64k_segment_yields_valid_mtu_packets(v6: bool) -> None:
    mtu = 1420
    l4 = 40 if v6 else 20
    options = b"\x01\x01\x08\x0a" + struct.pack(">II", 123456, 654321) + b"\x01\x01\x01\x01" * 3
    mss = mtu - l4 - 20 - len(options)
    payload = os.urandom(65535 - l4 - 20 - len(options))
    big = tcp_packet(payload, seq=0xFFFFF000, flags=0x18 | 0x01, v6=v6, options=options,
                     partial=True)
    segments = split(tso_frame(big, mss, v6, options))
    assert all(len(seg) <= mtu for seg in segments)
    check_segments(segments, payload, mss, seq=0xFFFFF000, flags=0x19, v6=v6, options=options,
                   ip_id=7)


@pytest.mark.parametrize("v6", [False, True])
@pytest.mark.parametrize("mss,options", [(1368, b"\x01\x01\x08\x0a" + bytes(8)), (1380, b""),
                                         (536, b""), (1001, b"")])
def test_split_in_place_gives_valid_segments(checksum_path: str, v6: bool, mss: int,
                                             options: bytes) -> None:
    """Even segment sizes are split in place, odd ones by copying: both as the kernel's TSO."""
    rng = random.Random(mss)
    for flags in (0x10, 0x19, 0x98):
        payload = rng.randbytes(rng.choice([1, mss, mss * 3 + 7, 65000 - 80]))
        seq = rng.getrandbits(32)
        big = tcp_packet(payload, seq=seq, flags=flags, v6=v6, partial=True, options=options,
                         ip_id=0xFFFE)
        check_segments(split(tso_frame(big, mss, v6, options)), payload, mss, seq=seq,
                       flags=flags, v6=v6, options=options, ip_id=0xFFFE)


def test_without_gso_the_checksum_is_completed_or_the_packet_passed_through() -> None:
    pkt = tcp_packet(b"hello", partial=True)
    [out] = split(vnet_frame(pkt, VIRTIO_NET_HDR_F_NEEDS_CSUM, 0, 0, 0, 20, 16))
    assert parse(out)["tcp_ok"] and out == tcp_packet(b"hello")
    plain = tcp_packet(b"x")
    assert split(bytearray(ZERO_VNET_HDR + plain)) == [plain]


def test_split_udp_gso() -> None:
    payload = os.urandom(5000)
    ip = bytearray(struct.pack(">BBHHHBBH", 0x45, 0, 28 + len(payload), 1, 0, 64, 17, 0)
                   + socket.inet_aton(SRC4) + socket.inet_aton(DST4))
    udp = struct.pack(">HHHH", 1, 2, 8 + len(payload), 0)
    pkt = bytes(ip) + udp + payload
    out = split(vnet_frame(pkt, 1, VIRTIO_NET_HDR_GSO_UDP_L4, 28, 1200, 20, 6))
    assert [len(p) - 28 for p in out] == [1200, 1200, 1200, 1200, 200]
    assert b"".join(p[28:] for p in out) == payload
    for p in out:
        assert ref_checksum(p[:20]) == 0
        assert ref_l4_ok(p, 20, 17)
        assert struct.unpack(">H", p[24:26])[0] == len(p) - 20


@pytest.mark.parametrize("frame", [
    bytearray(5),                                                        # shorter than a header
    vnet_frame(tcp_packet(b"x" * 100), 1, VIRTIO_NET_HDR_GSO_TCPV4, 40, 0, 20, 16),   # no size
    vnet_frame(tcp_packet(b"x" * 300), 1, VIRTIO_NET_HDR_GSO_TCPV4, 40, 100, 24, 16),  # csum_start
    vnet_frame(tcp_packet(b"x" * 300), 1, 99, 40, 100, 20, 16),          # unknown GSO type
    vnet_frame(tcp_packet(b"x"), VIRTIO_NET_HDR_F_NEEDS_CSUM, 0, 0, 0, 20, 2000),    # beyond
], ids=["short", "no-size", "csum-start", "gso-type", "csum-offset"])
def test_split_rejects_nonsense(frame: bytearray) -> None:
    with pytest.raises(OffloadError):
        split(frame)
