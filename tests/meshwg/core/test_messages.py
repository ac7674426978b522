"""Property tests for meshwg.messages: round trips, and hostile input only ever raises
MalformedPacket."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from meshwg.core import messages
from meshwg.core.constants import (COOKIE_REPLY_SIZE, INITIATION_SIZE, MESSAGE_COOKIE_REPLY,
                              MESSAGE_INITIATION, MESSAGE_RESPONSE, MESSAGE_TRANSPORT,
                              RESPONSE_SIZE, TRANSPORT_HEADER_SIZE, TRANSPORT_MIN_SIZE)
from meshwg.core.messages import CookieReply, Initiation, MalformedPacket, Response, Transport

u32 = st.integers(min_value=0, max_value=2**32 - 1)
u64 = st.integers(min_value=0, max_value=2**64 - 1)


def fixed(n: int):
    return st.binary(min_size=n, max_size=n)


initiations = st.builds(Initiation, u32, fixed(32), fixed(48), fixed(28), fixed(16), fixed(16))
responses = st.builds(Response, u32, u32, fixed(32), fixed(16), fixed(16), fixed(16))
cookie_replies = st.builds(CookieReply, u32, fixed(24), fixed(32))
transports = st.builds(Transport, u32, u64, st.binary(min_size=16, max_size=200))
any_message = st.one_of(initiations, responses, cookie_replies, transports)

SPECIFIC_PARSERS = [messages.parse_initiation, messages.parse_response,
                    messages.parse_cookie_reply, messages.parse_transport,
                    messages.parse_transport_header, messages.parse]

fast = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _parse_all_ways(data: bytes) -> None:
    """Every parser either returns or raises MalformedPacket; anything else fails the test."""
    for parser in SPECIFIC_PARSERS:
        try:
            parser(data)
        except MalformedPacket:
            pass
    assert 0 <= messages.message_type(data) <= 4


@fast
@given(initiations)
def test_initiation_round_trip(message):
    wire = message.build()
    assert len(wire) == INITIATION_SIZE
    assert wire[:4] == bytes([MESSAGE_INITIATION, 0, 0, 0])
    assert messages.parse_initiation(wire) == message
    assert messages.parse(wire) == message
    assert wire[messages.INITIATION_MAC1_OFFSET:messages.INITIATION_MAC1_OFFSET + 16] == message.mac1


@fast
@given(responses)
def test_response_round_trip(message):
    wire = message.build()
    assert len(wire) == RESPONSE_SIZE
    assert wire[:4] == bytes([MESSAGE_RESPONSE, 0, 0, 0])
    assert messages.parse_response(wire) == message
    assert messages.parse(wire) == message
    assert wire[messages.RESPONSE_MAC1_OFFSET:messages.RESPONSE_MAC1_OFFSET + 16] == message.mac1


@fast
@given(cookie_replies)
def test_cookie_reply_round_trip(message):
    wire = message.build()
    assert len(wire) == COOKIE_REPLY_SIZE
    assert wire[:4] == bytes([MESSAGE_COOKIE_REPLY, 0, 0, 0])
    assert messages.parse_cookie_reply(wire) == message
    assert messages.parse(wire) == message


@fast
@given(transports)
def test_transport_round_trip(message):
    wire = message.build()
    assert len(wire) == TRANSPORT_HEADER_SIZE + len(message.ciphertext)
    assert wire[:4] == bytes([MESSAGE_TRANSPORT, 0, 0, 0])
    assert messages.parse_transport(wire) == message
    assert messages.parse(wire) == message
    assert messages.parse_transport_header(wire) == (message.receiver, message.counter)
    assert messages.transport_header(message.receiver, message.counter) == wire[:16]


@fast
@given(st.binary(max_size=300))
def test_random_bytes_only_raise_malformed(data):
    _parse_all_ways(data)


@fast
@given(st.sampled_from([1, 2, 3, 4]), st.binary(max_size=200))
def test_random_bytes_with_valid_type_only_raise_malformed(kind, rest):
    _parse_all_ways(bytes([kind, 0, 0, 0]) + rest)


@fast
@given(any_message, st.data())
def test_truncations(message, data):
    wire = message.build()
    cut = data.draw(st.integers(min_value=0, max_value=len(wire) - 1))
    short = wire[:cut]
    _parse_all_ways(short)
    if isinstance(message, Transport) and cut >= TRANSPORT_MIN_SIZE:
        assert isinstance(messages.parse(short), Transport)
    else:
        with pytest.raises(MalformedPacket):
            messages.parse(short)


@fast
@given(any_message, st.binary(min_size=1, max_size=64))
def test_extensions(message, extra):
    wire = message.build() + extra
    _parse_all_ways(wire)
    if isinstance(message, Transport):
        assert messages.parse(wire).ciphertext == message.ciphertext + extra
    else:
        with pytest.raises(MalformedPacket):
            messages.parse(wire)


@fast
@given(any_message, st.data())
def test_bit_flips(message, data):
    wire = bytearray(message.build())
    position = data.draw(st.integers(min_value=0, max_value=len(wire) * 8 - 1))
    wire[position // 8] ^= 1 << (position % 8)
    flipped = bytes(wire)
    _parse_all_ways(flipped)
    if position < 8:          # the type byte: no single flip yields another valid header+size
        with pytest.raises(MalformedPacket):
            messages.parse(flipped)
    elif position < 32:       # a reserved byte
        with pytest.raises(MalformedPacket):
            messages.parse(flipped)
    else:                     # a field: still parses, to a different message
        parsed = messages.parse(flipped)
        assert type(parsed) is type(message)
        assert parsed != message


@fast
@given(any_message, st.integers(min_value=1, max_value=3), st.integers(min_value=1, max_value=255))
def test_reserved_bytes_must_be_zero(message, index, value):
    wire = bytearray(message.build())
    wire[index] = value
    assert messages.message_type(bytes(wire)) == 0
    with pytest.raises(MalformedPacket):
        messages.parse(bytes(wire))
    parser = {Initiation: messages.parse_initiation, Response: messages.parse_response,
              CookieReply: messages.parse_cookie_reply, Transport: messages.parse_transport}
    with pytest.raises(MalformedPacket):
        parser[type(message)](bytes(wire))


def test_message_type_of_short_and_unknown():
    assert messages.message_type(b"") == 0
    assert messages.message_type(b"\x01\x00\x00") == 0
    assert messages.message_type(b"\x05\x00\x00\x00") == 0
    assert messages.message_type(b"\x00\x00\x00\x00") == 0
    assert messages.message_type(b"\x04\x00\x00\x00") == MESSAGE_TRANSPORT


def test_keepalive_is_smallest_transport():
    keepalive = Transport(7, 0, bytes(16)).build()
    assert len(keepalive) == TRANSPORT_MIN_SIZE
    assert messages.parse(keepalive) == Transport(7, 0, bytes(16))
    with pytest.raises(MalformedPacket):
        messages.parse(keepalive[:-1])


@pytest.mark.parametrize("size,parser", [(INITIATION_SIZE, messages.parse_initiation),
                                         (RESPONSE_SIZE, messages.parse_response),
                                         (COOKIE_REPLY_SIZE, messages.parse_cookie_reply)])
def test_parser_refuses_other_type_of_right_size(size, parser):
    for kind in (1, 2, 3, 4):
        wire = bytes([kind, 0, 0, 0]) + bytes(size - 4)
        if parser is {1: messages.parse_initiation, 2: messages.parse_response,
                      3: messages.parse_cookie_reply}.get(kind):
            parser(wire)
        else:
            with pytest.raises(MalformedPacket):
                parser(wire)


def test_malformed_is_a_value_error():
    assert issubclass(MalformedPacket, ValueError)
