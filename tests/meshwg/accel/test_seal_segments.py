"""Sealer.seal_segments (a TSO frame sealed in one call) against seal_run and the Python
path, its hostile input, and the send path using it: one call per frame, the same
datagrams as the pure Python path sealing the same packets one by one."""

from __future__ import annotations

import os
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from meshwg import accel
from meshwg.core.send import segments_of
from tests.meshwg.accel.test_fastpath import python_seal
from tests.meshwg.core.harness import established
from tests.meshwg.tun.reference import tcp_packet

fast = accel.select(True, warn=False)
pytestmark = pytest.mark.skipif(fast is None, reason="compiled data path not built")


@settings(max_examples=200, deadline=None)
@given(st.binary(min_size=32, max_size=32), st.integers(0, 2**32 - 1),
       st.integers(0, 2**64 - 5000), st.binary(max_size=9000), st.integers(1, 1600),
       st.integers(0, 1600))
def test_seal_segments_is_seal_run_of_the_segments(key, receiver, counter, data, segment,
                                                   mtu) -> None:
    pieces = [data[i:i + segment] for i in range(0, len(data), segment)]
    out = bytearray(len(data) + 48 * len(pieces) + 5)
    total = fast.Sealer(key).seal_segments(out, 5, receiver, counter, data, segment, mtu)
    expected = b"".join(python_seal(key, receiver, counter + i, p, mtu)
                        for i, p in enumerate(pieces))
    assert total == len(expected)
    assert bytes(out[5:5 + total]) == expected
    assert out[:5] == bytes(5) and not any(out[5 + total:])
    run = bytearray(len(out))
    sizes = fast.Sealer(key).seal_run(run, 5, receiver, counter, pieces, mtu)
    assert sum(sizes) == total and run == out


def test_seal_segments_refuses_hostile_input_before_writing() -> None:
    sealer = fast.Sealer(os.urandom(32))
    out = bytearray(3000)
    for segment in (0, -1):
        with pytest.raises(ValueError):
            sealer.seal_segments(out, 0, 1, 0, bytes(100), segment, 1420)
    with pytest.raises(ValueError):                       # a packet longer than IP allows
        sealer.seal_segments(bytearray(10**6), 0, 1, 0, bytes(65536), 65536, 65536)
    with pytest.raises(ValueError):                       # more than MAX_RUN segments
        sealer.seal_segments(bytearray(10**6), 0, 1, 0, bytes(fast.MAX_RUN + 1), 1, 1420)
    with pytest.raises(OverflowError):                    # counters past 2**64
        sealer.seal_segments(out, 0, 1, 2**64 - 1, bytes(20), 10, 1420)
    with pytest.raises(ValueError):                       # does not fit
        sealer.seal_segments(out, 0, 1, 0, bytes(3000), 1000, 1420)
    with pytest.raises(ValueError):
        sealer.seal_segments(out, 2999, 1, 0, bytes(10), 10, 1420)
    with pytest.raises(ValueError):
        sealer.seal_segments(out, -1, 1, 0, bytes(10), 10, 1420)
    assert out == bytearray(3000)
    with pytest.raises(ValueError):                       # packet and output overlap
        sealer.seal_segments(out, 0, 1, 0, memoryview(out)[100:200], 50, 1420)
    assert out == bytearray(3000)
    assert sealer.seal_segments(out, 0, 1, 0, b"", 10, 1420) == 0
    # a segment size past the data (a TSO frame of one segment): one packet
    assert sealer.seal_segments(out, 0, 1, 0, bytes(100), 65536, 1420) == 100 + 12 + 32


def _tso_frame(a, b, payload: int, mss: int) -> tuple:
    """What meshwg.tun.tso yields for one TSO read on the compiled path: the segments
    tcp_split cuts from an IPv4 TCP packet a -> b, as one (segments, size) item."""
    packet = bytearray(tcp_packet(os.urandom(payload)))
    packet[12:16] = bytes(map(int, a.ip4.split(".")))
    packet[16:20] = bytes(map(int, b.ip4.split(".")))
    return memoryview(fast.tcp_split(bytes(packet), 20, mss)), 40 + mss


class _Counting:
    """A Sealer's methods, counted (the compiled type's own cannot be patched)."""

    def __init__(self, sealer) -> None:
        self.sealer, self.calls = sealer, []

    def __getattr__(self, name: str):
        method = getattr(self.sealer, name)

        def counted(*args):
            self.calls.append(name)
            return method(*args)
        return counted


def test_a_frame_is_one_seal_call_and_the_bytes_of_the_python_path() -> None:
    net, a, b = established()
    items = [_tso_frame(a, b, 60000, 1380), a.packet_to(b, b"ack"), _tso_frame(a, b, 3000, 1380)]
    kp = a.peer(b).current
    outputs = []
    for path in (fast, None):
        a.protocol.fastpath = path
        kp.set_counter(1000)
        counting = kp._sealer = _Counting(kp.sealer(fast))
        flat = [bytes(p) for item in items for p in segments_of(item)]
        runs = a.protocol.encrypt_batch(items if path else flat, net.now, bytearray(1 << 20))
        outputs.append([(bytes(v), size, e) for v, size, e in runs])
        if path:
            assert counting.calls == ["seal_segments", "seal", "seal_segments"]
        else:
            assert counting.calls == []
    assert outputs[0] == outputs[1]
    data = b"".join(v for v, _s, _e in outputs[0])
    assert struct.unpack_from("<Q", data, 8)[0] == 1000
    # 44 datagrams (the last one shorter ends the run), the ack alone, the 3 of the next frame
    assert [len(v) // 1452 for v, size, _e in outputs[0] if size == 1452] == [43, 2]
    assert len(outputs[0]) == 3
