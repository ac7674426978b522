"""The handshake's faster primitives give the same bytes as independent implementations:
HMAC-BLAKE2s against the standard library's hmac, the KDF against cryptography's HKDF,
X25519 (libsodium) against cryptography's (OpenSSL), and the responder's cached
static-static DH against computing it."""

from __future__ import annotations

import hashlib
import hmac
import os

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from meshwg.core import crypto, noise
from meshwg.core.crypto import generate_private_key, public_key
from meshwg.core.protocol import WireGuardProtocol


@pytest.mark.parametrize("key_size", [0, 1, 31, 32, 33, 63, 64, 65, 200])
@pytest.mark.parametrize("data_size", [0, 1, 32, 33, 64, 65, 300])
def test_hmac_blake2s_matches_stdlib_hmac(key_size, data_size):
    key, data = os.urandom(key_size), os.urandom(data_size)
    assert crypto.hmac_blake2s(key, data) == hmac.new(key, data, hashlib.blake2s).digest()


@pytest.mark.parametrize("n", [1, 2, 3])
def test_kdf_matches_hkdf_with_blake2s(n):
    # WireGuard's Kdf_n is HKDF (RFC 5869) with salt = chaining key and no info.
    for data in (b"", os.urandom(32), os.urandom(100)):
        key = os.urandom(32)
        expected = HKDF(algorithm=hashes.BLAKE2s(32), length=32 * n, salt=key,
                        info=None).derive(data)
        assert b"".join(crypto.kdf(key, data, n)) == expected


def test_x25519_matches_openssl():
    for _ in range(20):
        private = os.urandom(32)                  # unclamped too: both clamp
        other = X25519PrivateKey.generate()
        openssl = X25519PrivateKey.from_private_bytes(private)
        assert public_key(private) == openssl.public_key().public_bytes_raw()
        other_public = other.public_key().public_bytes_raw()
        assert crypto.dh(private, other_public) == openssl.exchange(
            X25519PublicKey.from_public_bytes(other_public))


@pytest.mark.parametrize("size", [0, 31, 33])
def test_dh_with_a_public_key_of_the_wrong_size_raises_weak_key(size):
    with pytest.raises(crypto.WeakKeyError):
        crypto.dh(generate_private_key(), os.urandom(size))


def _message1():
    responder_private, initiator_private = generate_private_key(), generate_private_key()
    responder_public = public_key(responder_private)
    msg, _ = noise.write_message1(initiator_private, responder_public, b"payload")
    return responder_private, responder_public, public_key(initiator_private), initiator_private, msg


def test_read_message1_with_cached_static_static_gives_the_same_state():
    responder_private, responder_public, initiator_public, initiator_private, msg = _message1()
    computed = noise.read_message1(responder_private, responder_public, msg)
    asked = []

    def cached(remote: bytes) -> bytes:
        asked.append(remote)
        return crypto.dh(initiator_private, responder_public)   # the same value, other side

    state = noise.read_message1(responder_private, responder_public, msg, static_static=cached)
    assert asked == [initiator_public]
    assert state == computed and state.payload == b"payload"


def test_read_message1_stops_for_an_unknown_static_key():
    responder_private, responder_public, _, _, msg = _message1()
    assert noise.read_message1(responder_private, responder_public, msg,
                               static_static=lambda remote: None) is None


def test_responder_uses_the_peers_cached_static_static():
    responder_key, initiator_key = generate_private_key(), generate_private_key()
    responder = WireGuardProtocol(responder_key)
    initiator = WireGuardProtocol(initiator_key)
    peer = initiator.add_peer(public_key(responder_key))
    initiator.set_endpoint(peer, ("198.18.0.1", 51820))
    known = responder.add_peer(public_key(initiator_key))
    assert known.static_static == crypto.dh(responder_key, public_key(initiator_key))
    initiator.initiate_handshake(peer, 1.0)
    (packet, _), = initiator.take_datagrams()
    responder.receive_datagram(packet, ("198.18.0.2", 40000), 2.0)
    (response, _), = responder.take_datagrams()
    initiator.receive_datagram(response, ("198.18.0.1", 51820), 2.1)
    assert peer.current is not None and known.next is not None
    assert peer.current.is_initiator and known.next.remote_index == peer.current.local_index
    assert responder.stats["handshake_failed"] == 0 and responder.stats["unknown_peer"] == 0
