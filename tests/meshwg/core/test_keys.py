"""meshwg.keys: base64 keys interchangeable with `wg genkey`, `wg pubkey`, `wg genpsk`."""

import base64
import os
import shutil
import subprocess

import pytest

from meshwg.core import crypto
from meshwg.core.keys import (KeyFormatError, decode_key, encode_key, generate_private_key_b64,
                         generate_psk_b64, public_key_b64)

WG = shutil.which("wg")
needs_wg = pytest.mark.skipif(WG is None, reason="wg (wireguard-tools) not installed")


def wg(*args: str, stdin: str = "") -> str:
    return subprocess.run([WG, *args], input=stdin, capture_output=True, text=True,
                          check=True, timeout=10).stdout.strip()


def test_encode_decode_round_trip():
    raw = os.urandom(32)
    text = encode_key(raw)
    assert len(text) == 44 and text.endswith("=")
    assert decode_key(text) == raw
    assert decode_key(f"  {text}\n") == raw  # surrounding whitespace, as in key files


@pytest.mark.parametrize("bad", [
    "abc",                                            # too short
    "",                                               # empty
    encode_key(bytes(32))[:-1],                       # 43 chars, no padding
    encode_key(bytes(32))[:-2] + "==",                # wrong padding
    "!" + encode_key(bytes(32))[1:],                  # outside the alphabet
    base64.b64encode(bytes(33)).decode()[:44],        # right length, wrong content
    base64.b64encode(bytes(31)).decode(),             # 31 bytes
    "é" * 43 + "=",                                   # non-ASCII
])
def test_decode_rejects_malformed_keys_with_one_line_message(bad):
    with pytest.raises(KeyFormatError) as info:
        decode_key(bad, "PrivateKey")
    message = str(info.value)
    assert message == ("PrivateKey: not a valid base64 WireGuard key: "
                       f"<not shown: a secret, {len(bad)} characters>")
    assert "\n" not in message
    assert isinstance(info.value, ValueError)


def test_encode_rejects_wrong_length():
    with pytest.raises(KeyFormatError):
        encode_key(bytes(31))


def test_generated_private_key_is_clamped_and_public_key_matches_crypto():
    private = generate_private_key_b64()
    raw = decode_key(private)
    assert raw[0] & 7 == 0 and raw[31] & 0x80 == 0 and raw[31] & 0x40
    assert decode_key(public_key_b64(private)) == crypto.public_key(raw)
    assert generate_private_key_b64() != private


def test_psk_is_random_32_bytes():
    a, b = generate_psk_b64(), generate_psk_b64()
    assert len(decode_key(a)) == 32 and a != b


@needs_wg
def test_our_pubkey_of_wg_genkey_equals_wg_pubkey():
    for _ in range(5):
        private = wg("genkey")
        assert public_key_b64(private) == wg("pubkey", stdin=private + "\n")


@needs_wg
def test_wg_pubkey_of_our_genkey_equals_ours():
    for _ in range(5):
        private = generate_private_key_b64()
        assert wg("pubkey", stdin=private + "\n") == public_key_b64(private)


@needs_wg
def test_unclamped_private_key_gives_the_same_public_key_as_wg():
    # wg clamps before the scalar multiplication; so must we (X25519 does).
    private = encode_key(bytes(range(224, 256)))
    assert public_key_b64(private) == wg("pubkey", stdin=private + "\n")


@needs_wg
def test_wg_accepts_our_psk_and_we_accept_wg_genpsk():
    assert len(decode_key(wg("genpsk"))) == 32
    # `wg pubkey` parses any 32-byte base64 key: it accepts our PSK text as well-formed.
    ours = generate_psk_b64()
    assert len(wg("pubkey", stdin=ours + "\n")) == 44


def test_a_public_key_is_quoted_but_never_a_secret_one():
    with pytest.raises(KeyFormatError, match="'abc'"):
        decode_key("abc", "PublicKey")
    for name in ("PrivateKey", "PresharedKey", "private_key", "preshared-key"):
        with pytest.raises(KeyFormatError) as info:
            decode_key("abc", name)
        assert "abc" not in str(info.value)
