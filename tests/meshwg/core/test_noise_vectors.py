"""meshwg.noise against the cacophony test vector for Noise_IKpsk2_25519_ChaChaPoly_BLAKE2s
(repository mcginty/snow, tests/vectors/cacophony.txt), plus a WireGuard-parameter round trip.
"""

from __future__ import annotations

import pytest

from meshwg.core import crypto, noise
from meshwg.core.constants import CONSTRUCTION, IDENTIFIER

h = bytes.fromhex

# The one cacophony vector with this protocol name (values carried over as data).
VECTOR = {
    "protocol_name": b"Noise_IKpsk2_25519_ChaChaPoly_BLAKE2s",
    "prologue": h("4a6f686e2047616c74"),  # "John Galt"
    "psk": h("54686973206973206d7920417573747269616e20706572737065637469766521"),
    "init_static": h("e61ef9919cde45dd5f82166404bd08e38bceb5dfdfded0a34c8df7ed542214d1"),
    "init_ephemeral": h("893e28b9dc6ca8d611ab664754b8ceb7bac5117349a4439a6b0569da977c464a"),
    "init_remote_static": h("31e0303fd6418d2f8c0e78b91f22e8caed0fbe48656dcf4767e4834f701b8f62"),
    "resp_static": h("4a3acbfdb163dec651dfa3194dece676d437029c62a408b4c5ea9114246e4893"),
    "resp_ephemeral": h("bbdb4cdbd309f1a1f2e1456967fe288cadd6f712d65dc7b7793d5e63da6b375b"),
    "handshake_hash": h("f5191b875290abcd41347ac3622d9679688a7e980229cb937ef748336cfde0e5"),
    "messages": [
        (h("4c756477696720766f6e204d69736573"),
         h("ca35def5ae56cec33dc2036731ab14896bc4c75dbb07a61f879f8e3afa4c7944001e21de9f98ddd8"
           "e2ad57527207feb56253c9c94a9e496782ecfcb2a75fbcaf1b52948cc48daefe660c62119ab50009"
           "80c84831215f2441eba616548e832985464cf17e51ee93109008399a21f7e13f")),
        (h("4d757272617920526f746862617264"),
         h("95ebc60d2b1fa672c1f46a8aa265ef51bfe38e7ccb39ec5be34069f144808843cb765f2caef0751b"
           "8f007572dab0322217755c0632f365717edbf34d33e87a")),
        (h("462e20412e20486179656b"), h("8153ca9833bc3c1b91a7e66e5f4d4f5b59bf9e64c2f20d15f0bba7")),
        (h("4361726c204d656e676572"), h("07af0c9c86e1b4e80f36b04ff7688d51141af3debd0332f0a705ef")),
        (h("4a65616e2d426170746973746520536179"),
         h("6ab1467c0448cc78394494abaaf23afce0e234315d6e2624dcbfa8a21c1c4d073d")),
        (h("457567656e2042f6686d20766f6e2042617765726b"),
         h("dfc346c0d2296ae6cf1acf6f12b8456a1dba228cf8d8b774aacf1c47fc53aa80ebc7a4c292")),
    ],
}


@pytest.fixture(scope="module")
def handshake():
    """Run the vector's handshake once; return everything the tests look at."""
    v = VECTOR
    kw = {"prologue": v["prologue"], "protocol_name": v["protocol_name"]}
    resp_public = crypto.public_key(v["resp_static"])
    m1, init_state = noise.write_message1(v["init_static"], v["init_remote_static"],
                                          v["messages"][0][0],
                                          ephemeral_private=v["init_ephemeral"], **kw)
    resp_state = noise.read_message1(v["resp_static"], resp_public, m1, **kw)
    m2, resp_keys = noise.write_message2(resp_state, v["psk"], v["messages"][1][0],
                                         ephemeral_private=v["resp_ephemeral"])
    payload2, init_keys = noise.read_message2(init_state, v["psk"], m2)
    return {"m1": m1, "m2": m2, "resp_state": resp_state, "payload2": payload2,
            "init_keys": init_keys, "resp_keys": resp_keys, "resp_public": resp_public}


def test_vector_remote_static_is_responder_public(handshake):
    assert handshake["resp_public"] == VECTOR["init_remote_static"]


def test_message1_ciphertext(handshake):
    m1 = handshake["m1"]
    assert m1.ephemeral + m1.encrypted_static + m1.encrypted_payload == VECTOR["messages"][0][1]


def test_responder_reads_message1(handshake):
    state = handshake["resp_state"]
    assert state.payload == VECTOR["messages"][0][0]
    assert state.remote_static_public == crypto.public_key(VECTOR["init_static"])
    assert state.remote_ephemeral_public == crypto.public_key(VECTOR["init_ephemeral"])


def test_message2_ciphertext(handshake):
    m2 = handshake["m2"]
    assert m2.ephemeral + m2.encrypted_payload == VECTOR["messages"][1][1]
    assert handshake["payload2"] == VECTOR["messages"][1][0]


def test_handshake_hash(handshake):
    assert handshake["init_keys"].handshake_hash == VECTOR["handshake_hash"]
    assert handshake["resp_keys"].handshake_hash == VECTOR["handshake_hash"]


def test_split_keys_pair_up(handshake):
    init, resp = handshake["init_keys"], handshake["resp_keys"]
    assert init.send == resp.receive
    assert init.receive == resp.send
    assert init.send != init.receive


def test_transport_messages(handshake):
    """Messages 3.. alternate initiator/responder, each side counting its nonces from 0."""
    init, resp = handshake["init_keys"], handshake["resp_keys"]
    senders = {0: (crypto.Aead(init.send), crypto.Aead(resp.receive)),
               1: (crypto.Aead(resp.send), crypto.Aead(init.receive))}
    counters = {0: 0, 1: 0}
    for i, (payload, ciphertext) in enumerate(VECTOR["messages"][2:]):
        side = i % 2
        seal, opener = senders[side]
        counter = counters[side]
        assert seal.seal(counter, payload) == ciphertext
        assert opener.open(counter, ciphertext) == payload
        counters[side] += 1


# --- WireGuard parameters ----------------------------------------------------------------

def test_wireguard_round_trip():
    init_static = crypto.generate_private_key()
    resp_static = crypto.generate_private_key()
    resp_public = crypto.public_key(resp_static)
    psk = bytes(range(32))
    timestamp = crypto.tai64n(1_700_000_000.25)

    m1, init_state = noise.write_message1(init_static, resp_public, timestamp)
    assert len(m1.ephemeral) == 32 and len(m1.encrypted_static) == 48
    assert len(m1.encrypted_payload) == 28                  # 12-byte TAI64N + tag

    resp_state = noise.read_message1(resp_static, resp_public, m1)
    assert resp_state.payload == timestamp
    assert resp_state.remote_static_public == crypto.public_key(init_static)

    m2, resp_keys = noise.write_message2(resp_state, psk)
    assert len(m2.encrypted_payload) == 16                  # empty payload + tag
    payload, init_keys = noise.read_message2(init_state, psk, m2)
    assert payload == b""
    assert init_keys.handshake_hash == resp_keys.handshake_hash
    assert (init_keys.send, init_keys.receive) == (resp_keys.receive, resp_keys.send)

    packet = crypto.Aead(init_keys.send).seal(0, b"\x45" + bytes(15))
    assert crypto.Aead(resp_keys.receive).open(0, packet) == b"\x45" + bytes(15)


def test_wireguard_defaults_are_identifier_and_construction():
    resp_static = crypto.generate_private_key()
    resp_public = crypto.public_key(resp_static)
    assert noise.initial_state(resp_public) == noise.initial_state(resp_public, IDENTIFIER,
                                                                   CONSTRUCTION)
    ck, hash_ = noise.initial_state(resp_public)
    assert ck == crypto.hash_(CONSTRUCTION)          # the name is longer than 32 bytes
    assert hash_ == crypto.hash_(crypto.hash_(ck, IDENTIFIER), resp_public)


def test_precomputed_state_and_static_static_give_same_message():
    init_static = crypto.generate_private_key()
    resp_static = crypto.generate_private_key()
    resp_public = crypto.public_key(resp_static)
    eph = crypto.generate_private_key()
    plain, _ = noise.write_message1(init_static, resp_public, b"ts", ephemeral_private=eph)
    cached, _ = noise.write_message1(init_static, resp_public, b"ts", ephemeral_private=eph,
                                     precomputed=noise.initial_state(resp_public),
                                     static_static=crypto.dh(init_static, resp_public))
    assert plain == cached


def test_wrong_psk_fails_message2():
    init_static, resp_static = crypto.generate_private_key(), crypto.generate_private_key()
    resp_public = crypto.public_key(resp_static)
    m1, init_state = noise.write_message1(init_static, resp_public, b"t")
    m2, _ = noise.write_message2(noise.read_message1(resp_static, resp_public, m1), bytes(32))
    with pytest.raises(crypto.DecryptionError):
        noise.read_message2(init_state, b"\x01" * 32, m2)


def test_message1_for_another_responder_fails():
    init_static = crypto.generate_private_key()
    resp_static, other_static = crypto.generate_private_key(), crypto.generate_private_key()
    m1, _ = noise.write_message1(init_static, crypto.public_key(resp_static), b"t")
    with pytest.raises(crypto.DecryptionError):
        noise.read_message1(other_static, crypto.public_key(other_static), m1)


def test_tampered_message1_fails():
    init_static, resp_static = crypto.generate_private_key(), crypto.generate_private_key()
    resp_public = crypto.public_key(resp_static)
    m1, _ = noise.write_message1(init_static, resp_public, b"t")
    flipped = bytearray(m1.encrypted_payload)
    flipped[0] ^= 0x80
    m1.encrypted_payload = bytes(flipped)
    with pytest.raises(crypto.DecryptionError):
        noise.read_message1(resp_static, resp_public, m1)


def test_low_order_ephemeral_is_refused():
    resp_static = crypto.generate_private_key()
    bogus = noise.Message1(bytes(32), bytes(48), bytes(28))
    with pytest.raises(crypto.WeakKeyError):
        noise.read_message1(resp_static, crypto.public_key(resp_static), bogus)
