"""Issue 9 cases 7 and 11: hostile enrollment requests over real TCP on 127.0.0.1.

Case 7: deeply nested JSON, 5,000-digit numbers and oversized fields are each refused
with one log line and no traceback; the server goes on enrolling. Case 11: joiners that
lie (a reserved name, a low-order public key, host-name or scoped candidates, candidates
at third parties) are refused or have the lie left out, and nothing unpublishable is
stored.
"""

from __future__ import annotations

import json
import logging

import pytest

from discovery.enroll.messages import (
    EnrollmentRequest, _mac, make_request, request_signed_bytes,
)
from discovery.enroll.tokens import Token
from meshwg.core.keys import encode_key

from tests.discovery.enroll.test_enrollment import Rendezvous, exchange, new_key, rz  # noqa: F401
from tests.discovery.stores.test_validate import LOW_ORDER


def signed(token: Token, now: float, name: str, public_key: bytes,
           candidates: list[str]) -> bytes:
    """A request with a valid proof whatever it claims (what a lying joiner can send:
    it holds the token)."""
    good = make_request(token, new_key(), "placeholder", [], now)
    signed_bytes = request_signed_bytes(token.invite_id, public_key, name, candidates,
                                        good.nonce, good.timestamp)
    req = EnrollmentRequest(token.invite_id, public_key, name, tuple(candidates), good.nonce,
                            good.timestamp, _mac(token.secret, signed_bytes))
    return req.to_wire()


def answer(rz: Rendezvous, line: bytes) -> dict:
    return json.loads(exchange(rz.port, line))


def no_tracebacks(caplog: pytest.LogCaptureFixture) -> None:
    bad = [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]
    assert not bad, [r.getMessage() for r in bad]


@pytest.mark.parametrize("line", [
    b'{"v":1,"invite":' + b"[" * 5000 + b"]" * 5000 + b"}\n",         # 5,000 levels (10 KB)
    b'{"v":1,"invite":' + b"[" * 3000 + b"]" * 3000 + b"}\n",         # 3,000 levels in 6 KB
    b'{"v":1,"timestamp":' + b"9" * 5000 + b"}\n",                    # a 5,000-digit number
    b'{"v":' + b"1" * 4400 + b"}\n",                                  # beyond int's digit limit
    b'{"v":1,"x":1e999999}\n', b'{"v":NaN}\n', b'{"v":-Infinity}\n',
    b'{"v":1,"name":"' + b"a" * 7000 + b'"}\n',                       # an oversized field
    b'{"v":1,"candidates":["' + b'1.2.3.4:5","' * 600 + b'"]}\n',     # an oversized list
])
def test_hostile_json_is_refused_with_one_line(rz: Rendezvous, caplog: pytest.LogCaptureFixture,
                                               line: bytes) -> None:
    caplog.set_level(logging.INFO)
    try:
        got = exchange(rz.port, line)
    except ConnectionResetError:        # more than MAX_MESSAGE: closed, input unread
        got = b""
    if got:
        doc = json.loads(got)
        assert (doc["status"], doc["reason"]) == ("refused", "malformed")
        assert rz.server.stats["malformed"] == 1
        lines = [r for r in caplog.records if "malformed enrollment request" in r.getMessage()]
        assert len(lines) == 1
    else:
        assert rz.server.stats["dropped_unreadable"] == 1
    no_tracebacks(caplog)
    # the server still enrolls
    assert rz.enroll(rz.invite(), "after").address.startswith("100.64.0.")


@pytest.mark.parametrize("name", ["rendezvous", "localhost"])
def test_reserved_names_are_refused(rz: Rendezvous, caplog: pytest.LogCaptureFixture,
                                    name: str) -> None:
    doc = answer(rz, signed(rz.invite(), rz.clock(), name, new_key(), []))
    assert doc["reason"] == "malformed" and "reserved" in doc["message"]
    assert rz.state.members() == []
    no_tracebacks(caplog)
    with pytest.raises(ValueError, match="reserved"):      # the joiner's side says so first
        rz.enroll(rz.invite(), name)


@pytest.mark.parametrize("key", LOW_ORDER, ids=range(len(LOW_ORDER)))
def test_weak_keys_are_refused(rz: Rendezvous, caplog: pytest.LogCaptureFixture,
                               key: bytes) -> None:
    doc = answer(rz, signed(rz.invite(), rz.clock(), "liar", key, []))
    assert doc["reason"] == "malformed" and "low-order" in doc["message"], doc
    assert rz.state.members() == []
    no_tracebacks(caplog)


@pytest.mark.parametrize("candidate", ["evil.example:51820", "[fe80::1%lo]:51820",
                                       "[fe80::1]:51820", "127.0.0.1:22", "224.0.0.251:5353"])
def test_unpublishable_candidates_are_refused(rz: Rendezvous, candidate: str) -> None:
    doc = answer(rz, signed(rz.invite(), rz.clock(), "liar", new_key(), [candidate]))
    assert doc["reason"] == "malformed" and "host candidate" in doc["message"], doc
    assert rz.state.members() == []


def test_third_party_candidates_are_left_out(rz: Rendezvous,
                                             caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    third = [f"93.184.216.{i}:{i + 1}" for i in range(14)] + ["[2606:4700::1]:53"]
    own = ["192.168.7.2:51820", "[fd00:7::2]:51820"]
    rz.enroll(rz.invite(), "honest-ish", candidates=own + third[:14])
    member = rz.state.find_member("honest-ish")
    assert member.host_candidates == own
    left_out = [r for r in caplog.records if "third party" in r.getMessage()]
    assert len(left_out) == 14
    doc = answer(rz, signed(rz.invite(), rz.clock(), "liar", new_key(), third[-1:] + own))
    assert doc["status"] == "ok"
    assert rz.state.find_member("liar").host_candidates == own
    assert encode_key(member.public_key)      # stored keys stay readable
