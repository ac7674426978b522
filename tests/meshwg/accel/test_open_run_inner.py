"""open_run(..., inner=True): the compiled opener also reads each kept plaintext's inner IP
header (length and source, consecutive equal sources one object) as the Python path's
inner_header does, and receive_batch decides, delivers and counts hostile inner packets
(truncated, bad version, length past the data or below a header, spoofed sources mid-run,
keepalives) alike on both paths, with one allowed-IPs lookup per change of source."""

from __future__ import annotations

import ipaddress
import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from meshwg import accel
from meshwg.core.crypto import Aead
from meshwg.core.messages import transport_header
from meshwg.core.receive import inner_header
from meshwg.core.replay import ReplayWindow
from tests.meshwg.core import harness as h
from tests.meshwg.accel.test_replay_run import receive_on_both_paths
from tests.meshwg.core.harness import established, seal_raw

fast = accel.select(True, warn=False)
pytestmark = pytest.mark.skipif(fast is None, reason="compiled data path not built")

SOURCES4 = ["10.0.0.1", "10.0.0.9", "0.0.0.0"]
SOURCES6 = ["fd00::1", "fd00::99"]


@st.composite
def inner_packets(draw, length: int) -> bytes:
    """A plaintext of `length` bytes: an IPv4 or IPv6 header (a few sources, a claimed
    length that may be past the data or below a header, any version nibble) then filler."""
    kind = draw(st.sampled_from(["v4", "v6", "junk"]))
    if kind == "v4":
        packet = bytearray(h.ipv4_packet(draw(st.sampled_from(SOURCES4)), "10.0.0.2", bytes(40)))
        packet[2:4] = draw(st.one_of(st.just(length), st.integers(0, 0xFFFF))).to_bytes(2, "big")
    elif kind == "v6":
        packet = bytearray(h.ipv6_packet(draw(st.sampled_from(SOURCES6)), "fd00::2", bytes(40)))
        packet[4:6] = draw(st.one_of(st.just(max(length - 40, 0)),
                                     st.integers(0, 0xFFFF))).to_bytes(2, "big")
    else:
        packet = bytearray(draw(st.binary(min_size=1, max_size=80)))
    if draw(st.booleans()):
        packet[0] = draw(st.integers(0, 255))          # any version nibble
    return bytes(packet[:length]).ljust(length, b"\x00")


@st.composite
def runs(draw) -> tuple[int, list[bytes], list[int], set[int]]:
    """(size of each plaintext, plaintexts (the last may be shorter, even empty), counters
    (repeats: replays), indexes of damaged tags)."""
    length = draw(st.integers(1, 90))
    count = draw(st.integers(1, 24))
    plain = [draw(inner_packets(length)) for _ in range(count - 1)]
    last = draw(st.integers(0, length))
    plain.append(draw(inner_packets(last)) if last else b"")
    counters = [draw(st.integers(0, 40)) for _ in plain]
    damaged = draw(st.sets(st.integers(0, count - 1), max_size=3))
    return length, plain, counters, damaged


@settings(max_examples=150, deadline=None)
@given(runs())
def test_open_run_reads_inner_headers_as_python(run) -> None:
    _length, plain, counters, damaged = run
    key = os.urandom(32)
    data = bytearray()
    for i, (p, counter) in enumerate(zip(plain, counters)):
        msg = bytearray(transport_header(9, counter) + Aead(key).seal(counter, p))
        if i in damaged:
            msg[-1] ^= 1
        data += msg
    size = 32 + len(plain[0])
    outs, got = [], []
    for inner in ((), (True,)):
        window = ReplayWindow()
        out = bytearray(len(data) + 16 * len(plain))
        stop, results, window.last = fast.Opener(key).open_run(
            data, 0, len(data), size, 9, out, 0, window.ring, window.last, window.limit,
            2**64 - 1, *inner)
        assert stop == len(data)
        outs.append(out)
        got.append(results)
    plain_results, inner_results = got
    # the first three fields as without inner=True, the same plaintexts
    assert [r[:3] for r in inner_results] == plain_results
    assert outs[0] == outs[1]
    source = None
    for counter, at, plen, length, src in inner_results:
        want = inner_header(outs[1], at, plen) if plen > 0 else (-1, None)
        assert (length, src) == want
        if src is not None:
            assert (src is source) == (src == source)   # equal consecutive sources shared
            source = src


def _address(text: str) -> bytes:
    return ipaddress.ip_address(text).packed


@settings(max_examples=100, deadline=None)
@given(runs(), st.integers(1, 3))
def test_receive_batch_hostile_inner_alike_on_both_paths(run, splits) -> None:
    """The same GRO run (in `splits` receive calls' worth of runs) through receive_batch on
    the pure Python and the compiled path: the same packets delivered, the same counters,
    the same replay window after."""
    _length, plain, counters, damaged = run
    net, a, b = established()
    datagrams = []
    for i, (p, counter) in enumerate(zip(plain, counters)):
        msg = bytearray(seal_raw(a, b, p, counter))
        if i in damaged:
            msg[-1] ^= 1
        datagrams.append(bytes(msg))
    size = len(datagrams[0])
    cut = len(datagrams) * (splits - 1) // splits      # a second run from another source
    batch = [(b"".join(datagrams[:cut]), size, a.address), (b"".join(datagrams[cut:]), size,
                                                            ("192.0.2.50", 9))]
    batch = [r for r in batch if r[0]]
    compiled, python = receive_on_both_paths(net, a, b, batch)
    assert compiled == python


def test_one_lookup_per_change_of_source() -> None:
    """A run of 40 packets from two sources in four stretches: the compiled path looks the
    inner source up in the allowed IPs four times, not forty."""
    net, a, b = established()
    b.protocol.fastpath = fast
    sources = [a.ip4] * 10 + ["10.0.0.9"] * 10 + [a.ip4] * 10 + ["10.0.0.9"] * 10
    datagrams = [seal_raw(a, b, h.ipv4_packet(s, b.ip4, b"x" * 60), 500 + i)
                 for i, s in enumerate(sources)]
    table = b.protocol.allowed_ips
    looked_up = []
    lookup = table.lookup
    table.lookup = lambda address: looked_up.append(address) or lookup(address)
    try:
        before = b.stats["inner_source_not_allowed"]
        got, _h = b.protocol.receive_batch([(b"".join(datagrams), len(datagrams[0]), a.address)],
                                           net.now)
    finally:
        del table.lookup
    assert len(got) == 20 and b.stats["inner_source_not_allowed"] - before == 20
    assert looked_up == [_address(s) for s in (a.ip4, "10.0.0.9", a.ip4, "10.0.0.9")]
