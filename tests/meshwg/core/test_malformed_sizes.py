"""Every dropped datagram is counted once, whatever its size and type byte (issue 9, case
10): zero-length, shorter than a header, a real header with random contents (so the
checks behind the size check run: mac1, receiver index, cookie reply), alone or many in
one receive."""

from __future__ import annotations

import os
import struct

import pytest

from meshwg.core.crypto import generate_private_key
from meshwg.core.protocol import WireGuardProtocol


@pytest.mark.parametrize("kind", [0, 1, 2, 3, 4, 5, 255])
def test_core_counts_each_datagram_of_every_size_once(kind: int) -> None:
    protocol = WireGuardProtocol(generate_private_key())
    source = ("192.0.2.7", 4000)
    for size in range(0, 300):
        # a real message header where there is room for one (so the checks behind the
        # size check run: mac1, receiver index, ...), else the type byte alone
        header = struct.pack("<I", kind) if size >= 4 else bytes([kind])[:size]
        datagram = header + os.urandom(size - len(header))
        before = sum(protocol.stats.values())
        packets, admitted = protocol.receive_batch([(datagram, len(datagram), source)], 1.0)
        for handshake in admitted:         # a cookie reply passes admission: no MAC to check
            protocol.process_handshake(handshake, 1.0)
        assert not packets
        assert sum(protocol.stats.values()) - before == 1, (size, dict(protocol.stats))
    # a run of zero-length datagrams (what one receive call may return) counts each
    before = protocol.stats["malformed"]
    protocol.receive_batch([(b"", 0, source)] * 1000, 2.0)
    assert protocol.stats["malformed"] - before == 1000
