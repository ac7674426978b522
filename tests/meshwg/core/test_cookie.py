"""meshwg.cookie: mac1/mac2, cookie replies between initiator and responder, expiry and
secret rotation. Time is a parameter; nothing sleeps."""

from __future__ import annotations

import pytest

from meshwg.core import crypto, messages, noise
from meshwg.core.constants import COOKIE_REFRESH_TIME, LABEL_COOKIE, LABEL_MAC1
from meshwg.core.cookie import CookieChecker, CookieGenerator
from meshwg.util.endpoint import address_bytes, normalize_endpoint

T0 = 1000.0
SOURCE = address_bytes(("192.0.2.7", 51820))[1]
OTHER_SOURCE = address_bytes(("192.0.2.7", 51821))[1]


class Pair:
    """A responder's checker and an initiator's generator aimed at that responder."""

    def __init__(self) -> None:
        self.resp_static = crypto.generate_private_key()
        self.resp_public = crypto.public_key(self.resp_static)
        self.init_static = crypto.generate_private_key()
        self.checker = CookieChecker(self.resp_public)
        self.generator = CookieGenerator(self.resp_public)
        self.sender = 0x11223344

    def initiation(self) -> bytes:
        """A real (unmac'd) handshake initiation to the responder."""
        m1, _ = noise.write_message1(self.init_static, self.resp_public, crypto.tai64n(T0))
        return messages.Initiation(self.sender, m1.ephemeral, m1.encrypted_static,
                                   m1.encrypted_payload).build()

    def response(self) -> bytes:
        return messages.Response(0x55667788, self.sender, crypto.public_key(
            crypto.generate_private_key()), bytes(16)).build()

    def get_cookie(self, now: float, message: bytes | None = None) -> bytes:
        """Send a message, have the responder answer with a cookie reply, consume it."""
        sent = self.generator.add_macs(message or self.initiation(), now)
        reply = self.checker.create_reply(sent, self.sender, SOURCE, now)
        assert self.generator.consume_reply(messages.parse_cookie_reply(reply), now)
        return reply


@pytest.fixture
def pair() -> Pair:
    return Pair()


def _mac2(message: bytes) -> bytes:
    return message[-16:]


def source_bytes(host: str, port: int) -> bytes:
    """The cookie input the protocol derives from a datagram's source: the device's
    endpoint (normalize_endpoint) through the protocol's default address_bytes."""
    return address_bytes(normalize_endpoint((host, port)))[1]


def test_source_bytes():
    assert source_bytes("192.0.2.7", 51820) == bytes([192, 0, 2, 7]) + (51820).to_bytes(2, "big")
    assert len(source_bytes("2001:db8::1", 1)) == 18
    assert source_bytes("::ffff:192.0.2.7", 51820) == SOURCE
    assert source_bytes("fe80::1%eth0", 5) == source_bytes("fe80::1", 5)
    assert SOURCE != OTHER_SOURCE


@pytest.mark.parametrize("kind", ["initiation", "response"])
def test_mac1_verifies_and_mac2_is_zero_without_cookie(pair, kind):
    message = getattr(pair, kind)()
    sent = pair.generator.add_macs(message, T0)
    assert len(sent) == len(message)
    assert sent[:-32] == message[:-32]
    assert pair.checker.verify_mac1(sent)
    assert _mac2(sent) == bytes(16)
    assert not pair.checker.verify_mac2(sent, SOURCE, T0)
    offset = len(sent) - 32
    expected_mac1 = crypto.mac(crypto.hash_(LABEL_MAC1 + pair.resp_public), message[:offset])
    assert sent[offset:offset + 16] == expected_mac1
    assert pair.generator.last_mac1 == expected_mac1


def test_add_macs_fills_bytearray_in_place(pair):
    buffer = bytearray(pair.initiation())
    sent = pair.generator.add_macs(buffer, T0)
    assert bytes(buffer) == sent


def test_mac1_for_another_key_fails(pair):
    sent = CookieGenerator(crypto.public_key(crypto.generate_private_key())).add_macs(
        pair.initiation(), T0)
    assert not pair.checker.verify_mac1(sent)


@pytest.mark.parametrize("index", [0, 4, 8, 100, 116, 131])
def test_mac1_detects_any_changed_byte(pair, index):
    sent = bytearray(pair.generator.add_macs(pair.initiation(), T0))
    sent[index] ^= 0x01
    assert not pair.checker.verify_mac1(bytes(sent))


@pytest.mark.parametrize("size", [0, 32, 64, 91, 93, 147, 149])
def test_checker_refuses_other_sizes(pair, size):
    assert not pair.checker.verify_mac1(bytes(size))
    assert not pair.checker.verify_mac2(bytes(size), SOURCE, T0)
    with pytest.raises(ValueError):
        pair.generator.add_macs(bytes(size), T0)


@pytest.mark.parametrize("kind", ["initiation", "response"])
def test_cookie_reply_round_trip(pair, kind):
    message = getattr(pair, kind)()
    sent = pair.generator.add_macs(message, T0)
    nonce = bytes(range(24))
    reply_wire = pair.checker.create_reply(sent, pair.sender, SOURCE, T0, nonce=nonce)
    assert len(reply_wire) == 64
    reply = messages.parse_cookie_reply(reply_wire)
    assert reply.receiver == pair.sender and reply.nonce == nonce
    # The cookie is sealed under BLAKE2s("cookie--" || responder public), aad = mac1 sent.
    cookie = crypto.xaead_open(crypto.hash_(LABEL_COOKIE + pair.resp_public), nonce,
                               reply.encrypted_cookie, sent[-32:-16])
    assert len(cookie) == 16
    assert pair.generator.consume_reply(reply, T0 + 0.1)

    again = pair.generator.add_macs(message, T0 + 1)
    assert again[:-16] == sent[:-16]                    # same mac1
    assert _mac2(again) == crypto.mac(cookie, again[:-16])
    assert pair.checker.verify_mac1(again)
    assert pair.checker.verify_mac2(again, SOURCE, T0 + 1)
    assert not pair.checker.verify_mac2(again, OTHER_SOURCE, T0 + 1)


def test_mac2_detects_changed_bytes(pair):
    pair.get_cookie(T0)
    sent = bytearray(pair.generator.add_macs(pair.initiation(), T0 + 1))
    assert pair.checker.verify_mac2(bytes(sent), SOURCE, T0 + 1)
    for index in (10, len(sent) - 20, len(sent) - 1):
        changed = bytearray(sent)
        changed[index] ^= 0x40
        assert not pair.checker.verify_mac2(bytes(changed), SOURCE, T0 + 1)


def test_random_nonces_differ(pair):
    sent = pair.generator.add_macs(pair.initiation(), T0)
    one = pair.checker.create_reply(sent, 1, SOURCE, T0)
    two = pair.checker.create_reply(sent, 1, SOURCE, T0)
    assert one[8:32] != two[8:32]
    assert pair.generator.consume_reply(messages.parse_cookie_reply(one), T0)
    assert pair.generator.consume_reply(messages.parse_cookie_reply(two), T0)


def test_cookie_expires_after_refresh_time_on_initiator(pair):
    pair.get_cookie(T0)
    assert pair.generator.has_cookie(T0 + COOKIE_REFRESH_TIME)
    at_limit = pair.generator.add_macs(pair.initiation(), T0 + COOKIE_REFRESH_TIME)
    assert _mac2(at_limit) != bytes(16)
    assert not pair.generator.has_cookie(T0 + COOKIE_REFRESH_TIME + 0.5)
    late = pair.generator.add_macs(pair.initiation(), T0 + COOKIE_REFRESH_TIME + 0.5)
    assert _mac2(late) == bytes(16)
    assert pair.checker.verify_mac1(late)


def test_secret_expires_on_responder(pair):
    """A cookie consumed late is still fresh for the initiator, but the responder's secret
    has expired: mac2 no longer verifies."""
    sent = pair.generator.add_macs(pair.initiation(), T0)
    reply = messages.parse_cookie_reply(pair.checker.create_reply(sent, 1, SOURCE, T0))
    assert pair.generator.consume_reply(reply, T0 + 60)
    fresh = pair.generator.add_macs(pair.initiation(), T0 + 100)
    assert pair.checker.verify_mac2(fresh, SOURCE, T0 + 100)
    late = pair.generator.add_macs(pair.initiation(), T0 + COOKIE_REFRESH_TIME + 1)
    assert _mac2(late) != bytes(16)                     # initiator still uses its cookie
    assert not pair.checker.verify_mac2(late, SOURCE, T0 + COOKIE_REFRESH_TIME + 1)


def test_secret_rotation_invalidates_old_cookies(pair):
    pair.get_cookie(T0)
    old_cookie_message = pair.generator.add_macs(pair.initiation(), T0 + 10)
    assert pair.checker.verify_mac2(old_cookie_message, SOURCE, T0 + 10)

    # No rotation while the secret is fresh: a second reply carries the same cookie.
    pair.get_cookie(T0 + 50)
    assert pair.checker.verify_mac2(old_cookie_message, SOURCE, T0 + 50)

    rotate_at = T0 + COOKIE_REFRESH_TIME + 5
    pair.get_cookie(rotate_at)                          # expired secret: a new one is drawn
    assert not pair.checker.verify_mac2(old_cookie_message, SOURCE, rotate_at)
    new_message = pair.generator.add_macs(pair.initiation(), rotate_at + 1)
    assert _mac2(new_message) != _mac2(old_cookie_message)
    assert pair.checker.verify_mac2(new_message, SOURCE, rotate_at + 1)


def test_consume_before_sending_anything_fails(pair):
    other = CookieGenerator(pair.resp_public)
    sent = other.add_macs(pair.initiation(), T0)
    reply = messages.parse_cookie_reply(pair.checker.create_reply(sent, 1, SOURCE, T0))
    assert not pair.generator.consume_reply(reply, T0)


def test_reply_to_an_older_message_fails(pair):
    first = pair.generator.add_macs(pair.initiation(), T0)
    pair.generator.add_macs(pair.initiation(), T0 + 1)    # new mac1 remembered
    reply = messages.parse_cookie_reply(pair.checker.create_reply(first, 1, SOURCE, T0 + 1))
    assert not pair.generator.consume_reply(reply, T0 + 1)
    assert not pair.generator.has_cookie(T0 + 1)


def test_reply_from_another_responder_fails(pair):
    sent = pair.generator.add_macs(pair.initiation(), T0)
    stranger = CookieChecker(crypto.public_key(crypto.generate_private_key()))
    reply = messages.parse_cookie_reply(stranger.create_reply(sent, 1, SOURCE, T0))
    assert not pair.generator.consume_reply(reply, T0)


@pytest.mark.parametrize("bit", [8 * 8, 8 * 20, 8 * 31, 8 * 32, 8 * 47, 8 * 48 + 3, 8 * 63 + 7])
def test_bit_flipped_reply_rejected_and_cookie_kept(pair, bit):
    pair.get_cookie(T0)
    sent = pair.generator.add_macs(pair.initiation(), T0 + 2)
    wire = bytearray(pair.checker.create_reply(sent, 1, SOURCE, T0 + 2))
    wire[bit // 8] ^= 1 << (bit % 8)
    reply = messages.parse_cookie_reply(bytes(wire))
    assert not pair.generator.consume_reply(reply, T0 + 2)
    # The cookie held before is still used, and still valid.
    message = pair.generator.add_macs(pair.initiation(), T0 + 3)
    assert pair.checker.verify_mac2(message, SOURCE, T0 + 3)


def test_forged_reply_with_random_content_rejected(pair):
    pair.generator.add_macs(pair.initiation(), T0)
    forged = messages.CookieReply(1, bytes(24), bytes(32))
    assert not pair.generator.consume_reply(forged, T0)
    assert not pair.generator.has_cookie(T0)


def test_create_reply_validates_arguments(pair):
    with pytest.raises(ValueError):
        pair.checker.create_reply(bytes(64), 1, SOURCE, T0)
    sent = pair.generator.add_macs(pair.initiation(), T0)
    with pytest.raises(ValueError):
        pair.checker.create_reply(sent, 1, SOURCE, T0, nonce=bytes(12))


def test_refresh_time_is_configurable():
    resp_public = crypto.public_key(crypto.generate_private_key())
    checker = CookieChecker(resp_public, cookie_refresh_time=2.0)
    generator = CookieGenerator(resp_public)
    generator.cookie_refresh_time = 3.0               # settable after construction
    message = Pair().initiation()
    sent = generator.add_macs(message, T0)
    reply = messages.parse_cookie_reply(checker.create_reply(sent, 1, SOURCE, T0))
    assert generator.consume_reply(reply, T0)
    assert checker.verify_mac2(generator.add_macs(message, T0 + 1.9), SOURCE, T0 + 1.9)
    assert not checker.verify_mac2(generator.add_macs(message, T0 + 2.5), SOURCE, T0 + 2.5)
    assert generator.has_cookie(T0 + 2.9)
    assert not generator.has_cookie(T0 + 3.1)
    assert generator.add_macs(message, T0 + 3.1)[-16:] == bytes(16)
