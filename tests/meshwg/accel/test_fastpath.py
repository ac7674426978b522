"""meshwg.accel._fastpath against the pure Python path: the same bytes out for the same
input (seal, open, checksums), hostile input rejected the same way, no crash on garbage.
The reference is what the Python data path does: cryptography's ChaCha20-Poly1305 with
the counter nonce (meshwg.core.crypto), the header of meshwg.core.messages and the
padding of meshwg.core.send; ones_sum of meshwg.tun.checksum; split_tcp of
meshwg.tun.tso and coalesce_packets of meshwg.tun.gro (whose results tests/meshwg/tun checks against an independent parse)."""

from __future__ import annotations

import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from meshwg import accel
from meshwg.core.crypto import Aead, DecryptionError
from meshwg.core.messages import transport_header
from meshwg.core.send import padding
from meshwg.tun.checksum import ones_sum
from meshwg.tun.gro import coalesce_packets
from meshwg.tun.tso import split_tcp
from tests.meshwg.tun.reference import tcp_packet

fast = accel.select(True, warn=False)
pytestmark = pytest.mark.skipif(fast is None, reason="compiled data path not built "
                                "(needs gcc, libssl-dev, python3-dev; pip install -e .)")

keys = st.binary(min_size=32, max_size=32)
receivers = st.integers(0, 2**32 - 1)
counters = st.integers(0, 2**64 - 1)
packets = st.binary(max_size=1600)
mtus = st.integers(0, 1600)


def python_seal(key: bytes, receiver: int, counter: int, packet: bytes, mtu: int) -> bytes:
    """A transport message as the Python path builds it (SendPath._seal's steps)."""
    pad = padding(len(packet), mtu)
    return transport_header(receiver, counter) + Aead(key).seal(counter, packet + bytes(pad))


@settings(max_examples=300, deadline=None)
@given(keys, receivers, counters, packets, mtus)
def test_seal_matches_python(key, receiver, counter, packet, mtu) -> None:
    out = bytearray(len(packet) + 64)
    size = fast.Sealer(key).seal(out, 3, receiver, counter, packet, mtu)
    expected = python_seal(key, receiver, counter, packet, mtu)
    assert size == len(expected)
    assert bytes(out[3:3 + size]) == expected
    assert out[:3] == bytes(3) and not any(out[3 + size:])      # nothing outside written


@settings(max_examples=100, deadline=None)
@given(keys, receivers, st.integers(0, 2**64 - 200), st.lists(packets, max_size=40), mtus)
def test_seal_run_is_the_seals_back_to_back(key, receiver, counter, run, mtu) -> None:
    out = bytearray(sum(len(p) + 48 for p in run) + 8)
    sizes = fast.Sealer(key).seal_run(out, 8, receiver, counter, run, mtu)
    expected = [python_seal(key, receiver, counter + i, p, mtu) for i, p in enumerate(run)]
    assert sizes == [len(e) for e in expected]
    assert bytes(out[8:8 + sum(sizes)]) == b"".join(expected)


@settings(max_examples=300, deadline=None)
@given(keys, counters, st.binary(max_size=1600), st.integers(0, 2**64 - 1))
def test_open_matches_python(key, counter, plaintext, other_counter) -> None:
    sealed = Aead(key).seal(counter, plaintext)
    opener = fast.Opener(key)
    out = bytearray(len(plaintext) + 5)
    assert opener.open(counter, sealed, 0, len(sealed), out, 5) is True
    assert bytes(out[5:]) == plaintext
    # another counter, a flipped bit anywhere: rejected by both paths
    if other_counter != counter:
        assert opener.open(other_counter, sealed, 0, len(sealed), out, 0) is False
        with pytest.raises(DecryptionError):
            Aead(key).open(other_counter, sealed)
    for i in (0, len(sealed) // 2, len(sealed) - 1):
        bad = bytearray(sealed)
        bad[i] ^= 0x40
        assert opener.open(counter, bad, 0, len(bad), out, 0) is False
        with pytest.raises(DecryptionError):
            Aead(key).open(counter, bytes(bad))
    # the opener is still good after failures
    assert opener.open(counter, sealed, 0, len(sealed), out, 0) is True


def _run(key: bytes, receiver: int, plaintexts: list[bytes], start: int = 0) -> tuple[bytes, int]:
    """Transport messages laid out as a UDP GRO run: all `size` bytes but the last."""
    msgs = [python_seal(key, receiver, start + i, p, 1420) for i, p in enumerate(plaintexts)]
    size = len(msgs[0])
    assert all(len(m) == size for m in msgs[:-1]) and len(msgs[-1]) <= size
    return b"".join(msgs), size


@settings(max_examples=100, deadline=None)
@given(keys, receivers, st.integers(1, 1400), st.integers(1, 30), st.integers(0, 1400),
       st.sets(st.integers(0, 29)))
def test_open_run_matches_python(key, receiver, n, count, last_n, corrupt) -> None:
    plain = [os.urandom(n) for _ in range(count - 1)] + [os.urandom(min(n, last_n))]
    data, size = _run(key, receiver, plain)
    data = bytearray(data)
    for i in corrupt:
        if i < count:
            data[i * size + 20] ^= 1              # a ciphertext byte: the tag fails
    out = bytearray(len(data))
    stop, results = fast.Opener(key).open_run(data, 0, len(data), size, receiver, out, 0)
    assert stop == len(data) and len(results) == count
    for i, (counter, at, plen) in enumerate(results):
        assert counter == i
        if i in corrupt:
            assert plen == -1
        else:
            assert plen == len(padded := plain[i] + bytes(padding(len(plain[i]), 1420)))
            assert bytes(out[at:at + plen]) == padded
            assert at % 16 == 0


def test_open_run_stops_where_python_must_look() -> None:
    """A run stops (for the Python loop to judge) at a datagram that is not transport
    data to the receiver: another type, nonzero reserved bytes, another receiver index,
    shorter than 32 bytes."""
    key = os.urandom(32)
    opener = fast.Opener(key)
    data, size = _run(key, 7, [os.urandom(64) for _ in range(4)])
    out = bytearray(4096)
    for mutate in (lambda d: d.__setitem__(2 * size, 1),             # type 1
                   lambda d: d.__setitem__(2 * size + 1, 1),         # reserved byte
                   lambda d: d.__setitem__(2 * size + 4, 8)):        # receiver 8
        bad = bytearray(data)
        mutate(bad)
        stop, results = opener.open_run(bad, 0, len(bad), size, 7, out, 0)
        assert stop == 2 * size and [plen for _c, _a, plen in results] == [64, 64]
    short = data[:3 * size + 31]          # the last datagram 31 bytes
    stop, results = opener.open_run(short, 0, len(short), size, 7, out, 0)
    assert stop == 3 * size and len(results) == 3
    # not enough room in out: stops before the datagram that does not fit
    stop, results = opener.open_run(data, 0, len(data), size, 7, bytearray(100), 0)
    assert stop == size and len(results) == 1


def test_hostile_lengths_and_offsets_are_refused() -> None:
    key = os.urandom(32)
    sealer, opener = fast.Sealer(key), fast.Opener(key)
    out = bytearray(100)
    with pytest.raises(ValueError):
        sealer.seal(out, 0, 1, 0, bytes(69), 1420)                 # 69 + 11 + 32 > 100
    with pytest.raises(ValueError):
        sealer.seal(out, 101, 1, 0, b"", 1420)
    with pytest.raises(ValueError):
        sealer.seal(out, -1, 1, 0, b"", 1420)
    with pytest.raises(ValueError):
        sealer.seal(bytearray(70000), 0, 1, 0, bytes(65536), 70000)   # longer than IP allows
    with pytest.raises(OverflowError):
        sealer.seal(out, 0, 2**32, 0, b"", 1420)
    with pytest.raises(OverflowError):
        sealer.seal(out, 0, 1, 2**64, b"", 1420)
    with pytest.raises(OverflowError):
        sealer.seal(out, 0, 1, -1, b"", 1420)
    with pytest.raises(OverflowError):
        sealer.seal_run(bytearray(1000), 0, 1, 2**64 - 1, [b"", b""], 1420)
    with pytest.raises(ValueError):
        sealer.seal_run(bytearray(10**6), 0, 1, 0, [b""] * (fast.MAX_RUN + 1), 1420)
    with pytest.raises(ValueError):       # the run does not fit: nothing written
        sealer.seal_run(out, 0, 1, 0, [b"", bytes(80)], 1420)
    assert out == bytearray(100)
    with pytest.raises(ValueError):       # packet and output overlap
        sealer.seal(out, 0, 1, 0, memoryview(out)[10:20], 1420)
    with pytest.raises(TypeError):
        sealer.seal(b"read-only" * 20, 0, 1, 0, b"", 1420)
    with pytest.raises(ValueError):
        fast.Sealer(bytes(31))
    for offset, length in ((0, 15), (-1, 20), (90, 20), (0, 101), (2**40, 16)):
        with pytest.raises(ValueError):
            opener.open(0, bytes(100), offset, length, bytearray(200), 0)
    with pytest.raises(ValueError):
        opener.open(0, bytes(100), 0, 100, bytearray(83), 0)     # 84 bytes of plaintext
    for args in ((bytes(100), 0, 101, 32), (bytes(100), 50, 40, 32), (bytes(100), 0, 100, 0),
                 (bytes(100), -1, 100, 32)):
        with pytest.raises(ValueError):
            opener.open_run(*args, 0, bytearray(100), 0)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=3000), st.integers(-5, 3100), st.integers(1, 3100), receivers)
def test_garbage_never_crashes_and_never_authenticates(data, offset, size, receiver) -> None:
    opener = fast.Opener(os.urandom(32))
    out = bytearray(4000)
    if not 0 <= offset <= len(data):
        with pytest.raises(ValueError):
            opener.open_run(data, offset, len(data), size, receiver, out, 0)
        return
    stop, results = opener.open_run(data, offset, len(data), size, receiver, out, 0)
    assert all(plen == -1 for _c, _a, plen in results)
    assert offset <= stop <= len(data)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=600), st.lists(st.integers(0, 600), max_size=20))
def test_piece_sums_match_ones_sum(buf, starts) -> None:
    starts = sorted(s for s in starts if s <= len(buf))
    ends = starts[1:] + [len(buf)]
    expected = [ones_sum(memoryview(buf)[a:b]) for a, b in zip(starts, ends)]
    assert fast.piece_sums(buf, starts) == expected


def test_piece_sums_refuses_bad_starts() -> None:
    for starts in ([5, 4], [-1], [11], [0] * 65537):
        with pytest.raises(ValueError):
            fast.piece_sums(bytes(10), starts)


@settings(max_examples=200, deadline=None)
@given(st.booleans(), st.integers(1, 6000), st.integers(1, 1500), st.integers(0, 255),
       st.integers(0, 2**32 - 1), st.integers(0, 0xFFFF), st.sampled_from([b"", bytes(4), bytes(12)]))
def test_tcp_split_matches_python(v6, payload_len, mss, flags, seq, ip_id, options) -> None:
    """The same segments, byte for byte, as the Python splitter (meshwg.tun.tso.split_tcp)."""
    packet = tcp_packet(os.urandom(payload_len), seq=seq, flags=flags, v6=v6, ip_id=ip_id,
                        options=options, partial=True)
    l4 = 40 if v6 else 20
    expected = split_tcp(memoryview(packet), l4, mss)
    assert fast.tcp_split(packet, l4, mss) == b"".join(expected)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200), st.integers(-2, 220), st.integers(-2, 300))
def test_tcp_split_of_garbage_is_refused_or_bounded(packet, l4, mss) -> None:
    try:
        out = fast.tcp_split(packet, l4, mss)
    except ValueError:
        return
    hlen = l4 + (packet[l4 + 12] >> 4) * 4
    payload = len(packet) - hlen
    assert len(out) == max(1, -(-payload // mss)) * hlen + payload


# A batch of decrypted packets as the receive path hands them to the TUN device: runs of
# segments of a few flows (in order or not, some short, some with PSH, FIN or a bad
# checksum, ack or window changing), with other packets in between.
segment = st.tuples(
    st.integers(0, 2),                                   # flow (source port)
    st.sampled_from([100, 100, 100, 37, 1]),             # payload length
    st.sampled_from([0x10] * 8 + [0x18, 0x11, 0x12, 0x90, 0x50, 0x00]),   # flags
    st.sampled_from([0] * 8 + [1, -100]),                # sequence step beyond in-order
    st.sampled_from([True] * 9 + [False]),               # valid checksum (mostly)
    st.sampled_from([555, 555, 555, 556]),               # ack
    st.sampled_from([b"", b"", bytes(12)]),              # options
)


def _gro_batch(v6: bool, specs: list) -> list[bytes]:
    next_seq = {0: 1000, 1: 2**32 - 150, 2: 7}
    packets = []
    for flow, n, flags, step, valid, ack, options in specs:
        if flow == 2 and n == 1:
            packets.append(bytes([0x45]) + os.urandom(40))     # not TCP/IP as GRO wants it
            continue
        seq = (next_seq[flow] + step) % 2**32
        packets.append(tcp_packet(os.urandom(n), seq=seq, flags=flags, v6=v6, ack=ack,
                                  options=options, valid=valid or n == 37, sport=40000 + flow))
        next_seq[flow] = (seq + n) % 2**32
    return packets


@settings(max_examples=300, deadline=None)
@given(st.booleans(), st.lists(segment, max_size=60), st.booleans(), st.booleans())
def test_coalesce_matches_python(v6, specs, verify, as_views) -> None:
    packets = _gro_batch(v6, specs)
    if as_views:
        packets = [memoryview(bytearray(p)) for p in packets]
    assert fast.coalesce(packets, verify) == coalesce_packets(packets, verify)


def test_coalesce_of_a_large_batch_matches_python() -> None:
    for v6 in (False, True):
        packets = [tcp_packet(os.urandom(1368), seq=1000 + i * 1368, flags=0x10, v6=v6)
                   for i in range(200)]
        out = fast.coalesce(packets, True)
        assert out == coalesce_packets(packets, True) and len(out) == 5   # 64 KiB each


@settings(max_examples=300, deadline=None)
@given(st.lists(st.binary(min_size=1, max_size=120), max_size=20))
def test_coalesce_of_garbage_matches_python(packets) -> None:
    assert fast.coalesce(packets, True) == coalesce_packets(packets, True)
