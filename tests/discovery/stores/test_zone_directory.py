"""Several rendezvous writing one directory (discovery.stores.zone_directory): stamps, what a
rendezvous writes, what it serves, and the zone's directory records read back from a
transfer. No I/O."""

from __future__ import annotations

import dataclasses

import dns.message
import dns.name
import dns.rdatatype

from discovery.dnssd.member import MemberRecord
from discovery.dnssd.names import instance_label
from discovery.dnssd.update import ZoneContent
from discovery.dnssd.zone import Directory
from discovery.stores.zone_directory import (
    STAMP_TXT, Observations, content_of, served, stamp_of, to_write, zone_records,
)
from tests.discovery.dnssd.sample import ZONE, member


def stamped(record: MemberRecord, stamp: int) -> MemberRecord:
    return dataclasses.replace(record, extra={**record.extra, STAMP_TXT: str(stamp)})


def transfer(directory: Directory) -> ZoneContent:
    """The directory as a server's AXFR would hand it to ZoneWriter.read."""
    records: dict = {}
    for wire in directory.transfer(dns.message.make_query(directory.zone, "AXFR")):
        for rr in dns.message.from_wire(wire).answer:
            if rr.rdtype != dns.rdatatype.SOA:
                records.setdefault((rr.name, rr.rdtype), []).extend(rr)
    return ZoneContent(directory.serial, records)


def test_a_stamp_stays_while_the_observation_does() -> None:
    obs = Observations()
    first = obs.stamp([member(1), member(2), member(3, endpoint=False)], 1000)
    assert sorted(stamp_of(r) for r in first.values()) == [1000, 1000]
    assert member(3, endpoint=False).public_key not in first       # no endpoint: no observation
    moved = member(2)
    moved.endpoint = ("203.0.113.9", 7)
    second = obs.stamp([member(1), moved], 5000)
    assert stamp_of(second[member(1).public_key]) == 1000          # unchanged: old stamp
    assert stamp_of(second[moved.public_key]) == 5000               # changed: new stamp
    assert second[moved.public_key].endpoint == ("203.0.113.9", 7)
    # a member seen again after it was gone is a new observation
    assert stamp_of(obs.stamp([member(1)], 6000)[member(1).public_key]) == 1000
    assert stamp_of(obs.stamp([member(1), member(2)], 7000)[member(2).public_key]) == 7000


def test_bad_stamps_are_zero() -> None:
    for text in ("", "x", "-5", "1" * 17, "1.5"):
        assert stamp_of(dataclasses.replace(member(1), extra={STAMP_TXT: text})) == 0
    assert stamp_of(None) == 0


def test_write_only_a_newer_different_view() -> None:
    a, b = member(1), member(2)
    own = {a.public_key: stamped(a, 2000), b.public_key: stamped(b, 2000)}
    assert to_write(own, {}) == list(own.values())               # nothing in the zone yet
    # the same content written by another rendezvous, whatever its stamp: no write
    zone = {a.public_key: stamped(a, 1000), b.public_key: stamped(b, 9000)}
    assert to_write(own, zone) == []
    # a different endpoint: written when ours is newer, left alone when theirs is
    elsewhere = dataclasses.replace(a, endpoint=("203.0.113.1", 1))
    zone[a.public_key] = stamped(elsewhere, 1000)
    assert to_write(own, zone) == [own[a.public_key]]
    zone[a.public_key] = stamped(elsewhere, 3000)
    assert to_write(own, zone) == []
    zone[a.public_key] = stamped(elsewhere, 2000)
    assert to_write(own, zone) == []                            # a tie: the zone's stays


def test_two_rendezvous_seeing_one_member_differently_do_not_flap() -> None:
    """A sees the member at one port, B at another (an endpoint-dependent NAT): after
    both wrote once, neither writes again until its own view changes."""
    at_a = member(1)
    at_b = dataclasses.replace(member(1), endpoint=("198.51.100.2", 50000))
    obs_a, obs_b = Observations(), Observations()
    zone: dict = {}
    writes = 0
    for now in range(1000, 20000, 1000):
        for obs, view, at in ((obs_a, at_a, now), (obs_b, at_b, now + 500)):
            for record in to_write(obs.stamp([view], at), zone):
                zone[record.public_key] = record
                writes += 1
    assert writes == 2
    # both serve the zone's (newest) record
    for obs, view in ((obs_a, at_a), (obs_b, at_b)):
        (out,) = served([view], obs.stamp([view], 30000), zone)
        assert out.endpoint == at_b.endpoint


def test_served_takes_the_newer_and_keeps_membership_fields() -> None:
    mine = member(1, name="a1", mesh_address="100.64.0.2")
    other = member(2, name="b1", mesh_address="100.64.0.3")
    nobody = member(3, name="c1", mesh_address="100.64.0.4")
    no_tunnel = dataclasses.replace(other, endpoint=None, host_candidates=[])
    quiet = dataclasses.replace(nobody, endpoint=None)
    theirs = dataclasses.replace(other, allowed_ips=["0.0.0.0/0"], name="evil",
                                 host_candidates=[("192.168.1.5", 51820)],
                                 extra={"relay": "51821", STAMP_TXT: "500"})
    own = {mine.public_key: stamped(mine, 1000)}
    zone = {other.public_key: theirs,
            mine.public_key: stamped(dataclasses.replace(mine, endpoint=("203.0.113.7", 9)), 900),
            nobody.public_key: dataclasses.replace(nobody, endpoint=None)}
    out = served([mine, no_tunnel, quiet], own, zone)
    assert out[0].endpoint == mine.endpoint                     # own is newer
    assert out[1].endpoint == other.endpoint                    # only the zone has it
    assert out[1].host_candidates == [("192.168.1.5", 51820)] and out[1].extra["relay"] == "51821"
    assert (out[1].allowed_ips, out[1].name) == (other.allowed_ips, "b1")   # membership's
    assert out[2].endpoint is None                              # nobody saw it
    zone[mine.public_key] = stamped(dataclasses.replace(mine, endpoint=("203.0.113.7", 9)), 1100)
    assert served([mine], own, zone)[0].endpoint == ("203.0.113.7", 9)     # theirs newer


def test_zone_records_read_back_what_the_directory_renders() -> None:
    records = [stamped(member(1, name="a1", mesh_address="100.64.0.2",
                              host_candidates=[("192.168.1.10", 51820)]), 1234),
               stamped(member(2, v6=True, name="b1", mesh_address="100.64.0.3"), 99),
               member(3, endpoint=False, name="c1", mesh_address="100.64.0.4")]
    directory = Directory(ZONE)
    directory.set_members(records)
    back = zone_records(transfer(directory), ZONE)
    assert set(back) == {r.public_key for r in records}
    for record in records:
        got = back[record.public_key]
        assert content_of(got) == content_of(record) and stamp_of(got) == stamp_of(record)
        assert (got.name, got.mesh_address, got.allowed_ips) == \
            (record.name, record.mesh_address, record.allowed_ips)


def test_zone_records_skip_what_is_no_member_record() -> None:
    directory = Directory(ZONE)
    good, liar = member(1), member(2)
    directory.set_members([good, liar])
    content = transfer(directory)
    service = dns.name.from_text(f"_wireguard._udp.{ZONE}")
    liar_txt = next(k for k in content.records
                    if k[1] == dns.rdatatype.TXT and k[0] != service and
                    k[0].labels[0].lower() == instance_label(liar.public_key).encode().lower())
    good_txt = next(k for k in content.records if k[1] == dns.rdatatype.TXT and
                    k[0].labels[0].lower() == instance_label(good.public_key).encode().lower())
    content.records[liar_txt] = content.records[good_txt]     # pub= of another key
    bad = dns.name.from_text(f"not-a-key._wireguard._udp.{ZONE}")
    content.records[(bad, dns.rdatatype.TXT)] = content.records[good_txt]
    deep = dns.name.from_text(f"x.{instance_label(good.public_key)}._wireguard._udp.{ZONE}")
    content.records[(deep, dns.rdatatype.TXT)] = content.records[good_txt]
    assert set(zone_records(content, ZONE)) == {good.public_key}
