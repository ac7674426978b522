"""Invite tokens with the relay's TCP port and TLS pin (format 2), and old tokens (format
1) still decoding (discovery/enroll/tokens.py)."""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import os

import pytest

from discovery.enroll.tokens import Token, TokenError, decode_token, encode_token
from meshwg.core import crypto


def sample_token(**changes) -> Token:
    tok = Token(endpoint="rz.example.net:51820",
                rendezvous_public_key=crypto.public_key(crypto.generate_private_key()),
                invite_id=os.urandom(16).hex(), secret=os.urandom(32), expires_at=None,
                mesh_id=os.urandom(16).hex(), enroll_port=51820)
    return dataclasses.replace(tok, **changes)


def _raw(text: str) -> bytes:
    payload = text[len("mwg1."):]
    return base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))


def _text(raw_body: bytes) -> str:
    packed = raw_body + hashlib.sha256(raw_body).digest()[:4]
    return "mwg1." + base64.urlsafe_b64encode(packed).rstrip(b"=").decode()


def test_token_with_relay_pin_round_trips_as_format_2() -> None:
    tok = sample_token(relay_tcp_port=443, relay_pin=os.urandom(32))
    text = encode_token(tok)
    assert _raw(text)[0] == 2
    assert decode_token(text) == tok


def test_token_without_pin_stays_format_1_and_decodes_without_one() -> None:
    tok = sample_token()
    text = encode_token(tok)
    assert _raw(text)[0] == 1
    decoded = decode_token(text)
    assert decoded == tok and decoded.relay_pin == b"" and decoded.relay_tcp_port == 0


@pytest.mark.parametrize("changes", [{"relay_pin": b"x" * 31, "relay_tcp_port": 443},
                                     {"relay_pin": os.urandom(32), "relay_tcp_port": 0}])
def test_bad_relay_fields_are_not_encoded(changes) -> None:
    with pytest.raises(ValueError):
        encode_token(sample_token(**changes))


def test_format_2_with_a_cut_pin_or_port_zero_is_refused() -> None:
    body = _raw(encode_token(sample_token(relay_tcp_port=443, relay_pin=os.urandom(32))))[:-4]
    with pytest.raises(TokenError, match="damaged"):
        decode_token(_text(body[:-1]))                   # one pin byte short
    zero_port = body[:-34] + b"\x00\x00" + body[-32:]
    with pytest.raises(TokenError, match="relay TCP port 0"):
        decode_token(_text(zero_port))
    trailing = _raw(encode_token(sample_token()))[:-4] + b"extra"
    with pytest.raises(TokenError, match="damaged"):
        decode_token(_text(trailing))                    # format 1 takes nothing after the endpoint
