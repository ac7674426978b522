"""IP and TCP header facts the TUN offloads share (RFC 791, 8200, 9293): protocol
numbers, TCP flag bits, big-endian field access. No I/O."""

from __future__ import annotations

import struct

IPPROTO_TCP = 6
IPPROTO_UDP = 17

TCP_FIN = 0x01
TCP_SYN = 0x02
TCP_RST = 0x04
TCP_PSH = 0x08
TCP_ACK = 0x10
TCP_URG = 0x20
TCP_ECE = 0x40
TCP_CWR = 0x80

U16 = struct.Struct(">H")
U32 = struct.Struct(">I")
pack_u16_into = U16.pack_into
pack_u32_into = U32.pack_into
