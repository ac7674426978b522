"""A socket's send and receive buffers grown past the system's default.

The default (net.core.rmem_default, 208 KiB) holds about 90 full-size datagrams: a burst
of a TCP flow through a UDP forwarder (the engine's socket, a relay and its proxies)
overflows it and the kernel drops the rest (`nstat` UdpRcvbufErrors). As root the size
is forced past net.core.rmem_max / wmem_max (SO_RCVBUFFORCE, SO_SNDBUFFORCE: socket(7));
otherwise it is asked for and capped there by the kernel.
"""

from __future__ import annotations

import socket

FORWARDER_BUFFER = 4 << 20   # bytes: a relay's or a proxy's socket (~2,800 full datagrams)
SO_SNDBUFFORCE = 32     # <asm-generic/socket.h>; not in Python's socket module
SO_RCVBUFFORCE = 33


def grow_buffers(sock: socket.socket, size: int) -> None:
    """Ask for `size` bytes of receive and send buffer on `sock` (forced when allowed;
    never raises: a smaller buffer is a slower socket, not a broken one)."""
    for forced, plain in ((SO_RCVBUFFORCE, socket.SO_RCVBUF), (SO_SNDBUFFORCE, socket.SO_SNDBUF)):
        try:
            sock.setsockopt(socket.SOL_SOCKET, forced, size)
        except OSError:
            try:
                sock.setsockopt(socket.SOL_SOCKET, plain, size)
            except OSError:
                pass
