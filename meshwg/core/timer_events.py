"""The protocol's timers firing: handshake retransmission and giving up, passive and
persistent keepalives, rekey after silence, key zeroing. No I/O, no clock.

The durations are in meshwg.core.timers; each peer keeps its armed deadlines
(meshwg.core.peer) and the DeadlineQueue (meshwg.core.deadlines) finds the due ones.
Mixed into WireGuardProtocol (meshwg.core.protocol).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from meshwg.core.events import PathUnanswered

if TYPE_CHECKING:
    from meshwg.core.peer import Peer
    from meshwg.core.protocol import WireGuardProtocol


class TimerEvents:
    """next_deadline() says when to call tick(now); tick fires what is due."""

    def next_deadline(self: WireGuardProtocol) -> float | None:
        """The earliest armed timer of all peers, in protocol time (None: none armed,
        no tick is needed until an input arrives). O(log peers)."""
        return self.deadlines.earliest()

    def tick(self: WireGuardProtocol, now: float) -> None:
        """Fire the timers due at `now`. Visits only the peers with something due, in the
        order they were added: the same effects, in the same order, as visiting every
        peer. Datagrams go to the output queue."""
        queue = self.deadlines
        for peer in queue.take_due(now):
            self._tick_peer(peer, now)
            queue.requeue(peer)

    def _tick_peer(self: WireGuardProtocol, peer: Peer, now: float) -> None:
        timers = self.timers
        if peer.retransmit_at is not None and now >= peer.retransmit_at:
            peer.retransmit_at = None
            if peer.handshake_attempts >= timers.max_handshake_attempts:
                # give up: drop what waited, and forget the keys later
                peer.staged.clear()
                self._clear_handshake(peer)
                peer.handshake_attempts = 0
                if peer.zero_keys_at is None:
                    peer.zero_keys_at = now + timers.key_zeroing_time
                self.stats["handshake_gave_up"] += 1
            else:
                peer.handshake_attempts += 1
                self._send_initiation(peer, now)
        if peer.keepalive_at is not None and now >= peer.keepalive_at:
            peer.keepalive_at = None
            self.send_keepalive(peer, now)
        if peer.new_handshake_at is not None and now >= peer.new_handshake_at:
            # we sent data and heard nothing back: the peer may have lost its keys
            peer.new_handshake_at = None
            self._maybe_initiate(peer, now)
        if peer.persistent_keepalive_at is not None and now >= peer.persistent_keepalive_at:
            peer.persistent_keepalive_at = None
            if peer.persistent_keepalive:
                self.send_keepalive(peer, now)
        if peer.persistent_keepalive and peer.persistent_keepalive_at is None:
            # nothing went out (no endpoint, key or session yet): try again in an interval
            peer.persistent_keepalive_at = now + peer.persistent_keepalive
        if peer.unanswered_at is not None and now >= peer.unanswered_at:
            peer.unanswered_at = None        # armed again by the next data sent
            silent = now - peer.last_rx if peer.last_rx is not None else timers.unanswered_after
            self._event(PathUnanswered(peer.public_key, peer.endpoint, silent))
        if peer.zero_keys_at is not None and now >= peer.zero_keys_at:
            peer.zero_keys_at = None
            self._expire_keys(peer)
            self.stats["keys_zeroed"] += 1
