"""Sliding-window replay protection for transport counters (RFC 6479 style).

The window is a ring of 128 blocks of 64 bits. One block is always the partly filled
"current" block, so the guaranteed window behind the highest counter seen is
127 * 64 = 8128 counters, as in the Linux kernel and wireguard-go.

The compiled data path applies the same window to a whole run of counters in one call
(meshwg.accel's open_run and replay_run): the state (`ring`, an array of 128 native 64-bit
blocks, `last` and `limit`) is passed in and the new `last` handed back, so both paths
keep one window and the same decisions.
"""

from __future__ import annotations

from array import array

from meshwg.core.constants import REJECT_AFTER_MESSAGES

BLOCK_BITS_LOG = 6
BLOCK_BITS = 1 << BLOCK_BITS_LOG          # 64 counters per block
RING_BLOCKS = 128                         # blocks in the ring (a power of two)
WINDOW_SIZE = (RING_BLOCKS - 1) * BLOCK_BITS  # 8128
_BLOCK_MASK = RING_BLOCKS - 1
_BIT_MASK = BLOCK_BITS - 1
_EMPTY_RING = array("Q", bytes(RING_BLOCKS * 8))   # copied, never changed


class ReplayWindow:
    """Accepts each counter below REJECT_AFTER_MESSAGES at most once, within the window."""

    __slots__ = ("last", "ring", "limit")

    def __init__(self, limit: int = REJECT_AFTER_MESSAGES) -> None:
        self.limit = limit                  # counters at or above it are refused
        self.last = 0                       # the newest counter accepted
        self.ring = _EMPTY_RING[:]         # a new array of zero blocks

    def reset(self) -> None:
        """Forget every counter seen (for a new keypair)."""
        self.last = 0
        ring = self.ring
        for i in range(RING_BLOCKS):
            ring[i] = 0

    def check(self, counter: int) -> bool:
        """True when `counter` is new and recent enough (and record it); False otherwise.

        Call it only after the packet authenticated, so forged counters cannot move the
        window.
        """
        if counter >= self.limit or counter < 0:
            return False
        ring = self.ring
        block = counter >> BLOCK_BITS_LOG
        last = self.last
        if counter > last:
            current = last >> BLOCK_BITS_LOG
            advance = block - current
            if advance > RING_BLOCKS:
                advance = RING_BLOCKS
            # Clear the blocks the window moves over (none when in the current block).
            for i in range(current + 1, current + advance + 1):
                ring[i & _BLOCK_MASK] = 0
            self.last = counter
        elif last - counter > WINDOW_SIZE:
            return False
        index = block & _BLOCK_MASK
        bit = 1 << (counter & _BIT_MASK)
        old = ring[index]
        if old & bit:
            return False
        ring[index] = old | bit
        return True
