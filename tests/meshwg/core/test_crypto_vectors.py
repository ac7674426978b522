"""Known-answer tests for the primitives in meshwg.crypto.

Sources of the vectors (facts, carried over as data):
- KDF: wireguard-go device/kdf_test.go.
- Keyed BLAKE2s: WireGuard zinc selftest (blake2s_keyed_testvecs): key 00..1f, input 00..(i-1).
- HMAC-BLAKE2s: Linux lib/crypto/blake2s-selftest.c (blake2s_hmac_testvecs).
- HChaCha20: draft-irtf-cfrg-xchacha section 2.2.1 (also zinc hchacha20_testvecs).
- XChaCha20-Poly1305: draft-irtf-cfrg-xchacha appendix A.3.1.
- X25519: RFC 7748 section 6.1.
"""

from __future__ import annotations

import hashlib
import struct

import pytest
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

from meshwg.core import crypto

h = bytes.fromhex

# --- KDF (wireguard-go device/kdf_test.go) ----------------------------------------------

KDF_VECTORS = [
    ("746573742d6b6579", "746573742d696e707574",
     "6f0e5ad38daba1bea8a0d213688736f19763239305e0f58aba697f9ffc41c633",
     "df1194df20802a4fe594cde27e92991c8cae66c366e8106aaa937a55fa371e8a",
     "fac6e2745a325f5dc5d11a5b165aad08b0ada28e7b4e666b7c077934a4d76c24"),
    ("776972656775617264", "776972656775617264",
     "491d43bbfdaa8750aaf535e334ecbfe5129967cd64635101c566d4caefda96e8",
     "1e71a379baefd8a79aa4662212fcafe19a23e2b609a3db7d6bcba8f560e3d25f",
     "31e1ae48bddfbe5de38f295e5452b1909a1b4e38e183926af3780b0c1e1f0160"),
    ("", "",
     "8387b46bf43eccfcf349552a095d8315c4055beb90208fb1be23b894bc2ed5d0",
     "58a0e5f6faefccf4807bff1f05fa8a9217945762040bcec2f4b4a62bdfe0e86e",
     "0ce6ea98ec548f8e281e93e32db65621c45eb18dc6f0a7ad94178610a2f7338e"),
]


@pytest.mark.parametrize("key,data,t0,t1,t2", KDF_VECTORS)
def test_kdf_matches_wireguard_go_vectors(key, data, t0, t1, t2):
    assert crypto.kdf(h(key), h(data), 3) == (h(t0), h(t1), h(t2))
    assert crypto.kdf(h(key), h(data), 2) == (h(t0), h(t1))
    assert crypto.kdf(h(key), h(data), 1) == (h(t0),)


# --- Keyed BLAKE2s (zinc blake2s_keyed_testvecs; index = input length) -------------------

BLAKE2S_KEYED = {
    0: "48a8997da407876b3d79c0d92325ad3b89cbb754d86ab71aee047ad345fd2c49",
    1: "40d15fee7c328830166ac3f918650f807e7e01e177258cdc0a39b11f598066f1",
    2: "6bb71300644cd3991b26ccd4d274acd1adeab8b1d7914546c1198bbe9fc9d803",
    3: "1d220dbe2ee134661fdf6d9e74b41704710556f2f6e5a091b227697445dbea6b",
    31: "b6156f72d380ee9ea6acd190464f2307a5c179ef01fd71f99f2d0f7a57360aea",
    32: "c03bc642b20959cbe133a0303e0c1abff3e31ec8e1a328ec8565c36decff5265",
    63: "c65382513f07460da39833cb666c5ed82e61b9e998f4b0c4287cee56c3cc9bcd",
    64: "8975b0577fd35566d750b362b0897a26c399136df07bababbde6203ff2954ed4",
    65: "21fe0ceb0052be7fb0f004187cacd7de67fa6eb0938d927677f2398c132317a8",
    127: "ddbfea75cc467882eb3483ce5e2e756a4f4701b76b445519e89f22d60fa86e06",
    128: "0c311f38c35a4fb90d651c289d486856cd1413df9b0677f53ece2cd9e477c60a",
    255: "3fb735061abc519dfe979e54c1ee5bfad0a9d858b3315bad34bde999efd724dd",
}


@pytest.mark.parametrize("length,expected", sorted(BLAKE2S_KEYED.items()))
def test_keyed_blake2s_zinc_vectors(length, expected):
    key = bytes(range(32))
    data = bytes(range(length))
    assert hashlib.blake2s(data, key=key).digest() == h(expected)


def test_mac_is_keyed_blake2s_128_not_a_truncation():
    """WireGuard's MAC is BLAKE2s with a 16-byte digest: a different hash, not a prefix."""
    key = bytes(range(32))
    full = h(BLAKE2S_KEYED[3])
    tag = crypto.mac(key, bytes(range(3)))
    assert len(tag) == 16
    assert tag != full[:16]


def test_hash_concatenates_its_parts():
    assert crypto.hash_(b"mac1----", b"\x01" * 32) == crypto.hash_(b"mac1----" + b"\x01" * 32)
    assert len(crypto.hash_(b"")) == 32


# --- HMAC-BLAKE2s (kernel blake2s_hmac_testvecs) ------------------------------------------

def _fibonacci_key() -> bytes:
    key = [1, 1]
    while len(key) < 32:
        key.append((key[-2] + key[-1]) & 0xFF)
    return bytes(key)


def test_hmac_blake2s_kernel_vectors():
    key = _fibonacci_key()
    buf = bytes(range(256))
    assert crypto.hmac_blake2s(key, buf) == h(
        "cee1576982dcbf43ad564c70ed681696cfa473e8e8fc3279080a7582da3f0511")
    # A key longer than the 64-byte block is hashed first.
    assert crypto.hmac_blake2s(buf, key) == h(
        "772f0c7141f44b2bb3c6b6f960dee4523866e8bf9b96c49f60d9243799d6ec31")


# --- HChaCha20, checked through the XChaCha20-Poly1305 construction -------------------------

HCHACHA_KEY = bytes(range(32))
HCHACHA_NONCE = h("000000090000004a0000000031415927")
HCHACHA_OUTPUT = h("82413b4227b27bfed30e42508a877d73a0f9e4d58a74a853c12ec41326d3ecdc")


@pytest.mark.parametrize("tail", [bytes(8), h("0102030405060708"), b"\xff" * 8])
@pytest.mark.parametrize("plaintext,aad", [(b"", b""), (b"sunscreen" * 9, b"aad"), (bytes(16), b"")])
def test_hchacha20_vector_via_xchacha(tail, plaintext, aad):
    """XChaCha20-Poly1305(k, n24) == ChaCha20-Poly1305(HChaCha20(k, n24[:16]), 0^4 || n24[16:])."""
    nonce24 = HCHACHA_NONCE + tail
    sealed = crypto.xaead_seal(HCHACHA_KEY, nonce24, plaintext, aad)
    reference = ChaCha20Poly1305(HCHACHA_OUTPUT).encrypt(bytes(4) + tail, plaintext, aad or None)
    assert sealed == reference
    assert crypto.xaead_open(HCHACHA_KEY, nonce24, reference, aad) == plaintext


# --- XChaCha20-Poly1305 AEAD (draft-irtf-cfrg-xchacha A.3.1) -------------------------------

XCHACHA_PLAINTEXT = (b"Ladies and Gentlemen of the class of '99: If I could offer you only one "
                     b"tip for the future, sunscreen would be it.")
XCHACHA_AAD = h("50515253c0c1c2c3c4c5c6c7")
XCHACHA_KEY = h("808182838485868788898a8b8c8d8e8f909192939495969798999a9b9c9d9e9f")
XCHACHA_NONCE = h("404142434445464748494a4b4c4d4e4f5051525354555657")
XCHACHA_CIPHERTEXT = h(
    "bd6d179d3e83d43b9576579493c0e939572a1700252bfaccbed2902c21396cbb731c7f1b0b4aa644"
    "0bf3a82f4eda7e39ae64c6708c54c216cb96b72e1213b4522f8c9ba40db5d945b11b69b982c1bb9e"
    "3f3fac2bc369488f76b2383565d3fff921f9664c97637da9768812f615c68b13b52e")
XCHACHA_TAG = h("c0875924c1c7987947deafd8780acf49")


def test_xchacha20poly1305_draft_example():
    sealed = crypto.xaead_seal(XCHACHA_KEY, XCHACHA_NONCE, XCHACHA_PLAINTEXT, XCHACHA_AAD)
    assert sealed == XCHACHA_CIPHERTEXT + XCHACHA_TAG
    assert crypto.xaead_open(XCHACHA_KEY, XCHACHA_NONCE, sealed, XCHACHA_AAD) == XCHACHA_PLAINTEXT


@pytest.mark.parametrize("where", [0, 57, len(XCHACHA_CIPHERTEXT), len(XCHACHA_CIPHERTEXT) + 15])
def test_xchacha20poly1305_rejects_tampering(where):
    sealed = bytearray(XCHACHA_CIPHERTEXT + XCHACHA_TAG)
    sealed[where] ^= 0x01
    with pytest.raises(crypto.DecryptionError):
        crypto.xaead_open(XCHACHA_KEY, XCHACHA_NONCE, bytes(sealed), XCHACHA_AAD)
    with pytest.raises(crypto.DecryptionError):
        crypto.xaead_open(XCHACHA_KEY, XCHACHA_NONCE, XCHACHA_CIPHERTEXT + XCHACHA_TAG, b"other aad")


# --- ChaCha20-Poly1305 with WireGuard's counter nonce --------------------------------------

def test_counter_nonce_layout():
    assert crypto.counter_nonce(0) == bytes(12)
    assert crypto.counter_nonce(1) == bytes(4) + b"\x01" + bytes(7)
    assert crypto.counter_nonce(0x0102030405060708) == bytes(4) + h("0807060504030201")


def test_aead_counter_is_the_nonce():
    key = bytes(range(32))
    aead = crypto.Aead(key)
    sealed = aead.seal(7, b"payload", b"ad")
    assert sealed == ChaCha20Poly1305(key).encrypt(crypto.counter_nonce(7), b"payload", b"ad")
    assert aead.open(7, sealed, b"ad") == b"payload"
    assert crypto.aead_open(key, 7, crypto.aead_seal(key, 7, b"x"), b"") == b"x"
    with pytest.raises(crypto.DecryptionError):
        aead.open(8, sealed, b"ad")
    with pytest.raises(crypto.DecryptionError):
        aead.open(7, sealed, b"")


# --- TAI64N --------------------------------------------------------------------------------

def _decode_tai64n(label: bytes) -> tuple[int, int]:
    seconds, nanos = struct.unpack(">QI", label)
    return seconds, nanos


def test_tai64n_epoch_and_layout():
    label = crypto.tai64n(0.0)
    assert len(label) == 12
    assert label == h("400000000000000a") + bytes(4)
    assert crypto.tai64n(1_700_000_000.0) == struct.pack(">QI", 0x400000000000000A + 1_700_000_000, 0)


@pytest.mark.parametrize("fraction", [0.0, 0.001, 0.0167, 0.5, 0.999])
def test_tai64n_rounds_nanoseconds_down_to_multiple_of_2_pow_24(fraction):
    label = crypto.tai64n(1000 + fraction)
    seconds, nanos = _decode_tai64n(label)
    assert seconds == 0x400000000000000A + 1000
    assert nanos % (1 << 24) == 0
    exact = round(fraction * 1e9)
    assert nanos <= exact < nanos + (1 << 24) + 1000  # float slack of a microsecond


def test_tai64n_is_monotonic_and_coarse():
    assert crypto.tai64n(1000.001) == crypto.tai64n(1000.0)          # within one 16.7 ms step
    assert _decode_tai64n(crypto.tai64n(1000.5))[1] == (500_000_000 >> 24) << 24
    previous = b""
    for step in range(0, 3000, 7):
        label = crypto.tai64n(1000 + step / 1000)
        assert label >= previous
        previous = label


# --- Curve25519 -------------------------------------------------------------------------------

def test_clamp():
    assert crypto.clamp(b"\xff" * 32) == b"\xf8" + b"\xff" * 30 + b"\x7f"
    assert crypto.clamp(bytes(32)) == bytes(31) + b"\x40"
    key = crypto.generate_private_key()
    assert len(key) == 32 and crypto.clamp(key) == key


def test_x25519_rfc7748_vector():
    alice = h("77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a")
    bob = h("5dab087e624a8a4b79e17f8b83800ee66f3bb1292618b6fd1c2f8b27ff88e0eb")
    assert crypto.public_key(alice) == h("8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a")
    assert crypto.public_key(bob) == h("de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f")
    shared = h("4a5d9d5ba4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742")
    assert crypto.dh(alice, crypto.public_key(bob)) == shared
    assert crypto.dh(bob, crypto.public_key(alice)) == shared


LOW_ORDER_POINTS = [
    "0000000000000000000000000000000000000000000000000000000000000000",  # 0
    "0100000000000000000000000000000000000000000000000000000000000000",  # 1
    "e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800",  # order 8
    "5f9c95bca3508c24b1d0b1559c83ef5b04445cc4581c8e86d8224eddd09f1157",  # order 8
    "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",  # p - 1
    "edffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",  # p
]


@pytest.mark.parametrize("point", LOW_ORDER_POINTS)
def test_dh_with_low_order_point_raises_weak_key(point):
    with pytest.raises(crypto.WeakKeyError):
        crypto.dh(crypto.generate_private_key(), h(point))
