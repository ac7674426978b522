"""The observation responder and the netcheck client over loopback (real sockets)."""

import socket
import time

import pytest

from discovery.netcheck import wire
from discovery.netcheck.classify import classify
from discovery.netcheck.command import run
from discovery.netcheck.probe import gather
from discovery.netcheck.responder import BURST, RATE, SEEN_FOR, ObservationResponder, observe_ports
from discovery.lab.netns import poll


@pytest.fixture
def responder():
    for _ in range(20):
        probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        probe.bind(("127.0.0.1", 0))
        base = probe.getsockname()[1] - 2
        probe.close()
        if base < 1024 or base > 65530:
            continue
        try:
            server = ObservationResponder(observe_ports(base), host4="127.0.0.1", host6=None).start()
        except OSError:
            continue
        try:
            yield base, server
        finally:
            server.stop()
        return
    pytest.skip("no two free consecutive loopback UDP ports")


def client() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(2)
    return sock


def test_answers_with_the_observed_source(responder):
    base, server = responder
    sock = client()
    try:
        txid = wire.new_txid()
        request = wire.encode_request(txid)
        sock.sendto(request, ("127.0.0.1", base + 2))
        answer, _ = sock.recvfrom(2048)
        assert len(answer) <= len(request)
        assert wire.parse_answer(answer) == (txid, sock.getsockname())
    finally:
        sock.close()
    poll(lambda: server.answered == 1, 5, "the answer to be counted")


def test_answered_sources_are_remembered_for_a_while(responder):
    # the rendezvous accepts a member's reported reflexive endpoint in another family only
    # where a request really came from (discovery.stores.validate.screen_candidates)
    base, server = responder
    sock = client()
    try:
        sock.sendto(wire.encode_request(wire.new_txid()), ("127.0.0.1", base + 2))
        sock.recvfrom(2048)
        me = sock.getsockname()
        assert server.seen_recently(me)
        assert server.seen_recently(("::ffff:127.0.0.1", me[1]))        # dual-stack spelling
        assert not server.seen_recently(("127.0.0.1", me[1] + 1 if me[1] < 65535 else 1))
        assert not server.seen_recently(me, now=time.monotonic() + SEEN_FOR + 1)
        sock.sendto(b"garbage" * 10, ("127.0.0.1", base + 2))          # unanswered: not seen
        poll(lambda: server.dropped == 1, 5, "the malformed request to be counted")
    finally:
        sock.close()


def test_malformed_and_short_requests_are_dropped_and_counted(responder):
    base, server = responder
    sock = client()
    try:
        sock.sendto(b"MWNC\x01\x01" + bytes(20), ("127.0.0.1", base + 3))   # too short to answer
        sock.sendto(b"x" * 100, ("127.0.0.1", base + 3))
        poll(lambda: server.dropped == 2, 5, "the responder to drop two datagrams")
        sock.settimeout(0.2)
        with pytest.raises(socket.timeout):
            sock.recvfrom(2048)
    finally:
        sock.close()
    assert server.answered == 0


def test_each_source_is_rate_limited(responder):
    base, server = responder
    sock = client()
    sent = BURST * 3
    started = time.monotonic()
    try:
        for _ in range(sent):
            sock.sendto(wire.encode_request(wire.new_txid()), ("127.0.0.1", base + 2))
        poll(lambda: server.answered + server.limited == sent, 5, "every request handled")
    finally:
        sock.close()
    # the bucket holds BURST answers and refills at RATE per second while the test runs
    refilled = RATE * (time.monotonic() - started)
    assert server.answered <= BURST + refilled + 1 and server.limited >= sent - BURST - refilled - 1
    assert server.limited > 0 or refilled >= sent - BURST


def test_netcheck_over_loopback_sees_no_nat_and_finishes_quickly(responder):
    base, _ = responder
    started = time.monotonic()
    report = run(f"127.0.0.1:{base}")
    assert time.monotonic() - started < 5
    assert report["udp"] is True and report["ipv4"] is True
    assert report["hard_nat"] is False and report["hairpin"] is True
    assert report["families"]["ipv4"]["behind_nat"] is False
    assert report["reflexive_ipv4"].startswith("127.0.0.1:")
    assert report["latency_ms"] is not None


def test_netcheck_without_a_responder_reports_udp_blocked_within_5_s():
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]           # a bound socket that never answers
    try:
        started = time.monotonic()
        obs = gather("127.0.0.1", (port, port), f"127.0.0.1:{port - 2}")
        assert time.monotonic() - started < 5
    finally:
        sock.close()
    report = classify(obs)
    assert report["udp"] is False and report["hard_nat"] is None and report["hairpin"] is None
