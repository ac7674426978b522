"""A transport keypair: one direction's AEAD each way, a send counter and a replay window.

The AEADs are cryptography's objects (the pure Python path), made on first use
(`send_aead`, `receive_aead`); with the compiled data path (meshwg.accel) the send and
receive paths take its Sealer and Opener for the same keys, made on first use (`sealer`,
`opener`). A handshake makes none of them."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

from meshwg.core.replay import ReplayWindow

if TYPE_CHECKING:
    from meshwg.core.noise import TransportKeys
    from meshwg.core.peer import Peer


class Keypair:
    """The keys of one completed handshake with `peer`. `local_index` names it in the
    transport messages we receive, `remote_index` in those we send; `created` is the
    protocol time (seconds) of the handshake."""

    __slots__ = ("_send_aead", "_receive_aead", "local_index", "remote_index", "created",
                 "is_initiator", "replay", "peer", "send_next", "_keys", "_sealer", "_opener")

    def __init__(self, keys: "TransportKeys", local_index: int, remote_index: int,
                 is_initiator: bool, now: float, peer: "Peer"):
        self._send_aead: ChaCha20Poly1305 | None = None
        self._receive_aead: ChaCha20Poly1305 | None = None
        self.local_index = local_index
        self.remote_index = remote_index
        self.created = now
        self.is_initiator = is_initiator
        self.replay = ReplayWindow()
        self.peer = peer
        self.send_next = 0          # the next send counter (the batch sealer takes runs of them)
        self._keys: TransportKeys | None = keys
        self._sealer: Any = None
        self._opener: Any = None

    @property
    def send_aead(self) -> ChaCha20Poly1305 | None:
        """cryptography's AEAD for the send key (made on first use); None once zeroed."""
        if self._send_aead is None and self._keys is not None:
            self._send_aead = ChaCha20Poly1305(self._keys.send)
        return self._send_aead

    @property
    def receive_aead(self) -> ChaCha20Poly1305 | None:
        """cryptography's AEAD for the receive key (made on first use); None once zeroed."""
        if self._receive_aead is None and self._keys is not None:
            self._receive_aead = ChaCha20Poly1305(self._keys.receive)
        return self._receive_aead

    def sealer(self, fast: Any) -> Any:
        """The compiled module `fast`'s Sealer for the send key (made on first use)."""
        return self._sealer or self._make_compiled(fast)[0]

    def opener(self, fast: Any) -> Any:
        """The compiled module `fast`'s Opener for the receive key (made on first use)."""
        return self._opener or self._make_compiled(fast)[1]

    def _make_compiled(self, fast: Any) -> tuple[Any, Any]:
        if self._keys is None:
            raise ValueError("keypair zeroed")
        self._sealer, self._opener = fast.Sealer(self._keys.send), fast.Opener(self._keys.receive)
        return self._sealer, self._opener

    def next_counter(self) -> int:
        """Take one send counter."""
        counter = self.send_next
        self.send_next = counter + 1
        return counter

    def set_counter(self, value: int) -> None:
        """Jump the send counter (tests of REKEY/REJECT_AFTER_MESSAGES)."""
        self.send_next = value

    def zero(self) -> None:
        """Drop the key material (key zeroing timer or removal); the protocol forgets the
        keypair in the same step, so nothing seals or opens with it afterwards."""
        self._send_aead = None
        self._receive_aead = None
        self._keys = self._sealer = self._opener = None
