"""UDP segmentation offloads (Linux): the socket options, the kernel's limits, and the
segment size a UDP_GRO receive reports. No I/O.

- UDP_SEGMENT (GSO): one sendmsg carries up to UDP_MAX_SEGMENTS datagrams of one size (the
  last may be shorter) to one address, the size in a cmsg.
- UDP_GRO: one recvmsg returns datagrams of one sender coalesced back to back, the
  segment size in a cmsg (include/uapi/linux/udp.h).
"""

from __future__ import annotations

import struct
from typing import Iterable

SOL_UDP = 17
UDP_SEGMENT = 103          # int: GSO segment size (setsockopt or a cmsg on sendmsg)
UDP_GRO = 104              # int: enable; recvmsg then carries the segment size in a cmsg
UDP_MAX_SEGMENTS = 64      # segments per UDP_SEGMENT send the kernel accepts everywhere
UDP_GSO_MAX_BYTES = 65000  # payload bytes per UDP_SEGMENT send (an IP packet's limit, less headers)

SEGMENT_SIZE = struct.Struct("=H")   # the UDP_SEGMENT cmsg value


def gro_segment_size(ancdata: Iterable[tuple[int, int, bytes]]) -> int:
    """The segment size from recvmsg's ancillary data (SOL_UDP, UDP_GRO), or 0 when the
    kernel sent none (the data is one datagram)."""
    for level, kind, value in ancdata:
        if level == SOL_UDP and kind == UDP_GRO:
            if len(value) >= 4:
                return struct.unpack_from("=i", value)[0]
            if len(value) >= 2:
                return struct.unpack_from("=H", value)[0]
    return 0
