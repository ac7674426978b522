"""TSO in software: what one read from a TUN device with offloads gives, cut into the
wire-ready IP packets the tunnel seals. No I/O.

The kernel hands over a TCP "super-packet" of up to 64 KiB (or a UDP one) with a
virtio_net_hdr (meshwg.tun.vnet) giving the segment size; each segment needs its own IP
and TCP/UDP headers with correct lengths, sequence numbers, IDs and checksums, as the
kernel's own TSO makes them. split_frame_in_place does it without copying the payload.
"""

from __future__ import annotations

import struct
from typing import Iterator

from meshwg.tun.checksum import (compiled_module, complete_checksum, ones_sum, segment_sums,
                                 word_sums)
from meshwg.tun.headers import (IPPROTO_TCP, IPPROTO_UDP, TCP_CWR, TCP_FIN, TCP_PSH, U16, U32,
                                pack_u16_into, pack_u32_into)
from meshwg.tun.vnet import (VIRTIO_NET_HDR_F_NEEDS_CSUM, VIRTIO_NET_HDR_GSO_ECN,
                             VIRTIO_NET_HDR_GSO_NONE, VIRTIO_NET_HDR_GSO_TCPV4,
                             VIRTIO_NET_HDR_GSO_TCPV6, VIRTIO_NET_HDR_GSO_UDP_L4, VNET_HDR,
                             VNET_HDR_SIZE)
from meshwg.util.errors import MeshwgError

_from_bytes = int.from_bytes


class OffloadError(MeshwgError, ValueError):
    """A packet from the TUN device whose virtio_net_hdr cannot be honoured."""


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


def _template(packet, version: int, hlen: int) -> tuple[bytearray, int, int]:
    """A copy of the headers (rewritten per segment), the IPv4 ID of the first segment
    (0 for IPv6) and the sum of the pseudo-header's addresses."""
    header = bytearray(packet[:hlen])
    if version == 4:
        return header, U16.unpack_from(header, 4)[0], _from_bytes(header[12:20], "big") % 0xFFFF
    return header, 0, _from_bytes(header[8:40], "big") % 0xFFFF


def _segment_ip_header(header: bytearray, version: int, l4_start: int, length: int,
                       ip_id: int) -> None:
    """A segment's IP length (`length` bytes in all) and, for IPv4, its ID and header
    checksum."""
    if version == 4:
        pack_u16_into(header, 2, length)
        pack_u16_into(header, 4, ip_id & 0xFFFF)
        header[10] = header[11] = 0
        pack_u16_into(header, 10, -ones_sum(header[:l4_start]) % 0xFFFF)
    else:
        pack_u16_into(header, 4, length - 40)


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
    header, ip_id0, addr_sum = _template(packet, version, hlen)
    mv = memoryview(packet)
    seq0 = U32.unpack_from(header, l4_start + 4)[0]
    flags = header[l4_start + 13]
    csum_field = l4_start + 16
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
        _segment_ip_header(header, version, l4_start, hlen + n, ip_id0 + index)
        pack_u32_into(header, l4_start + 4, (seq0 + offset) & 0xFFFFFFFF)
        f = flags
        if not last:
            f &= ~(TCP_FIN | TCP_PSH)
        if index:
            f &= ~TCP_CWR
        header[l4_start + 13] = f
        header[csum_field] = header[csum_field + 1] = 0
        total_sum = addr_sum + n + ones(header[l4_start:]) + payload_sums[index]
        pack_u16_into(header, csum_field, -total_sum % 0xFFFF)
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
    header, ip_id0, addr_sum = _template(packet, version, hlen)
    mv = memoryview(packet)
    addr_sum += IPPROTO_UDP
    out = []
    offset = index = 0
    while True:
        seg = mv[hlen + offset:hlen + offset + size]
        n = len(seg)
        _segment_ip_header(header, version, l4_start, hlen + n, ip_id0 + index)
        pack_u16_into(header, l4_start + 4, 8 + n)
        header[l4_start + 6] = header[l4_start + 7] = 0
        value = -(addr_sum + 8 + n + ones_sum(header[l4_start:]) + ones_sum(seg)) % 0xFFFF
        pack_u16_into(header, l4_start + 6, value or 0xFFFF)
        out.append(bytes(header) + seg)
        offset += size
        index += 1
        if offset >= payload_len:
            return out


def split_frame_in_place(buf: bytearray, start: int, end: int) -> Iterator:
    """The wire-ready IP packets of one TUN read, buf[start:end] (virtio_net_hdr first),
    without copying the payload.

    GSO_NONE: the packet itself, its checksum completed when NEEDS_CSUM is set.
    GSO_TCPV4/TCPV6: segments of at most gso_size payload bytes each.
    GSO_UDP_L4: UDP datagrams of gso_size payload bytes each.

    With the compiled data path (meshwg.accel tcp_split) TCP segments are cut in one call
    into a new buffer and yielded as ONE item, a tuple (segments, size): a view of the
    segments back to back, each `size` bytes but the last (meshwg.core.send seals such a
    frame in one call; its segments_of gives the packets). Else TCP segments of an even
    size get their headers written into `buf` right in front of their payload (over the
    tail of the segment before), so each yielded view is valid only until the next one is
    taken; odd sizes and UDP come as copies. Raises OffloadError (before yielding
    anything) for what cannot be split."""
    if end - start <= VNET_HDR_SIZE:
        raise OffloadError("read shorter than a virtio_net_hdr")
    flags, gso_type, _hdr_len, gso_size, csum_start, csum_offset = VNET_HDR.unpack_from(buf, start)
    p = start + VNET_HDR_SIZE
    mv = memoryview(buf)
    kind = gso_type & ~VIRTIO_NET_HDR_GSO_ECN
    if kind == VIRTIO_NET_HDR_GSO_NONE:
        if flags & VIRTIO_NET_HDR_F_NEEDS_CSUM:
            if p + csum_start + csum_offset + 2 > end:
                raise OffloadError("checksum offset beyond the packet")
            complete_checksum(mv[p:end], csum_start, csum_offset)
        return iter((mv[p:end],))
    if gso_size == 0:
        raise OffloadError("GSO packet without a segment size")
    if kind in (VIRTIO_NET_HDR_GSO_TCPV4, VIRTIO_NET_HDR_GSO_TCPV6):
        packet = mv[p:end]
        version = _ip_header_check(packet, csum_start, 20)
        thl = (packet[csum_start + 12] >> 4) * 4
        if thl < 20 or len(packet) < csum_start + thl:
            raise OffloadError("bad TCP header length")
        fast = compiled_module()
        if fast is not None:
            data = memoryview(fast.tcp_split(packet, csum_start, gso_size))
            return iter(((data, csum_start + thl + gso_size),))
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
    middle_flags = flags & ~(TCP_FIN | TCP_PSH | TCP_CWR)
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
        pack_u16_into(header, 2, full_len)
    else:
        pack_u16_into(header, 4, full_len - 40)
    seg = p + hlen
    for index in range(count):
        last = index == count - 1
        n = end - seg if last else mss
        f = middle_flags | (flags & (TCP_FIN | TCP_PSH) if last else 0) | (flags & TCP_CWR if not index else 0)
        seq = (seq0 + index * mss) & 0xFFFFFFFF
        if version == 4:
            if last:
                pack_u16_into(header, 2, hlen + n)
            ip_id = (ip_id0 + index) & 0xFFFF
            ip_middle(header, 4, ip_id, frag, ttl_proto, -(ip_base + hlen + n + ip_id) % 0xFFFF)
        elif last:
            pack_u16_into(header, 4, hlen - 40 + n)
        total = tcp_base + (seq >> 16) + (seq & 0xFFFF) + f + thl + n + sums[index]
        tcp_middle(header, l4 + 4, seq, ack, doff | f, window, -total % 0xFFFF)
        h = seg - hlen
        buf[h:seg] = header
        yield mv[h:seg + n]
        seg += mss
