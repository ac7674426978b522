"""One peer's protocol state: keys, keypairs, staged packets, timers and counters. No I/O.

Timers are kept as absolute deadlines (None = not armed), in the style of wireguard-go's
timers.go: the protocol's timer handler (meshwg.core.timer_events) fires the due ones.
Arming a timer tells the peer's DeadlineQueue (meshwg.core.deadlines), when it has one,
so the protocol finds the due peers without scanning them all.

Memory matters at 10,000 peers: __slots__, the cookie generator made on first use, a
staging list that costs nothing while empty, all-zero keys shared.
"""

from __future__ import annotations

from operator import attrgetter
from typing import TYPE_CHECKING, Any

from meshwg.core import noise
from meshwg.core.constants import COOKIE_REFRESH_TIME
from meshwg.core.cookie import CookieGenerator
from meshwg.core.crypto import WeakKeyError, dh
from meshwg.core.keypair import Keypair
from meshwg.core.keys import encode_key

if TYPE_CHECKING:
    from meshwg.core.deadlines import DeadlineQueue

MAX_STAGED_PACKETS = 128
ZERO_KEY = bytes(32)
ZERO_TIMESTAMP = bytes(12)
TIMER_FIELDS = ("retransmit_at", "keepalive_at", "new_handshake_at", "zero_keys_at",
                "persistent_keepalive_at", "unanswered_at")


class StagedPackets(list):
    """Packets waiting for a keypair, oldest first; at most MAX_STAGED_PACKETS (the
    oldest is dropped, as deque(maxlen) would). Empty, it is a bare list (56 bytes)."""

    __slots__ = ()

    def append(self, packet: bytes) -> None:
        if len(self) >= MAX_STAGED_PACKETS:
            del self[0]
        list.append(self, packet)


class Peer:
    """A configured peer, known by its static public key. The protocol owns and changes
    it; the layer above reads it (endpoint, counters, keys) for status."""

    __slots__ = (
        "public_key", "preshared_key", "endpoint", "persistent_keepalive",
        "_cookie_generator", "cookie_refresh_time", "precomputed", "static_static",
        "previous", "current", "next",
        "handshake_state", "handshake_index", "last_initiation_sent", "handshake_attempts",
        "last_probe", "probe_index", "probe_holds", "last_rx", "pinned_until",
        "last_timestamp", "last_initiation_consumed", "staged",
        "rx_bytes", "tx_bytes", "last_handshake",
        "_retransmit_at", "_keepalive_at", "_new_handshake_at", "_zero_keys_at",
        "_persistent_keepalive_at", "_unanswered_at", "deadline_queue", "order",
    )

    def __init__(self, public_key: bytes, *, cookie_refresh_time: float = COOKIE_REFRESH_TIME):
        self.public_key = public_key
        self.preshared_key: bytes = ZERO_KEY
        self.endpoint: Any = None            # opaque address from the I/O layer
        self.persistent_keepalive = 0        # seconds between keepalives (0: off)
        self._cookie_generator: CookieGenerator | None = None   # made on first use
        self.cookie_refresh_time = cookie_refresh_time
        # cached per (local static, this peer): Noise initial state and DH(s, rs)
        self.precomputed: tuple[bytes, bytes] | None = None
        self.static_static: bytes | None = None
        # keypairs
        self.previous: Keypair | None = None
        self.current: Keypair | None = None
        self.next: Keypair | None = None
        # handshake in progress as initiator
        self.handshake_state: noise.InitiatorState | None = None
        self.handshake_index: int | None = None
        self.last_initiation_sent: float | None = None
        self.handshake_attempts = 0
        self.last_probe: float | None = None
        self.probe_index: int | None = None  # the handshake index of the latest probe
        self.probe_holds = False             # its answer does not move the endpoint
        self.last_rx: float | None = None    # protocol time of the latest authenticated rx
        self.pinned_until = float("-inf")    # transport data roams the endpoint after this
        # responder-side replay and flood protection
        self.last_timestamp: bytes = ZERO_TIMESTAMP
        self.last_initiation_consumed: float | None = None
        # staged packets waiting for a keypair
        self.staged = StagedPackets()
        # statistics
        self.rx_bytes = 0
        self.tx_bytes = 0
        self.last_handshake: float | None = None  # protocol time of the latest completed handshake
        # timers (absolute deadlines in protocol time, or None), behind the properties below
        self._retransmit_at: float | None = None
        self._keepalive_at: float | None = None
        self._new_handshake_at: float | None = None
        self._zero_keys_at: float | None = None
        self._persistent_keepalive_at: float | None = None
        self._unanswered_at: float | None = None
        self.deadline_queue: DeadlineQueue | None = None   # told when a timer is armed
        self.order = 0                        # position among the protocol's peers

    def __repr__(self) -> str:
        return f"<Peer {encode_key(self.public_key)[:8]}…>"

    @property
    def cookie_generator(self) -> CookieGenerator:
        """mac1/mac2 of our handshake messages to this peer (made on first use)."""
        generator = self._cookie_generator
        if generator is None:
            generator = self._cookie_generator = CookieGenerator(
                self.public_key, cookie_refresh_time=self.cookie_refresh_time)
        return generator

    def set_local_static(self, local_private: bytes | None) -> None:
        """Recompute the cached handshake values after our private key changes."""
        if local_private is None:
            self.precomputed = None
            self.static_static = None
            return
        self.precomputed = noise.initial_state(self.public_key)
        try:
            self.static_static = dh(local_private, self.public_key)
        except WeakKeyError:
            self.static_static = None

    def keypairs(self) -> list[Keypair]:
        return [k for k in (self.previous, self.current, self.next) if k is not None]

    def next_deadline(self) -> float | None:
        """The earliest armed timer (None: none armed)."""
        best = None
        for t in (self._retransmit_at, self._keepalive_at, self._new_handshake_at,
                  self._zero_keys_at, self._persistent_keepalive_at, self._unanswered_at):
            if t is not None and (best is None or t < best):
                best = t
        return best


def _deadline_property(slot: str, doc: str) -> property:
    """A timer attribute: reading is a slot read; arming it (a time, not None) tells the
    peer's DeadlineQueue, which keeps an entry no later than the earliest armed timer.
    Disarming or moving a timer later needs no message: the queue re-reads the peer's
    deadlines when its entry comes up."""
    store = getattr(Peer, slot).__set__

    def set_deadline(peer: Peer, value: float | None) -> None:
        store(peer, value)
        if value is not None:
            queue = peer.deadline_queue
            if queue is not None:
                queue.schedule(peer, value)

    return property(attrgetter(slot), set_deadline, doc=doc)


Peer.retransmit_at = _deadline_property("_retransmit_at", "Resend the initiation (REKEY_TIMEOUT).")
Peer.keepalive_at = _deadline_property("_keepalive_at", "Answer received data with a keepalive.")
Peer.new_handshake_at = _deadline_property("_new_handshake_at", "Sent data, heard nothing: rekey.")
Peer.zero_keys_at = _deadline_property("_zero_keys_at", "Forget the keys (3 x REJECT_AFTER_TIME).")
Peer.persistent_keepalive_at = _deadline_property("_persistent_keepalive_at",
                                                  "Next persistent keepalive.")
Peer.unanswered_at = _deadline_property("_unanswered_at",
                                        "Sent data, heard nothing: PathUnanswered.")
