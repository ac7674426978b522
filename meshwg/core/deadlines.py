"""Which peers have a timer due: a heap of deadlines with lazy invalidation. No I/O.

The protocol's timer handler must visit every peer with a timer at or before `now`, and
next_deadline() must give the earliest armed timer of all peers. Scanning every peer costs
O(peers) per call; at 10,000 peers with persistent keepalives that is most of the work.
Here each attached peer has at most one *live* heap entry, never later than any of its
armed deadlines:

- arming a timer earlier than the live entry pushes a new one (Peer's timer properties
  call `schedule`); moving a timer later, or disarming it, does nothing: the old entry
  stays and is re-examined when it reaches the top of the heap (lazy invalidation);
- an entry whose time is not its peer's live time, or whose peer left the queue, is
  stale and dropped when popped.

Due peers come back in `order` (the protocol's insertion order), so the timer handler
visits them in the same order as a scan would.
"""

from __future__ import annotations

import heapq
import itertools
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from meshwg.core.peer import Peer


class DeadlineQueue:
    """The peers of one protocol ordered by their earliest timer deadline."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, Peer]] = []
        self._tiebreak = itertools.count()      # entries never compare Peers
        self._live: dict[Peer, float] = {}      # peer -> time of its live entry

    def __len__(self) -> int:
        """Heap entries, stale ones included (for tests and benchmarks)."""
        return len(self._heap)

    # -- membership

    def attach(self, peer: Peer) -> None:
        """Start following `peer`'s timers (it must have no queue yet)."""
        peer.deadline_queue = self
        deadline = peer.next_deadline()
        if deadline is not None:
            self.schedule(peer, deadline)

    def detach(self, peer: Peer) -> None:
        """Stop following `peer`; its heap entries become stale."""
        if peer.deadline_queue is self:
            peer.deadline_queue = None
            self._live.pop(peer, None)

    # -- called by Peer when a timer is armed

    def schedule(self, peer: Peer, deadline: float) -> None:
        """Make sure `peer` has a live entry no later than `deadline`."""
        if peer.deadline_queue is not self:
            return
        live = self._live.get(peer)
        if live is None or deadline < live:
            heapq.heappush(self._heap, (deadline, next(self._tiebreak), peer))
            self._live[peer] = deadline

    # -- called by the protocol

    def earliest(self) -> float | None:
        """The earliest armed deadline of all attached peers (None: no timer armed)."""
        heap = self._heap
        live = self._live
        while heap:
            t, _, peer = heap[0]
            if live.get(peer) != t:
                heapq.heappop(heap)                # stale
                continue
            deadline = peer.next_deadline()
            if deadline == t:
                return t                           # still exact: the top entry stays live
            heapq.heappop(heap)                    # moved later or disarmed
            if deadline is None:
                del live[peer]
            else:
                heapq.heappush(heap, (deadline, next(self._tiebreak), peer))
                live[peer] = deadline
        return None

    def take_due(self, now: float) -> list[Peer]:
        """Peers with a deadline at or before `now`, in `order`. They have no live entry
        until `requeue` (or a timer armed meanwhile)."""
        heap = self._heap
        live = self._live
        due: list[Peer] = []
        while heap and heap[0][0] <= now:
            t, _, peer = heapq.heappop(heap)
            if live.get(peer) != t:
                continue                           # stale
            del live[peer]
            deadline = peer.next_deadline()
            if deadline is None:
                continue
            if deadline <= now:
                due.append(peer)
            else:
                heapq.heappush(heap, (deadline, next(self._tiebreak), peer))
                live[peer] = deadline
        due.sort(key=_order)
        return due

    def requeue(self, peer: Peer) -> None:
        """After a visit: an entry for the peer's earliest deadline."""
        deadline = peer.next_deadline()
        if deadline is not None:
            self.schedule(peer, deadline)


def _order(peer: Peer) -> int:
    return peer.order
