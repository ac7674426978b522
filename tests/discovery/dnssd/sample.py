"""A small directory and query helpers shared by the zone and parse tests."""

from __future__ import annotations

import dns.message
import dns.name
import dns.rrset

from discovery.dnssd.member import MemberRecord
from discovery.dnssd.zone import Directory

ZONE = "mesh.example."
SERVICE = "_wireguard._udp." + ZONE


def member(i: int, *, v6: bool = False, endpoint: bool = True, **kw) -> MemberRecord:
    key = bytes([i % 256]) * 31 + bytes([i // 256])
    ep = (f"2001:db8::{i:x}" if v6 else f"198.51.100.{i % 250 + 1}", 40000 + i) if endpoint else None
    return MemberRecord(key, ep, [f"100.64.0.{i % 250 + 1}/32", "10.99.0.0/24"], **kw)


def ask(directory: Directory, name: str | dns.name.Name, rdtype: str, **kw) -> dns.message.Message:
    query = dns.message.make_query(name, rdtype, **kw)
    return directory.answer(query)


def find(section: list, name: dns.name.Name, rdtype: int) -> dns.rrset.RRset:
    (rrset,) = [r for r in section if r.name == name and r.rdtype == rdtype]
    return rrset


def all_ttls(response: dns.message.Message) -> set[int]:
    return {rrset.ttl for section in (response.answer, response.authority, response.additional) for rrset in section}


def sample_directory() -> Directory:
    """Three members: alpha (IPv4, candidates, extra key), beta (IPv6), gamma (no endpoint)."""
    d = Directory(ZONE)
    d.set_members([
        member(1, name="alpha", mesh_address="100.64.0.2", host_candidates=[("192.168.1.10", 51820), ("fd00::10", 51820)], extra={"os": "linux"}),
        member(2, v6=True, name="beta"),
        member(3, endpoint=False, name="gamma", mesh_address="100.64.0.4"),
    ])
    return d
