"""GRO in software: decrypted packets about to enter the kernel through a TUN device with
offloads, consecutive TCP segments of one flow merged into one large packet with a GSO
virtio_net_hdr (meshwg.tun.vnet), which the kernel takes as one segment. No I/O.
"""

from __future__ import annotations

from typing import Any, Iterable

from meshwg.tun.checksum import ones_sum, word_sums
from meshwg.tun.headers import (IPPROTO_TCP, TCP_ACK, TCP_CWR, TCP_ECE, TCP_FIN, TCP_PSH,
                                TCP_RST, TCP_SYN, TCP_URG, U32, pack_u16_into)
from meshwg.tun.vnet import (VIRTIO_NET_HDR_F_NEEDS_CSUM, VIRTIO_NET_HDR_GSO_TCPV4,
                             VIRTIO_NET_HDR_GSO_TCPV6, VNET_HDR, ZERO_VNET_HDR)

MAX_COALESCED = 65535      # an IPv4 packet's total length limit (IPv6: payload length)
_NOT_COALESCABLE = TCP_FIN | TCP_SYN | TCP_RST | TCP_URG | TCP_ECE | TCP_CWR
_from_bytes = int.from_bytes


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
    if thl < 20 or payload_len <= 0 or flags & _NOT_COALESCABLE or not flags & TCP_ACK:
        return None
    match = _from_bytes(packet[:hlen], "big") & (_MATCH_MASKS.get(l4 << 8 | thl) or _match_mask(l4, thl))
    return flow, match, hlen, U32.unpack_from(packet, l4 + 4)[0], payload_len, flags & TCP_PSH


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
        pack_u16_into(header, 2, total)
        header[10] = header[11] = 0
        pack_u16_into(header, 10, -ones_sum(header[:20]) % 0xFFFF)
        gso_type = VIRTIO_NET_HDR_GSO_TCPV4
        addr_sum = _from_bytes(header[12:20], "big")
    else:
        pack_u16_into(header, 4, total - 40)
        gso_type = VIRTIO_NET_HDR_GSO_TCPV6
        addr_sum = _from_bytes(header[8:40], "big")
    if group.psh:
        header[l4 + 13] |= TCP_PSH
    # CHECKSUM_PARTIAL: the field holds the (uncomplemented) pseudo-header sum
    partial = (addr_sum + IPPROTO_TCP + total - l4) % 0xFFFF
    pack_u16_into(header, l4 + 16, partial or 0xFFFF)
    vnet = VNET_HDR.pack(VIRTIO_NET_HDR_F_NEEDS_CSUM, gso_type, l4 + thl, group.mss, l4, 16)
    parts[0] = memoryview(first)[l4 + thl:]
    return b"".join((vnet, header, *parts))
