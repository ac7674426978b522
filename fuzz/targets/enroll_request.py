"""Enrollment requests as the rendezvous reads them (discovery.enroll.messages:
EnrollmentRequest.from_wire, then verify_request). Refusal: MalformedMessage."""

from __future__ import annotations

from discovery.enroll.messages import (EnrollmentRequest, MalformedMessage, make_request,
                                       verify_request)
from fuzz.targets._keys import public
from fuzz.targets.token import sample_token

ALLOWED = (MalformedMessage,)
MAX_LEN = 16384             # text: long enough for numbers past int()'s digit limit
NOW = 1_800_000_000.0
TOKENS = (b'"invite"', b'"public_key"', b'"name"', b'"candidates"', b'"nonce"', b'"timestamp"',
          b'"proof"', b'"v"', b"1", b"[", b"]", b"{", b"}", b",", b":", b'"', b"\\u0000",
          b"1e400", b"-0", b"null", b"true", b"[[[[[[[[[[")


def one_input(data: bytes) -> None:
    request = EnrollmentRequest.from_wire(data)
    verify_request(request, sample_token().secret, NOW)


def seeds() -> dict[str, bytes]:
    token = sample_token()
    plain = make_request(token, public("joiner"), "laptop", [], NOW, nonce=b"\x07" * 16)
    with_candidates = make_request(token, public("joiner"), "desk-1",
                                   ["192.168.1.20:51820", "[2001:db8::20]:51820"], NOW,
                                   nonce=b"\x08" * 16)
    return {"plain": plain.to_wire(), "candidates": with_candidates.to_wire()}
