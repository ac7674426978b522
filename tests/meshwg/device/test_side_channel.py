"""Device side channel: datagrams with the caller's prefix go to its handler, not to the
protocol; everything else passes through untouched. (Sending from the engine's socket and
the whole path in namespaces: tests/discovery/daemons/test_dual_stack.py.)"""

from __future__ import annotations

import pytest

from meshwg.core.keys import decode_key, generate_private_key_b64
from meshwg.device.device import SIDE_MAX_DATAGRAM, Device

PREFIX = b"MWNC"
SRC = ("198.18.0.10", 51822)
PEER = ("198.18.1.1", 40001)


@pytest.fixture
def device():
    dev = Device("mwside0", private_key=decode_key(generate_private_key_b64()))
    yield dev
    dev.stop()


def test_prefixed_datagrams_go_to_the_handler(device: Device) -> None:
    got = []
    device.set_side_channel(PREFIX, lambda data, source: got.append((data, source)))
    wg = b"\x04\x00\x00\x00" + bytes(28)          # a transport message header
    answer = PREFIX + b"answer"
    kept = device._divert([(wg, len(wg), PEER), (answer, len(answer), SRC)])
    assert kept == [(wg, len(wg), PEER)]
    assert got == [(answer, SRC)]
    assert device.counters()["side_received"] == 1


def test_coalesced_runs_are_split_per_datagram(device: Device) -> None:
    got = []
    device.set_side_channel(PREFIX, lambda data, source: got.append(data))
    a, b = PREFIX + b"a" * 4, PREFIX + b"b" * 4
    other = b"\x07" * 8                               # same size, not ours: left to the protocol
    kept = device._divert([(a + other + b, 8, SRC)])
    assert got == [a, b]
    assert kept == [(other, 8, SRC)]


def test_oversized_and_failing_are_counted_not_raised(device: Device) -> None:
    def broken(data, source):
        raise RuntimeError("handler bug")
    device.set_side_channel(PREFIX, broken)
    big = PREFIX + bytes(SIDE_MAX_DATAGRAM)
    assert device._divert([(big, len(big), SRC), (PREFIX + b"x", 5, SRC)]) == []
    counters = device.counters()
    assert counters["side_dropped"] == 1 and counters["side_handler_errors"] == 1


def test_without_a_handler_everything_passes(device: Device) -> None:
    runs = [(PREFIX + b"x", 5, SRC)]
    assert device._divert(runs) is runs
    device.set_side_channel(PREFIX, lambda d, s: None)
    device.set_side_channel(PREFIX, None)
    assert device._divert(runs) is runs


@pytest.mark.parametrize("prefix", [b"MW", b"\x01\x00\x00\x00", b"\x04\x00\x00\x00xyz"])
def test_a_prefix_that_could_be_wireguard_is_refused(device: Device, prefix: bytes) -> None:
    with pytest.raises(ValueError):
        device.set_side_channel(prefix, lambda d, s: None)
