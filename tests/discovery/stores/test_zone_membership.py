"""The zone membership layout without a server (discovery.stores.zone_membership): names,
sealed invite secrets, parsing a transfer (hostile content dropped and counted), the
directory diff and its batching (discovery.dnssd.update.batches)."""

from __future__ import annotations

import dns.name
import dns.rdataclass
import dns.rdatatype
import dns.rdtypes.ANY.TXT
import dns.tsig
import pytest

from meshwg.core.keys import encode_key

from discovery.dnssd.names import instance_label
from discovery.dnssd.update import MAX_UPDATE_BYTES, ZoneContent, ZoneWriter, batches
from discovery.dnssd.wire import rrset
from discovery.stores.invites import Invite
from discovery.stores.rendezvous import Member
from discovery.stores.zone_membership import (
    MAX_PTR_BYTES, DirectoryPublisher, Layout, RendezvousEntry, address_from_label,
    address_label, open_secret, seal_secret,
)
from tests.discovery.dnssd.sample import member as sample_member

ZONE = dns.name.from_text("mesh.test.")
SEAL = bytes(range(32))
_T = dns.rdatatype


class FixedKey:
    def key(self) -> dns.tsig.Key:
        return dns.tsig.Key("k.", bytes(32), "hmac-sha256")


def key(i: int) -> bytes:
    return bytes([i]) * 31 + b"\x01"


def content(*rrsets: dns.rrset.RRset, serial: int = 7) -> ZoneContent:
    records: dict = {}
    for rr in rrsets:
        records.setdefault((rr.name, rr.rdtype), []).extend(rr)
    return ZoneContent(serial, records)


def txt(owner: dns.name.Name | str, *strings: bytes) -> dns.rrset.RRset:
    if isinstance(owner, str):
        owner = dns.name.from_text(owner, ZONE)
    return rrset(owner, _T.TXT, dns.rdtypes.ANY.TXT.TXT(dns.rdataclass.IN, _T.TXT, list(strings)))


SETTINGS = txt("_meshwg", b"meshwg=1", b"network=100.80.0.0/24", b"mesh=" + b"ab" * 16)


def good_member(layout: Layout, i: int, name: str, address: str) -> list:
    m = Member(name, key(i), address, 1000.0 + i, invite_id=None)
    return [layout.member_rrset(m), layout.claim_rrset(address, key(i)),
            layout.host_rrset(name, address)]


def test_address_labels_round_trip_both_families() -> None:
    assert address_label("10.0.0.5") == "10-0-0-5"
    assert address_from_label("10-0-0-5") == "10.0.0.5"
    label = address_label("fd00::1")
    assert label == "fd00-0000-0000-0000-0000-0000-0000-0001"
    assert address_from_label(label) == "fd00::1"
    for bad in ("10-0-0", "x-y-z-w", "fd00--1", "300-0-0-1"):
        with pytest.raises(ValueError):
            address_from_label(bad)


def test_invite_secret_is_sealed_to_the_key_and_the_invite() -> None:
    sealed = seal_secret(SEAL, "a" * 32, b"s" * 32)
    assert b"s" * 8 not in sealed.encode()
    assert open_secret(SEAL, "a" * 32, sealed) == b"s" * 32
    assert open_secret(bytes(32), "a" * 32, sealed) is None          # another zone key
    assert open_secret(SEAL, "b" * 32, sealed) is None               # moved to another id
    assert open_secret(SEAL, "a" * 32, "not base64!") is None
    assert open_secret(SEAL, "a" * 32, sealed[:-8]) is None


def test_parse_reads_a_well_formed_zone() -> None:
    layout = Layout(ZONE, SEAL)
    invite = Invite("c" * 32, b"z" * 32, False, None, 5.0, 1)
    rdv = RendezvousEntry(key(9), "192.0.2.1:51820", "192.0.2.1:51821", "100.80.0.1", b"p" * 32)
    view = layout.parse(content(
        SETTINGS, *good_member(layout, 1, "laptop", "100.80.0.2"),
        *good_member(layout, 2, "phone", "100.80.0.3"),
        layout.invite_rrset(invite, seal_secret(SEAL, invite.invite_id, invite.secret)),
        layout.rendezvous_rrset(rdv), layout.claim_rrset("100.80.0.1", key(9)),
        txt(layout.nonce_name("d" * 32), b"seen=1000")))
    assert view.serial == 7 and not view.dropped
    assert view.settings.network == "100.80.0.0/24" and view.settings.mesh_id == "ab" * 16
    assert {m.name: m.mesh_address for m in view.members.values()} == {
        "laptop": "100.80.0.2", "phone": "100.80.0.3"}
    assert view.find("phone").public_key == key(2)
    assert view.find(encode_key(key(1))).name == "laptop"
    assert view.find("100.80.0.3").name == "phone"
    assert view.find("nobody") is None
    assert view.invites["c" * 32][0] == invite
    assert view.rendezvous[key(9)] == rdv
    assert view.claims == {"100.80.0.1": key(9), "100.80.0.2": key(1), "100.80.0.3": key(2)}
    assert {"laptop", "phone"} <= view.names
    assert view.nonces == {"d" * 32: 1000.0}


def test_hostile_zone_content_is_dropped_and_counted() -> None:
    layout = Layout(ZONE, SEAL)
    m_owner = layout.member_name(key(3))
    hostile = [
        txt("notakey._members", b"name=x", b"addr=100.80.0.9", b"joined=1"),
        txt(m_owner, b"name=Bad_Name", b"addr=100.80.0.4", b"joined=1"),          # bad name
        txt(layout.member_name(key(4)), b"name=far", b"addr=10.9.9.9", b"joined=1"),  # outside
        txt(layout.member_name(key(5)), b"name=noclaim", b"addr=100.80.0.5", b"joined=1"),
        txt(layout.member_name(key(6)), b"name=nan", b"addr=100.80.0.6", b"joined=nan"),
        rrset(layout.member_name(key(7)), _T.TXT,          # two TXT records at one entry
              dns.rdtypes.ANY.TXT.TXT(dns.rdataclass.IN, _T.TXT, [b"name=a"]),
              dns.rdtypes.ANY.TXT.TXT(dns.rdataclass.IN, _T.TXT, [b"name=b"])),
        txt("1-2-3._addresses", b"pub=x"),                 # not an address
        txt(layout.claim_name("100.80.0.7"), b"pub=short"),
        txt(layout.invite_name("e" * 32), b"sealed=" + b"A" * 96, b"reusable=0", b"expires=",
            b"created=1", b"uses=0"),                      # does not open
        txt("zz._invites", b"sealed="),                    # not an invite id
        txt(layout.nonce_name("f" * 32), b"seen=junk"),
        txt("\xff\xfe._rendezvous", b"pub=x"),
        txt("a.b.c.unrelated", b"whatever"),               # ignored: not ours
    ]
    view = layout.parse(content(SETTINGS, *good_member(layout, 1, "ok", "100.80.0.2"), *hostile))
    assert [m.name for m in view.members.values()] == ["ok"]
    assert not view.invites and not view.rendezvous
    assert "f" * 32 in view.nonces                         # kept: a replay must not pass
    assert sum(view.dropped.values()) == 12, view.dropped
    assert view.dropped["_members: no matching address claim"] == 1
    assert view.dropped["_invites: secret does not open (another key?)"] == 1


def test_bad_settings_are_dropped() -> None:
    layout = Layout(ZONE, SEAL)
    for strings in ([b"meshwg=2", b"network=100.80.0.0/24", b"mesh=" + b"ab" * 16],
                    [b"meshwg=1", b"network=100.80.0.1/24", b"mesh=" + b"ab" * 16],
                    [b"meshwg=1", b"network=100.80.0.0/24", b"mesh=xyz"]):
        view = layout.parse(content(txt("_meshwg", *strings)))
        assert view.settings is None and sum(view.dropped.values()) == 1


def publisher() -> DirectoryPublisher:
    return DirectoryPublisher(ZoneWriter("192.0.2.53:53", ZONE, FixedKey()), batch=50)


def apply(zone: ZoneContent, changes: list) -> ZoneContent:
    """What a server makes of the changes (RFC 2136 section 3.4.2), on plain dicts."""
    records = {k: list(v) for k, v in zone.records.items()}
    for op, rr in changes:
        key = (rr.name, rr.rdtype)
        if op == "replace":
            records[key] = list(rr)
        elif op == "add":
            have = {r.to_wire() for r in records.get(key, [])}
            records.setdefault(key, []).extend(r for r in rr if r.to_wire() not in have)
        elif len(rr):
            gone = {r.to_wire() for r in rr}
            records[key] = [r for r in records.get(key, []) if r.to_wire() not in gone]
        else:
            records.pop(key, None)
    return ZoneContent(zone.serial + 1, {k: v for k, v in records.items() if v})


def test_directory_diff_from_empty_converges_and_sends_only_changes() -> None:
    pub = publisher()
    members = [sample_member(i, name=f"m{i}") for i in range(1, 21)]
    changes = pub.diff(members, content())
    zone = apply(content(), changes)
    assert pub.diff(members, zone) == []
    # one member changes its endpoint, one leaves: two RRsets replaced, one name deleted
    members[0].endpoint = ("203.0.113.5", 1234)
    gone = members.pop()
    changes = pub.diff(members, zone)
    ops = sorted((op, rr.rdtype.name if hasattr(rr.rdtype, "name") else rr.rdtype, len(rr))
                 for op, rr in changes)
    assert ops == [("delete", "A", 0), ("delete", "PTR", 1), ("delete", "SRV", 0),
                   ("delete", "TXT", 0), ("replace", "A", 1), ("replace", "SRV", 1)]
    zone = apply(zone, changes)
    assert pub.diff(members, zone) == []
    assert not any(name.labels[0] == instance_label(gone.public_key).encode()
                   for name, _ in zone.records)
    # without prune, other writers' members stay
    assert pub.diff(members[:5], zone, prune=False) == []


def test_directory_diff_leaves_foreign_names_alone() -> None:
    pub = publisher()
    foreign = txt("laptop", b"whatever")
    changes = pub.diff([], content(foreign, SETTINGS))
    assert all(rr.name.is_subdomain(pub.service) or rr.name == pub.meta_service
               for _, rr in changes)


def test_ptr_set_is_bounded_for_bind() -> None:
    # BIND holds an RRset in at most 64 KiB: the PTR set stops at max_ptr_bytes (60,000
    # by default, ~690 members); 10 targets' worth here to keep the test fast
    assert MAX_PTR_BYTES < 65_535
    pub = DirectoryPublisher(ZoneWriter("192.0.2.53:53", ZONE, FixedKey()), max_ptr_bytes=900)
    members = [sample_member(i) for i in range(1, 31)]
    zone = apply(content(), pub.diff(members, content()))
    ptrs = zone.records[(pub.service, _T.PTR)]
    assert sum(len(r.target.to_wire()) + 4 for r in ptrs) <= 900
    assert 0 < len(ptrs) < 30 and pub.unlisted == 30 - len(ptrs)
    listed = {r.target for r in ptrs}      # the first members in order are the listed ones
    assert listed == {dns.name.Name((instance_label(m.public_key),)).concatenate(pub.service)
                      for m in members[:len(ptrs)]}
    assert pub.diff(members, zone) == []
    # every member is still published under its instance name
    assert sum(1 for name, rdtype in zone.records if rdtype == _T.SRV) == 30


def test_batches_bound_records_and_bytes() -> None:
    pub = publisher()
    changes = pub.diff([sample_member(i) for i in range(1, 301)], content())
    out = list(batches(changes, 50))
    assert sum(len(b) for b in out) == len(changes)
    assert all(sum(max(1, len(rr)) for _, rr in b) <= 50 or len(b) == 1 for b in out)
    big = list(batches(changes, 10_000))
    assert len(big) > 1                        # bytes bound them, not the record count
    writer = ZoneWriter("192.0.2.53:53", ZONE, FixedKey())
    for batch in big:
        update = writer.new_update()
        for op, rr in batch:
            update.replace(rr.name, rr) if op == "replace" else update.add(rr.name, rr)
        assert len(update.to_wire()) <= MAX_UPDATE_BYTES
