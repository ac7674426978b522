"""Segmentation and coalescing offloads, free of I/O.

- virtio_net_hdr: the 10-byte header a TUN device opened with IFF_VNET_HDR puts in front
  of every packet it hands over or takes in (include/uapi/linux/virtio_net.h).
- TSO split: a TCP "super-packet" of up to 64 KiB read from the TUN device, with its
  virtio_net_hdr, becomes MTU-sized packets with their own IP and TCP headers and
  correct checksums (`split_packet`).
- GRO coalesce: consecutive TCP segments of one flow, decrypted from the tunnel, become
  one big packet plus a GSO virtio_net_hdr for the kernel (`coalesce_packets`).
- UDP GSO/GRO helpers: grouping equal-size datagrams for one UDP_SEGMENT sendmsg
  (`gso_runs`) and splitting what a UDP_GRO recvmsg returned (`split_gro`).
- Internet checksums (RFC 1071) computed with Python integers: a byte string read as a
  big-endian integer is congruent modulo 0xFFFF to the one's-complement sum of its 16-bit
  words, because 2**16 == 1 (mod 0xFFFF). One `int.from_bytes` and one `%` per buffer
  run in C.
"""

from __future__ import annotations

import os
import struct
import sys
from typing import Any, Iterable, Iterator, Sequence

try:            # optional: vectorised checksums for the TUN offloads
    import numpy as _np
except ImportError:     # pragma: no cover - depends on the environment
    _np = None

# ---------------------------------------------------------------- virtio_net_hdr
VNET_HDR_SIZE = 10
VNET_HDR = struct.Struct("=BBHHHH")   # flags, gso_type, hdr_len, gso_size, csum_start, csum_offset

VIRTIO_NET_HDR_F_NEEDS_CSUM = 1
VIRTIO_NET_HDR_F_DATA_VALID = 2
VIRTIO_NET_HDR_GSO_NONE = 0
VIRTIO_NET_HDR_GSO_TCPV4 = 1
VIRTIO_NET_HDR_GSO_UDP = 3
VIRTIO_NET_HDR_GSO_TCPV6 = 4
VIRTIO_NET_HDR_GSO_UDP_L4 = 5
VIRTIO_NET_HDR_GSO_ECN = 0x80

ZERO_VNET_HDR = bytes(VNET_HDR_SIZE)

# ---------------------------------------------------------------- UDP socket options
SOL_UDP = 17
UDP_SEGMENT = 103          # int: GSO segment size (setsockopt or a cmsg on sendmsg)
UDP_GRO = 104              # int: enable; recvmsg then carries the segment size in a cmsg
UDP_MAX_SEGMENTS = 64      # segments per UDP_SEGMENT send the kernel accepts everywhere
UDP_GSO_MAX_BYTES = 65000  # payload bytes per UDP_SEGMENT send (an IP packet's limit, less headers)

IPPROTO_TCP = 6
IPPROTO_UDP = 17

_TCP_FIN, _TCP_SYN, _TCP_RST, _TCP_PSH, _TCP_ACK, _TCP_URG, _TCP_ECE, _TCP_CWR = (
    0x01, 0x02, 0x04, 0x08, 0x10, 0x20, 0x40, 0x80)
_NOT_COALESCABLE = _TCP_FIN | _TCP_SYN | _TCP_RST | _TCP_URG | _TCP_ECE | _TCP_CWR

_U16 = struct.Struct(">H")
_U32 = struct.Struct(">I")
_pack_u16_into = _U16.pack_into
_pack_u32_into = _U32.pack_into
_from_bytes = int.from_bytes
_LITTLE_ENDIAN = sys.byteorder == "little"

MAX_COALESCED = 65535      # an IPv4 packet's total length limit (IPv6: payload length)


OFFLOAD_PARTS = ("tun", "udp")
# Both measured to pay (bench/bench.py, 2 cores): with TUN TSO/GRO split and merged in
# place, TCP through the tunnel moves ~20% more per CPU second than with UDP GSO/GRO alone.
DEFAULT_OFFLOAD_PARTS = frozenset(OFFLOAD_PARTS)


def offload_parts_from_env(environ=os.environ) -> frozenset[str]:
    """The offloads MESHWG_OFFLOAD asks for: "0"/"false"/"no"/"off" none; unset, "1", "on"
    or "default" DEFAULT_OFFLOAD_PARTS (every part); "all" every part; else a comma list
    ("udp": UDP GSO/GRO only; "tun,udp")."""
    value = environ.get("MESHWG_OFFLOAD", "").strip().lower()
    if value in ("0", "false", "no", "off", "none"):
        return frozenset()
    if value in ("", "1", "true", "yes", "on", "default"):
        return DEFAULT_OFFLOAD_PARTS
    if value == "all":
        return frozenset(OFFLOAD_PARTS)
    return frozenset(p.strip() for p in value.split(",")) & frozenset(OFFLOAD_PARTS)


def offload_enabled_from_env(part: str, environ=os.environ) -> bool:
    """Whether MESHWG_OFFLOAD turns on offload `part` ("tun" or "udp")."""
    return part in offload_parts_from_env(environ)


class VnetHdr:
    """A decoded virtio_net_hdr."""
    __slots__ = ("flags", "gso_type", "hdr_len", "gso_size", "csum_start", "csum_offset")

    def __init__(self, flags: int = 0, gso_type: int = 0, hdr_len: int = 0, gso_size: int = 0,
                 csum_start: int = 0, csum_offset: int = 0):
        self.flags, self.gso_type, self.hdr_len = flags, gso_type, hdr_len
        self.gso_size, self.csum_start, self.csum_offset = gso_size, csum_start, csum_offset

    @classmethod
    def unpack(cls, data, offset: int = 0) -> "VnetHdr":
        return cls(*VNET_HDR.unpack_from(data, offset))

    def pack(self) -> bytes:
        return VNET_HDR.pack(self.flags, self.gso_type, self.hdr_len, self.gso_size,
                             self.csum_start, self.csum_offset)

    def __repr__(self) -> str:
        return (f"VnetHdr(flags={self.flags}, gso_type={self.gso_type}, hdr_len={self.hdr_len}, "
                f"gso_size={self.gso_size}, csum_start={self.csum_start}, "
                f"csum_offset={self.csum_offset})")


# ---------------------------------------------------------------- checksums
def ones_sum(data) -> int:
    """The one's-complement sum of `data`'s 16-bit big-endian words (odd length: padded
    with a zero byte), reduced modulo 0xFFFF (0 stands for both 0x0000 and 0xFFFF).
    Sums of pieces that each start at an even offset add up modulo 0xFFFF."""
    value = _from_bytes(data, "big")
    if len(data) & 1:
        value <<= 8
    return value % 0xFFFF


def checksum_from_sum(total: int) -> int:
    """The checksum field for a one's-complement sum (any non-negative integer)."""
    return -total % 0xFFFF


def word_sums(buf, starts: Sequence[int]) -> list[int]:
    """ones_sum of each piece buf[starts[i]:starts[i+1]] (the last piece runs to the end).
    `starts` must be increasing, even and below len(buf). With numpy installed this is
    one vectorised pass (what makes the TUN offloads pay); else one ones_sum per piece."""
    if _np is not None and len(starts) >= 4:
        return _np_piece_sums(buf, starts)
    mv = memoryview(buf)
    ends = list(starts[1:]) + [len(buf)]
    return [ones_sum(mv[a:b]) for a, b in zip(starts, ends)]


def segment_sums(buf, size: int) -> list[int]:
    """ones_sum of each `size`-byte piece of buf (the last may be shorter); size even."""
    if _np is not None and len(buf) >= 4 * size:
        return _np_piece_sums(buf, range(0, len(buf), size))
    mv = memoryview(buf)
    return [ones_sum(mv[a:a + size]) for a in range(0, len(buf), size)]


def _np_piece_sums(buf, starts: Sequence[int]) -> list[int]:
    """word_sums with numpy. Words are read in the machine's byte order: in one's-complement
    arithmetic a byte swap is a multiplication by 256 (mod 0xFFFF, as 256 * 256 == 1), so
    the sums are converted at the end. With every start a multiple of 4, 32-bit words are
    summed (a 32-bit word is congruent to the sum of its two 16-bit halves)."""
    n = len(buf)
    swap = 256 if _LITTLE_ENDIAN else 1
    if (starts.start & 3 == 0 and starts.step & 3 == 0 if type(starts) is range
            else all(start & 3 == 0 for start in starts)):
        shift, dtype = 2, _np.uint32
    else:
        shift, dtype = 1, _np.uint16
    count = n >> shift
    if starts[-1] >= count << shift:      # the last piece is shorter than one word
        mv = memoryview(buf)
        ends = list(starts[1:]) + [n]
        return [ones_sum(mv[a:b]) for a, b in zip(starts, ends)]
    words = _np.frombuffer(buf, dtype=dtype, count=count)
    index = _np.asarray(starts, dtype=_np.intp) >> shift
    sums = _np.add.reduceat(words, index, dtype=_np.uint64)
    sums %= 0xFFFF
    if swap != 1:
        sums *= swap
        sums %= 0xFFFF
    out = sums.tolist()
    tail = count << shift
    if tail < n:          # bytes after the last whole word belong to the last piece
        out[-1] = (out[-1] + ones_sum(memoryview(buf)[tail:])) % 0xFFFF
    return out


def internet_checksum(data) -> int:
    """RFC 1071 checksum of `data` (what goes into an IPv4 header checksum field)."""
    return -ones_sum(data) % 0xFFFF


def pseudo_header_sum(packet, protocol: int, l4_length: int) -> int:
    """Sum of the IPv4 or IPv6 pseudo-header of `packet` for an L4 segment of `l4_length`."""
    if packet[0] >> 4 == 4:
        addresses = packet[12:20]
    else:
        addresses = packet[8:40]
    return (_from_bytes(addresses, "big") % 0xFFFF + protocol + l4_length) % 0xFFFF


def l4_checksum_valid(packet, l4_start: int, protocol: int) -> bool:
    """True when the TCP/UDP checksum of a complete IP packet verifies."""
    return (pseudo_header_sum(packet, protocol, len(packet) - l4_start)
            + ones_sum(memoryview(packet)[l4_start:])) % 0xFFFF == 0


def complete_checksum(packet: bytearray, csum_start: int, csum_offset: int) -> None:
    """Finish a partial checksum (VIRTIO_NET_HDR_F_NEEDS_CSUM): the field at
    csum_start + csum_offset holds the pseudo-header sum; store the checksum of everything
    from csum_start on."""
    field = csum_start + csum_offset
    value = checksum_from_sum(ones_sum(memoryview(packet)[csum_start:]))
    if value == 0 and csum_offset == 6:   # UDP: zero means "no checksum"
        value = 0xFFFF
    _pack_u16_into(packet, field, value)


# ---------------------------------------------------------------- TUN read side: split
class OffloadError(ValueError):
    """A packet from the TUN device whose virtio_net_hdr cannot be honoured."""


def split_packet(vnet: VnetHdr, packet) -> list[bytes]:
    """The wire-ready IP packets for one TUN read (the virtio_net_hdr already removed).

    GSO_NONE: the packet itself, its checksum completed when NEEDS_CSUM is set.
    GSO_TCPV4/TCPV6: segments of at most gso_size payload bytes each.
    GSO_UDP_L4: UDP datagrams of gso_size payload bytes each.
    Raises OffloadError for what cannot be split."""
    gso_type = vnet.gso_type & ~VIRTIO_NET_HDR_GSO_ECN
    if gso_type == VIRTIO_NET_HDR_GSO_NONE:
        if vnet.flags & VIRTIO_NET_HDR_F_NEEDS_CSUM:
            if vnet.csum_start + vnet.csum_offset + 2 > len(packet):
                raise OffloadError("checksum offset beyond the packet")
            buf = bytearray(packet)
            complete_checksum(buf, vnet.csum_start, vnet.csum_offset)
            return [bytes(buf)]
        return [packet if isinstance(packet, bytes) else bytes(packet)]
    if not len(packet) or vnet.gso_size == 0:
        raise OffloadError("GSO packet without a segment size")
    if gso_type in (VIRTIO_NET_HDR_GSO_TCPV4, VIRTIO_NET_HDR_GSO_TCPV6):
        return split_tcp(packet, vnet.csum_start, vnet.gso_size)
    if gso_type == VIRTIO_NET_HDR_GSO_UDP_L4:
        return split_udp(packet, vnet.csum_start, vnet.gso_size)
    raise OffloadError(f"unsupported GSO type {vnet.gso_type}")


def _ip_header_check(packet, l4_start: int, minimum: int) -> int:
    version = packet[0] >> 4
    if version == 4:
        if l4_start != (packet[0] & 0x0F) * 4 or l4_start < 20:
            raise OffloadError("IPv4 header length does not match csum_start")
    elif version == 6:
        if l4_start < 40:
            raise OffloadError("IPv6 csum_start inside the IPv6 header")
    else:
        raise OffloadError(f"IP version {version}")
    if len(packet) < l4_start + minimum:
        raise OffloadError("packet shorter than its headers")
    return version


def split_tcp(packet, l4_start: int, mss: int) -> list[bytes]:
    """TSO in software: cut a TCP packet into segments of at most `mss` payload bytes.

    Each segment gets the header of the original with its own IP length (and, for IPv4,
    ID + i and header checksum), sequence number and TCP checksum; FIN and PSH stay on the
    last segment only and CWR on the first only, as the kernel's TSO does."""
    version = _ip_header_check(packet, l4_start, 20)
    thl = (packet[l4_start + 12] >> 4) * 4
    hlen = l4_start + thl
    if thl < 20 or len(packet) < hlen:
        raise OffloadError("bad TCP header length")
    total = len(packet)
    payload_len = total - hlen
    header = bytearray(packet[:hlen])
    mv = memoryview(packet)
    seq0 = _U32.unpack_from(header, l4_start + 4)[0]
    flags = header[l4_start + 13]
    csum_field = l4_start + 16
    if version == 4:
        ip_id0 = _U16.unpack_from(header, 4)[0]
        addr_sum = _from_bytes(header[12:20], "big") % 0xFFFF
    else:
        addr_sum = _from_bytes(header[8:40], "big") % 0xFFFF
    addr_sum += IPPROTO_TCP + thl
    out = []
    ones = ones_sum
    offset = 0
    index = 0
    if mss & 1 == 0 and hlen & 1 == 0:
        payload_sums = word_sums(mv, range(hlen, total, mss))
    else:
        payload_sums = [ones(mv[i:i + mss]) for i in range(hlen, total, mss)]
    while True:
        seg = mv[hlen + offset:hlen + offset + mss]
        n = len(seg)
        last = offset + mss >= payload_len
        if version == 4:
            _pack_u16_into(header, 2, hlen + n)
            _pack_u16_into(header, 4, (ip_id0 + index) & 0xFFFF)
            header[10] = header[11] = 0
            _pack_u16_into(header, 10, -ones(header[:l4_start]) % 0xFFFF)
        else:
            _pack_u16_into(header, 4, hlen - 40 + n)
        _pack_u32_into(header, l4_start + 4, (seq0 + offset) & 0xFFFFFFFF)
        f = flags
        if not last:
            f &= ~(_TCP_FIN | _TCP_PSH)
        if index:
            f &= ~_TCP_CWR
        header[l4_start + 13] = f
        header[csum_field] = header[csum_field + 1] = 0
        total_sum = addr_sum + n + ones(header[l4_start:]) + payload_sums[index]
        _pack_u16_into(header, csum_field, -total_sum % 0xFFFF)
        out.append(bytes(header) + seg)
        if last:
            return out
        offset += mss
        index += 1


def split_udp(packet, l4_start: int, size: int) -> list[bytes]:
    """USO in software: cut a UDP packet into datagrams of `size` payload bytes."""
    version = _ip_header_check(packet, l4_start, 8)
    hlen = l4_start + 8
    payload_len = len(packet) - hlen
    header = bytearray(packet[:hlen])
    mv = memoryview(packet)
    if version == 4:
        ip_id0 = _U16.unpack_from(header, 4)[0]
        addr_sum = _from_bytes(header[12:20], "big") % 0xFFFF
    else:
        addr_sum = _from_bytes(header[8:40], "big") % 0xFFFF
    addr_sum += IPPROTO_UDP
    out = []
    offset = index = 0
    while True:
        seg = mv[hlen + offset:hlen + offset + size]
        n = len(seg)
        if version == 4:
            _pack_u16_into(header, 2, hlen + n)
            _pack_u16_into(header, 4, (ip_id0 + index) & 0xFFFF)
            header[10] = header[11] = 0
            _pack_u16_into(header, 10, -ones_sum(header[:l4_start]) % 0xFFFF)
        else:
            _pack_u16_into(header, 4, hlen - 40 + n)
        _pack_u16_into(header, l4_start + 4, 8 + n)
        header[l4_start + 6] = header[l4_start + 7] = 0
        value = -(addr_sum + 8 + n + ones_sum(header[l4_start:]) + ones_sum(seg)) % 0xFFFF
        _pack_u16_into(header, l4_start + 6, value or 0xFFFF)
        out.append(bytes(header) + seg)
        offset += size
        index += 1
        if offset >= payload_len:
            return out


def split_frame_in_place(buf: bytearray, start: int, end: int) -> Iterator:
    """The wire-ready IP packets of one TUN read, buf[start:end] (virtio_net_hdr first),
    as split_packet makes them, but without copying: TCP segments get their headers
    written into `buf` right in front of their payload (over the tail of the segment
    before), so each yielded view is valid only until the next one is taken.
    Raises OffloadError (before yielding anything) for what cannot be split."""
    if end - start <= VNET_HDR_SIZE:
        raise OffloadError("read shorter than a virtio_net_hdr")
    flags, gso_type, _hdr_len, gso_size, csum_start, csum_offset = VNET_HDR.unpack_from(buf, start)
    p = start + VNET_HDR_SIZE
    mv = memoryview(buf)
    kind = gso_type & ~VIRTIO_NET_HDR_GSO_ECN
    if kind == VIRTIO_NET_HDR_GSO_NONE:
        if flags & VIRTIO_NET_HDR_F_NEEDS_CSUM:
            field = p + csum_start + csum_offset
            if field + 2 > end:
                raise OffloadError("checksum offset beyond the packet")
            value = checksum_from_sum(ones_sum(mv[p + csum_start:end]))
            if value == 0 and csum_offset == 6:   # UDP: zero means "no checksum"
                value = 0xFFFF
            _pack_u16_into(buf, field, value)
        return iter((mv[p:end],))
    if gso_size == 0:
        raise OffloadError("GSO packet without a segment size")
    if kind in (VIRTIO_NET_HDR_GSO_TCPV4, VIRTIO_NET_HDR_GSO_TCPV6):
        packet = mv[p:end]
        version = _ip_header_check(packet, csum_start, 20)
        thl = (packet[csum_start + 12] >> 4) * 4
        if thl < 20 or len(packet) < csum_start + thl:
            raise OffloadError("bad TCP header length")
        if gso_size & 1:       # odd segments: the copying splitter handles the sums
            return iter(split_tcp(packet, csum_start, gso_size))
        return _tcp_segments_in_place(buf, p, end, version, csum_start, thl, gso_size)
    if kind == VIRTIO_NET_HDR_GSO_UDP_L4:
        return iter(split_udp(mv[p:end], csum_start, gso_size))
    raise OffloadError(f"unsupported GSO type {gso_type}")


_IP4_MIDDLE = struct.Struct(">HHHH")        # IPv4 bytes 4-11: id, frag, ttl+proto, checksum
_TCP_MIDDLE = struct.Struct(">IIHHH")       # TCP bytes 4-17: seq, ack, offset+flags, window, checksum


def _tcp_segments_in_place(buf: bytearray, p: int, end: int, version: int, l4: int,
                           thl: int, mss: int) -> Iterator:
    """TSO in software, in place (split_frame_in_place). The checksums are sums kept
    apart: the header's constant words once, then per segment its sequence number,
    length, flags and the payload sums (one vectorised pass over the whole payload)."""
    hlen = l4 + thl
    payload_len = end - p - hlen
    mv = memoryview(buf)
    header = bytearray(buf[p:p + hlen])          # template, rewritten per segment
    sums = segment_sums(mv[p + hlen:end], mss) if payload_len > 0 else [0]
    seq0, ack, offset_flags, window, _ = _TCP_MIDDLE.unpack_from(header, l4 + 4)
    flags = offset_flags & 0xFF
    doff = offset_flags & 0xFF00
    middle_flags = flags & ~(_TCP_FIN | _TCP_PSH | _TCP_CWR)
    # the TCP header without sequence number, flags and checksum, plus the pseudo-header
    # without its length
    header[l4 + 4:l4 + 8] = b"\0\0\0\0"
    header[l4 + 13] = 0
    header[l4 + 16] = header[l4 + 17] = 0
    if version == 4:
        tcp_base = ones_sum(header[l4:]) + _from_bytes(header[12:20], "big") + IPPROTO_TCP
        ip_id0, frag, ttl_proto = struct.unpack_from(">HHH", header, 4)
        header[2] = header[3] = header[4] = header[5] = header[10] = header[11] = 0
        ip_base = ones_sum(header[:l4])          # without length, id and checksum
    else:
        tcp_base = ones_sum(header[l4:]) + _from_bytes(header[8:40], "big") + IPPROTO_TCP
        ip_id0 = frag = ttl_proto = ip_base = 0
    ip_middle = _IP4_MIDDLE.pack_into
    tcp_middle = _TCP_MIDDLE.pack_into
    count = len(sums)
    full_len = hlen + mss
    if version == 4:
        _pack_u16_into(header, 2, full_len)
    else:
        _pack_u16_into(header, 4, full_len - 40)
    seg = p + hlen
    for index in range(count):
        last = index == count - 1
        n = end - seg if last else mss
        f = middle_flags | (flags & (_TCP_FIN | _TCP_PSH) if last else 0) | (flags & _TCP_CWR if not index else 0)
        seq = (seq0 + index * mss) & 0xFFFFFFFF
        if version == 4:
            if last:
                _pack_u16_into(header, 2, hlen + n)
            ip_id = (ip_id0 + index) & 0xFFFF
            ip_middle(header, 4, ip_id, frag, ttl_proto, -(ip_base + hlen + n + ip_id) % 0xFFFF)
        elif last:
            _pack_u16_into(header, 4, hlen - 40 + n)
        total = tcp_base + (seq >> 16) + (seq & 0xFFFF) + f + thl + n + sums[index]
        tcp_middle(header, l4 + 4, seq, ack, doff | f, window, -total % 0xFFFF)
        h = seg - hlen
        buf[h:seg] = header
        yield mv[h:seg + n]
        seg += mss


# ---------------------------------------------------------------- TUN write side: coalesce
class _Group:
    """Consecutive TCP segments of one flow being coalesced."""
    __slots__ = ("match", "first", "parts", "packets", "next_seq", "mss", "length", "closed",
                 "l4_start", "psh")

    def __init__(self, match: bytes, first, l4_start: int, payload_len: int, seq: int,
                 psh: bool):
        self.match = match
        self.first = first
        self.parts = [first]
        self.packets = [first]
        self.l4_start = l4_start
        self.mss = payload_len
        self.length = len(first)
        self.next_seq = (seq + payload_len) & 0xFFFFFFFF
        self.psh = psh
        self.closed = psh


_MATCH_MASKS: dict[int, int] = {}


def _match_mask(l4: int, thl: int) -> int:
    """An integer mask over the first l4 + thl bytes of a TCP/IP packet that keeps every
    byte two segments of one coalesced group must share: all but the IP length, IPv4 id
    and header checksum, TCP sequence number, flags and checksum."""
    key = l4 << 8 | thl
    mask = _MATCH_MASKS.get(key)
    if mask is None:
        keep = bytearray(b"\xff" * (l4 + thl))
        varying = [2, 3, 4, 5, 10, 11] if l4 == 20 else [4, 5]
        varying += [l4 + 4, l4 + 5, l4 + 6, l4 + 7, l4 + 13, l4 + 16, l4 + 17]
        for i in varying:
            keep[i] = 0
        mask = _MATCH_MASKS[key] = _from_bytes(keep, "big")
    return mask


def _tcp_candidate(packet):
    """(flow, fields that must match as an integer, l4 start + tcp header length, seq,
    payload length, psh) of a TCP segment that GRO may merge, else None."""
    n = len(packet)
    if type(packet) is not bytes:      # a view: parse a copy of the headers
        packet = bytes(packet[:120])
    first = packet[0]
    if first == 0x45:
        if (n < 40 or packet[9] != IPPROTO_TCP or packet[6] & 0xBF or packet[7]
                or not packet[6] & 0x40):
            return None    # not TCP, a fragment, or without DF (the kernel would renumber IDs)
        if (packet[2] << 8 | packet[3]) != n:
            return None
        l4 = 20
        flow = packet[12:24]                       # addresses and ports
    elif first >> 4 == 6:
        if n < 60 or packet[6] != IPPROTO_TCP or (packet[4] << 8 | packet[5]) + 40 != n:
            return None
        l4 = 40
        flow = packet[8:44]
    else:
        return None
    thl = (packet[l4 + 12] >> 4) * 4
    flags = packet[l4 + 13]
    hlen = l4 + thl
    payload_len = n - hlen
    if thl < 20 or payload_len <= 0 or flags & _NOT_COALESCABLE or not flags & _TCP_ACK:
        return None
    match = _from_bytes(packet[:hlen], "big") & (_MATCH_MASKS.get(l4 << 8 | thl) or _match_mask(l4, thl))
    return flow, match, hlen, _U32.unpack_from(packet, l4 + 4)[0], payload_len, flags & _TCP_PSH


def coalesce_packets(packets: Iterable[bytes], verify_checksums: bool = True) -> list[bytes]:
    """TUN writes (each with its virtio_net_hdr) for IP packets about to enter the kernel.

    Consecutive in-order TCP segments of one flow (same addresses, ports, ack, window and
    options; ACK, optionally PSH as the last one; equal sizes, the last may be shorter)
    become one packet with a GSO header, which the kernel takes as one large segment.
    Everything else is passed through with an empty header. With `verify_checksums`, a
    group in which an IPv4 header or TCP checksum is wrong is not merged but written
    packet by packet (a merged packet's checksum is left for the kernel to compute, which
    would hide the corruption)."""
    out: list[Any] = []              # bytes, or a _Group to finish
    open_groups: dict[bytes, _Group] = {}
    for packet in packets:
        cand = _tcp_candidate(packet)
        if cand is None:
            out.append(ZERO_VNET_HDR + packet)
            continue
        flow, match, hlen, seq, payload_len, psh = cand
        group = open_groups.get(flow)
        if (group is not None and not group.closed and seq == group.next_seq
                and match == group.match and payload_len <= group.mss
                and group.length + payload_len <= MAX_COALESCED):
            group.parts.append(packet[hlen:] if type(packet) is memoryview
                               else memoryview(packet)[hlen:])
            group.packets.append(packet)
            group.length += payload_len
            group.next_seq = (seq + payload_len) & 0xFFFFFFFF
            if payload_len < group.mss or psh:
                group.closed = True
                group.psh = psh
            continue
        group = _Group(match, packet, 20 if packet[0] == 0x45 else 40, payload_len, seq, psh)
        open_groups[flow] = group
        out.append(group)
    result: list[bytes] = []
    for item in out:
        if type(item) is bytes:
            result.append(item)
        elif len(item.packets) == 1:
            result.append(ZERO_VNET_HDR + item.first)
        elif not verify_checksums or _group_valid(item):
            result.append(_finish(item))
        else:   # let the kernel judge (and drop) each one
            result.extend(ZERO_VNET_HDR + p for p in item.packets)
    return result


def _group_valid(group: _Group) -> bool:
    """Do the IPv4 header and TCP checksums of every packet of a group verify?"""
    packets = group.packets
    l4 = group.l4_start
    first = group.first
    if l4 == 20:
        addr_sum = _from_bytes(first[12:20], "big") % 0xFFFF + IPPROTO_TCP
    else:
        addr_sum = _from_bytes(first[8:40], "big") % 0xFFFF + IPPROTO_TCP
    starts = []
    offset = 0
    for p in packets:
        starts.append(offset)
        starts.append(offset + l4)
        offset += len(p)
    if any(len(p) & 1 for p in packets[:-1]):
        sums = []
        for p in packets:
            mv = memoryview(p)
            sums.append(ones_sum(mv[:l4]))
            sums.append(ones_sum(mv[l4:]))
    else:
        sums = word_sums(b"".join(packets), starts)
    for i, p in enumerate(packets):
        if l4 == 20 and sums[2 * i]:
            return False
        if (addr_sum + len(p) - l4 + sums[2 * i + 1]) % 0xFFFF:
            return False
    return True


def _finish(group: _Group) -> bytes:
    parts = group.parts
    first = group.first
    if len(parts) == 1:
        return ZERO_VNET_HDR + first
    l4 = group.l4_start
    thl = (first[l4 + 12] >> 4) * 4
    header = bytearray(first[:l4 + thl])
    total = group.length
    if l4 == 20:
        _pack_u16_into(header, 2, total)
        header[10] = header[11] = 0
        _pack_u16_into(header, 10, -ones_sum(header[:20]) % 0xFFFF)
        gso_type = VIRTIO_NET_HDR_GSO_TCPV4
        addr_sum = _from_bytes(header[12:20], "big")
    else:
        _pack_u16_into(header, 4, total - 40)
        gso_type = VIRTIO_NET_HDR_GSO_TCPV6
        addr_sum = _from_bytes(header[8:40], "big")
    if group.psh:
        header[l4 + 13] |= _TCP_PSH
    # CHECKSUM_PARTIAL: the field holds the (uncomplemented) pseudo-header sum
    partial = (addr_sum + IPPROTO_TCP + total - l4) % 0xFFFF
    _pack_u16_into(header, l4 + 16, partial or 0xFFFF)
    vnet = VNET_HDR.pack(VIRTIO_NET_HDR_F_NEEDS_CSUM, gso_type, l4 + thl, group.mss, l4, 16)
    parts[0] = memoryview(first)[l4 + thl:]
    return b"".join((vnet, header, *parts))


# ---------------------------------------------------------------- UDP GSO / GRO
def gso_runs(datagrams: Sequence[tuple[bytes, Any]],
             max_segments: int = UDP_MAX_SEGMENTS,
             max_bytes: int = UDP_GSO_MAX_BYTES) -> list[tuple[Any, int, list[bytes]]]:
    """Group (datagram, endpoint) pairs, in order, into UDP_SEGMENT sends:
    [(endpoint, segment size, [datagrams])]. In a run every datagram has the run's size
    except the last, which may be shorter; a run has at most `max_segments` datagrams and
    `max_bytes` bytes."""
    runs: list[tuple[Any, int, list[bytes]]] = []
    endpoint = None
    size = 0
    current: list[bytes] | None = None
    used = 0
    for datagram, dest in datagrams:
        n = len(datagram)
        if (current is not None and dest == endpoint and n <= size
                and len(current) < max_segments and used + n <= max_bytes):
            current.append(datagram)
            used += n
            if n < size:
                current = None       # a shorter datagram ends the run
            continue
        current = [datagram]
        endpoint, size, used = dest, n, n
        runs.append((dest, n, current))
    return runs


def split_gro(data, segment_size: int) -> list[bytes]:
    """The datagrams a UDP_GRO recvmsg coalesced: `segment_size` bytes each, the last
    may be shorter. A size of 0 (no cmsg) means one datagram."""
    n = len(data)
    if segment_size <= 0 or segment_size >= n:
        return [data]
    return [data[i:i + segment_size] for i in range(0, n, segment_size)]


def gro_segment_size(ancdata) -> int:
    """The segment size from recvmsg's ancillary data (SOL_UDP, UDP_GRO), or 0."""
    for level, kind, value in ancdata:
        if level == SOL_UDP and kind == UDP_GRO:
            if len(value) >= 4:
                return struct.unpack_from("=i", value)[0]
            if len(value) >= 2:
                return struct.unpack_from("=H", value)[0]
    return 0
