"""Invite tokens: the one copy-pasteable string a joiner gets (discovery/enroll/tokens.py)."""

from __future__ import annotations

import dataclasses
import os

import pytest

from discovery.enroll.tokens import Token, TokenError, decode_token, encode_token
from meshwg.core import crypto
from meshwg.util.errors import MeshwgError

T0 = 1_750_000_000.0


def new_key() -> bytes:
    return crypto.public_key(crypto.generate_private_key())


def sample_token(**changes) -> Token:
    tok = Token(endpoint="rz.example.net:51820", rendezvous_public_key=new_key(),
                invite_id=os.urandom(16).hex(), secret=os.urandom(32), expires_at=int(T0) + 3600,
                mesh_id=os.urandom(16).hex(), enroll_port=51820)
    return dataclasses.replace(tok, **changes)


@pytest.mark.parametrize("changes", [
    {}, {"expires_at": None}, {"endpoint": "[2001:db8::7]:4000", "enroll_port": 4001},
    {"endpoint": "203.0.113.9:1"},
])
def test_token_round_trip(changes: dict) -> None:
    tok = sample_token(**changes)
    text = encode_token(tok)
    assert text.startswith("mwg1.")
    assert all(c.isalnum() or c in "-_." for c in text)  # one copy-pasteable word
    assert decode_token(text) == tok
    wrapped = "  " + "\n".join(text[i:i + 40] for i in range(0, len(text), 40)) + "\n"
    assert decode_token(wrapped) == tok  # line breaks from an email or terminal


def test_token_repr_hides_secret() -> None:
    tok = sample_token()
    assert tok.secret.hex() not in repr(tok) and repr(tok.secret) not in repr(tok)


def _flip(text: str, index: int) -> str:
    c = text[index]
    return text[:index] + ("A" if c != "A" else "B") + text[index + 1:]


@pytest.mark.parametrize("make_bad, match", [
    (lambda t: "", "should start with 'mwg1.'"),
    (lambda t: "hello world", "should start with 'mwg1.'"),
    (lambda t: "mwg2." + t[5:], "version 'mwg2' is not supported"),
    (lambda t: t[:40], "truncated"),
    (lambda t: t[:-1] + "!", "outside base64url"),
    (lambda t: _flip(t, 60), "checksum mismatch"),
    (lambda t: t + "AAAA", "checksum mismatch"),
])
def test_malformed_tokens_give_one_line_reason(make_bad, match: str) -> None:
    text = encode_token(sample_token())
    with pytest.raises(TokenError, match=match) as info:
        decode_token(make_bad(text))
    assert "\n" not in str(info.value)


def test_token_error_is_a_meshwg_error_and_enroll_address_drops_brackets() -> None:
    with pytest.raises(MeshwgError):
        decode_token("garbage")
    tok = sample_token(endpoint="[2001:db8::7]:4000", enroll_port=4001)
    assert tok.enroll_address == ("2001:db8::7", 4001)
    with pytest.raises(ValueError, match="HOST:PORT"):
        encode_token(sample_token(endpoint="no-port"))
