"""Internet checksums (RFC 1071) with Python integers, free of I/O.

A byte string read as a big-endian integer is congruent modulo 0xFFFF to the
one's-complement sum of its 16-bit words, because 2**16 == 1 (mod 0xFFFF): one
`int.from_bytes` and one `%` per buffer run in C. The sums of many pieces of one buffer
(the segments of a TSO split, the packets of a GRO group) are one call into the compiled
data path (meshwg.accel piece_sums, unless MESHWG_FASTPATH=0), else one vectorised numpy
pass (numpy is imported at the first such sum, not with this module), else one ones_sum
per piece.
"""

from __future__ import annotations

import sys
from typing import Any, Sequence

from meshwg import accel
from meshwg.tun.headers import pack_u16_into

_UNLOADED = object()
_np: Any = _UNLOADED    # numpy, None without it; imported at the first vectorised sum
_compiled: Any = _UNLOADED   # the compiled data path, None without it; chosen at first use


def compiled_module() -> Any:
    """The compiled data path (meshwg.accel: piece_sums here, tcp_split for meshwg.tun.tso,
    coalesce for the TUN device's writes), or None when it is not built or
    MESHWG_FASTPATH=0; chosen once per process, at the first use."""
    global _compiled
    if _compiled is _UNLOADED:
        _compiled = accel.select(warn=False)
    return _compiled


def numpy_module() -> Any:
    """numpy (optional: vectorised checksums for the TUN offloads), or None when it is not
    installed. Imported on the first use, not with this module: it costs 0.3-0.8 s of a
    process's start-up that a small packet never needs."""
    global _np
    if _np is _UNLOADED:
        try:
            import numpy
            _np = numpy
        except ImportError:     # pragma: no cover - depends on the environment
            _np = None
    return _np

_from_bytes = int.from_bytes
_LITTLE_ENDIAN = sys.byteorder == "little"


def ones_sum(data) -> int:
    """The one's-complement sum of `data`'s 16-bit big-endian words (odd length: padded
    with a zero byte), reduced modulo 0xFFFF (0 stands for both 0x0000 and 0xFFFF).
    Sums of pieces that each start at an even offset add up modulo 0xFFFF."""
    value = _from_bytes(data, "big")
    if len(data) & 1:
        value <<= 8
    return value % 0xFFFF


def checksum_from_sum(total: int) -> int:
    """The checksum field for a one's-complement sum (any non-negative integer)."""
    return -total % 0xFFFF


def word_sums(buf, starts: Sequence[int]) -> list[int]:
    """ones_sum of each piece buf[starts[i]:starts[i+1]] (the last piece runs to the end).
    `starts` must be increasing, even and below len(buf). One compiled call or one
    vectorised numpy pass (what makes the TUN offloads pay); else one ones_sum per piece."""
    fast = compiled_module()
    if fast is not None:
        return fast.piece_sums(buf, starts)
    if len(starts) >= 4 and numpy_module() is not None:
        return _np_piece_sums(buf, starts)
    mv = memoryview(buf)
    ends = list(starts[1:]) + [len(buf)]
    return [ones_sum(mv[a:b]) for a, b in zip(starts, ends)]


def segment_sums(buf, size: int) -> list[int]:
    """ones_sum of each `size`-byte piece of buf (the last may be shorter); size even."""
    fast = compiled_module()
    if fast is not None:
        return fast.piece_sums(buf, range(0, len(buf), size))
    if len(buf) >= 4 * size and numpy_module() is not None:
        return _np_piece_sums(buf, range(0, len(buf), size))
    mv = memoryview(buf)
    return [ones_sum(mv[a:a + size]) for a in range(0, len(buf), size)]


def _np_piece_sums(buf, starts: Sequence[int]) -> list[int]:
    """word_sums with numpy. Words are read in the machine's byte order: in one's-complement
    arithmetic a byte swap is a multiplication by 256 (mod 0xFFFF, as 256 * 256 == 1), so
    the sums are converted at the end. With every start a multiple of 4, 32-bit words are
    summed (a 32-bit word is congruent to the sum of its two 16-bit halves)."""
    n = len(buf)
    swap = 256 if _LITTLE_ENDIAN else 1
    if (starts.start & 3 == 0 and starts.step & 3 == 0 if type(starts) is range
            else all(start & 3 == 0 for start in starts)):
        shift, dtype = 2, _np.uint32
    else:
        shift, dtype = 1, _np.uint16
    count = n >> shift
    if starts[-1] >= count << shift:      # the last piece is shorter than one word
        mv = memoryview(buf)
        ends = list(starts[1:]) + [n]
        return [ones_sum(mv[a:b]) for a, b in zip(starts, ends)]
    words = _np.frombuffer(buf, dtype=dtype, count=count)
    index = _np.asarray(starts, dtype=_np.intp) >> shift
    sums = _np.add.reduceat(words, index, dtype=_np.uint64)
    sums %= 0xFFFF
    if swap != 1:
        sums *= swap
        sums %= 0xFFFF
    out = sums.tolist()
    tail = count << shift
    if tail < n:          # bytes after the last whole word belong to the last piece
        out[-1] = (out[-1] + ones_sum(memoryview(buf)[tail:])) % 0xFFFF
    return out


def complete_checksum(packet: bytearray | memoryview, csum_start: int, csum_offset: int) -> None:
    """Finish a partial checksum (VIRTIO_NET_HDR_F_NEEDS_CSUM): the field at
    csum_start + csum_offset holds the pseudo-header sum; store the checksum of everything
    from csum_start on."""
    field = csum_start + csum_offset
    value = checksum_from_sum(ones_sum(memoryview(packet)[csum_start:]))
    if value == 0 and csum_offset == 6:   # UDP: zero means "no checksum"
        value = 0xFFFF
    pack_u16_into(packet, field, value)
