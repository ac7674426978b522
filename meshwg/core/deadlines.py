"""Which peers have a timer due: a heap of deadlines with lazy invalidation. No I/O.

WireGuardProtocol.tick(now) must visit every peer with a timer at or before `now`, and
next_deadline() must give the earliest armed timer of all peers. Scanning every peer costs
O(peers) per call; at 10,000 peers with persistent keepalives the timer thread would spend
most of its time scanning. Here each peer has at most one *live* heap entry, its
`queued_at`, never later than any of its armed deadlines:

- arming a timer earlier than `queued_at` pushes a new entry (Peer's timer properties
  call `schedule`); moving a timer later, or disarming it, does nothing: the old entry
  stays and is re-examined when it reaches the top of the heap (lazy invalidation);
- an entry whose time is not its peer's `queued_at`, or whose peer left the queue, is
  stale and dropped when popped.

`wake(peer)` asks for a visit at the next tick whatever the time (a persistent keepalive
configured but not armed: _tick_peer arms it). Due peers come back in `order` (the
protocol's insertion order), so tick visits them in the same order as a scan would.

Hot-path threads arm timers without the protocol lock; the queue's own lock makes push,
pop and `queued_at` updates consistent. A writer stores the deadline before it reads
`queued_at`, and the queue clears `queued_at` before it reads the deadlines, so an armed
timer is never missed.
"""

from __future__ import annotations

import heapq
import itertools
import threading
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from meshwg.core.peer import Peer


class DeadlineQueue:
    """The peers of one protocol ordered by their earliest timer deadline."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, Peer]] = []
        self._tiebreak = itertools.count()      # entries never compare Peers
        self._wake: dict[int, Peer] = {}        # id -> peer, visited at the next tick
        self._lock = threading.Lock()

    def __len__(self) -> int:
        """Heap entries, stale ones included (for tests and benchmarks)."""
        return len(self._heap)

    # -- membership

    def attach(self, peer: Peer) -> None:
        """Start following `peer`'s timers (it must have no queue yet)."""
        with self._lock:
            peer.timer_queue = self
            peer.queued_at = None
        deadline = peer.next_deadline()
        if deadline is not None:
            self.schedule(peer, deadline)
        if peer.needs_keepalive_arming():
            self.wake(peer)

    def detach(self, peer: Peer) -> None:
        """Stop following `peer`; its heap entries become stale."""
        with self._lock:
            if peer.timer_queue is self:
                peer.timer_queue = None
                peer.queued_at = None
                self._wake.pop(id(peer), None)

    # -- called by Peer when a timer is armed

    def schedule(self, peer: Peer, deadline: float) -> None:
        """Make sure `peer` has a live entry no later than `deadline`."""
        with self._lock:
            if peer.timer_queue is not self:
                return
            queued = peer.queued_at
            if queued is None or deadline < queued:
                heapq.heappush(self._heap, (deadline, next(self._tiebreak), peer))
                peer.queued_at = deadline

    def wake(self, peer: Peer) -> None:
        """Visit `peer` at the next tick, whatever its deadlines."""
        with self._lock:
            if peer.timer_queue is self:
                self._wake[id(peer)] = peer

    # -- called by the protocol

    def earliest(self) -> float | None:
        """The earliest armed deadline of all attached peers (None: no timer armed)."""
        heap = self._heap
        with self._lock:
            while heap:
                t, _, peer = heap[0]
                if peer.timer_queue is not self or peer.queued_at != t:
                    heapq.heappop(heap)            # stale
                    continue
                peer.queued_at = None
                deadline = peer.next_deadline()
                if deadline == t:
                    peer.queued_at = t             # still exact: the top entry stays live
                    return t
                heapq.heappop(heap)                # moved later or disarmed
                if deadline is not None:
                    heapq.heappush(heap, (deadline, next(self._tiebreak), peer))
                    peer.queued_at = deadline
        return None

    def take_due(self, now: float) -> list[Peer]:
        """Peers with a deadline at or before `now`, and those woken, in `order`. They
        have no live entry until `requeue`."""
        heap = self._heap
        due: dict[int, Peer] = {}
        with self._lock:
            if self._wake:
                for key, peer in self._wake.items():
                    if peer.needs_keepalive_arming():   # still unarmed: worth the visit
                        due[key] = peer
                self._wake.clear()
            while heap and heap[0][0] <= now:
                t, _, peer = heapq.heappop(heap)
                if peer.timer_queue is not self or peer.queued_at != t:
                    continue                       # stale
                peer.queued_at = None
                deadline = peer.next_deadline()
                if deadline is not None and deadline <= now:
                    due[id(peer)] = peer
                elif deadline is not None:
                    heapq.heappush(heap, (deadline, next(self._tiebreak), peer))
                    peer.queued_at = deadline
            for peer in due.values():
                peer.queued_at = None              # woken peers may still hold an entry
        return sorted(due.values(), key=_order)

    def requeue(self, peer: Peer) -> None:
        """After a visit: an entry for the peer's earliest deadline, and a wake-up when a
        persistent keepalive still waits to be armed."""
        if peer.timer_queue is not self:
            return
        deadline = peer.next_deadline()
        if deadline is not None:
            self.schedule(peer, deadline)
        if peer.needs_keepalive_arming():
            self.wake(peer)


def _order(peer: Peer) -> int:
    return peer.order
