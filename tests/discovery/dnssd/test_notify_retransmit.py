"""NOTIFY is answered and retransmitted until answered (RFC 1996 section 3.6), on loopback."""

from __future__ import annotations

import socket
import threading
import time

import dns.flags
import dns.message
import dns.opcode

from discovery.dnssd import notify
from discovery.dnssd.notify import Notifier, NotifyListener, notify_response, response_id
from discovery.lab.netns import poll

ZONE = "mesh.internal."


def _member_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(5)
    return sock


def test_response_matches_the_query():
    query = notify.build_notify(ZONE, msg_id=4242)
    wire = notify_response(query)
    msg = dns.message.from_wire(wire)            # an independent parse
    assert msg.flags & dns.flags.QR and msg.opcode() == dns.opcode.NOTIFY and msg.id == 4242
    assert response_id(wire, ZONE) == 4242
    assert response_id(wire, "other.zone.") is None
    assert response_id(query, ZONE) is None      # a query is no response
    assert response_id(b"\x00junk", ZONE) is None


def test_listener_answers_and_the_notifier_stops_sending():
    got = threading.Event()
    member = _member_socket()
    port = member.getsockname()[1]
    member.close()
    listener = NotifyListener("127.0.0.1", ZONE, "127.0.0.2", got.set, port=port).start()
    notifier = Notifier(ZONE, "127.0.0.2")
    try:
        notifier.notify(["127.0.0.1"], port)
        assert got.wait(5)
        poll(lambda: notifier.answered == 1, 5, "the NOTIFY response to be matched", interval=0.01)
        assert notifier.sent == 1 and listener.received == 1
    finally:
        notifier.close()
        listener.stop()


def test_lost_notify_is_retransmitted_with_the_same_id_until_answered():
    member = _member_socket()
    notifier = Notifier(ZONE, "127.0.0.1")
    try:
        notifier.notify(["127.0.0.1"], member.getsockname()[1])
        first, _ = member.recvfrom(2048)            # "lost": not answered
        started = time.monotonic()
        second, source = member.recvfrom(2048)
        waited = time.monotonic() - started
        assert notify.RETRY_START * 0.8 <= waited < notify.RETRY_START * 3, waited
        assert dns.message.from_wire(first).id == dns.message.from_wire(second).id
        member.sendto(notify_response(second), source)
        poll(lambda: notifier.answered == 1, 5, "the NOTIFY response to be matched", interval=0.01)
        assert notifier.sent == 2 and notifier.unanswered == 0
    finally:
        notifier.close()
        member.close()


def test_answer_from_elsewhere_or_with_another_id_does_not_count():
    member = _member_socket()
    notifier = Notifier(ZONE, "127.0.0.1")
    try:
        notifier.notify(["127.0.0.1"], member.getsockname()[1])
        query, source = member.recvfrom(2048)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as other:   # another port
            other.sendto(notify_response(query), source)
        forged = dns.message.from_wire(notify_response(query))
        forged.id ^= 1
        member.sendto(forged.to_wire(), source)
        member.recvfrom(2048)                     # so it is still retransmitting
        assert notifier.answered == 0
    finally:
        notifier.close()
        member.close()


def test_silent_member_is_given_up_after_the_retries(monkeypatch):
    monkeypatch.setattr(notify, "RETRY_START", 0.01)
    member = _member_socket()
    notifier = Notifier(ZONE, "127.0.0.1")
    try:
        notifier.notify(["127.0.0.1"], member.getsockname()[1])
        poll(lambda: notifier.unanswered == 1, 5, "the notifier to give up", interval=0.01)
        assert notifier.sent == notify.RETRIES
        for _ in range(notify.RETRIES):
            member.recvfrom(2048)
    finally:
        notifier.close()
        member.close()


def test_close_is_prompt_with_retransmissions_pending():
    member = _member_socket()
    notifier = Notifier(ZONE, "127.0.0.1")
    notifier.notify(["127.0.0.1"], member.getsockname()[1])
    started = time.monotonic()
    notifier.close()
    member.close()
    assert time.monotonic() - started < 1.0
