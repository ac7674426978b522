"""Answers back into member records (discovery/dnssd/parse.py)."""

from __future__ import annotations

import dns.rdatatype
import dns.rrset

from discovery.dnssd.names import instance_name
from discovery.dnssd.parse import parse_member_answers, parse_ptr_answers
from discovery.dnssd.zone import Directory
from tests.discovery.dnssd.sample import SERVICE, ZONE, ask, find, member


def test_long_lists_split_over_repeated_keys_and_parse_back() -> None:
    cands = [(f"192.168.{i}.{i}", 50000 + i) for i in range(40)]
    rec = member(5, host_candidates=cands, name="long")
    d = Directory(ZONE)
    d.set_members([rec])
    name = instance_name(ZONE, rec.public_key)
    response = ask(d, name, "SRV", use_edns=0, payload=4096)
    strings = next(iter(find(response.additional, name, dns.rdatatype.TXT))).strings
    assert all(len(s) <= 255 for s in strings) and sum(s.startswith(b"cand=") for s in strings) > 1
    parsed = parse_member_answers(name, list(response.answer) + list(response.additional))
    assert parsed == rec


def test_parse_member_answers_round_trip(directory: Directory) -> None:
    for original in directory.members():
        name = instance_name(ZONE, original.public_key)
        srv = ask(directory, name, "SRV")
        txt = ask(directory, name, "TXT")
        parsed = parse_member_answers(name, list(srv.answer) + list(srv.additional) + list(txt.answer))
        assert parsed == original


def test_parse_member_answers_rejects_contradicting_pub(directory: Directory) -> None:
    rec = member(1)
    name = instance_name(ZONE, rec.public_key)
    other = instance_name(ZONE, member(2).public_key)
    txt_of_other = ask(directory, other, "TXT").answer[0]
    forged = dns.rrset.from_rdata(name, 0, *txt_of_other)
    assert parse_member_answers(name, [forged]) is None


def test_ptr_answers_keep_only_valid_instances_once(directory: Directory) -> None:
    (ptr,) = ask(directory, SERVICE, "PTR").answer
    good = sorted(r.target.to_text() for r in ptr)
    forged = dns.rrset.from_text(SERVICE, 0, "IN", "PTR", "not-a-key._wireguard._udp." + ZONE,
                                 "x.elsewhere.example.", *good)
    elsewhere = dns.rrset.from_text("_other._udp." + ZONE, 0, "IN", "PTR", *good)
    got = parse_ptr_answers(ZONE, [ptr, forged, elsewhere])
    assert sorted(n.to_text() for n in got) == good
