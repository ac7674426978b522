"""A Keypair makes cryptography's AEADs on first use, not at the handshake: the lazily made
objects seal and open as ones made from the keys directly, and zeroing drops them for good."""

from __future__ import annotations

import os

from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

from meshwg.core.keypair import Keypair
from meshwg.core.noise import TransportKeys


def _keypair() -> tuple[Keypair, TransportKeys]:
    keys = TransportKeys(send=os.urandom(32), receive=os.urandom(32),
                         handshake_hash=os.urandom(32))
    return Keypair(keys, 1, 2, True, 0.0, peer=None), keys     # type: ignore[arg-type]


def test_aeads_are_made_on_first_use_and_seal_as_the_keys_do():
    kp, keys = _keypair()
    assert kp._send_aead is None and kp._receive_aead is None       # a handshake makes none
    nonce, data = bytes(12), b"payload"
    sealed = kp.send_aead.encrypt(nonce, data, None)
    assert sealed == ChaCha20Poly1305(keys.send).encrypt(nonce, data, None)
    assert kp.send_aead is kp.send_aead                               # made once
    other = ChaCha20Poly1305(keys.receive).encrypt(nonce, data, None)
    assert kp.receive_aead.decrypt(nonce, other, None) == data


def test_zeroed_keypair_has_no_aeads_used_or_not():
    used, _ = _keypair()
    assert used.send_aead is not None and used.receive_aead is not None
    unused, _ = _keypair()
    for kp in (used, unused):
        kp.zero()
        assert kp.send_aead is None and kp.receive_aead is None
