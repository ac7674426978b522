"""Enrollment responses as the joiner reads them (discovery.enroll.messages.parse_response).
Refusal: EnrollmentError (EnrollmentRefused for an authenticated or plain refusal)."""

from __future__ import annotations

from discovery.enroll.messages import (EnrollmentError, EnrollmentResult, encode_response,
                                       make_request, parse_response)
from discovery.stores.invites import InviteRefusal
from fuzz.targets._keys import public
from fuzz.targets.enroll_request import NOW, TOKENS as _REQUEST_TOKENS
from fuzz.targets.token import sample_token

ALLOWED = (EnrollmentError,)
MAX_LEN = 16384             # text: long enough for numbers past int()'s digit limit
TOKENS = _REQUEST_TOKENS + (b'"status"', b'"ok"', b'"refused"', b'"reason"', b'"message"',
                            b'"mac"', b'"dns_port"', b'"address"', b'"network"', b'"zone"')
_TOKEN = sample_token()
_REQUEST = make_request(_TOKEN, public("joiner"), "laptop", [], NOW, nonce=b"\x07" * 16)


def one_input(data: bytes) -> None:
    parse_response(data, _REQUEST, _TOKEN, "fuzz")


def seeds() -> dict[str, bytes]:
    result = EnrollmentResult(address="100.64.0.7", network="100.64.0.0/10", zone="mesh.test.",
                              rendezvous_public_key=_TOKEN.rendezvous_public_key,
                              rendezvous_endpoint=_TOKEN.endpoint, mesh_id=_TOKEN.mesh_id,
                              dns_address="100.64.0.1", dns_port=53)
    return {
        "ok": encode_response(_REQUEST.nonce, _TOKEN.secret, None, result),
        "refused": encode_response(_REQUEST.nonce, _TOKEN.secret,
                                   InviteRefusal("expired", "the invite expired"), None),
        "refused-unsigned": encode_response(b"", None, InviteRefusal("malformed", "bad"), None),
    }
