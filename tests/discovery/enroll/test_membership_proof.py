"""A removed member is told, and cannot be fooled (issue 10): the "is this key a member?"
question over the enrollment port and its answer, MAC'd with the X25519 static-static
secret of the rendezvous and the member (discovery.enroll.membership); and the real
enrollment server answering it over TCP on 127.0.0.1 from a real embedded store."""

from __future__ import annotations

import base64
import json
import socket

import pytest

from discovery.enroll import membership
from discovery.enroll.membership import BadAnswer, QuestionLimit
from discovery.enroll.transport import EnrollmentServer, ask_membership
from discovery.stores.rendezvous import RendezvousState
from meshwg.core import crypto


def keys():
    private = crypto.generate_private_key()
    return private, crypto.public_key(private)


RDV_PRIV, RDV_PUB = keys()
MEMBER_PRIV, MEMBER_PUB = keys()


def test_good_answer_verifies_for_each_status():
    for status in membership.STATUSES:
        q = membership.new_question(MEMBER_PUB)
        line = membership.answer(membership.parse_question(q.to_wire()), RDV_PRIV, status)
        assert membership.verify_answer(line, q, MEMBER_PRIV, RDV_PUB) == status


def test_answer_from_another_key_is_refused():
    q = membership.new_question(MEMBER_PUB)
    other_priv, _ = keys()
    line = membership.answer(q, other_priv, membership.NOT_MEMBER)     # an impostor's key
    with pytest.raises(BadAnswer, match="does not verify"):
        membership.verify_answer(line, q, MEMBER_PRIV, RDV_PUB)


def test_replayed_answer_for_an_old_nonce_is_refused():
    old = membership.new_question(MEMBER_PUB)
    recorded = membership.answer(old, RDV_PRIV, membership.NOT_MEMBER)
    fresh = membership.new_question(MEMBER_PUB)
    assert fresh.nonce != old.nonce
    with pytest.raises(BadAnswer, match="does not verify"):
        membership.verify_answer(recorded, fresh, MEMBER_PRIV, RDV_PUB)


def test_answer_about_another_member_is_refused():
    _, other_pub = keys()
    q_other = membership.new_question(other_pub)
    line = membership.answer(q_other, RDV_PRIV, membership.NOT_MEMBER)
    q = membership.Question(MEMBER_PUB, q_other.nonce)                  # same nonce, our key
    with pytest.raises(BadAnswer):
        membership.verify_answer(line, q, MEMBER_PRIV, RDV_PUB)


def test_truncated_oversized_and_garbage_answers_are_refused():
    q = membership.new_question(MEMBER_PUB)
    line = membership.answer(q, RDV_PRIV, membership.NOT_MEMBER)
    for bad in (line[:len(line) // 2], line[:-20] + b"\n", b"", b"\x00\xff\n", b"[]\n",
                b" " * (membership.MAX_LINE + 1)):
        with pytest.raises(BadAnswer):
            membership.verify_answer(bad, q, MEMBER_PRIV, RDV_PUB)


def test_forged_status_flip_and_short_mac_are_refused():
    q = membership.new_question(MEMBER_PUB)
    doc = json.loads(membership.answer(q, RDV_PRIV, membership.MEMBER))
    flipped = json.dumps({**doc, "status": membership.NOT_MEMBER}).encode() + b"\n"
    with pytest.raises(BadAnswer, match="does not verify"):
        membership.verify_answer(flipped, q, MEMBER_PRIV, RDV_PUB)
    short = json.dumps({**doc, "mac": base64.b64encode(b"x" * 16).decode()}).encode() + b"\n"
    with pytest.raises(BadAnswer, match="valid status and mac"):
        membership.verify_answer(short, q, MEMBER_PRIV, RDV_PUB)
    made_up = json.dumps({**doc, "status": "removed"}).encode() + b"\n"
    with pytest.raises(BadAnswer):
        membership.verify_answer(made_up, q, MEMBER_PRIV, RDV_PUB)


def test_low_order_keys_are_refused_on_both_sides():
    zero = bytes(32)
    with pytest.raises(crypto.WeakKeyError):
        membership.answer(membership.new_question(zero), RDV_PRIV, membership.NOT_MEMBER)
    q = membership.new_question(MEMBER_PUB)
    line = membership.answer(q, RDV_PRIV, membership.NOT_MEMBER)
    with pytest.raises(BadAnswer):
        membership.verify_answer(line, q, MEMBER_PRIV, zero)


def test_parse_question_ignores_other_lines():
    assert membership.parse_question(b'{"v":1,"invite":"00"}\n') is None
    assert membership.parse_question(b'{"v":1,"membership":"AAAA","nonce":"AAAA"}\n') is None
    assert membership.parse_question(b'{"membership"' + b"x" * 600 + b"\n") is None
    assert membership.parse_question(b'not json "membership"\n') is None
    q = membership.new_question(MEMBER_PUB)
    assert membership.parse_question(q.to_wire()) == q


def test_question_limit_per_source_and_bounded_table():
    limit = QuestionLimit(per_window=2, window=10.0, max_sources=2)
    assert limit.allow("a", 0.0) and limit.allow("a", 1.0)
    assert not limit.allow("a", 2.0)
    assert limit.allow("a", 10.5)                     # a new window
    assert limit.allow("b", 11.0)
    assert not limit.allow("c", 12.0)                 # table full of live sources
    assert limit.allow("c", 30.0)                     # the old ones expired


@pytest.fixture
def server(tmp_path):
    state = RendezvousState.init(tmp_path / "rdv", "100.64.0.0/24", "127.0.0.1:51820")
    with state, EnrollmentServer(state, "127.0.0.1", 0) as srv:
        yield state, srv


def test_the_enrollment_server_answers_member_then_not_member(server):
    state, srv = server
    address = ("127.0.0.1", srv.port)
    state.add_member("laptop", MEMBER_PUB)
    assert ask_membership(MEMBER_PRIV, state.public_key, address) == membership.MEMBER
    state.remove_member("laptop")
    assert ask_membership(MEMBER_PRIV, state.public_key, address) == membership.NOT_MEMBER
    with pytest.raises(BadAnswer):            # the member expects another rendezvous's key
        ask_membership(MEMBER_PRIV, RDV_PUB, address)
    assert srv.stats["membership_member"] == 1 and srv.stats["membership_not_member"] == 2


def test_the_enrollment_server_rate_limits_questions(server):
    state, srv = server
    address = ("127.0.0.1", srv.port)
    srv.core._questions = QuestionLimit(per_window=3, window=3600.0)   # no window ends mid-test
    for _ in range(3):
        assert ask_membership(MEMBER_PRIV, state.public_key, address) == membership.NOT_MEMBER
    with socket.create_connection(address, timeout=5) as sock:    # one more: closed unanswered
        sock.sendall(membership.new_question(MEMBER_PUB).to_wire())
        assert sock.recv(100) == b""
    assert srv.stats["membership_rate_limited"] == 1
