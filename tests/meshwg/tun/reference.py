"""Reference code and packet builders for the TUN offload tests (meshwg.tun).

Checksums are checked against an independent reference: a plain RFC 1071 loop over
16-bit words with end-around carry, written here and sharing no code with meshwg.tun."""

from __future__ import annotations

import socket
import struct

from meshwg.core.send import segments_of
from meshwg.tun.tso import split_frame_in_place
from meshwg.tun.vnet import VNET_HDR, VNET_HDR_SIZE

SRC4, DST4 = "10.99.0.1", "10.99.0.2"
SRC6, DST6 = "fd00:99::1", "fd00:99::2"


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


def vnet_frame(packet: bytes, flags: int = 0, gso_type: int = 0, hdr_len: int = 0,
               gso_size: int = 0, csum_start: int = 0, csum_offset: int = 0) -> bytearray:
    """What a TUN read with offloads returns: a virtio_net_hdr, then the packet."""
    return bytearray(VNET_HDR.pack(flags, gso_type, hdr_len, gso_size, csum_start, csum_offset)
                     + packet)


def split(frame: bytearray) -> list[bytes]:
    """The packets split_frame_in_place makes of a whole frame, copied (its views are
    valid only until the next one is taken)."""
    return [bytes(view) for item in split_frame_in_place(frame, 0, len(frame))
            for view in segments_of(item)]


def decode_write(buf: bytes) -> tuple[tuple[int, ...], bytes]:
    """A TUN write with offloads: (flags, gso_type, hdr_len, gso_size, csum_start,
    csum_offset) of its virtio_net_hdr, and the packet."""
    return VNET_HDR.unpack_from(buf), buf[VNET_HDR_SIZE:]
