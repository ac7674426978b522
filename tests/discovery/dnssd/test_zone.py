"""The zone (discovery/dnssd/zone.py): wgsd record layout, answers, transfers, hostile input."""

from __future__ import annotations

import base64
import os

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.opcode
import dns.rcode
import dns.rdatatype
import dns.rrset
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from discovery.dnssd.member import MemberRecord
from discovery.dnssd.names import instance_name
from discovery.dnssd.parse import parse_ptr_answers
from discovery.dnssd.wire import encode_response, udp_size_limit
from discovery.dnssd.zone import MAX_PTR_ANSWER, SOA_MINIMUM, Directory
from tests.discovery.dnssd.sample import SERVICE, ZONE, all_ttls, ask, find, member


# -------------------------------------------------------------- layout


def test_ptr_lists_members_with_endpoint(directory: Directory) -> None:
    response = ask(directory, SERVICE, "PTR")
    assert response.rcode() == dns.rcode.NOERROR and response.flags & dns.flags.AA
    (ptr,) = response.answer
    assert ptr.name == dns.name.from_text(SERVICE) and ptr.rdtype == dns.rdatatype.PTR
    targets = {r.target for r in ptr}
    expected = {instance_name(ZONE, member(i).public_key) for i in (1, 2)}
    assert targets == expected  # member 3 has no endpoint: not listed
    for target in targets:
        assert target.labels[0].decode() == target.labels[0].decode().lower()
    assert all_ttls(response) == {0}


def test_srv_carries_address_and_txt_in_additional(directory: Directory) -> None:
    rec = member(1)
    name = instance_name(ZONE, rec.public_key)
    response = ask(directory, name, "SRV")
    (srv,) = response.answer
    (rdata,) = srv
    assert (rdata.priority, rdata.weight, rdata.port, rdata.target) == (0, 0, rec.endpoint[1], name)
    kinds = {(r.name, r.rdtype) for r in response.additional}
    assert kinds == {(name, dns.rdatatype.A), (name, dns.rdatatype.TXT)}
    a = find(response.additional, name, dns.rdatatype.A)
    assert [r.address for r in a] == [rec.endpoint[0]]
    assert all_ttls(response) == {0}


def test_txt_layout(directory: Directory) -> None:
    rec = member(1)
    response = ask(directory, instance_name(ZONE, rec.public_key), "TXT")
    (txt,) = response.answer
    strings = [s.decode() for s in next(iter(txt)).strings]
    assert strings[:3] == ["txtvers=1", "pub=" + base64.b64encode(rec.public_key).decode(), "allowed=" + ",".join(rec.allowed_ips)]
    assert "name=alpha" in strings and "addr=100.64.0.2" in strings and "os=linux" in strings
    assert "cand=192.168.1.10:51820,[fd00::10]:51820" in strings
    assert txt.ttl == 0


def test_aaaa_member_and_type_mismatch(directory: Directory) -> None:
    rec = member(2, v6=True)
    name = instance_name(ZONE, rec.public_key)
    aaaa = ask(directory, name, "AAAA")
    assert [r.address for r in aaaa.answer[0]] == [rec.endpoint[0]]
    nodata = ask(directory, name, "A")
    assert nodata.rcode() == dns.rcode.NOERROR and not nodata.answer
    (soa,) = nodata.authority
    assert soa.rdtype == dns.rdatatype.SOA and next(iter(soa)).minimum == SOA_MINIMUM
    srv = ask(directory, name, "SRV")
    assert {r.rdtype for r in srv.additional} == {dns.rdatatype.AAAA, dns.rdatatype.TXT}


def test_member_without_endpoint_has_txt_but_no_srv(directory: Directory) -> None:
    name = instance_name(ZONE, member(3).public_key)
    assert ask(directory, name, "SRV").answer == []
    assert ask(directory, name, "SRV").rcode() == dns.rcode.NOERROR
    assert ask(directory, name, "TXT").answer


def test_nxdomain_carries_soa(directory: Directory) -> None:
    response = ask(directory, instance_name(ZONE, os.urandom(32)), "SRV")
    assert response.rcode() == dns.rcode.NXDOMAIN and not response.answer
    (soa,) = response.authority
    assert soa.name == dns.name.from_text(ZONE)
    assert next(iter(soa)).minimum == 60 and soa.ttl == 0


def test_empty_non_terminal_is_nodata(directory: Directory) -> None:
    response = ask(directory, "_udp." + ZONE, "PTR")
    assert response.rcode() == dns.rcode.NOERROR and not response.answer and response.authority


def test_refused_outside_zone_and_other_class(directory: Directory) -> None:
    assert ask(directory, "example.org.", "A").rcode() == dns.rcode.REFUSED
    assert ask(directory, "version.bind.", "TXT", rdclass="CH").rcode() == dns.rcode.REFUSED
    assert ask(directory, SERVICE, "PTR", rdclass="CH").rcode() == dns.rcode.REFUSED


def test_case_insensitive_names(directory: Directory) -> None:
    name = instance_name(ZONE, member(1).public_key).to_text().upper()
    response = ask(directory, name, "SRV")
    assert response.answer and response.question[0].name.to_text() == name


def test_any_gets_rfc8482_minimal_answer(directory: Directory) -> None:
    response = ask(directory, SERVICE, "ANY")
    (hinfo,) = response.answer
    assert hinfo.rdtype == dns.rdatatype.HINFO and next(iter(hinfo)).cpu == b"RFC8482"
    assert ask(directory, "nothing." + ZONE, "ANY").rcode() == dns.rcode.NXDOMAIN


def test_axfr_over_answer_is_refused_and_opcode_notimp(directory: Directory) -> None:
    assert ask(directory, ZONE, "AXFR").rcode() == dns.rcode.REFUSED
    query = dns.message.make_query(SERVICE, "PTR")
    query.set_opcode(dns.opcode.STATUS)
    assert directory.answer(query).rcode() == dns.rcode.NOTIMP


def test_transfer_contains_whole_zone(directory: Directory) -> None:
    wires = list(directory.transfer(dns.message.make_query(ZONE, "AXFR")))
    rrsets = [r for w in wires for r in dns.message.from_wire(w, one_rr_per_rrset=True).answer]
    assert rrsets[0].rdtype == rrsets[-1].rdtype == dns.rdatatype.SOA
    got = parse_ptr_answers(ZONE, rrsets)
    assert set(got) == {instance_name(ZONE, member(i).public_key) for i in (1, 2)}


def test_soa_serial_increases_and_replace_is_atomic(directory: Directory) -> None:
    before = directory.serial
    directory.set_members([member(7)])
    assert directory.serial == before + 1
    (ptr,) = ask(directory, SERVICE, "PTR").answer
    assert [r.target for r in ptr] == [instance_name(ZONE, member(7).public_key)]


def test_invalid_member_names_the_member_and_keeps_old_set(directory: Directory) -> None:
    bad = MemberRecord(os.urandom(32), ("not-an-ip", 1), [], name="broken")
    with pytest.raises(ValueError, match=r"member #1 \(broken\): endpoint"):
        directory.set_members([member(9), bad])
    assert len(directory.members()) == 3
    with pytest.raises(ValueError, match="duplicate"):
        directory.set_members([member(9), member(9)])
    with pytest.raises(ValueError, match="reserved"):
        directory.set_members([member(9, extra={"pub": "x"})])


def test_huge_ptr_set_is_truncated_not_rendered() -> None:
    d = Directory(ZONE)
    d.set_members([member(i) for i in range(MAX_PTR_ANSWER + 1)])
    response = ask(d, SERVICE, "PTR", use_edns=0)
    assert response.flags & dns.flags.TC and not response.answer


def test_udp_truncation_sets_tc() -> None:
    d = Directory(ZONE)
    d.set_members([member(i) for i in range(40)])
    query = dns.message.make_query(SERVICE, "PTR")  # no EDNS: 512 bytes
    wire = encode_response(d.answer(query), udp_size_limit(query))
    assert len(wire) <= 512 and dns.message.from_wire(wire).flags & dns.flags.TC


# -------------------------------------------------------------- hostile input


@pytest.mark.parametrize(
    "wire",
    [
        b"",
        b"\x00",
        b"\x12\x34" + b"\x00" * 10,  # header only, no question
        b"\x12\x34\x01\x00\x00\x02\x00\x00\x00\x00\x00\x00",  # claims 2 questions, has none
        b"\xff" * 40,
        os.urandom(300),
    ],
)
def test_malformed_wire_parsed_or_rejected_never_crashes(directory: Directory, wire: bytes) -> None:
    try:
        query = dns.message.from_wire(wire)
    except Exception:
        return
    response = directory.answer(query)
    assert response.flags & dns.flags.QR
    encode_response(response, 512)


def test_zero_or_two_questions_get_formerr(directory: Directory) -> None:
    query = dns.message.Message(id=7)
    assert directory.answer(query).rcode() == dns.rcode.FORMERR
    query = dns.message.make_query(SERVICE, "PTR")
    query.question.append(query.question[0])
    assert directory.answer(query).rcode() == dns.rcode.FORMERR


def test_edns_version_1_gets_badvers(directory: Directory) -> None:
    query = dns.message.make_query(SERVICE, "PTR", use_edns=1)
    assert directory.answer(query).rcode() == dns.rcode.BADVERS


_header = st.builds(
    lambda ident, flags, qd, an, ns, ar: ident.to_bytes(2, "big") + flags.to_bytes(2, "big")
    + qd.to_bytes(2, "big") + an.to_bytes(2, "big") + ns.to_bytes(2, "big") + ar.to_bytes(2, "big"),
    st.integers(0, 0xFFFF), st.integers(0, 0xFFFF), st.integers(0, 3), st.integers(0, 3),
    st.integers(0, 3), st.integers(0, 3),
)
_valid_query = st.builds(
    lambda labels, rdtype: dns.message.make_query(dns.name.Name(labels + (b"_wireguard", b"_udp", b"mesh", b"example", b"")), rdtype).to_wire(),
    st.lists(st.binary(min_size=1, max_size=20), max_size=3).map(tuple),
    st.sampled_from(["PTR", "SRV", "TXT", "A", "AAAA", "ANY", "SOA", "NS", "AXFR", "IXFR", "CAA"]),
)


@settings(max_examples=400, deadline=None)
@given(st.one_of(st.binary(max_size=600), st.tuples(_header, st.binary(max_size=300)).map(lambda t: t[0] + t[1]),
                 st.tuples(_valid_query, st.integers(0, 80), st.binary(max_size=8)).map(
                     lambda t: t[0][: t[1]] + t[2] + t[0][t[1] + len(t[2]):])))
def test_fuzz_answer_parsed_or_dropped(wire: bytes) -> None:
    d = Directory(ZONE)
    d.set_members([member(1), member(2, v6=True)])
    try:
        query = dns.message.from_wire(wire)
    except Exception:
        return  # dropped, as the server does
    response = d.answer(query)
    assert response.flags & dns.flags.QR
    assert response.id == query.id
    out = encode_response(response, 512)
    assert len(out) <= 512
    list(d.transfer(query))
