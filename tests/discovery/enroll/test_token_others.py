"""Invite tokens naming several rendezvous (format 3, discovery/enroll/tokens.py): round
trips, formats 1 and 2 unchanged, hostile lists bounded with one-line errors."""

from __future__ import annotations

import dataclasses
import os

import pytest

from discovery.enroll.tokens import (MAX_OTHERS, RendezvousRef, TokenError, decode_token,
                                     encode_token)
from tests.discovery.enroll.test_token_relay_pin import _raw, _text, sample_token


def other(i: int = 0, **changes) -> RendezvousRef:
    ref = RendezvousRef(public_key=os.urandom(32), endpoint=f"rz{i}.example.net:{51820 + i}",
                        enroll_port=51900 + i, mesh_address=f"10.77.0.{2 + i}",
                        pin=os.urandom(32), relay_tcp_port=443)
    return dataclasses.replace(ref, **changes)


def test_format_3_round_trips_with_and_without_relay_pin() -> None:
    for first in (sample_token(), sample_token(relay_tcp_port=443, relay_pin=os.urandom(32))):
        tok = dataclasses.replace(first, others=(other(0), other(1, pin=b"", relay_tcp_port=0,
                                                                 mesh_address="fd00::5")))
        text = encode_token(tok)
        assert _raw(text)[0] == 3
        assert decode_token(text) == tok
        assert [r.public_key for r in decode_token(text).rendezvous] == \
            [tok.rendezvous_public_key] + [r.public_key for r in tok.others]


def test_tokens_without_others_keep_formats_1_and_2() -> None:
    assert _raw(encode_token(sample_token()))[0] == 1
    assert _raw(encode_token(sample_token(relay_tcp_port=443, relay_pin=os.urandom(32))))[0] == 2
    assert decode_token(encode_token(sample_token())).others == ()


def test_first_rendezvous_is_listed_first_with_its_enrollment_address() -> None:
    tok = sample_token(others=(other(3),))
    first, second = tok.rendezvous
    assert first.endpoint == tok.endpoint and first.enroll_address == tok.enroll_address
    assert second.enroll_address == ("rz3.example.net", 51903)


def test_encoder_refuses_too_many_and_malformed_others() -> None:
    with pytest.raises(ValueError):
        encode_token(sample_token(others=tuple(other(i) for i in range(MAX_OTHERS + 1))))
    with pytest.raises(ValueError):
        encode_token(sample_token(others=(other(pin=b"x" * 5),)))
    with pytest.raises(ValueError):
        encode_token(sample_token(others=(other(enroll_port=0),)))


def _body(tok) -> bytes:
    return _raw(encode_token(tok))[:-4]


@pytest.mark.parametrize("mangle, needle", [
    (lambda b: b[:-3], "cut short"),                         # truncated list
    (lambda b: b + b"\0" * 200, "bytes after"),              # garbage after the list
])
def test_hostile_tails_are_one_line_errors(mangle, needle) -> None:
    body = _body(sample_token(others=(other(),)))
    with pytest.raises(TokenError) as err:
        decode_token(_text(mangle(body)))
    assert needle in str(err.value) and "\n" not in str(err.value)


def test_count_above_the_bound_is_refused_before_reading_entries() -> None:
    body = bytearray(_body(sample_token(others=(other(),))))
    count_at = len(body) - len(_pack_len(other()))
    body[count_at - 1] = 255
    with pytest.raises(TokenError, match="at most"):
        decode_token(_text(bytes(body)))


def _pack_len(ref: RendezvousRef) -> bytes:
    from discovery.enroll.tokens import _pack_other
    return _pack_other(ref)


def test_bad_entry_fields_are_refused() -> None:
    ref = other()
    body = _body(sample_token(others=(ref,)))
    entry = _pack_len(ref)
    start = len(body) - len(entry)
    bad_port = body[:start + 32] + b"\0\0" + body[start + 34:]
    with pytest.raises(TokenError, match="bad pin, address or port"):
        decode_token(_text(bad_port))
    bad_endpoint = body[:-1] + b"\xff"
    with pytest.raises(TokenError, match="invalid endpoint"):
        decode_token(_text(bad_endpoint))


def test_random_tails_never_raise_anything_but_token_error() -> None:
    base = _body(sample_token(others=(other(),)))
    for _ in range(300):
        cut = len(base) - 1 - os.urandom(1)[0] % 100
        body = base[:cut] + os.urandom(os.urandom(1)[0] % 120)
        try:
            decode_token(_text(body))
        except TokenError as exc:
            assert "\n" not in str(exc)
