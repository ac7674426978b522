"""meshwg.tun.checksum: one's-complement sums and checksums against an independent
RFC 1071 reference (tests/meshwg/tun/reference.py), on the numpy and pure paths."""

from __future__ import annotations

import os
import random
import struct

import pytest

from meshwg.tun.checksum import (checksum_from_sum, complete_checksum, ones_sum, segment_sums,
                                 word_sums)
from tests.meshwg.tun.reference import parse, ref_checksum, tcp_packet


def checksum(data: bytes) -> int:
    """What goes into an IPv4 header checksum field for `data`."""
    return checksum_from_sum(ones_sum(data))


@pytest.mark.parametrize("n", [1, 2, 3, 20, 1379, 1380, 65535])
def test_checksum_matches_reference(n: int) -> None:
    rng = random.Random(n)
    data = bytes(rng.getrandbits(8) for _ in range(n))
    assert checksum(data) == ref_checksum(data)
    padded = data + b"\x00" * (n % 2)
    assert ref_checksum(padded + struct.pack(">H", checksum(data))) == 0


def test_checksum_edge_values() -> None:
    # words summing to 0xFFFF ("negative zero") give checksum 0, like the reference
    assert checksum(b"\xff\xff" * 4) == ref_checksum(b"\xff\xff" * 4) == 0
    assert checksum(b"\x12\x34\xed\xcb") == ref_checksum(b"\x12\x34\xed\xcb") == 0
    # only an all-zero input differs (0 instead of 0xFFFF: the same value in one's complement)
    assert checksum(b"\x00" * 4) in (0, 0xFFFF)


def test_complete_partial_checksum() -> None:
    payload = os.urandom(999)
    pkt = bytearray(tcp_packet(payload, partial=True))
    assert not parse(bytes(pkt))["tcp_ok"]
    complete_checksum(pkt, 20, 16)
    assert parse(bytes(pkt))["tcp_ok"]
    assert bytes(pkt) == tcp_packet(payload)


@pytest.mark.parametrize("n", [4000, 4001])
def test_word_sums_match_reference(checksum_path: str, n: int) -> None:
    data = os.urandom(n)
    starts = [0, 20, 40, 1460, 2000, 3998]
    ends = starts[1:] + [n]
    expected = [(~ref_checksum(data[a:b]) & 0xFFFF) % 0xFFFF for a, b in zip(starts, ends)]
    assert word_sums(data, starts) == expected


@pytest.mark.parametrize("n", [7, 64, 4000, 4001, 4002, 4003])
def test_segment_sums_match_reference(checksum_path: str, n: int) -> None:
    data = os.urandom(n)
    for size in (4, 6, 1368, 1380):
        expected = [(~ref_checksum(data[a:a + size]) & 0xFFFF) % 0xFFFF for a in range(0, n, size)]
        assert segment_sums(data, size) == expected
