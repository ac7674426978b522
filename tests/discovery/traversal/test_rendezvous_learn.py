"""Members learn the mesh's rendezvous from the directory (issue 10): the zone's rendezvous
entry with its TLS relay port (discovery/stores/zone_membership.py), the list a rendezvous
serves at ``_rendezvous.ZONE`` (discovery/dnssd/zone.py), what a member makes of it
(discovery/stores/zone_rendezvous.listed_refs, discovery/traversal/rendezvous_choice
.listed) and keeps across a restart (member.json, discovery/daemons/member.py)."""

from __future__ import annotations

import ipaddress

import dns.message
import dns.name
import dns.rdataclass
import dns.rdatatype
import dns.rcode
import dns.rdtypes.ANY.TXT
import pytest

from meshwg.core import crypto
from meshwg.core.keys import encode_key

from discovery.daemons.member import MemberDaemon
from discovery.dnssd.update import ZoneContent
from discovery.dnssd.wire import rrset
from discovery.dnssd.zone import MAX_RENDEZVOUS, Directory
from discovery.enroll.tokens import RendezvousRef
from discovery.stores.member import MemberState
from discovery.stores.zone_membership import (
    Layout, RendezvousEntry, parse_rendezvous, served_rendezvous, served_strings,
)
from discovery.stores.zone_rendezvous import listed_refs, rendezvous_refs
from discovery.traversal.rendezvous_choice import MAX_KNOWN, RendezvousChoice

ZONE = "mesh.test."
NETWORK = "100.80.0.0/24"
_T = dns.rdatatype


def key(i: int) -> bytes:
    return crypto.public_key(bytes([i]) * 32)


def entry(i: int, tls: int = 0) -> RendezvousEntry:
    return RendezvousEntry(key(i), f"192.0.2.{i}:51820", f"192.0.2.{i}:51821",
                           f"100.80.0.{i}", bytes([i]) * 32, tls)


def txt(owner: dns.name.Name, *strings: bytes) -> dns.rrset.RRset:
    return rrset(owner, _T.TXT, dns.rdtypes.ANY.TXT.TXT(dns.rdataclass.IN, _T.TXT, list(strings)))


def zone_view(*rrsets):
    layout = Layout(dns.name.from_text(ZONE), bytes(32))
    settings = txt(dns.name.from_text("_meshwg." + ZONE), b"meshwg=1", b"network=" + NETWORK.encode(),
                   b"mesh=" + b"ab" * 16)
    records: dict = {}
    for rr in (settings, *rrsets):
        records.setdefault((rr.name, rr.rdtype), []).extend(rr)
    return layout, layout.parse(ZoneContent(7, records))


# ---------------------------------------------------------------- the zone's entry


def test_entry_carries_the_relay_port_and_an_older_entry_still_parses() -> None:
    layout, _ = zone_view()
    new, old = entry(1, tls=8443), entry(2)
    _, view = zone_view(layout.rendezvous_rrset(new), layout.rendezvous_rrset(old))
    assert view.rendezvous == {key(1): new, key(2): old} and not view.dropped
    assert b"tls=8443" in layout.rendezvous_rrset(new)[0].strings
    assert not any(s.startswith(b"tls=") for s in layout.rendezvous_rrset(old)[0].strings)
    # an entry written before tls= existed (exactly the old strings) reads as "no relay port"
    legacy = txt(layout.rendezvous_name(key(3)), b"pub=" + encode_key(key(3)).encode(),
                 b"ep=192.0.2.3:51820", b"enroll=192.0.2.3:51821", b"addr=100.80.0.3")
    _, view = zone_view(legacy)
    assert view.rendezvous[key(3)].relay_tcp_port == 0 and view.rendezvous[key(3)].pin == b""
    refs = rendezvous_refs([new, old])
    assert [(r.enroll_port, r.relay_tcp_port, r.mesh_address) for r in refs] == [
        (51821, 8443, "100.80.0.1"), (51821, 0, "100.80.0.2")]


def fields(e: RendezvousEntry, **changes: str) -> dict[str, str]:
    out = {"pub": encode_key(e.public_key), "ep": e.endpoint, "enroll": e.enroll,
           "addr": e.mesh_address, "pin": e.pin.hex(), "tls": str(e.relay_tcp_port)}
    out.update(changes)
    return {k: v for k, v in out.items() if v is not None}


@pytest.mark.parametrize("changes, reason", [
    ({"pub": "not-a-key"}, "not one TXT with its pub="),
    ({"pub": encode_key(bytes(32))}, "weak pub="),                    # a low-order point
    ({"ep": "192.0.2.1:70000"}, "bad ep, enroll or pin"),
    ({"enroll": "192.0.2.1"}, "bad ep, enroll or pin"),
    ({"pin": "zz"}, "bad ep, enroll or pin"),
    ({"pin": "ab"}, "bad addr or pin"),
    ({"addr": "10.9.9.9"}, "bad addr or pin"),                        # outside the mesh
    ({"tls": "65536"}, "bad tls port"),
    ({"tls": "-1"}, "bad tls port"),
    ({"tls": "443x"}, "bad tls port"),
    ({"tls": "9" * 300}, "bad tls port"),
])
def test_hostile_entry_fields_are_dropped_with_a_reason(changes, reason) -> None:
    net = ipaddress.ip_network(NETWORK)
    assert parse_rendezvous(fields(entry(1, 443)), net) == entry(1, 443)
    assert parse_rendezvous(fields(entry(1, 443), **changes), net) == reason
    assert parse_rendezvous(None, net) == "not one TXT record"
    assert parse_rendezvous(fields(entry(1)), net, key=key(2)) == "not one TXT with its pub="


def test_a_zone_lists_at_most_max_rendezvous_the_rest_counted() -> None:
    layout, _ = zone_view()
    many = [layout.rendezvous_rrset(entry(i)) for i in range(1, MAX_RENDEZVOUS + 5)]
    bad = txt(layout.rendezvous_name(key(40)), b"pub=" + encode_key(key(40)).encode(), b"tls=1")
    _, view = zone_view(*many, bad)
    assert len(view.rendezvous) == MAX_RENDEZVOUS
    assert view.dropped["_rendezvous: too many rendezvous"] == 5
    assert sum(view.dropped.values()) == 5


# ---------------------------------------------------------------- served to members


def ask(directory: Directory, name: str, rdtype: int = _T.TXT) -> dns.message.Message:
    return directory.answer(dns.message.make_query(name, rdtype))


def test_a_rendezvous_serves_the_list_and_a_member_reads_it_back() -> None:
    directory = Directory(ZONE)
    assert ask(directory, "_rendezvous." + ZONE).rcode() == dns.rcode.NXDOMAIN   # embedded: none
    serial = directory.serial
    listed = [entry(2, 8443), entry(1)]
    assert directory.set_rendezvous(served_strings(listed)) is True
    assert directory.serial == serial + 1          # members re-read (and NOTIFY goes out)
    assert directory.set_rendezvous(served_strings(listed)) is False
    assert directory.serial == serial + 1
    answer = ask(directory, "_rendezvous." + ZONE)
    records = [tuple(rd.strings) for rr in answer.answer for rd in rr]
    refs, dropped = listed_refs(records, NETWORK)
    assert dropped == {}
    assert refs == rendezvous_refs(listed)          # ordered by mesh address, tls= kept
    assert [r.relay_tcp_port for r in refs] == [0, 8443]
    assert ask(directory, "_rendezvous." + ZONE, _T.A).answer == []
    assert directory.set_rendezvous([]) is True
    assert ask(directory, "_rendezvous." + ZONE).rcode() == dns.rcode.NXDOMAIN


def test_a_hostile_list_is_bounded_and_its_bad_records_counted() -> None:
    good = served_strings([entry(1), entry(2, 443)])
    hostile = [
        (b"pub=" + encode_key(bytes(32)).encode(), b"ep=192.0.2.9:1", b"enroll=192.0.2.9:2",
         b"addr=100.80.0.9"),                                           # weak key
        good[0],                                                        # a repeat
        (b"junk",),
        (b"\xff\xfe",),
        served_strings([entry(3, 443)])[0].__add__((b"tls=99999",)),    # first tls= wins: kept
        *[served_strings([entry(i)])[0] for i in range(10, 30)],        # too many
    ]
    entries, dropped = served_rendezvous([*good, *hostile], NETWORK)
    # the first MAX_RENDEZVOUS records are read: 1, 2, 3 and 10..18 are good
    assert [e.public_key for e in entries] == [key(i) for i in (1, 2, 3, *range(10, 19))]
    assert entries[2].relay_tcp_port == 443
    assert dropped == {"weak pub=": 1, "repeated key": 1, "not one TXT with its pub=": 2,
                       "too many rendezvous": len(good) + len(hostile) - MAX_RENDEZVOUS}


# ---------------------------------------------------------------- the member's choice


def ref(i: int) -> RendezvousRef:
    return RendezvousRef(key(i), f"192.0.2.{i}:51820", 51821, f"100.80.0.{i}")


def keys(refs) -> list[bytes]:
    return [r.public_key for r in refs]


def test_listed_learns_new_ones_and_forgets_removed_ones() -> None:
    choice = RendezvousChoice([ref(1), ref(2)])
    assert choice.listed([], key(1)) is False                      # no list: nothing changes
    assert choice.listed([ref(1), ref(2), ref(3)], key(1)) is True
    assert keys(choice.known) == [key(1), key(2), key(3)]
    assert choice.listed([ref(1), ref(2), ref(3)], key(1)) is False
    assert choice.listed([ref(1), ref(3)], key(1)) is True         # 2 left the zone
    assert keys(choice.known) == [key(1), key(3)] and keys(choice.kept()) == [key(1), key(3)]
    assert key(2) not in choice.health


def test_listed_keeps_the_one_enrolled_at_and_the_current_one() -> None:
    choice = RendezvousChoice([ref(1), ref(2), ref(3)])
    choice.failed(key(1), "timeout", 10.0)                         # reading at 2 now
    assert choice.current == key(2)
    assert choice.listed([ref(3)], key(1)) is False
    assert set(keys(choice.known)) == {key(1), key(2), key(3)}     # pinned and current stay
    choice.failed(key(2), "timeout", 11.0)                         # 2 dies too: 3 is read
    assert choice.current == key(3)
    choice.listed([ref(3), ref(4)], key(1))
    assert keys(choice.known) == [key(1), key(3), key(4)]          # 2 forgotten now


def test_listed_is_bounded() -> None:
    choice = RendezvousChoice([ref(1)])
    choice.listed([ref(i) for i in range(1, 30)], key(1))
    assert len(choice.known) == MAX_KNOWN


# ---------------------------------------------------------------- kept across a restart


def test_the_member_keeps_what_it_learned_in_member_json(tmp_path) -> None:
    state = MemberState(private_key=bytes([7]) * 32, name="laptop", address="100.80.0.20",
                        network=NETWORK, zone=ZONE, mesh_id="ab" * 16,
                        rendezvous_public_key=key(1), rendezvous_endpoint="192.0.2.1:51820",
                        dns_address="100.80.0.1", other_rendezvous=[ref(2)])
    state.save(tmp_path)
    daemon = MemberDaemon(str(tmp_path), interface="mwgtest0", mdns=False, portmap=False,
                          netcheck=False, dns="off")
    assert keys(daemon.rendezvous.known) == [key(1), key(2)]
    records = served_strings([entry(1), entry(3, 8443), entry(2)])
    records.append((b"pub=" + encode_key(bytes(32)).encode(),))     # a bad one: counted
    daemon._learn_rendezvous(records)
    assert keys(daemon.rendezvous.known) == [key(1), key(2), key(3)]
    assert daemon.status()["rendezvous_dropped"] == {"weak pub=": 1}
    again = MemberState.load(tmp_path)                              # a restart knows 3
    assert [(r.public_key, r.relay_tcp_port) for r in again.other_rendezvous] == [
        (key(2), 0), (key(3), 8443)]
    daemon._learn_rendezvous(served_strings([entry(1), entry(3, 8443)]))   # 2 removed
    assert keys(MemberState.load(tmp_path).other_rendezvous) == [key(3)]
    restarted = MemberDaemon(str(tmp_path), interface="mwgtest0", mdns=False, portmap=False,
                             netcheck=False, dns="off")
    assert keys(restarted.rendezvous.known) == [key(1), key(3)]
