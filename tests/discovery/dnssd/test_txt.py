"""TXT strings of a member (discovery/dnssd/txt.py) and the checks of published values
(discovery/dnssd/member.py)."""

from __future__ import annotations

import base64

import pytest

from discovery.dnssd.member import (
    MemberRecord, check_record, format_published, parse_published, published_ip,
)
from discovery.dnssd.txt import decode_pub, member_from_fields, parse_txt, txt_pair, txt_strings

KEY = bytes(range(32))


def test_txt_strings_round_trip_through_parse() -> None:
    rec = MemberRecord(KEY, ("192.0.2.1", 1), ["10.0.0.1/32", "fd00::/64"], name="alpha",
                       mesh_address="100.64.0.2",
                       host_candidates=[("192.168.1.2", 51820), ("fd00::2", 51821)],
                       extra={"os": "linux"})
    strings = txt_strings(rec)
    assert strings[:2] == [b"txtvers=1", b"pub=" + base64.b64encode(KEY)]
    assert b"cand=192.168.1.2:51820,[fd00::2]:51821" in strings
    fields = parse_txt(strings)
    assert member_from_fields(KEY, rec.endpoint, fields) == rec


def test_parse_txt_first_key_wins_lists_join_and_garbage_is_skipped() -> None:
    got = parse_txt([b"Name=a", b"name=b", b"allowed=10.0.0.1/32", b"allowed=10.0.0.2/32",
                     b"\xff\xfe=x", b"=novalue", b"bare"])
    assert got == {"name": "a", "allowed": "10.0.0.1/32,10.0.0.2/32", "bare": ""}


def test_member_from_fields_skips_bad_cidrs_and_candidates() -> None:
    fields = {"allowed": "10.0.0.1/32,nonsense", "cand": "192.0.2.1:5,[fe80::1%eth0]:5,h:1,1.2.3.4:0",
              "os": "x"}
    rec = member_from_fields(KEY, None, fields)
    assert rec.allowed_ips == ["10.0.0.1/32"] and rec.host_candidates == [("192.0.2.1", 5)]
    assert rec.extra == {"os": "x"}


def test_values_that_cannot_be_published_are_named() -> None:
    with pytest.raises(ValueError, match="TXT name"):
        txt_pair("name", "x" * 300)
    with pytest.raises(ValueError, match="reserved"):
        txt_strings(MemberRecord(KEY, None, [], extra={"cand": "x"}))
    with pytest.raises(ValueError, match="allowed_ips"):
        check_record(MemberRecord(KEY, None, ["nonsense"]))
    with pytest.raises(ValueError, match="host_candidates: scoped"):
        check_record(MemberRecord(KEY, None, [], host_candidates=[("fe80::1%eth0", 1)]))
    with pytest.raises(ValueError, match="endpoint: 'h' is not an IP address"):
        check_record(MemberRecord(KEY, ("h", 1), []))
    with pytest.raises(ValueError, match="endpoint '192.0.2.1': port 0"):
        check_record(MemberRecord(KEY, ("192.0.2.1", 0), []))


def test_published_addresses_are_plain_ips() -> None:
    assert str(published_ip("::ffff:192.0.2.1", "x")) == "192.0.2.1"
    assert format_published("2001:db8::1", 5) == "[2001:db8::1]:5"
    assert format_published("::ffff:192.0.2.1", 5) == "192.0.2.1:5"
    assert parse_published(" [2001:DB8::1]:5 ") == ("2001:db8::1", 5)
    for bad in ("host.example:5", "[fe80::1%eth0]:5", "2001:db8::1:5", "192.0.2.1:0", "[192.0.2.1]:5"):
        with pytest.raises(ValueError):
            parse_published(bad)


def test_decode_pub() -> None:
    assert decode_pub(base64.b64encode(KEY).decode()) == KEY
    assert decode_pub(base64.b64encode(KEY[:31]).decode()) is None
    assert decode_pub("not base64") is None
