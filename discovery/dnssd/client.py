"""Unicast DNS-SD client: resolve the rendezvous's member directory (wgsd layout).

:func:`resolve_zone` reads the PTR set at ``_wireguard._udp.ZONE`` (UDP, then TCP when
truncated), then asks SRV for every instance, many at once over a single UDP socket
(the SRV answer carries the A/AAAA and TXT records in its additional section; missing
pieces are asked for separately). When even the TCP PTR answer is truncated (more than
about 900 members do not fit one 64 KiB message) the client transfers the bulk directory
(``_directory._wireguard._udp.ZONE``, see discovery.dnssd.bulk: a few large TXT records
over one TCP connection, 10,000 members in a fraction of a second); a server without it
(REFUSED, or not a transfer) gets an AXFR of the zone instead. The exchanges themselves
are discovery.dnssd.exchange; failures raise DiscoveryError.
"""

from __future__ import annotations

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.query
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset
import dns.xfr

from meshwg.util.endpoint import format_endpoint

from discovery.dnssd.bulk import parse_bulk_strings
from discovery.dnssd.exchange import (
    DEFAULT_WINDOW, DiscoveryError, Server, make_query, udp_exchange,
)
from discovery.dnssd.member import MemberRecord
from discovery.dnssd.names import bulk_name, instance_name, service_name, zone_name
from discovery.dnssd.parse import parse_member_answers, parse_ptr_answers
from discovery.dnssd.zone import RENDEZVOUS_LIST_LABEL

__all__ = ["DiscoveryError", "Server", "rendezvous_list", "resolve_member", "resolve_zone"]
_T = dns.rdatatype


def _answer_rrsets(response: dns.message.Message) -> list[dns.rrset.RRset]:
    return list(response.answer) + list(response.additional)


def _list_instances(server: Server, zone: dns.name.Name, timeout: float) -> list[dns.name.Name] | None:
    """Instance names from the PTR set, or None when it does not fit even over TCP."""
    query = make_query(service_name(zone), _T.PTR)
    response = udp_exchange(server, [query], timeout)[0]
    if response.flags & dns.flags.TC:  # came back truncated over TCP too
        return None
    return parse_ptr_answers(zone, response.answer)


def _complete(
    server: Server,
    zone: dns.name.Name,
    instances: list[dns.name.Name],
    rrsets: dict[dns.name.Name, list[dns.rrset.RRset]],
    timeout: float,
    window: int,
) -> list[MemberRecord]:
    """Ask TXT and A/AAAA for instances whose SRV answer lacked them; parse all."""
    follow: list[tuple[dns.name.Name, dns.message.Message]] = []
    for name in instances:
        have = {(r.name, r.rdtype) for r in rrsets[name]}
        srv = next((r for r in rrsets[name] if r.rdtype == _T.SRV and r.name == name), None)
        if srv is None:
            continue  # vanished between PTR and SRV, or no endpoint any more
        if (name, _T.TXT) not in have:
            follow.append((name, make_query(name, _T.TXT)))
        for rdata in srv:
            if (rdata.target, _T.A) not in have and (rdata.target, _T.AAAA) not in have:
                follow.append((name, make_query(rdata.target, _T.A)))
                follow.append((name, make_query(rdata.target, _T.AAAA)))
            break
    if follow:
        responses = udp_exchange(server, [q for _, q in follow], timeout, window)
        for (name, _), response in zip(follow, responses):
            rrsets[name] += _answer_rrsets(response)
    out = []
    for name in instances:
        record = parse_member_answers(name, rrsets[name])
        if record is not None and record.endpoint is not None:
            out.append(record)
    return out


def _resolve_by_transfer(server: Server, zone: dns.name.Name, timeout: float) -> list[MemberRecord]:
    host, port = server
    rrsets: list[dns.rrset.RRset] = []
    try:
        for message in dns.query.xfr(host, zone, port=port, timeout=timeout, relativize=False):
            if message.rcode() != dns.rcode.NOERROR:
                raise DiscoveryError(
                    f"DNS server {format_endpoint(server)} answered {dns.rcode.to_text(message.rcode())} to AXFR {zone}"
                )
            rrsets += message.answer
    except dns.exception.Timeout:
        raise DiscoveryError(f"DNS server {format_endpoint(server)}: zone transfer timed out after {timeout} s") from None
    except dns.exception.DNSException as exc:
        raise DiscoveryError(f"DNS server {format_endpoint(server)}: zone transfer failed: {exc}") from None
    except OSError as exc:
        raise DiscoveryError(f"DNS server {format_endpoint(server)}: zone transfer failed: {exc}") from None
    instances = parse_ptr_answers(zone, rrsets)
    depth = len(service_name(zone)) + 1
    by_label: dict[bytes, list[dns.rrset.RRset]] = {}  # keyed by bytes: Name hashing is slow
    for rrset in rrsets:
        if len(rrset.name) == depth:
            by_label.setdefault(rrset.name.labels[0].lower(), []).append(rrset)
    out = []
    for name in instances:
        record = parse_member_answers(name, by_label.get(name.labels[0].lower(), []))
        if record is not None and record.endpoint is not None:
            out.append(record)
    return out


def _resolve_by_bulk(server: Server, zone: dns.name.Name, timeout: float) -> list[MemberRecord] | None:
    """The members from the bulk directory, or None when the server does not serve one."""
    host, port = server
    name = bulk_name(zone)
    strings: list[bytes] = []
    try:
        for message in dns.query.xfr(host, name, port=port, timeout=timeout, relativize=False):
            for rrset in message.answer:
                if rrset.rdtype == _T.TXT and rrset.rdclass == dns.rdataclass.IN and rrset.name == name:
                    for rdata in rrset:
                        strings += rdata.strings
    except (dns.xfr.TransferError, dns.exception.FormError):
        return None  # not ours (REFUSED, NOTAUTH...) or not a transfer: use the wgsd records
    except dns.exception.Timeout:
        raise DiscoveryError(f"DNS server {format_endpoint(server)}: bulk transfer timed out after {timeout} s") from None
    except dns.exception.DNSException as exc:
        raise DiscoveryError(f"DNS server {format_endpoint(server)}: bulk transfer failed: {exc}") from None
    except OSError as exc:
        raise DiscoveryError(f"DNS server {format_endpoint(server)}: bulk transfer failed: {exc}") from None
    return parse_bulk_strings(strings)


def resolve_zone(
    server: Server, zone: str, timeout: float = 2.0, *, window: int = DEFAULT_WINDOW
) -> list[MemberRecord]:
    """Every member the rendezvous publishes (those with an endpoint), in PTR order.

    ``timeout`` bounds each query (retries included). Raises DiscoveryError on timeout,
    REFUSED or a server failure."""
    origin = zone_name(zone)
    instances = _list_instances(server, origin, timeout)
    if instances is None:
        members = _resolve_by_bulk(server, origin, timeout)
        return members if members is not None else _resolve_by_transfer(server, origin, timeout)
    responses = udp_exchange(server, [make_query(n, _T.SRV) for n in instances], timeout, window)
    rrsets = {name: _answer_rrsets(r) for name, r in zip(instances, responses)}
    return _complete(server, origin, instances, rrsets, timeout, window)


def resolve_member(
    server: Server, zone: str, public_key: bytes, timeout: float = 2.0
) -> MemberRecord | None:
    """One member by key, or None if the directory does not know it. A member known
    without an endpoint comes back with ``endpoint=None`` (from its TXT record)."""
    origin = zone_name(zone)
    name = instance_name(origin, public_key)
    srv_response = udp_exchange(server, [make_query(name, _T.SRV)], timeout)[0]
    if srv_response.rcode() == dns.rcode.NXDOMAIN:
        return None
    rrsets = {name: _answer_rrsets(srv_response)}
    if not any(r.rdtype == _T.SRV for r in srv_response.answer):
        txt_response = udp_exchange(server, [make_query(name, _T.TXT)], timeout)[0]
        return parse_member_answers(name, _answer_rrsets(txt_response))
    records = _complete(server, origin, [name], rrsets, timeout, 1)
    return records[0] if records else None


def directory_serial(server: Server, zone: str, timeout: float) -> int:
    """The SOA serial of the directory's zone (it changes with every directory update).
    Raises DiscoveryError or OSError when the server does not answer properly."""
    response = udp_exchange(server, [make_query(zone_name(zone), dns.rdatatype.SOA)], timeout)[0]
    for rrset in response.answer:
        if rrset.rdtype == dns.rdatatype.SOA and len(rrset):
            return rrset[0].serial
    raise DiscoveryError(f"{zone}: the directory's answer holds no SOA record")


def rendezvous_list(server: Server, zone: str, timeout: float) -> list[tuple[bytes, ...]]:
    """The strings of each TXT record at ``_rendezvous.ZONE``: the mesh's rendezvous
    (discovery.dnssd.zone; parsed by discovery.stores.zone_rendezvous.listed_refs).
    [] when the directory lists none (an embedded directory, an older rendezvous). Raises
    DiscoveryError or OSError when the server does not answer properly."""
    name = dns.name.Name((RENDEZVOUS_LIST_LABEL,) + zone_name(zone).labels)
    response = udp_exchange(server, [make_query(name, _T.TXT)], timeout)[0]
    return [tuple(bytes(s) for s in rdata.strings) for rrset in response.answer
            if rrset.rdtype == _T.TXT and rrset.name == name for rdata in rrset]
