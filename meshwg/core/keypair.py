"""A transport keypair: one direction's AEAD each way, a send counter and a replay window."""

from __future__ import annotations

import itertools
from typing import TYPE_CHECKING, Iterator

from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

from meshwg.core.replay import ReplayWindow

if TYPE_CHECKING:
    from meshwg.core.noise import TransportKeys
    from meshwg.core.peer import Peer


class Keypair:
    """The keys of one completed handshake with `peer`. `local_index` names it in the
    transport messages we receive, `remote_index` in those we send; `created` is the
    protocol time (seconds) of the handshake."""

    __slots__ = ("send_aead", "receive_aead", "local_index", "remote_index", "created",
                 "is_initiator", "replay", "peer", "_counter")

    def __init__(self, keys: "TransportKeys", local_index: int, remote_index: int,
                 is_initiator: bool, now: float, peer: "Peer"):
        self.send_aead: ChaCha20Poly1305 | None = ChaCha20Poly1305(keys.send)
        self.receive_aead: ChaCha20Poly1305 | None = ChaCha20Poly1305(keys.receive)
        self.local_index = local_index
        self.remote_index = remote_index
        self.created = now
        self.is_initiator = is_initiator
        self.replay = ReplayWindow()
        self.peer = peer
        self._counter = itertools.count()

    def send_counters(self) -> Iterator[int]:
        """The send counters, in order: each next() takes one (the batch sealer binds it
        once per run)."""
        return self._counter

    def next_counter(self) -> int:
        return next(self._counter)

    def set_counter(self, value: int) -> None:
        """Jump the send counter (tests of REKEY/REJECT_AFTER_MESSAGES)."""
        self._counter = itertools.count(value)

    def zero(self) -> None:
        """Drop the key material (key zeroing timer or removal); the protocol forgets the
        keypair in the same step, so nothing seals or opens with it afterwards."""
        self.send_aead = None
        self.receive_aead = None
