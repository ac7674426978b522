"""The handshake's faster primitives give the same bytes as independent implementations:
HMAC-BLAKE2s against the standard library's hmac, the KDF against cryptography's HKDF,
X25519 (libsodium) against cryptography's (OpenSSL), and the responder's cached
static-static DH against computing it; the Python around the chain decides as before
(mac1 from a pre-keyed BLAKE2s, receive_datagram's direct admission, batched indexes)."""

from __future__ import annotations

import hashlib
import hmac
import os
import struct

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from meshwg.core import crypto, noise
from meshwg.core import protocol as protocol_module
from meshwg.core.constants import LABEL_MAC1
from meshwg.core.cookie import CookieChecker, CookieGenerator
from meshwg.core.messages import INITIATION_MAC1_OFFSET, RESPONSE_MAC1_OFFSET
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


# -- the Python around the chain: same MACs, same admission decisions, unique indexes


def test_mac1_from_the_pre_keyed_blake2s_matches_crypto_mac():
    responder_public = public_key(generate_private_key())
    key = crypto.hash_(LABEL_MAC1, responder_public)
    generator, checker = CookieGenerator(responder_public), CookieChecker(responder_public)
    for size, offset in ((148, INITIATION_MAC1_OFFSET), (92, RESPONSE_MAC1_OFFSET)):
        for _ in range(3):                     # the pre-keyed state is copied, never consumed
            head = os.urandom(offset)
            expected = crypto.mac(key, head)
            sent = generator.add_macs(head + bytes(32), 1.0)
            assert sent[offset:offset + 16] == expected == generator.last_mac1
            in_place = bytearray(head + bytes(32))
            generator.add_macs(in_place, 1.0)
            assert bytes(in_place) == sent
            assert checker.verify_mac1(sent)
            assert not checker.verify_mac1(sent[:offset] + bytes(16) + sent[offset + 16:])
            assert len(sent) == size


def _handshake_inputs(responder_key: bytes) -> list[bytes]:
    """A valid initiation from a known peer, one from an unknown key, and hostile ones."""
    out = []
    for known in (True, False):
        initiator = WireGuardProtocol(generate_private_key())
        peer = initiator.add_peer(public_key(responder_key))
        initiator.set_endpoint(peer, ("198.18.0.1", 51820))
        initiator.initiate_handshake(peer, 1.0)
        (packet, _), = initiator.take_datagrams()
        out.append((packet, initiator.public_key if known else None))
    good = out[0][0]
    hostile = [good[:-1], good + b"\x00", good[:60] + bytes([good[60] ^ 1]) + good[61:],
               b"\x01", b"\x03" + bytes(63), b"\x02" + bytes(91), b"\x05" + bytes(147),
               b"\x01\x00\x00\x01" + good[4:]]
    return [p for p, _ in out] + hostile, [k for _, k in out if k is not None]


@pytest.mark.parametrize("under_load", [False, True])
def test_receive_datagram_decides_handshake_messages_as_receive_batch(under_load):
    responder_key = generate_private_key()
    datagrams, known = _handshake_inputs(responder_key)
    results = []
    for through_batch in (False, True):
        responder = WireGuardProtocol(responder_key)
        for key in known:
            responder.add_peer(key)
        if under_load:
            responder.under_load_rate = 0
        for i, datagram in enumerate(datagrams):
            source = ("198.18.0.2", 40000 + i)
            if through_batch:
                _, admitted = responder.receive_batch(((datagram, len(datagram), source),), 2.0,
                                                      bytearray(200))
                for handshake in admitted:
                    responder.process_handshake(handshake, 2.0)
            else:
                assert responder.receive_datagram(datagram, source, 2.0) is None
        results.append((dict(responder.stats),
                        [(d[0], len(d), e) for d, e in responder.take_datagrams()],
                        [type(e).__name__ for e in responder.take_events()]))
    assert results[0] == results[1]
    stats, sent, _ = results[0]
    if under_load:
        assert stats["cookie_replies_sent"] == 2 and all(kind == 3 for kind, _, _ in sent)
    else:
        assert [kind for kind, _, _ in sent] == [2] and stats["unknown_peer"] == 1
    assert stats["malformed"] == 5 and stats["bad_mac1"] >= 1


def test_new_index_skips_indexes_in_use(monkeypatch):
    responder = WireGuardProtocol(generate_private_key())
    responder.keypairs_by_index[7] = object()
    responder.handshakes_by_index[8] = object()
    batches = iter([struct.pack("<64I", *([7] * 32 + [8] * 32)), struct.pack("<64I", *([9] * 64))])
    monkeypatch.setattr(protocol_module.os, "urandom", lambda n: next(batches))
    assert responder._new_index() == 9


def test_new_indexes_are_unique_while_in_use():
    responder = WireGuardProtocol(generate_private_key())
    seen = set()
    for _ in range(1000):
        index = responder._new_index()
        assert index not in seen
        seen.add(index)
        responder.handshakes_by_index[index] = object()
