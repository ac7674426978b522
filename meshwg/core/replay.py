"""Sliding-window replay protection for transport counters (RFC 6479 style).

The window is a ring of 128 blocks of 64 bits. One block is always the partly filled
"current" block, so the guaranteed window behind the highest counter seen is
127 * 64 = 8128 counters, as in the Linux kernel and wireguard-go.
"""

from __future__ import annotations

from meshwg.core.constants import REJECT_AFTER_MESSAGES

BLOCK_BITS_LOG = 6
BLOCK_BITS = 1 << BLOCK_BITS_LOG          # 64 counters per block
RING_BLOCKS = 128                         # blocks in the ring (a power of two)
WINDOW_SIZE = (RING_BLOCKS - 1) * BLOCK_BITS  # 8128
_BLOCK_MASK = RING_BLOCKS - 1
_BIT_MASK = BLOCK_BITS - 1


class ReplayWindow:
    """Accepts each counter below REJECT_AFTER_MESSAGES at most once, within the window."""

    __slots__ = ("_last", "_ring", "_limit")

    def __init__(self, limit: int = REJECT_AFTER_MESSAGES) -> None:
        self._limit = limit
        self._last = 0
        self._ring = [0] * RING_BLOCKS

    def reset(self) -> None:
        """Forget every counter seen (for a new keypair)."""
        self._last = 0
        ring = self._ring
        for i in range(RING_BLOCKS):
            ring[i] = 0

    def check(self, counter: int) -> bool:
        """True when `counter` is new and recent enough (and record it); False otherwise.

        Call it only after the packet authenticated, so forged counters cannot move the
        window.
        """
        if counter >= self._limit or counter < 0:
            return False
        ring = self._ring
        block = counter >> BLOCK_BITS_LOG
        last = self._last
        if counter > last:
            current = last >> BLOCK_BITS_LOG
            advance = block - current
            if advance > RING_BLOCKS:
                advance = RING_BLOCKS
            # Clear the blocks the window moves over (none when in the current block).
            for i in range(current + 1, current + advance + 1):
                ring[i & _BLOCK_MASK] = 0
            self._last = counter
        elif last - counter > WINDOW_SIZE:
            return False
        index = block & _BLOCK_MASK
        bit = 1 << (counter & _BIT_MASK)
        old = ring[index]
        if old & bit:
            return False
        ring[index] = old | bit
        return True
