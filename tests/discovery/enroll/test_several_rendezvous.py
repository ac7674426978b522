"""Enrollment with several rendezvous (issue 10, part 5): the joiner tries the token's
rendezvous in turn (real TCP on 127.0.0.1), the response's signed list of the mesh's
rendezvous, and the member state keeping them."""

from __future__ import annotations

import dataclasses
import json
import os
import socket
from pathlib import Path

import pytest

from discovery.enroll.messages import (
    MAX_RENDEZVOUS, EnrollmentError, EnrollmentRefused, EnrollmentResult, encode_response,
    make_request, parse_response,
)
from discovery.enroll.tokens import RendezvousRef
from discovery.enroll.transport import enroll_any
from discovery.stores.member import MemberState, merge_rendezvous
from tests.discovery.enroll.test_enrollment import T0, new_key, rz  # noqa: F401  (fixture)
from tests.discovery.enroll.test_token_others import other


def _dead_port() -> int:
    with socket.socket() as s:          # bound, never listening: connection refused
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _via_dead_first(token, rz):  # noqa: F811
    """The token as a mesh whose first rendezvous is down and whose second is `rz`."""
    alive = RendezvousRef(rz.state.public_key, "127.0.0.1:51820", rz.port, "100.64.0.1")
    return dataclasses.replace(token, rendezvous_public_key=new_key(), endpoint="127.0.0.1:51999",
                               enroll_port=_dead_port(), others=(alive,))


def test_join_enrolls_at_the_next_rendezvous_when_the_first_does_not_answer(rz) -> None:  # noqa: F811
    token = _via_dead_first(rz.invite(), rz)
    attempts = []
    result = enroll_any(token, new_key(), "laptop", [], timeout=5.0, clock=rz.clock,
                        on_attempt=lambda where, exc: attempts.append((where, str(exc))))
    assert result.rendezvous_public_key == rz.state.public_key
    assert [where for where, _ in attempts] == ["127.0.0.1:51999"]
    assert "cannot reach" in attempts[0][1]
    assert [m.name for m in rz.added] == ["laptop"]


def test_a_refusal_signed_with_the_invite_is_final(rz) -> None:  # noqa: F811
    token = rz.invite()
    enroll_any(token, new_key(), "first", [], clock=rz.clock)
    second = dataclasses.replace(token, others=(RendezvousRef(new_key(), "127.0.0.1:51998",
                                                              _dead_port(), "100.64.0.9"),))
    attempts = []
    with pytest.raises(EnrollmentRefused) as err:     # single use: spent
        enroll_any(second, new_key(), "second", [], clock=rz.clock,
                   on_attempt=lambda where, exc: attempts.append(where))
    assert err.value.authenticated and attempts == []


def test_when_none_answers_the_first_error_is_raised(rz) -> None:  # noqa: F811
    token = _via_dead_first(rz.invite(), rz)
    token = dataclasses.replace(token, others=(dataclasses.replace(token.others[0],
                                                                   enroll_port=_dead_port()),))
    with pytest.raises(EnrollmentError, match="127.0.0.1"):
        enroll_any(token, new_key(), "laptop", [], timeout=2.0, clock=rz.clock)
    assert rz.added == []


def _exchange(listed, rewrite=None):
    token = dataclasses.replace(
        __import__("tests.discovery.enroll.test_token_relay_pin", fromlist=["x"]).sample_token())
    request = make_request(token, new_key(), "laptop", [], T0)
    result = EnrollmentResult("100.64.0.5", "100.64.0.0/24", "mesh.example", token.rendezvous_public_key,
                              token.endpoint, token.mesh_id, "100.64.0.1", 53, tuple(listed))
    line = encode_response(request.nonce, token.secret, None, result)
    if rewrite is not None:
        line = (json.dumps(rewrite(json.loads(line))) + "\n").encode()
    return parse_response(line, request, token), line


def test_response_lists_the_mesh_rendezvous_signed() -> None:
    listed = [other(0), other(1, pin=b"", mesh_address="fd00::1")]
    result, _ = _exchange(listed)
    assert list(result.rendezvous) == listed
    assert _exchange([])[0].rendezvous == ()


def test_response_without_the_list_is_as_before_and_old_members_ignore_it() -> None:
    _, line = _exchange([other()])
    doc = json.loads(line)
    assert {"rendezvous", "rendezvous_mac"} <= doc.keys()
    result, _ = _exchange([other()], rewrite=lambda d: {k: v for k, v in d.items()
                                                        if k not in ("rendezvous", "rendezvous_mac")})
    assert result.rendezvous == ()       # the main mac does not cover the list: still valid


@pytest.mark.parametrize("rewrite", [
    lambda d: {**d, "rendezvous": d["rendezvous"][::-1]},                          # reordered
    lambda d: {**d, "rendezvous": [{**d["rendezvous"][0], "endpoint": "evil:1"}, d["rendezvous"][1]]},
    lambda d: {k: v for k, v in d.items() if k != "rendezvous_mac"},               # unsigned
    lambda d: {**d, "rendezvous": d["rendezvous"] * (MAX_RENDEZVOUS + 1)},          # too many
    lambda d: {**d, "rendezvous": "nope"},
])
def test_tampered_or_hostile_lists_are_refused(rewrite) -> None:
    with pytest.raises(EnrollmentError, match="invalid response"):
        _exchange([other(0), other(1)], rewrite=rewrite)


def test_member_state_keeps_the_other_rendezvous(tmp_path: Path) -> None:
    own = new_key()
    a, b = other(0), other(1)
    from_token = dataclasses.replace(b, mesh_address="")
    merged = merge_rendezvous(own, [RendezvousRef(own, "x:1", 2), from_token], [a, b])
    assert merged == [b, a]                       # fresher wins, first-seen order kept
    merged = merge_rendezvous(own, [b], [from_token])
    assert merged == [b]                          # an address once known is not lost
    st = MemberState(private_key=os.urandom(32), name="n", address="100.64.0.5",
                     network="100.64.0.0/24", zone="z", mesh_id="00" * 16,
                     rendezvous_public_key=own, rendezvous_endpoint="127.0.0.1:1",
                     dns_address="100.64.0.1", other_rendezvous=[a, b])
    st.save(tmp_path)
    assert MemberState.load(tmp_path).other_rendezvous == [a, b]
    doc = json.loads((tmp_path / "member.json").read_text())
    del doc["other_rendezvous"]                   # a membership saved before: none
    (tmp_path / "member.json").write_text(json.dumps(doc))
    assert MemberState.load(tmp_path).other_rendezvous == []


def test_a_single_rendezvous_failing_is_reported_once_by_the_caller(rz) -> None:  # noqa: F811
    token = dataclasses.replace(rz.invite(), enroll_port=_dead_port())
    attempts = []
    with pytest.raises(EnrollmentError, match="cannot reach"):
        enroll_any(token, new_key(), "laptop", [], timeout=2.0, clock=rz.clock,
                   on_attempt=lambda where, exc: attempts.append(where))
    assert attempts == []                 # no "trying the next" when there is none
