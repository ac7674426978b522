"""The virtio_net_hdr: 10 bytes a TUN device opened with IFF_VNET_HDR puts in front of
every packet it hands over or takes in (include/uapi/linux/virtio_net.h). No I/O.

On read it says how the kernel left the packet: a checksum to complete (NEEDS_CSUM at
csum_start + csum_offset) and, for a TCP or UDP "super-packet", the segment size to cut
it into (meshwg.tun.tso). On write it tells the kernel a coalesced TCP packet's segment
size (meshwg.tun.gro); ZERO_VNET_HDR passes a packet as it is.
"""

from __future__ import annotations

import struct

VNET_HDR_SIZE = 10
VNET_HDR = struct.Struct("=BBHHHH")   # flags, gso_type, hdr_len, gso_size, csum_start, csum_offset

VIRTIO_NET_HDR_F_NEEDS_CSUM = 1
VIRTIO_NET_HDR_GSO_NONE = 0
VIRTIO_NET_HDR_GSO_TCPV4 = 1
VIRTIO_NET_HDR_GSO_TCPV6 = 4
VIRTIO_NET_HDR_GSO_UDP_L4 = 5
VIRTIO_NET_HDR_GSO_ECN = 0x80

ZERO_VNET_HDR = bytes(VNET_HDR_SIZE)
