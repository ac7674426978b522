"""One peer's protocol state: keys, keypairs, staged packets, timers and counters. No I/O.

Timers are kept as absolute deadlines (None = not armed), in the style of wireguard-go's
timers.go: the device's timer loop calls WireGuardProtocol.tick(now) which reads them.
"""

from __future__ import annotations

from collections import deque
from typing import Any

from . import noise
from .cookie import CookieGenerator
from .crypto import WeakKeyError, dh
from .keypair import Keypair

MAX_STAGED_PACKETS = 128


class Peer:
    def __init__(self, public_key: bytes):
        self.public_key = public_key
        self.preshared_key: bytes = bytes(32)
        self.endpoint: Any = None            # opaque address from the I/O layer
        self.persistent_keepalive: int = 0
        self.cookie_generator = CookieGenerator(public_key)
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
        # responder-side replay and flood protection
        self.last_timestamp: bytes = bytes(12)
        self.last_initiation_consumed: float | None = None
        # staged packets waiting for a keypair
        self.staged: deque[bytes] = deque(maxlen=MAX_STAGED_PACKETS)
        # statistics
        self.rx_bytes = 0
        self.tx_bytes = 0
        self.last_handshake: float | None = None  # monotonic time of the latest completed handshake
        # timers (absolute monotonic deadlines or None)
        self.retransmit_at: float | None = None
        self.keepalive_at: float | None = None
        self.new_handshake_at: float | None = None
        self.zero_keys_at: float | None = None
        self.persistent_keepalive_at: float | None = None

    def __repr__(self) -> str:
        from .keys import encode_key
        return f"<Peer {encode_key(self.public_key)[:8]}…>"

    def set_local_static(self, local_private: bytes | None, local_public: bytes | None) -> None:
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
        best = None
        for t in (self.retransmit_at, self.keepalive_at, self.new_handshake_at,
                  self.zero_keys_at, self.persistent_keepalive_at):
            if t is not None and (best is None or t < best):
                best = t
        return best
