"""Member names in the zone (NAME.ZONE A/AAAA, rendezvous.ZONE) and what a member's host
is told (discovery/dnssd/host_names.py): the names enrollment accepts, the answers, the
hosts-file block, resolvectl's arguments."""

from __future__ import annotations

import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdatatype
import pytest

from discovery.dnssd import host_names as hn
from discovery.dnssd.member import MemberRecord
from discovery.dnssd.names import host_name
from discovery.dnssd.zone import Directory
from discovery.dnssd.wire import encode_response
from discovery.stores.validate import validate_name
from tests.discovery.dnssd.sample import ZONE, ask, member

RENDEZVOUS = "100.64.0.1"


@pytest.fixture
def named() -> Directory:
    d = Directory(ZONE, rendezvous_addresses=[RENDEZVOUS])
    d.set_members([
        member(1, name="laptop", mesh_address="100.64.0.2"),
        member(2, v6=True, name="phone", mesh_address="fd7a::3"),
        member(3, endpoint=False, name="nas", mesh_address="100.64.0.4"),   # no endpoint yet
        member(4, mesh_address="100.64.0.5"),                               # no name
    ])
    return d


def addresses(response: dns.message.Message) -> list[str]:
    return [r.address for rrset in response.answer for r in rrset]


def test_names_resolve_to_mesh_addresses(named: Directory) -> None:
    a = ask(named, "laptop." + ZONE, "A")
    assert a.rcode() == dns.rcode.NOERROR and a.flags & dns.flags.AA
    assert addresses(a) == ["100.64.0.2"] and a.answer[0].ttl == 0
    assert addresses(ask(named, "phone." + ZONE, "AAAA")) == ["fd7a::3"]
    # a member without an endpoint still has its name: its mesh address does not change
    assert addresses(ask(named, "nas." + ZONE, "A")) == ["100.64.0.4"]
    assert addresses(ask(named, "LapTop." + ZONE.upper(), "A")) == ["100.64.0.2"]   # any case
    assert addresses(ask(named, "rendezvous." + ZONE, "A")) == [RENDEZVOUS]


def test_other_types_are_nodata_and_unknown_names_nxdomain(named: Directory) -> None:
    for name, rdtype in (("laptop", "AAAA"), ("phone", "A"), ("laptop", "TXT"), ("laptop", "MX")):
        response = ask(named, f"{name}.{ZONE}", rdtype)
        assert response.rcode() == dns.rcode.NOERROR and not response.answer, (name, rdtype)
        assert response.authority[0].rdtype == dns.rdatatype.SOA
    for name in ("nosuch", "sub.laptop", "ns", "hostmaster"):
        response = ask(named, f"{name}.{ZONE}", "A")
        assert response.rcode() == dns.rcode.NXDOMAIN, name
    any_ = ask(named, "laptop." + ZONE, "ANY")
    assert [r.rdtype for r in any_.answer] == [dns.rdatatype.HINFO]
    # outside the zone: refused, as before
    assert ask(named, "laptop.example.org.", "A").rcode() == dns.rcode.REFUSED


def test_names_follow_the_membership(named: Directory) -> None:
    records = named.members()
    named.set_members([r for r in records if r.name != "laptop"] +
                      [MemberRecord(b"\x09" * 32, None, ["100.64.0.9/32"], name="tablet",
                                    mesh_address="100.64.0.9")])
    assert ask(named, "laptop." + ZONE, "A").rcode() == dns.rcode.NXDOMAIN
    assert addresses(ask(named, "tablet." + ZONE, "A")) == ["100.64.0.9"]
    assert addresses(ask(named, "phone." + ZONE, "AAAA")) == ["fd7a::3"]


def test_a_clash_never_shadows_the_rendezvous_or_the_first_holder() -> None:
    # the store refuses both (unique names, "rendezvous" reserved); the zone holds anyway
    d = Directory(ZONE, rendezvous_addresses=[RENDEZVOUS])
    d.set_members([member(1, name="rendezvous", mesh_address="100.64.0.2"),
                   member(2, name="twin", mesh_address="100.64.0.3"),
                   member(3, name="twin", mesh_address="100.64.0.4"),
                   member(5, name="bad.label", mesh_address="100.64.0.6")])
    assert addresses(ask(d, "rendezvous." + ZONE, "A")) == [RENDEZVOUS]
    assert addresses(ask(d, "twin." + ZONE, "A")) == ["100.64.0.3"]
    assert len(d.members()) == 4          # every member is still published


def test_a_name_that_is_no_label_leaves_the_member_published_unnamed() -> None:
    d = Directory(ZONE)
    d.set_members([member(1, name="_wireguard", mesh_address="100.64.0.2"),
                   member(2, name="x" * 64, mesh_address="100.64.0.3")])
    assert len(d.members()) == 2
    assert ask(d, "_wireguard." + ZONE, "A").rcode() == dns.rcode.NXDOMAIN
    assert ask(d, "rendezvous." + ZONE, "A").rcode() == dns.rcode.NXDOMAIN   # no address given


def test_transfer_carries_the_names(named: Directory) -> None:
    query = dns.message.make_query(ZONE, "AXFR")
    rrsets = []
    for wire in named.transfer(query):
        rrsets += dns.message.from_wire(wire).answer
    names = {(r.name.to_text(), r.rdtype) for r in rrsets}
    assert ("laptop." + ZONE, dns.rdatatype.A) in names
    assert ("phone." + ZONE, dns.rdatatype.AAAA) in names
    assert ("rendezvous." + ZONE, dns.rdatatype.A) in names
    assert rrsets[0].rdtype == dns.rdatatype.SOA


def test_answers_fit_plain_udp(named: Directory) -> None:
    wire = encode_response(ask(named, "laptop." + ZONE, "A"), 512)
    assert len(wire) < 512


def test_enrollment_accepts_dns_labels_only() -> None:
    for good in ("laptop", "a", "web-1", "x" * 63, "0day"):
        assert validate_name(good) == good
        assert host_name(ZONE, good) == dns.name.from_text(f"{good}.{ZONE}")
    for bad in ("Laptop", "-a", "a-", "a.b", "_x", "x" * 64, "", "é", "a b"):
        with pytest.raises(ValueError, match="use 1-63 characters"):
            validate_name(bad)
    with pytest.raises(ValueError, match="'rendezvous' is reserved"):
        validate_name("rendezvous")


# -------------------------------------------------------------- the host's side

def test_choose_mode() -> None:
    assert hn.choose_mode("auto", resolved_running=True) == "resolved"
    assert hn.choose_mode("auto", resolved_running=False) == "hosts"
    for mode in ("resolved", "hosts", "off"):
        assert hn.choose_mode(mode, resolved_running=False) == mode
    with pytest.raises(ValueError, match="use one of auto, resolved, hosts, off"):
        hn.choose_mode("dnsmasq", True)


def test_host_entries() -> None:
    entries = hn.host_entries("mesh.internal.", ["10.99.0.1"], [
        ("laptop", "10.99.0.2"), ("rendezvous", "10.99.0.66"), ("phone", "fd7a::3"),
        ("laptop", "10.99.0.7"), ("bad.name", "10.99.0.8"), ("nas", "not-an-ip"), ("", "10.99.0.9")])
    assert entries == [("10.99.0.2", "laptop.mesh.internal"), ("fd7a::3", "phone.mesh.internal"),
                       ("10.99.0.1", "rendezvous.mesh.internal")]


def test_hosts_block_keeps_every_other_line() -> None:
    original = "127.0.0.1\tlocalhost\n# mine\n10.0.0.5 printer\n"
    block = hn.hosts_block("meshwg0", [("10.99.0.2", "laptop.mesh.internal")])
    assert block.splitlines()[1] == "10.99.0.2\tlaptop.mesh.internal"
    added = hn.replace_block(original, "meshwg0", block)
    assert added.startswith(original) and added.endswith(block)
    # replaced in place: lines after it stay after it
    edited = added + "10.0.0.6 scanner\n"
    newer = hn.hosts_block("meshwg0", [("10.99.0.3", "phone.mesh.internal")])
    assert hn.replace_block(edited, "meshwg0", newer) == original + newer + "10.0.0.6 scanner\n"
    # another interface's block is another block
    other = hn.hosts_block("meshwg1", [("10.98.0.2", "x.other.internal")])
    both = hn.replace_block(added, "meshwg1", other)
    assert hn.replace_block(hn.replace_block(both, "meshwg0", ""), "meshwg1", "") == original
    assert hn.replace_block(original, "meshwg0", "") == original
    assert hn.hosts_block("meshwg0", []) == ""
    # no final newline: one is added before the block, nothing else changes
    assert hn.replace_block("127.0.0.1 localhost", "meshwg0", block) == "127.0.0.1 localhost\n" + block


def test_an_unterminated_block_is_left_alone() -> None:
    begin = hn.hosts_block("meshwg0", [("10.99.0.2", "a.z")]).splitlines(keepends=True)[0]
    broken = "127.0.0.1 localhost\n" + begin + "10.0.0.1 keepme\n"
    block = hn.hosts_block("meshwg0", [("10.99.0.3", "b.z")])
    assert hn.replace_block(broken, "meshwg0", block) == broken + block
    assert hn.replace_block(broken, "meshwg0", "") == broken


def test_resolved_commands() -> None:
    assert hn.resolved_server("10.99.0.1") == "10.99.0.1"
    assert hn.resolved_server("10.99.0.1", 5353) == "10.99.0.1:5353"
    assert hn.resolved_server("fd7a::1", 5353) == "[fd7a::1]:5353"
    assert hn.resolved_commands("meshwg0", ["10.99.0.1"], "mesh.internal.") == [
        ["dns", "meshwg0", "10.99.0.1"],
        ["domain", "meshwg0", "mesh.internal"],       # search and routing domain
        ["default-route", "meshwg0", "false"]]
    assert hn.resolved_revert("meshwg0") == ["revert", "meshwg0"]


def test_short_names_shadow_nothing_the_host_resolves() -> None:
    entries = [("10.99.0.2", "laptop.mesh.internal"), ("10.99.0.3", "nas.mesh.internal"),
               ("10.99.0.4", "phone.mesh.internal"), ("10.99.0.5", "printer.mesh.internal"),
               ("10.99.0.1", "rendezvous.mesh.internal"), ("fd7a::1", "rendezvous.mesh.internal")]
    hosts = ("127.0.0.1\tlocalhost\n"
             "192.168.1.5 NAS nas.lan  # the admin's\n"
             "10.99.0.5 printer\n"                      # the same address: no shadow
             "# 192.168.1.9 phone\n"                    # a comment names nothing
             + hn.hosts_block("meshwg0", [("10.99.0.7", "old.mesh.internal old")])
             + hn.hosts_block("meshwg1", [("10.98.0.2", "laptop.other.internal laptop")]))
    taken = hn.outside_names(hosts, "meshwg0")
    assert "old" not in taken and taken["laptop"] == {"10.98.0.2"}
    assert taken["nas"] == {"192.168.1.5"} and "phone" not in taken
    lines, left_out = hn.with_short_names("mesh.internal.", entries, taken, "phone.example.com")
    assert lines == [("10.99.0.2", "laptop.mesh.internal"), ("10.99.0.3", "nas.mesh.internal"),
                     ("10.99.0.4", "phone.mesh.internal"),
                     ("10.99.0.5", "printer.mesh.internal printer"),
                     ("10.99.0.1", "rendezvous.mesh.internal rendezvous"),
                     ("fd7a::1", "rendezvous.mesh.internal rendezvous")]
    assert left_out == {"laptop": "/etc/hosts gives it 10.98.0.2",
                        "nas": "/etc/hosts gives it 192.168.1.5",
                        "phone": "the machine's own host name"}
    block = hn.hosts_block("meshwg0", lines)
    assert "10.99.0.5\tprinter.mesh.internal printer\n" in block
