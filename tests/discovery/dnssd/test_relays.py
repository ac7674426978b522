"""Relay offers in the directory (discovery.dnssd.relays): a ``relay=PORT`` TXT key on the
member's record, served by the real zone and DNS server, read back by the client, and
hostile values dropped."""

from __future__ import annotations

import pytest

from discovery.dnssd.client import resolve_zone
from discovery.dnssd.member import MemberRecord
from discovery.dnssd.relays import relay_endpoint, relay_port, relay_txt
from discovery.dnssd.server import DnsServer
from discovery.dnssd.txt import member_from_fields, parse_txt, txt_strings
from discovery.dnssd.zone import Directory
from discovery.traversal.reconcile import directory_records

ZONE = "mesh.example."
KEY, OTHER = bytes(range(32)), bytes(range(1, 33))


def _record(key: bytes, endpoint, **extra: str) -> MemberRecord:
    return MemberRecord(key, endpoint, ["10.99.0.2/32"], name="p1", mesh_address="10.99.0.2",
                        extra=dict(extra))


def test_relay_offer_is_a_txt_key_that_round_trips() -> None:
    rec = _record(KEY, ("198.18.0.20", 51830), **relay_txt(51831))
    assert b"relay=51831" in txt_strings(rec)
    back = member_from_fields(KEY, rec.endpoint, parse_txt(txt_strings(rec)))
    assert relay_port(back) == 51831
    assert relay_endpoint(back) == ("198.18.0.20", 51831)


@pytest.mark.parametrize("value", ["", "0", "65536", "-1", "12a", "١٢٣", "0x10", " 51831", "9" * 40])
def test_a_relay_value_that_is_no_port_offers_no_relay(value: str) -> None:
    rec = _record(KEY, ("198.18.0.20", 51830), relay=value)
    assert relay_port(rec) is None and relay_endpoint(rec) is None


def test_no_offer_or_no_endpoint_means_no_relay() -> None:
    assert relay_endpoint(_record(KEY, ("198.18.0.20", 51830))) is None
    assert relay_endpoint(_record(KEY, None, **relay_txt(51831))) is None
    with pytest.raises(ValueError, match="relay"):
        relay_txt(0)


def test_the_rendezvous_publishes_offers_and_members_read_them() -> None:
    class Enrolled:
        def __init__(self, key: bytes, name: str, address: str):
            self.public_key, self.name, self.mesh_address, self.host_candidates = key, name, address, []

    members = [Enrolled(KEY, "p1", "10.99.0.2"), Enrolled(OTHER, "c", "10.99.0.3")]
    records = directory_records(members, {KEY: ("198.18.0.20", 51830), OTHER: ("198.18.3.1", 40001)},
                                {KEY: relay_txt(51831)})
    directory = Directory(ZONE)
    directory.set_members(records)
    server = DnsServer(directory, "127.0.0.1", 0).start()
    try:
        read = {r.public_key: r for r in resolve_zone(("127.0.0.1", server.port), ZONE)}
    finally:
        server.stop()
    assert relay_endpoint(read[KEY]) == ("198.18.0.20", 51831)
    assert relay_endpoint(read[OTHER]) is None
