"""Incremental zone transfers (RFC 1995) by ZoneWriter.read_since (discovery.dnssd.update):
a delta (or several) applied to the content read before gives what a full transfer gives;
an IXFR answered with the whole zone is taken as such; a serial going backwards, a delta
from another serial, a delete of a record not held, a truncated stream and a refusal fall
back to AXFR cleanly. Real ZoneWriter against a loopback signed DNS server
(tests.discovery.stores.test_zone_reader.FakeServer); the real servers: the namespace test
tests/discovery/stores/test_zone_membership_lab.py."""

from __future__ import annotations

from typing import Iterator

import dns.rcode
import dns.rdatatype
import dns.rrset
import dns.tsig
import pytest

from discovery.dnssd.update import ZoneContent, ZoneWriter
from tests.discovery.stores.test_zone_membership import content
from tests.discovery.stores.test_zone_reader import KEYRING, ZONE, FakeServer

IXFR, AXFR = dns.rdatatype.IXFR, dns.rdatatype.AXFR


class UpdateKey:
    def key(self) -> dns.tsig.Key:
        return next(iter(KEYRING.values()))


def rr(text: str) -> dns.rrset.RRset:
    owner, rdtype, *rdata = text.split(" ", 2)
    return dns.rrset.from_text(f"{owner}.{ZONE}", 0, "IN", rdtype, *rdata)


def soa(serial: int) -> dns.rrset.RRset:
    return dns.rrset.from_text(ZONE, 0, "IN", "SOA", f"ns.{ZONE} h.{ZONE} {serial} 60 60 600 60")


V5 = [rr("a A 10.0.0.1"), rr("b TXT x"), rr("c A 10.0.0.3")]
V6 = [rr("a A 10.0.0.2"), rr("b TXT x"), rr("c A 10.0.0.3"), rr("d TXT y")]
V7 = [rr("a A 10.0.0.2"), rr("c A 10.0.0.3"), rr("d TXT y"), rr("d TXT z")]
DELTA_5_6 = [soa(5), rr("a A 10.0.0.1"), soa(6), rr("a A 10.0.0.2"), rr("d TXT y")]
DELTA_6_7 = [soa(6), rr("b TXT x"), soa(7), rr("d TXT z")]


def zone(serial: int, rrsets: list) -> ZoneContent:
    return content(*rrsets, serial=serial)


def as_sets(zone_content: ZoneContent) -> dict:
    return {key: set(rdatas) for key, rdatas in zone_content.records.items()}


@pytest.fixture
def serve() -> Iterator:
    made: list[FakeServer] = []

    def start(current: ZoneContent, ixfr_answer) -> tuple[FakeServer, ZoneWriter]:
        server = FakeServer(current, answers={IXFR: ixfr_answer})
        made.append(server)
        return server, ZoneWriter(server.address, ZONE, UpdateKey(), timeout=10.0)

    yield start
    for server in made:
        server.close()


@pytest.mark.parametrize("serial, rrsets, answer", [
    (6, V6, [soa(6), *DELTA_5_6, soa(6)]),
    (7, V7, [soa(7), *DELTA_5_6, *DELTA_6_7, soa(7)]),          # two sequences
])
def test_deltas_applied_equal_the_full_zone(serve, serial, rrsets, answer) -> None:
    server, writer = serve(zone(serial, rrsets), answer)
    since = zone(5, V5)
    got = writer.read_since(since)
    assert got.serial == serial and as_sets(got) == as_sets(writer.read())
    assert as_sets(got) == as_sets(zone(serial, rrsets))
    assert as_sets(since) == as_sets(zone(5, V5))                # the kept content untouched
    assert (writer.ixfr_applied, writer.ixfr_fallbacks) == (1, 0)
    assert server.asked == [IXFR, AXFR]                          # the AXFR: ours, above


def test_up_to_date_is_one_soa_and_the_whole_zone_is_taken(serve) -> None:
    since = zone(5, V5)
    _, writer = serve(since, [soa(5)])
    assert writer.read_since(since) is since
    server, writer = serve(zone(6, V6), [soa(6), *V6, soa(6)])      # AXFR-style answer
    assert as_sets(writer.read_since(since)) == as_sets(zone(6, V6))
    assert (writer.ixfr_full, writer.ixfr_fallbacks) == (1, 0) and server.asked == [IXFR]
    assert writer.read_since(None).serial == 6 and server.asked == [IXFR, AXFR]


@pytest.mark.parametrize("answer, why", [
    ([soa(4)], "went backwards"),
    ([soa(6), soa(3), rr("a A 10.0.0.1"), soa(6), soa(6)], "a change from serial 3"),
    ([soa(6), soa(5), rr("a A 10.9.9.9"), soa(6), soa(6)], "does not hold"),
    ([soa(6), soa(5), rr("a A 10.0.0.1"), None], "EOFError"),       # truncated
    ([rr("a A 10.0.0.1"), soa(6)], "does not start with the SOA"),
    (dns.rcode.NOTIMP, "NOTIMP"),
    (dns.rcode.REFUSED, "REFUSED"),
])
def test_odd_answers_fall_back_to_a_full_transfer(serve, answer, why) -> None:
    server, writer = serve(zone(6, V6), answer)
    got = writer.read_since(zone(5, V5))
    assert as_sets(got) == as_sets(zone(6, V6)) and got.serial == 6
    assert writer.ixfr_fallbacks == 1 and writer.ixfr_applied == 0
    assert why in writer.ixfr_problem
    assert server.asked[0] == IXFR and server.asked[-1] == AXFR
