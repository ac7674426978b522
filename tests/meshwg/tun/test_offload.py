"""meshwg.offload: TSO split, GRO coalesce, checksums, UDP GSO/GRO helpers (pure functions).

Checksums are checked against an independent reference: a plain RFC 1071 loop over
16-bit words with end-around carry, written here and sharing no code with the module."""

from __future__ import annotations

import os
import random
import socket
import struct

import pytest

from meshwg.tun import offload
from meshwg.tun.offload import VnetHdr

SRC4, DST4 = "10.99.0.1", "10.99.0.2"
SRC6, DST6 = "fd00:99::1", "fd00:99::2"


# ------------------------------------------------------------------ reference code
def ref_checksum(data: bytes) -> int:
    """RFC 1071, the slow obvious way."""
    if len(data) % 2:
        data += b"\x00"
    total = 0
    for i in range(0, len(data), 2):
        total += (data[i] << 8) | data[i + 1]
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def ref_pseudo(packet: bytes, proto: int, l4_len: int) -> bytes:
    if packet[0] >> 4 == 4:
        return packet[12:20] + bytes([0, proto]) + struct.pack(">H", l4_len)
    return packet[8:40] + struct.pack(">I", l4_len) + bytes([0, 0, 0, proto])


def ref_l4_ok(packet: bytes, l4: int, proto: int) -> bool:
    """Does the L4 checksum verify (the sum over pseudo-header and segment is 0xFFFF)?"""
    seg = packet[l4:]
    return ref_checksum(ref_pseudo(packet, proto, len(seg)) + seg) == 0


def parse(packet: bytes) -> dict:
    """Independent parse of an IPv4/IPv6 + TCP packet."""
    if packet[0] >> 4 == 4:
        ihl = (packet[0] & 15) * 4
        info = {"v": 4, "l4": ihl, "total": struct.unpack(">H", packet[2:4])[0],
                "id": struct.unpack(">H", packet[4:6])[0],
                "ip_ok": ref_checksum(packet[:ihl]) == 0}
    else:
        info = {"v": 6, "l4": 40, "total": struct.unpack(">H", packet[4:6])[0] + 40, "ip_ok": True}
    l4 = info["l4"]
    thl = (packet[l4 + 12] >> 4) * 4
    info.update(seq=struct.unpack(">I", packet[l4 + 4:l4 + 8])[0], flags=packet[l4 + 13],
                payload=packet[l4 + thl:], thl=thl,
                tcp_ok=ref_l4_ok(packet, l4, 6))
    return info


# ------------------------------------------------------------------ builders
def tcp_packet(payload: bytes, seq: int = 1000, flags: int = 0x18, v6: bool = False,
               ip_id: int = 7, ack: int = 555, window: int = 501, options: bytes = b"",
               valid: bool = True, partial: bool = False, sport: int = 40000) -> bytes:
    """An IP+TCP packet. `partial`: the TCP checksum field holds the pseudo-header sum
    only (as the kernel hands over with NEEDS_CSUM)."""
    thl = 20 + len(options)
    tcp = bytearray(struct.pack(">HHIIBBHHH", sport, 5201, seq, ack, (thl // 4) << 4, flags,
                                window, 0, 0) + options)
    if v6:
        ip = bytearray(struct.pack(">IHBB", 6 << 28, thl + len(payload), 6, 64)
                       + socket.inet_pton(socket.AF_INET6, SRC6)
                       + socket.inet_pton(socket.AF_INET6, DST6))
    else:
        ip = bytearray(struct.pack(">BBHHHBBH", 0x45, 0, 20 + thl + len(payload), ip_id, 0x4000,
                                   64, 6, 0) + socket.inet_aton(SRC4) + socket.inet_aton(DST4))
        struct.pack_into(">H", ip, 10, ref_checksum(bytes(ip)))
    pseudo = ref_pseudo(bytes(ip), 6, thl + len(payload))
    if partial:
        struct.pack_into(">H", tcp, 16, ~ref_checksum(pseudo) & 0xFFFF)
    else:
        value = ref_checksum(pseudo + bytes(tcp) + payload)
        struct.pack_into(">H", tcp, 16, value if valid else value ^ 0x1234)
    return bytes(ip) + bytes(tcp) + payload


# ------------------------------------------------------------------ checksums
@pytest.mark.parametrize("n", [1, 2, 3, 20, 1379, 1380, 65535])
def test_internet_checksum_matches_reference(n: int) -> None:
    rng = random.Random(n)
    data = bytes(rng.getrandbits(8) for _ in range(n))
    assert offload.internet_checksum(data) == ref_checksum(data)
    padded = data + b"\x00" * (n % 2)
    assert ref_checksum(padded + struct.pack(">H", offload.internet_checksum(data))) == 0


def test_checksum_edge_values() -> None:
    # words summing to 0xFFFF ("negative zero") give checksum 0, like the reference
    assert offload.internet_checksum(b"\xff\xff" * 4) == ref_checksum(b"\xff\xff" * 4) == 0
    assert offload.internet_checksum(b"\x12\x34\xed\xcb") == ref_checksum(b"\x12\x34\xed\xcb") == 0
    # only an all-zero input differs (0 instead of 0xFFFF: the same value in one's complement)
    assert offload.internet_checksum(b"\x00" * 4) in (0, 0xFFFF)


def test_complete_partial_checksum() -> None:
    payload = os.urandom(999)
    pkt = bytearray(tcp_packet(payload, partial=True))
    assert not parse(bytes(pkt))["tcp_ok"]
    offload.complete_checksum(pkt, 20, 16)
    assert parse(bytes(pkt))["tcp_ok"]
    assert bytes(pkt) == tcp_packet(payload)


# ------------------------------------------------------------------ TSO split
@pytest.mark.parametrize("v6", [False, True])
def test_tso_split_of_64k_segment_yields_valid_mtu_packets(v6: bool) -> None:
    mtu = 1420
    l4 = 40 if v6 else 20
    options = b"\x01\x01\x08\x0a" + struct.pack(">II", 123456, 654321) + b"\x01\x01\x01\x01" * 3
    mss = mtu - l4 - 20 - len(options)
    payload = os.urandom(65535 - l4 - 20 - len(options))
    big = tcp_packet(payload, seq=0xFFFFF000, flags=0x18 | 0x01, v6=v6, options=options,
                     partial=True)
    vnet = VnetHdr(offload.VIRTIO_NET_HDR_F_NEEDS_CSUM,
                   offload.VIRTIO_NET_HDR_GSO_TCPV6 if v6 else offload.VIRTIO_NET_HDR_GSO_TCPV4,
                   l4 + 20 + len(options), mss, l4, 16)
    segments = offload.split_packet(vnet, big)
    assert len(segments) == -(-len(payload) // mss)
    joined = b""
    for i, seg in enumerate(segments):
        info = parse(seg)
        assert len(seg) <= mtu
        assert info["total"] == len(seg)
        assert info["ip_ok"], f"segment {i}: bad IPv4 header checksum"
        assert info["tcp_ok"], f"segment {i}: bad TCP checksum"
        assert info["seq"] == (0xFFFFF000 + len(joined)) & 0xFFFFFFFF   # wraps around 2^32
        last = i == len(segments) - 1
        assert bool(info["flags"] & 0x08) == last and bool(info["flags"] & 0x01) == last
        assert info["flags"] & 0x10
        assert seg[l4 + 20:l4 + 20 + len(options)] == options
        if not v6:
            assert info["id"] == 7 + i
        joined += info["payload"]
    assert joined == payload


def test_split_without_gso_completes_checksum_or_passes_through() -> None:
    pkt = tcp_packet(b"hello", partial=True)
    [out] = offload.split_packet(VnetHdr(offload.VIRTIO_NET_HDR_F_NEEDS_CSUM, 0, 0, 0, 20, 16), pkt)
    assert parse(out)["tcp_ok"]
    plain = tcp_packet(b"x")
    assert offload.split_packet(VnetHdr(), plain) == [plain]


def test_split_udp_gso() -> None:
    payload = os.urandom(5000)
    ip = bytearray(struct.pack(">BBHHHBBH", 0x45, 0, 28 + len(payload), 1, 0, 64, 17, 0)
                   + socket.inet_aton(SRC4) + socket.inet_aton(DST4))
    udp = struct.pack(">HHHH", 1, 2, 8 + len(payload), 0)
    pkt = bytes(ip) + udp + payload
    out = offload.split_packet(VnetHdr(1, offload.VIRTIO_NET_HDR_GSO_UDP_L4, 28, 1200, 20, 6), pkt)
    assert [len(p) - 28 for p in out] == [1200, 1200, 1200, 1200, 200]
    assert b"".join(p[28:] for p in out) == payload
    for p in out:
        assert ref_checksum(p[:20]) == 0
        assert ref_l4_ok(p, 20, 17)
        assert struct.unpack(">H", p[24:26])[0] == len(p) - 20


def test_split_rejects_nonsense() -> None:
    with pytest.raises(offload.OffloadError):
        offload.split_packet(VnetHdr(1, offload.VIRTIO_NET_HDR_GSO_TCPV4, 40, 0, 20, 16),
                             tcp_packet(b"x" * 100))
    with pytest.raises(offload.OffloadError):
        offload.split_packet(VnetHdr(1, offload.VIRTIO_NET_HDR_GSO_TCPV4, 40, 100, 24, 16),
                             tcp_packet(b"x" * 300))
    with pytest.raises(offload.OffloadError):
        offload.split_packet(VnetHdr(1, 99, 40, 100, 20, 16), tcp_packet(b"x" * 300))


# ------------------------------------------------------------------ GRO coalesce
def _decode_write(buf: bytes) -> tuple[VnetHdr, bytes]:
    return VnetHdr.unpack(buf), buf[offload.VNET_HDR_SIZE:]


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
    writes = offload.coalesce_packets(packets)
    assert len(writes) == 1
    vnet, big = _decode_write(writes[0])
    assert vnet.gso_type == (offload.VIRTIO_NET_HDR_GSO_TCPV6 if v6 else offload.VIRTIO_NET_HDR_GSO_TCPV4)
    assert vnet.flags == offload.VIRTIO_NET_HDR_F_NEEDS_CSUM
    assert vnet.gso_size == mss and vnet.csum_offset == 16
    info = parse(big)
    assert info["payload"] == payload and info["total"] == len(big) and info["ip_ok"]
    assert info["flags"] & 0x08                      # PSH of the last segment kept
    # the checksum field holds the pseudo-header sum the kernel completes
    l4 = vnet.csum_start
    expected_partial = ~ref_checksum(ref_pseudo(big, 6, len(big) - l4)) & 0xFFFF
    got = struct.unpack(">H", big[l4 + 16:l4 + 18])[0]
    assert got == expected_partial or {got, expected_partial} == {0, 0xFFFF}
    # and the kernel-style split gives back the original packets, byte for byte
    again = offload.split_packet(vnet, big)
    if v6:
        assert again == packets
    else:   # IPv4 IDs: TSO numbers from the first packet's ID, as ours were
        assert again == packets


def test_coalesce_keeps_flows_apart_and_passes_other_packets() -> None:
    a1 = tcp_packet(b"a" * 100, seq=1, flags=0x10)
    other = b"\x45" + bytes(19)                      # not TCP: passed through
    b1 = tcp_packet(b"b" * 100, seq=1, flags=0x10, sport=40001)   # another flow
    a2 = tcp_packet(b"a" * 100, seq=101, flags=0x10)
    b2 = tcp_packet(b"b" * 100, seq=101, flags=0x10, sport=40001)
    writes = offload.coalesce_packets([a1, other, b1, a2, b2])
    decoded = [_decode_write(w) for w in writes]
    assert len(decoded) == 3
    assert decoded[1][1] == other and decoded[1][0].pack() == bytes(10)
    for (vnet, big), letter in ((decoded[0], b"a"), (decoded[2], b"b")):
        assert vnet.gso_type == offload.VIRTIO_NET_HDR_GSO_TCPV4
        assert parse(big)["payload"] == letter * 200


def test_coalesce_splits_where_ack_or_window_changes() -> None:
    """Segments that differ in anything but seq/PSH are not merged, and a flow's data is
    never reordered: after a change, later segments do not go back to an earlier group."""
    p1 = tcp_packet(b"a" * 100, seq=1, flags=0x10)
    p2 = tcp_packet(b"a" * 100, seq=101, flags=0x10, ack=999)
    p3 = tcp_packet(b"a" * 100, seq=201, flags=0x10)
    p4 = tcp_packet(b"a" * 100, seq=301, flags=0x10, window=7)
    writes = offload.coalesce_packets([p1, p2, p3, p4])
    assert [_decode_write(w)[1] for w in writes] == [p1, p2, p3, p4]


def test_coalesce_never_merges_bad_checksum_gaps_or_syn() -> None:
    p1 = tcp_packet(b"x" * 100, seq=1, flags=0x10)
    bad = tcp_packet(b"y" * 100, seq=101, flags=0x10, valid=False)
    p3 = tcp_packet(b"z" * 100, seq=201, flags=0x10)
    writes = offload.coalesce_packets([p1, bad, p3])
    assert [_decode_write(w)[1] for w in writes] == [p1, bad, p3]
    gap = offload.coalesce_packets([p1, tcp_packet(b"q" * 100, seq=500, flags=0x10)])
    assert len(gap) == 2
    syn = tcp_packet(b"s" * 100, seq=101, flags=0x12)
    assert len(offload.coalesce_packets([p1, syn])) == 2
    bigger = tcp_packet(b"w" * 200, seq=101, flags=0x10)   # larger than the first: new group
    assert len(offload.coalesce_packets([p1, bigger])) == 2


def test_coalesce_stops_at_push_and_at_short_segment() -> None:
    p = [tcp_packet(b"x" * 100, seq=1 + 100 * i, flags=0x18 if i == 1 else 0x10) for i in range(4)]
    writes = offload.coalesce_packets(p)
    assert [len(parse(_decode_write(w)[1])["payload"]) for w in writes] == [200, 200]


def test_coalesce_respects_64k_limit() -> None:
    mss = 1400
    packets = [tcp_packet(b"x" * mss, seq=1 + mss * i, flags=0x10) for i in range(100)]
    writes = offload.coalesce_packets(packets)
    assert all(len(w) - offload.VNET_HDR_SIZE <= 65535 for w in writes)
    payload = b"".join(parse(_decode_write(w)[1])["payload"] for w in writes)
    assert payload == b"x" * mss * 100
    assert len(writes) == 3


# ------------------------------------------------------------------ UDP GSO / GRO helpers
def test_gso_runs_group_equal_sizes_per_endpoint() -> None:
    e1, e2 = ("198.18.0.2", 51820), ("198.18.0.3", 51820)
    data = [(b"a" * 100, e1)] * 3 + [(b"b" * 50, e1), (b"c" * 100, e1), (b"d" * 100, e2),
                                     (b"e" * 120, e2)]
    runs = offload.gso_runs(data)
    assert [(ep, size, len(items)) for ep, size, items in runs] == [
        (e1, 100, 4), (e1, 100, 1), (e2, 100, 1), (e2, 120, 1)]
    assert [d for _, _, items in runs for d in items] == [d for d, _ in data]


def test_gso_runs_limits() -> None:
    e = ("h", 1)
    runs = offload.gso_runs([(b"x" * 1452, e)] * 100)
    assert all(len(items) * 1452 <= offload.UDP_GSO_MAX_BYTES for _, _, items in runs)
    assert sum(len(items) for _, _, items in runs) == 100
    small = offload.gso_runs([(b"x", e)] * 200)
    assert [len(items) for _, _, items in small] == [64, 64, 64, 8]


def test_split_gro_and_cmsg_parsing() -> None:
    data = bytes(range(256)) * 20                     # 5120 bytes
    assert offload.split_gro(data, 1452) == [data[0:1452], data[1452:2904], data[2904:4356],
                                             data[4356:]]
    assert offload.split_gro(data, 0) == [data]
    assert offload.gro_segment_size([(offload.SOL_UDP, offload.UDP_GRO, struct.pack("=i", 1452))]) == 1452
    assert offload.gro_segment_size([(0, 1, b"zz")]) == 0


def test_udp_gso_and_gro_on_loopback() -> None:
    """A real UDP_SEGMENT send is received as separate datagrams, or (with UDP_GRO) as one
    coalesced buffer whose cmsg gives the segment size; both split back to the originals."""
    rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        rx.bind(("127.0.0.1", 0))
        try:
            rx.setsockopt(offload.SOL_UDP, offload.UDP_GRO, 1)
        except OSError as exc:
            pytest.skip(f"UDP_GRO unsupported here: {exc}")
        datagrams = [bytes([i]) * 1000 for i in range(5)] + [b"\xee" * 300]
        try:
            tx.sendmsg(datagrams, [(offload.SOL_UDP, offload.UDP_SEGMENT, struct.pack("=H", 1000))],
                       0, rx.getsockname())
        except OSError as exc:
            pytest.skip(f"UDP_SEGMENT unsupported here: {exc}")
        rx.settimeout(2)
        got = []
        while len(got) < len(datagrams):
            data, anc, _, _ = rx.recvmsg(65535, socket.CMSG_SPACE(4))
            got += offload.split_gro(data, offload.gro_segment_size(anc))
        assert got == datagrams
    finally:
        rx.close()
        tx.close()


def test_offload_env_switch() -> None:
    parts = offload.offload_parts_from_env
    assert parts({}) == parts({"MESHWG_OFFLOAD": "1"}) == offload.DEFAULT_OFFLOAD_PARTS
    for off in ("0", "false", "OFF", "no"):
        assert parts({"MESHWG_OFFLOAD": off}) == frozenset()
        assert not offload.offload_enabled_from_env("udp", {"MESHWG_OFFLOAD": off})
    assert parts({"MESHWG_OFFLOAD": "all"}) == {"tun", "udp"}
    assert parts({"MESHWG_OFFLOAD": "tun, udp"}) == {"tun", "udp"}
    assert offload.offload_enabled_from_env("tun", {"MESHWG_OFFLOAD": "tun"})
    assert not offload.offload_enabled_from_env("udp", {"MESHWG_OFFLOAD": "tun"})


# ------------------------------------------------------------------ numpy and pure paths
@pytest.fixture(params=["numpy", "pure"])
def checksum_path(request, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run a test with the vectorised (numpy, when installed) and the pure-Python sums."""
    if request.param == "numpy":
        if offload._np is None:
            pytest.skip("numpy not installed: only the pure-Python path exists here")
    else:
        monkeypatch.setattr(offload, "_np", None)
    return request.param


@pytest.mark.parametrize("n", [4000, 4001])
def test_word_sums_match_reference(checksum_path: str, n: int) -> None:
    data = os.urandom(n)
    starts = [0, 20, 40, 1460, 2000, 3998]
    ends = starts[1:] + [n]
    expected = [(~ref_checksum(data[a:b]) & 0xFFFF) % 0xFFFF for a, b in zip(starts, ends)]
    assert offload.word_sums(data, starts) == expected


def test_split_and_coalesce_on_both_paths(checksum_path: str) -> None:
    mss = 1380
    payload = os.urandom(mss * 20 + 5)
    big = tcp_packet(payload, seq=7, flags=0x18, partial=True)
    segs = offload.split_packet(VnetHdr(1, offload.VIRTIO_NET_HDR_GSO_TCPV4, 40, mss, 20, 16), big)
    assert all(parse(s)["tcp_ok"] and parse(s)["ip_ok"] for s in segs)
    writes = offload.coalesce_packets(segs)
    assert len(writes) == 1
    assert parse(_decode_write(writes[0])[1])["payload"] == payload
    corrupted = list(segs)
    corrupted[5] = corrupted[5][:-1] + bytes([corrupted[5][-1] ^ 1])
    assert [_decode_write(w)[1] for w in offload.coalesce_packets(corrupted)] == corrupted


# ------------------------------------------------------------------ in-place split, views
@pytest.mark.parametrize("v6", [False, True])
@pytest.mark.parametrize("mss,options", [(1368, b"\x01\x01\x08\x0a" + bytes(8)), (1380, b""),
                                         (536, b""), (1001, b"")])
def test_split_in_place_equals_split_packet(checksum_path: str, v6: bool, mss: int,
                                            options: bytes) -> None:
    rng = random.Random(mss)
    for flags in (0x10, 0x19, 0x98):
        payload = rng.randbytes(rng.choice([1, mss, mss * 3 + 7, 65000 - 80]))
        big = tcp_packet(payload, seq=rng.getrandbits(32), flags=flags, v6=v6, partial=True,
                         options=options, ip_id=0xFFFE)
        l4 = 40 if v6 else 20
        kind = offload.VIRTIO_NET_HDR_GSO_TCPV6 if v6 else offload.VIRTIO_NET_HDR_GSO_TCPV4
        vnet = VnetHdr(1, kind, l4 + 20 + len(options), mss, l4, 16)
        expected = offload.split_packet(vnet, big)
        frame = bytearray(vnet.pack() + big)
        got = [bytes(view) for view in offload.split_frame_in_place(frame, 0, len(frame))]
        assert got == expected
        assert all(parse(s)["tcp_ok"] for s in got)


def test_split_in_place_other_kinds_and_errors() -> None:
    pkt = tcp_packet(b"hello", partial=True)
    frame = bytearray(VnetHdr(offload.VIRTIO_NET_HDR_F_NEEDS_CSUM, 0, 0, 0, 20, 16).pack() + pkt)
    [out] = offload.split_frame_in_place(frame, 0, len(frame))
    assert parse(bytes(out))["tcp_ok"]
    plain = bytearray(offload.ZERO_VNET_HDR + tcp_packet(b"x"))
    assert [bytes(v) for v in offload.split_frame_in_place(plain, 0, len(plain))] == [bytes(plain[10:])]
    with pytest.raises(offload.OffloadError):
        offload.split_frame_in_place(bytearray(5), 0, 5)
    bad = bytearray(VnetHdr(1, 99, 40, 100, 20, 16).pack() + tcp_packet(b"x" * 300))
    with pytest.raises(offload.OffloadError):
        offload.split_frame_in_place(bad, 0, len(bad))


def test_coalesce_takes_views_like_bytes() -> None:
    packets = [tcp_packet(bytes([i]) * 1000, seq=1000 + 1000 * i, flags=0x10) for i in range(5)]
    scratch = bytearray(b"".join(packets))
    views, at = [], 0
    for p in packets:
        views.append(memoryview(scratch)[at:at + len(p)])
        at += len(p)
    assert offload.coalesce_packets(views) == offload.coalesce_packets(packets)


@pytest.mark.parametrize("n", [7, 64, 4000, 4001, 4002, 4003])
def test_segment_sums_match_reference(checksum_path: str, n: int) -> None:
    data = os.urandom(n)
    for size in (4, 6, 1368, 1380):
        expected = [(~ref_checksum(data[a:a + size]) & 0xFFFF) % 0xFFFF for a in range(0, n, size)]
        assert offload.segment_sums(data, size) == expected
