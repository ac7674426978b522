"""Answers back into member records: what the client makes of the rrsets it receives
(from any sections of any responses). No I/O; hostile records are skipped, never fatal."""

from __future__ import annotations

from typing import Iterable

import dns.name
import dns.rdatatype
import dns.rrset

from discovery.dnssd.member import MemberRecord
from discovery.dnssd.names import public_key_from_label, service_name
from discovery.dnssd.txt import decode_pub, member_from_fields, parse_txt
from discovery.dnssd.wire import IN

_T = dns.rdatatype


def parse_ptr_answers(
    zone: str | dns.name.Name, rrsets: Iterable[dns.rrset.RRset]
) -> list[dns.name.Name]:
    """Instance names from PTR rrsets at ``_wireguard._udp.ZONE``: only targets of the
    form ``B32._wireguard._udp.ZONE`` with a valid key label; duplicates dropped."""
    service = service_name(zone)
    seen: set[bytes] = set()  # lowercased labels: hashing dnspython Names is slow
    out: list[dns.name.Name] = []
    for rrset in rrsets:
        if rrset.rdtype != _T.PTR or rrset.rdclass != IN or rrset.name != service:
            continue
        for rdata in rrset:
            target = rdata.target
            if len(target) != len(service) + 1 or not target.is_subdomain(service):
                continue
            label = target.labels[0].lower()
            if label in seen:
                continue
            try:
                public_key_from_label(label)
            except ValueError:
                continue
            seen.add(label)
            out.append(target)
    return out


def parse_member_answers(
    instance: dns.name.Name, rrsets: Iterable[dns.rrset.RRset]
) -> MemberRecord | None:
    """Turn SRV/TXT/A/AAAA rrsets about one instance back into a MemberRecord. None when
    the instance label is not a key, when there is neither SRV nor TXT, or when TXT
    ``pub=`` contradicts the label."""
    try:
        key = public_key_from_label(instance.labels[0])
    except (ValueError, IndexError):
        return None
    rrsets = [r for r in rrsets if r.rdclass == IN]

    def find(name: dns.name.Name, rdtype: int) -> dns.rrset.RRset | None:
        return next((r for r in rrsets if r.rdtype == rdtype and len(r) and r.name == name), None)

    srv = find(instance, _T.SRV)
    txt = find(instance, _T.TXT)
    if srv is None and txt is None:
        return None
    endpoint = None
    if srv is not None:
        best = min(srv, key=lambda r: (r.priority, -r.weight))
        for rdtype in (_T.A, _T.AAAA):
            address = find(best.target, rdtype)
            if address is not None and best.port:
                endpoint = (str(next(iter(address)).address), int(best.port))
                break
    fields: dict[str, str] = {}
    if txt is not None:
        fields = parse_txt(s for rdata in txt for s in rdata.strings)
    if "pub" in fields and decode_pub(fields["pub"]) != key:
        return None
    return member_from_fields(key, endpoint, fields)
