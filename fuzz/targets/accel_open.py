"""The compiled data path (meshwg.accel._fastpath, issue 11) against the pure Python path
on fuzzed input: Sealer.seal / seal_run, Opener.open / open_run (with and without the
replay window, and reading the inner IP headers: meshwg.core.receive.inner_header),
replay_run, tcp_split (TSO), coalesce (GRO) and piece_sums. Each must
accept and refuse (ValueError) what the Python path does and give the same bytes (and the
same replay window after); nothing may crash the process. Refusal: none -- any
disagreement is an AssertionError, so a crash.

A crash in C kills the fuzzing process with its input: each input is first copied into a
memory-mapped file, LAST_INPUT ($TMPDIR/meshwg-fuzz/accel_open-last-input: 8 bytes of
length, then the input), which therefore holds the input that killed it. The CI short run
starts this target in a subprocess (tests/fuzz/test_fuzz_short.py). Without the extension
built (no compiler, no libssl-dev) the target checks nothing.

Input: byte 0 chooses the entry point (modulo 8, OPS); bytes 1-16 are parameters
(receiver u32, counter u64, A u16, B u8, C u8, little-endian; missing bytes are zeros);
the rest is the body (packets split at SEPARATOR where the call takes several). Messages to
open are sealed by the Python path first (then damaged as B and C say), so the opener gets
past the tag to the bytes that matter."""

from __future__ import annotations

import contextlib
from array import array
import mmap
import os
import struct

from fuzz.engine import MAX_LEN, default_workdir
from meshwg import accel
from meshwg.core.crypto import Aead, DecryptionError
from meshwg.core.messages import transport_header
from meshwg.core.receive import inner_header
from meshwg.core.replay import ReplayWindow
from meshwg.core.send import padding
from meshwg.tun import checksum
from meshwg.tun.checksum import ones_sum
from meshwg.tun.gro import coalesce_packets
from meshwg.tun.tso import split_tcp

ALLOWED = ()
SEPARATOR = b"|\x00|"
OPS = ("seal", "seal_run", "open", "open_run", "tcp_split", "coalesce", "piece_sums",
       "replay_run")
TOKENS = (SEPARATOR, b"\x04\x00\x00\x00", b"\x45\x00", b"\x60\x00\x00\x00", b"\x06",
          b"\xff\xff", b"\x10", b"\x18", b"\x11")
KEY = bytes(range(32))
_PARAMS = struct.Struct("<IQHBB")
_U32, _U64 = struct.Struct("<I"), struct.Struct("<Q")

fast = accel.select(True, warn=False)
LAST_INPUT = default_workdir("accel_open-last-input")
_last: mmap.mmap | None = None


def _remember(data: bytes) -> None:
    global _last
    if _last is None:
        LAST_INPUT.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(LAST_INPUT, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            os.ftruncate(fd, 8 + MAX_LEN)
            _last = mmap.mmap(fd, 8 + MAX_LEN)
        finally:
            os.close(fd)
    data = data[:MAX_LEN]
    _last[8:8 + len(data)] = data
    _last[:8] = _U64.pack(len(data))


def python_seal(receiver: int, counter: int, packet: bytes, mtu: int) -> bytes:
    """A transport message as the Python send path builds it."""
    return transport_header(receiver, counter) + Aead(KEY).seal(counter, packet + bytes(padding(len(packet), mtu)))


def python_open(counter: int, sealed: bytes) -> bytes | None:
    try:
        return Aead(KEY).open(counter, sealed)
    except DecryptionError:
        return None


@contextlib.contextmanager
def _pure_sums():
    """The Python reference sums with numpy or ints, never with the extension it is
    checked against (meshwg.tun.checksum picks the extension once per process)."""
    saved, checksum._compiled = checksum.compiled_module(), None
    try:
        yield
    finally:
        checksum._compiled = saved


def _refused(call) -> bool:
    """Whether `call()` raised ValueError (anything else propagates: a crash)."""
    try:
        call()
    except ValueError:
        return True
    return False


def _seal(receiver, counter, a, b, c, body) -> None:
    out = bytearray(b + len(body) + c)
    expected = python_seal(receiver, counter, body, a)
    if b + len(expected) > len(out):
        assert _refused(lambda: fast.Sealer(KEY).seal(out, b, receiver, counter, body, a))
        assert not any(out), "a refused seal wrote"
        return
    size = fast.Sealer(KEY).seal(out, b, receiver, counter, body, a)
    assert size == len(expected) and bytes(out[b:b + size]) == expected
    assert not any(out[:b]) and not any(out[b + size:])


def _seal_run(receiver, counter, a, b, c, body) -> None:
    packets = body.split(SEPARATOR)
    counter %= 2**64 - len(packets)
    expected = [python_seal(receiver, counter + i, p, a) for i, p in enumerate(packets)]
    out = bytearray(max(0, sum(map(len, expected)) + c - 64))
    if sum(map(len, expected)) > len(out):
        assert _refused(lambda: fast.Sealer(KEY).seal_run(out, 0, receiver, counter, packets, a))
        assert not any(out), "a refused run wrote"
        return
    sizes = fast.Sealer(KEY).seal_run(out, 0, receiver, counter, packets, a)
    assert sizes == [len(e) for e in expected]
    assert bytes(out[:sum(sizes)]) == b"".join(expected)


def _open(receiver, counter, a, b, c, body) -> None:
    sealed = bytearray(Aead(KEY).seal(counter, body))
    if b:
        sealed[a % len(sealed)] ^= b
    lead = (c >> 2) & 0x1F
    data = b"\xaa" * lead + bytes(sealed) + b"\xbb" * (c & 3)
    used = counter ^ (c >> 7)                       # the top bit of C: the wrong counter
    if c & 0x40:                                    # hostile bounds: A is the length
        offset, length, out_offset = lead - (b & 7), a, 0
    else:
        offset, length, out_offset = lead, len(sealed), b & 7
    out = bytearray(out_offset + max(0, len(sealed) - 16))
    good = 16 <= length and 0 <= offset and offset + length <= len(data) \
        and out_offset + length - 16 <= len(out)
    opener = fast.Opener(KEY)
    if not good:
        assert _refused(lambda: opener.open(used, data, offset, length, out, out_offset))
        return
    result = opener.open(used, data, offset, length, out, out_offset)
    expected = python_open(used, data[offset:offset + length])
    assert result is (expected is not None), "the paths disagree on the tag"
    if expected is not None:
        assert bytes(out[out_offset:out_offset + len(expected)]) == expected


def _python_run(data: bytes, size: int, receiver: int, room: int,
                window: ReplayWindow | None = None, expire: int = 2**64) -> tuple[int, list]:
    """What open_run must take from a GRO run: (stop, [(counter, plaintext or the length
    the compiled path reports: -1 bad tag, -2 replayed, -3 expired)]), the Python receive
    path's checks in its order (expiry, tag, then the replay window)."""
    pos, at, results = 0, 0, []
    while pos < len(data) and len(results) < fast.MAX_RUN:
        datagram = data[pos:pos + size]
        if len(datagram) < 32 or datagram[:4] != b"\x04\x00\x00\x00" \
                or _U32.unpack_from(datagram, 4)[0] != receiver or at + len(datagram) - 32 > room:
            break
        counter = _U64.unpack_from(datagram, 8)[0]
        plain = -3 if counter >= expire else python_open(counter, datagram[16:])
        if plain is None:
            plain = -1
        elif window is not None and plain != -3 and not window.check(counter):
            plain = -2
        results.append((counter, plain))
        if isinstance(plain, bytes):    # a refused one's room in out is used by the next one
            at += -(-len(plain) // 16) * 16
        pos += len(datagram)
    return pos, results


def _open_run(receiver, counter, a, b, c, body) -> None:
    plaintexts = body.split(SEPARATOR)[:64]
    counter %= 2**64 - len(plaintexts)
    data = bytearray(b"".join(python_seal(receiver, counter + i, p, 1420)
                              for i, p in enumerate(plaintexts)))
    size = a if c & 1 else len(python_seal(receiver, counter, plaintexts[0], 1420))
    if c & 2:
        data[(b * 257 + c) % len(data)] ^= 1 << (b & 7)
    out = bytearray(len(data) // 2 if c & 4 else len(data) + 16 * len(plaintexts))
    opener = fast.Opener(KEY)
    if size <= 0:
        assert _refused(lambda: opener.open_run(data, 0, len(data), size, receiver, out, 0))
        return
    if c & 8:       # with the replay window: some counters seen before, some past expiry
        window = ReplayWindow()
        for seen in (counter + (b & 7), counter + 200 if c & 16 else 0):
            window.check(seen)
        ring, last = array("Q", window.ring), window.last
        expire = min(counter + (b >> 3) + 1, 2**64 - 1) if c & 32 else 2**64 - 1
        inner = (True,) if c & 64 else ()       # and the inner headers read
        stop, results, last = opener.open_run(data, 0, len(data), size, receiver, out, 0,
                                              ring, last, window.limit, expire, *inner)
        want_stop, wanted = _python_run(bytes(data), size, receiver, len(out), window, expire)
        assert last == window.last and ring == window.ring, "the windows differ"
    else:
        stop, results = opener.open_run(data, 0, len(data), size, receiver, out, 0)
        want_stop, wanted = _python_run(bytes(data), size, receiver, len(out))
    assert stop == want_stop and len(results) == len(wanted), (stop, want_stop, len(results), len(wanted))
    end = 0
    source = None          # the inner source of the last result that had one
    for result, (want_counter, plain) in zip(results, wanted):
        got_counter, at, length = result[:3]
        assert got_counter == want_counter
        assert length == (len(plain) if isinstance(plain, bytes) else plain)
        if isinstance(plain, bytes):
            assert at >= end and bytes(out[at:at + length]) == plain
            end = at + length
        if len(result) > 3:
            source = _check_inner(result, plain, source)


def _check_inner(result: tuple, plain, source: bytes | None) -> bytes | None:
    """open_run(inner=True)'s inner length and source of one result as the Python path's
    inner_header reads them ((-1, None) for refused and empty plaintexts), consecutive
    equal sources one object; returns the source to compare the next one with."""
    want = inner_header(plain, 0, len(plain)) if isinstance(plain, bytes) and plain else (-1, None)
    assert result[3:] == want, (result, want)
    if want[1] is None:
        return source
    assert (result[4] is source) == (want[1] == source), "equal sources not shared"
    return result[4]


def _tcp_split(receiver, counter, a, b, c, body) -> None:
    l4 = (40 if body[:1] and body[0] >> 4 == 6 else 20) if c & 1 else b
    body = body[:120 + 64 * max(a, 1)]        # at most ~64 segments: Python's split is slow
    try:
        with _pure_sums():
            expected = b"".join(split_tcp(memoryview(body), l4, a))
    except ValueError:                        # OffloadError, or mss 0
        assert _refused(lambda: fast.tcp_split(body, l4, a)), "Python refuses, C accepts"
        return
    except (IndexError, ZeroDivisionError, struct.error):
        _refused(lambda: fast.tcp_split(body, l4, a))     # Python cannot judge: C must not crash
        return
    assert fast.tcp_split(body, l4, a) == expected


def _coalesce(receiver, counter, a, b, c, body) -> None:
    packets = [p for p in body.split(SEPARATOR) if p]      # the receive path writes none empty
    with _pure_sums():
        expected = coalesce_packets(packets, bool(c & 1))
    assert fast.coalesce(packets, bool(c & 1)) == expected


def _piece_sums(receiver, counter, a, b, c, body) -> None:
    raw = _PARAMS.pack(receiver, counter, a, b, 0)
    starts = [int.from_bytes(raw[2 * i:2 * i + 2], "little") % (len(body) + 2) for i in range(c % 8)]
    if b & 1:
        starts.sort()
    if any(x > y for x, y in zip(starts, starts[1:])) or any(s > len(body) for s in starts):
        assert _refused(lambda: fast.piece_sums(body, starts))
        return
    ends = starts[1:] + [len(body)]
    assert fast.piece_sums(body, starts) == [ones_sum(body[x:y]) for x, y in zip(starts, ends)]


def _replay_run(receiver, counter, a, b, c, body) -> None:
    """Hostile counters (8 bytes each; the top bit of each chooses an offset from
    `counter`, A apart, so that runs hit the window) against ReplayWindow.check."""
    counters = []
    for i in range(0, len(body) - 7, 8):
        value = _U64.unpack_from(body, i)[0]
        counters.append(value & (2**64 - 1 >> 1) if value >> 63 else
                        (counter + (value & 0xFFFF) * (a + 1)) % 2**64)
    window = ReplayWindow(limit=2**64 - 1 - b if c & 1 else ReplayWindow().limit)
    window.check(counter)
    ring, last = array("Q", window.ring), window.last
    if len(counters) > fast.MAX_RUN:
        assert _refused(lambda: fast.replay_run(ring, last, window.limit, counters))
        return
    last, fresh = fast.replay_run(ring, last, window.limit, counters)
    assert fresh == [window.check(x) for x in counters]
    assert last == window.last and ring == window.ring, "the windows differ"


_CALLS = (_seal, _seal_run, _open, _open_run, _tcp_split, _coalesce, _piece_sums, _replay_run)


def one_input(data: bytes) -> None:
    if fast is None or not data:
        return
    _remember(data)
    params = _PARAMS.unpack((data[1:1 + _PARAMS.size]).ljust(_PARAMS.size, b"\x00"))
    _CALLS[data[0] % len(_CALLS)](*params, data[1 + _PARAMS.size:])


def encode(op: str, body: bytes, receiver: int = 7, counter: int = 0, a: int = 0, b: int = 0,
           c: int = 0) -> bytes:
    return bytes([OPS.index(op)]) + _PARAMS.pack(receiver, counter, a, b, c) + body


def seeds() -> dict[str, bytes]:
    from tests.meshwg.tun.reference import tcp_packet      # an independent packet builder

    ping = bytes.fromhex("4500001c0001000040017cde0a0000010a000002") + bytes(8)
    ping6 = bytes.fromhex("6000000000083a40") + bytes(15) + b"\x01" + bytes(15) + b"\x02" + bytes(8)
    segments = [tcp_packet(bytes([i]) * 100, seq=1000 + 100 * i, flags=0x10) for i in range(4)]
    segments6 = [tcp_packet(bytes([i]) * 64, seq=5 + 64 * i, flags=0x10, v6=True) for i in range(3)]
    return {
        "seal": encode("seal", ping, a=1420, b=3, c=40),
        "seal-short-mtu": encode("seal", ping * 3, a=50, b=0, c=64),
        "seal-run": encode("seal_run", SEPARATOR.join([ping, b"", ping * 2]), counter=2**64 - 9,
                           a=1420, c=200),
        "open": encode("open", ping, counter=12345, a=0, b=0, c=5 << 2),
        "open-damaged": encode("open", ping * 2, counter=3, a=17, b=0x40, c=1),
        "open-bounds": encode("open", ping, a=20, b=3, c=0x40 | (4 << 2)),
        "open-run": encode("open_run", SEPARATOR.join([ping] * 5), counter=100),
        "open-run-damaged": encode("open_run", SEPARATOR.join([ping, ping, ping[:9]]), b=40, c=2),
        "open-run-size": encode("open_run", SEPARATOR.join([ping] * 3), a=60, c=1 | 4),
        "tcp-split-v4": encode("tcp_split", tcp_packet(bytes(range(256)) * 12, flags=0x19, partial=True),
                               a=1000, c=1),
        "tcp-split-v6": encode("tcp_split", tcp_packet(bytes(3000), v6=True, options=bytes(12),
                                                       partial=True), a=1400, c=1),
        "coalesce": encode("coalesce", SEPARATOR.join(segments + [ping] + segments6), c=1),
        "open-run-window": encode("open_run", SEPARATOR.join([ping] * 6), counter=50, b=(4 << 3) | 1,
                                  c=8 | 16 | 32),
        "open-run-inner": encode("open_run", SEPARATOR.join(
            [x.ljust(48, b"\x00") for x in (  # all 48 bytes (one size) but the last, 16
                ping, ping, ping6, ping6, b"\x75" + ping[1:], ping[:3] + b"\xff" + ping[4:],
                ping[:12] + b"\x0a\x00\x00\x09" + ping[16:], ping)] + [ping[:16]]),
            counter=7, b=(2 << 3) | 1, c=8 | 64),
        "replay-run": encode("replay_run", b"".join(_U64.pack(x) for x in (1, 0, 2, 2, 70, 8200, 5, 9000)),
                             counter=10, a=0),
        "piece-sums": encode("piece_sums", ping * 4, receiver=0x00140000, counter=0x0050003C0028,
                             b=1, c=6),
    }
