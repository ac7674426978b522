"""Socket buffers grown past the default (meshwg/util/sockbuf.py)."""

from __future__ import annotations

import os
import socket

import pytest

from meshwg.util.sockbuf import grow_buffers


@pytest.mark.skipif(os.geteuid() != 0, reason="forcing a buffer past rmem_max needs root")
def test_buffers_are_forced_past_the_default() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        default = sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
        grow_buffers(sock, 4 << 20)
        # the kernel doubles what it is given (socket(7)), for its bookkeeping
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF) == 8 << 20 > default
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF) == 8 << 20


def test_a_closed_socket_is_left_alone() -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.close()
    grow_buffers(sock, 4 << 20)       # a slower socket at worst: never an error
