"""meshwg.tun.gro: consecutive TCP segments of one flow merged into one TUN write with a
GSO virtio_net_hdr, everything else passed through; checked against an independent parse
and by splitting the merged packet again (meshwg.tun.tso)."""

from __future__ import annotations

import os
import struct

import pytest

from meshwg.tun.gro import coalesce_packets
from meshwg.tun.vnet import (VIRTIO_NET_HDR_F_NEEDS_CSUM, VIRTIO_NET_HDR_GSO_TCPV4,
                             VIRTIO_NET_HDR_GSO_TCPV6, VNET_HDR_SIZE)
from tests.meshwg.tun.reference import (decode_write, parse, ref_checksum, ref_pseudo, split,
                                        tcp_packet, vnet_frame)


@pytest.mark.parametrize("v6", [False, True])
def test_coalesce_then_split_round_trips(v6: bool) -> None:
    mss = 1368
    payload = os.urandom(mss * 30 + 77)
    pieces = [payload[i:i + mss] for i in range(0, len(payload), mss)]
    seq = 42
    packets = []
    for i, piece in enumerate(pieces):
        flags = 0x18 if i == len(pieces) - 1 else 0x10
        packets.append(tcp_packet(piece, seq=seq, flags=flags, v6=v6, ip_id=100 + i))
        seq += len(piece)
    writes = coalesce_packets(packets)
    assert len(writes) == 1
    (flags, gso_type, _hdr_len, gso_size, csum_start, csum_offset), big = decode_write(writes[0])
    assert gso_type == (VIRTIO_NET_HDR_GSO_TCPV6 if v6 else VIRTIO_NET_HDR_GSO_TCPV4)
    assert flags == VIRTIO_NET_HDR_F_NEEDS_CSUM
    assert gso_size == mss and csum_offset == 16
    info = parse(big)
    assert info["payload"] == payload and info["total"] == len(big) and info["ip_ok"]
    assert info["flags"] & 0x08                      # PSH of the last segment kept
    # the checksum field holds the pseudo-header sum the kernel completes
    l4 = csum_start
    expected_partial = ~ref_checksum(ref_pseudo(big, 6, len(big) - l4)) & 0xFFFF
    got = struct.unpack(">H", big[l4 + 16:l4 + 18])[0]
    assert got == expected_partial or {got, expected_partial} == {0, 0xFFFF}
    # and the kernel-style split gives back the original packets, byte for byte (IPv4
    # IDs: TSO numbers from the first packet's ID, as ours were)
    assert split(bytearray(writes[0])) == packets


def test_coalesce_keeps_flows_apart_and_passes_other_packets() -> None:
    a1 = tcp_packet(b"a" * 100, seq=1, flags=0x10)
    other = b"\x45" + bytes(19)                      # not TCP: passed through
    b1 = tcp_packet(b"b" * 100, seq=1, flags=0x10, sport=40001)   # another flow
    a2 = tcp_packet(b"a" * 100, seq=101, flags=0x10)
    b2 = tcp_packet(b"b" * 100, seq=101, flags=0x10, sport=40001)
    writes = coalesce_packets([a1, other, b1, a2, b2])
    decoded = [decode_write(w) for w in writes]
    assert len(decoded) == 3
    assert decoded[1] == ((0, 0, 0, 0, 0, 0), other)
    for (vnet, big), letter in ((decoded[0], b"a"), (decoded[2], b"b")):
        assert vnet[1] == VIRTIO_NET_HDR_GSO_TCPV4
        assert parse(big)["payload"] == letter * 200


def test_coalesce_splits_where_ack_or_window_changes() -> None:
    """Segments that differ in anything but seq/PSH are not merged, and a flow's data is
    never reordered: after a change, later segments do not go back to an earlier group."""
    p1 = tcp_packet(b"a" * 100, seq=1, flags=0x10)
    p2 = tcp_packet(b"a" * 100, seq=101, flags=0x10, ack=999)
    p3 = tcp_packet(b"a" * 100, seq=201, flags=0x10)
    p4 = tcp_packet(b"a" * 100, seq=301, flags=0x10, window=7)
    writes = coalesce_packets([p1, p2, p3, p4])
    assert [decode_write(w)[1] for w in writes] == [p1, p2, p3, p4]


def test_coalesce_never_merges_bad_checksum_gaps_or_syn() -> None:
    p1 = tcp_packet(b"x" * 100, seq=1, flags=0x10)
    bad = tcp_packet(b"y" * 100, seq=101, flags=0x10, valid=False)
    p3 = tcp_packet(b"z" * 100, seq=201, flags=0x10)
    writes = coalesce_packets([p1, bad, p3])
    assert [decode_write(w)[1] for w in writes] == [p1, bad, p3]
    gap = coalesce_packets([p1, tcp_packet(b"q" * 100, seq=500, flags=0x10)])
    assert len(gap) == 2
    syn = tcp_packet(b"s" * 100, seq=101, flags=0x12)
    assert len(coalesce_packets([p1, syn])) == 2
    bigger = tcp_packet(b"w" * 200, seq=101, flags=0x10)   # larger than the first: new group
    assert len(coalesce_packets([p1, bigger])) == 2


def test_coalesce_stops_at_push_and_at_short_segment() -> None:
    p = [tcp_packet(b"x" * 100, seq=1 + 100 * i, flags=0x18 if i == 1 else 0x10) for i in range(4)]
    writes = coalesce_packets(p)
    assert [len(parse(decode_write(w)[1])["payload"]) for w in writes] == [200, 200]


def test_coalesce_respects_64k_limit() -> None:
    mss = 1400
    packets = [tcp_packet(b"x" * mss, seq=1 + mss * i, flags=0x10) for i in range(100)]
    writes = coalesce_packets(packets)
    assert all(len(w) - VNET_HDR_SIZE <= 65535 for w in writes)
    payload = b"".join(parse(decode_write(w)[1])["payload"] for w in writes)
    assert payload == b"x" * mss * 100
    assert len(writes) == 3


def test_split_and_coalesce_on_both_paths(checksum_path: str) -> None:
    mss = 1380
    payload = os.urandom(mss * 20 + 5)
    big = tcp_packet(payload, seq=7, flags=0x18, partial=True)
    segs = split(vnet_frame(big, 1, VIRTIO_NET_HDR_GSO_TCPV4, 40, mss, 20, 16))
    assert all(parse(s)["tcp_ok"] and parse(s)["ip_ok"] for s in segs)
    writes = coalesce_packets(segs)
    assert len(writes) == 1
    assert parse(decode_write(writes[0])[1])["payload"] == payload
    corrupted = list(segs)
    corrupted[5] = corrupted[5][:-1] + bytes([corrupted[5][-1] ^ 1])
    assert [decode_write(w)[1] for w in coalesce_packets(corrupted)] == corrupted


def test_coalesce_takes_views_like_bytes() -> None:
    packets = [tcp_packet(bytes([i]) * 1000, seq=1000 + 1000 * i, flags=0x10) for i in range(5)]
    scratch = bytearray(b"".join(packets))
    views, at = [], 0
    for p in packets:
        views.append(memoryview(scratch)[at:at + len(p)])
        at += len(p)
    assert coalesce_packets(views) == coalesce_packets(packets)
