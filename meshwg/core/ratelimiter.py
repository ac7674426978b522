"""Per-source token bucket for handshake messages while the device is under load.

Same rules as the Linux kernel's ratelimiter: `rate` packets per second with a burst of
`burst`; an IPv4 source is keyed by its address, an IPv6 source by its /64 prefix (one
host usually owns a whole /64). Entries idle for more than a second are dropped. There is
no background thread: garbage collection happens a few entries at a time inside allow().
"""

from __future__ import annotations

from collections import OrderedDict

from meshwg.core.constants import RATELIMIT_BURST, RATELIMIT_PACKETS_PER_SECOND

GC_IDLE_NS = 1_000_000_000        # forget a source after 1 s without packets
GC_BATCH = 8                      # stale entries removed per allow() call, at most
DEFAULT_MAX_ENTRIES = 65536       # sources tracked at once; new ones beyond are refused


def _key(source_ip: bytes) -> bytes:
    return bytes(source_ip[:8]) if len(source_ip) == 16 else bytes(source_ip)


class RateLimiter:
    """allow(source, now) says whether a packet from `source` fits its token bucket."""

    __slots__ = ("_cost", "_max_tokens", "_max_entries", "_table")

    def __init__(self, rate: int = RATELIMIT_PACKETS_PER_SECOND, burst: int = RATELIMIT_BURST,
                 max_entries: int = DEFAULT_MAX_ENTRIES) -> None:
        if rate <= 0 or burst <= 0:
            raise ValueError(f"rate ({rate}) and burst ({burst}) must be positive")
        self._cost = 1_000_000_000 // rate            # nanoseconds of credit per packet
        self._max_tokens = self._cost * burst
        self._max_entries = max_entries
        # source key -> [tokens in ns, last time in ns]; ordered oldest touch first.
        self._table: OrderedDict[bytes, list[int]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._table)

    def allow(self, source_ip: bytes, now: float) -> bool:
        """True if a packet from `source_ip` (4 or 16 address bytes) at time `now` may pass."""
        now_ns = int(now * 1e9)
        table = self._table
        self._collect(now_ns, GC_BATCH)
        key = _key(source_ip)
        entry = table.get(key)
        if entry is None:
            if len(table) >= self._max_entries:
                return False
            table[key] = [self._max_tokens - self._cost, now_ns]
            return True
        table.move_to_end(key)
        elapsed = now_ns - entry[1]
        tokens = entry[0] + (elapsed if elapsed > 0 else 0)
        if tokens > self._max_tokens:
            tokens = self._max_tokens
        entry[1] = now_ns
        if tokens >= self._cost:
            entry[0] = tokens - self._cost
            return True
        entry[0] = tokens
        return False

    def collect(self, now: float) -> None:
        """Drop every entry idle for more than a second (allow() does this a few at a time)."""
        self._collect(int(now * 1e9), len(self._table))

    def _collect(self, now_ns: int, budget: int) -> None:
        table = self._table
        while budget > 0 and table:
            key = next(iter(table))
            if now_ns - table[key][1] <= GC_IDLE_NS:
                return
            del table[key]
            budget -= 1
