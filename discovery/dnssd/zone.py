"""The rendezvous's zone: its member directory answering DNS queries in wgsd's layout.
No I/O; the server (discovery.dnssd.server) feeds it parsed queries.

Under ``ZONE`` (names: discovery.dnssd.names):

* ``_wireguard._udp.ZONE PTR B32._wireguard._udp.ZONE`` -- one per member that has an
  endpoint.
* ``B32._wireguard._udp.ZONE SRV 0 0 PORT B32._wireguard._udp.ZONE`` -- the endpoint
  port; the A or AAAA record (endpoint address) and the TXT record ride along in the
  additional section.
* ``B32._wireguard._udp.ZONE TXT`` -- discovery.dnssd.txt; ``relay=PORT`` when the member
  offers a relay at its endpoint's address (discovery.dnssd.relays).
* ``B32._wireguard._udp.ZONE A|AAAA`` -- the endpoint address.
* ``_services._dns-sd._udp.ZONE PTR _wireguard._udp.ZONE`` (RFC 6763 section 9).
* ``ZONE SOA`` (minimum 60); NXDOMAIN and NODATA answers carry it in authority.
* ``_directory._wireguard._udp.ZONE`` -- the bulk directory (discovery.dnssd.bulk).
* ``_rendezvous.ZONE TXT`` -- the mesh's rendezvous, one TXT record each, with the
  strings of its zone entry (discovery.stores.zone_membership.rendezvous_pairs; at most
  MAX_RENDEZVOUS): members learn the mesh's other rendezvous here (issue 10). Absent on
  an embedded (single-rendezvous) directory.
* ``NAME.ZONE A|AAAA`` -- a member's mesh address under its member name
  (discovery.dnssd.names.host_name), and ``rendezvous.ZONE`` the rendezvous's own: what
  ``ping laptop.ZONE`` resolves (MagicDNS-like). Names are unique in the store; should two
  records still carry one name, the rendezvous's and then the first listed keep it.

Every TTL is 0: endpoints change. Policies: names outside the zone -> REFUSED;
class other than IN -> REFUSED; opcode other than QUERY -> NOTIMP; not exactly one
question -> FORMERR; ANY -> the RFC 8482 minimal answer (one synthesized
``HINFO "RFC8482" ""`` at names that exist, NXDOMAIN elsewhere); AXFR is answered
only over TCP (:meth:`Directory.transfer`), over UDP it is REFUSED; IXFR -> NOTIMP.

A directory is replaced as a whole (:meth:`Directory.set_members`) by building a new
immutable snapshot and swapping one reference, so readers in other threads always see
one consistent member set; unchanged members reuse their rendered records.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Iterable, Iterator

import dns.flags
import dns.message
import dns.name
import dns.opcode
import dns.rcode
import dns.rdata
import dns.rdatatype
import dns.rdtypes.ANY.HINFO
import dns.rdtypes.ANY.PTR
import dns.rdtypes.ANY.SOA
import dns.rdtypes.ANY.TXT
import dns.rdtypes.IN.A
import dns.rdtypes.IN.AAAA
import dns.rdtypes.IN.SRV
import dns.rrset

from discovery.dnssd.bulk import bulk_records, member_strings
from discovery.dnssd.member import MemberRecord, check_record, published_ip
from discovery.dnssd.names import (
    RENDEZVOUS_LABEL, bulk_name, host_name, instance_label, meta_service_name, service_name,
    zone_name,
)
from discovery.dnssd.txt import txt_strings
from discovery.dnssd.wire import (
    IN, OUR_UDP_PAYLOAD, TCP_LIMIT, encode_response, error_response, is_axfr_of, pack_messages,
    rrset,
)

SOA_MINIMUM = 60
MAX_RENDEZVOUS = 16     # TXT records in the rendezvous list (zone_membership reads as many)
RENDEZVOUS_LIST_LABEL = b"_rendezvous"
# A compressed PTR record to a B32 instance is 71 bytes, so about 920 fit in 64 KiB;
# bigger PTR sets get TC without rendering (clients fall back to AXFR over TCP).
MAX_PTR_ANSWER = 900
_T = dns.rdatatype


@dataclass(frozen=True)
class _Entry:
    key: tuple  # the record's fields, frozen: an unchanged member reuses its entry
    record: MemberRecord
    txt: dns.rrset.RRset
    srv: dns.rrset.RRset | None
    address: dns.rrset.RRset | None  # A or AAAA
    ptr: dns.rdata.Rdata | None  # its PTR target, when it has an endpoint
    bulk: tuple[bytes, ...] = ()  # its strings in the bulk directory, when it has an endpoint
    host: dns.rrset.RRset | None = None  # NAME.ZONE A|AAAA its mesh address, when named


def _record_key(record: MemberRecord) -> tuple:
    return (
        bytes(record.public_key),
        None if record.endpoint is None else tuple(record.endpoint),
        tuple(record.allowed_ips),
        record.name,
        record.mesh_address,
        tuple(tuple(c) for c in record.host_candidates),
        tuple(sorted(record.extra.items())),
    )


def _copy_record(record: MemberRecord) -> MemberRecord:
    return replace(
        record,
        allowed_ips=list(record.allowed_ips),
        host_candidates=list(record.host_candidates),
        extra=dict(record.extra),
    )


_TOO_MANY = object()


@dataclass(frozen=True)
class _Snapshot:
    serial: int
    entries: dict[dns.name.Name, _Entry]
    ptr: dns.rrset.RRset | object | None  # _TOO_MANY when above MAX_PTR_ANSWER
    soa: dns.rrset.RRset
    bulk_soa: dns.rrset.RRset
    # NAME.ZONE's A/AAAA by NAME's lowercase label (hashing a dns.name.Name costs ~20x)
    hosts: dict[bytes, tuple[dns.rrset.RRset, ...]] = field(default_factory=dict)
    rendezvous: dns.rrset.RRset | None = None   # _rendezvous.ZONE TXT


class _Truncate(Exception):
    """The answer cannot fit any message: reply with TC and no records."""


class Directory:
    """The rendezvous's member directory, answering DNS queries in wgsd's layout."""

    def __init__(self, zone: str, rendezvous_addresses: Iterable[str] = ()) -> None:
        """`rendezvous_addresses`: the rendezvous's mesh addresses, published at
        ``rendezvous.ZONE`` (ValueError for one that is no IP address)."""
        self.zone = zone_name(zone)
        self._own_host = _host_rrsets(host_name(self.zone, RENDEZVOUS_LABEL), rendezvous_addresses)
        self._host_depth = len(self.zone) + 1          # labels in NAME.ZONE
        self.service = service_name(self.zone)
        self.meta_service = meta_service_name(self.zone)
        self.bulk = bulk_name(self.zone)
        self.rendezvous_list = dns.name.Name((RENDEZVOUS_LIST_LABEL,) + self.zone.labels)
        self._rendezvous: tuple[tuple[bytes, ...], ...] = ()
        self._serial = 0
        self._snapshot = _Snapshot(0, {}, None, self._soa(0), self._soa(0, self.bulk))
        self._snapshot = self._build([])

    # -- building

    def set_members(self, records: list[MemberRecord]) -> None:
        """Replace the whole member set at once. Raises ValueError (naming the member)
        for an invalid record; the previous set then stays in place."""
        self._snapshot = self._build(list(records))

    def set_rendezvous(self, entries: Iterable[tuple[bytes, ...]]) -> bool:
        """Serve `entries` (each one TXT record's strings, at most MAX_RENDEZVOUS kept) at
        ``_rendezvous.ZONE``; True (and a new serial) when that changed the list."""
        entries = tuple(tuple(bytes(s) for s in e) for e in entries if e)[:MAX_RENDEZVOUS]
        if entries == self._rendezvous:
            return False
        self._rendezvous = entries
        self._snapshot = self._build([entry.record for entry in self._snapshot.entries.values()])
        return True

    def members(self) -> list[MemberRecord]:
        """Copies of the current member records."""
        return [_copy_record(entry.record) for entry in self._snapshot.entries.values()]

    @property
    def serial(self) -> int:
        """SOA serial; increases with each :meth:`set_members`."""
        return self._snapshot.serial

    def _build(self, records: list[MemberRecord]) -> _Snapshot:
        entries: dict[dns.name.Name, _Entry] = {}
        previous = self._snapshot.entries
        for index, record in enumerate(records):
            try:
                owner = dns.name.Name((instance_label(record.public_key),) + self.service.labels)
                key = _record_key(record)
                entry = previous.get(owner)
                if entry is None or entry.key != key:
                    entry = self._entry(owner, key, _copy_record(record))
            except (ValueError, TypeError) as exc:
                raise ValueError(f"member #{index} ({record.name or 'unnamed'}): {exc}") from None
            if owner in entries:
                raise ValueError(f"member #{index} ({record.name or 'unnamed'}): duplicate public key")
            entries[owner] = entry
        targets = [entry.ptr for entry in entries.values() if entry.ptr is not None]
        if not targets:
            ptr = None
        elif len(targets) > MAX_PTR_ANSWER:
            ptr = _TOO_MANY  # never fits one message: answered with TC, listed by AXFR
        else:
            ptr = rrset(self.service, _T.PTR, *targets)
        hosts: dict[bytes, tuple[dns.rrset.RRset, ...]] = {}
        if self._own_host:
            hosts[self._own_host[0].name.labels[0].lower()] = self._own_host
        for entry in entries.values():
            if entry.host is not None:
                hosts.setdefault(entry.host.name.labels[0].lower(), (entry.host,))
        self._serial = (self._serial + 1) % (1 << 32)
        listed = rrset(self.rendezvous_list, _T.TXT, *(dns.rdtypes.ANY.TXT.TXT(IN, _T.TXT, e)
                                                        for e in self._rendezvous)) \
            if self._rendezvous else None
        return _Snapshot(self._serial, entries, ptr, self._soa(self._serial),
                         self._soa(self._serial, self.bulk), hosts, listed)

    def _soa(self, serial: int, owner: dns.name.Name | None = None) -> dns.rrset.RRset:
        return rrset(
            owner or self.zone,
            _T.SOA,
            dns.rdtypes.ANY.SOA.SOA(
                IN, _T.SOA,
                dns.name.Name(("ns",)).concatenate(self.zone),
                dns.name.Name(("hostmaster",)).concatenate(self.zone),
                serial, 60, 60, 600, SOA_MINIMUM,
            ),
        )

    def _entry(self, owner: dns.name.Name, key: tuple, record: MemberRecord) -> _Entry:
        ip = check_record(record)
        strings = txt_strings(record)
        txt = rrset(owner, _T.TXT, dns.rdtypes.ANY.TXT.TXT(IN, _T.TXT, strings))
        host = None
        if record.name and record.mesh_address:     # a name that is no label: published unnamed
            try:
                owner_name = host_name(self.zone, record.name)
            except ValueError:
                owner_name = None
            if owner_name is not None:
                (host,) = _host_rrsets(owner_name, [record.mesh_address])
        if ip is None or record.endpoint is None:
            return _Entry(key, record, txt, None, None, None, host=host)
        port = record.endpoint[1]
        srv = rrset(owner, _T.SRV, dns.rdtypes.IN.SRV.SRV(IN, _T.SRV, 0, 0, port, owner))
        if ip.version == 4:
            address = rrset(owner, _T.A, dns.rdtypes.IN.A.A(IN, _T.A, str(ip)))
        else:
            address = rrset(owner, _T.AAAA, dns.rdtypes.IN.AAAA.AAAA(IN, _T.AAAA, str(ip)))
        ptr = dns.rdtypes.ANY.PTR.PTR(IN, _T.PTR, owner)
        return _Entry(key, record, txt, srv, address, ptr, member_strings(strings, str(ip), port),
                      host)

    # -- answering

    def answer(self, query: dns.message.Message) -> dns.message.Message:
        """The authoritative response to one parsed query. Never raises."""
        try:
            return self._answer(query, self._snapshot)
        except Exception:  # noqa: BLE001 -- hostile input must never crash the server
            return error_response(query, dns.rcode.SERVFAIL)

    def _answer(self, query: dns.message.Message, snap: _Snapshot) -> dns.message.Message:
        if query.flags & dns.flags.QR:
            return error_response(query, dns.rcode.FORMERR)
        if query.opcode() != dns.opcode.QUERY:
            return error_response(query, dns.rcode.NOTIMP)
        if len(query.question) != 1:
            return error_response(query, dns.rcode.FORMERR)
        response = dns.message.make_response(query, our_payload=OUR_UDP_PAYLOAD)
        if query.edns > 0:
            response.set_rcode(dns.rcode.BADVERS)
            return response
        question = query.question[0]
        qname, qtype = question.name, question.rdtype
        if question.rdclass != IN or not qname.is_subdomain(self.zone):
            response.set_rcode(dns.rcode.REFUSED)
            return response
        if qtype in (_T.AXFR,):
            response.set_rcode(dns.rcode.REFUSED)  # transfers only over TCP: transfer()
            return response
        if qtype in (_T.IXFR, _T.MAILA, _T.MAILB):
            response.set_rcode(dns.rcode.NOTIMP)
            return response
        if qtype in (_T.OPT, _T.TSIG, _T.TKEY) or dns.rdatatype.is_metatype(qtype) and qtype != _T.ANY:
            response.set_rcode(dns.rcode.FORMERR)
            return response
        response.flags |= dns.flags.AA
        try:
            exists, answers, additional = self._lookup(qname, qtype, snap)
        except _Truncate:
            response.flags |= dns.flags.TC
            return response
        if not exists:
            response.set_rcode(dns.rcode.NXDOMAIN)
        if answers:
            response.answer.extend(answers)
            response.additional.extend(additional)
        else:
            response.authority.append(snap.soa)
        return response

    def _lookup(
        self, qname: dns.name.Name, qtype: int, snap: _Snapshot
    ) -> tuple[bool, list[dns.rrset.RRset], list[dns.rrset.RRset]]:
        """(name exists, answer rrsets, additional rrsets) for an in-zone name."""
        if qtype == _T.ANY:
            exists, _, _ = self._lookup(qname, _T.TYPE0, snap)
            if not exists:
                return False, [], []
            hinfo = dns.rdtypes.ANY.HINFO.HINFO(IN, _T.HINFO, b"RFC8482", b"")
            return True, [rrset(qname, _T.HINFO, hinfo)], []
        if qname == self.zone:
            return True, ([snap.soa] if qtype == _T.SOA else []), []
        if qname == self.service:
            if qtype == _T.PTR and snap.ptr is _TOO_MANY:
                raise _Truncate
            if qtype == _T.PTR and snap.ptr is not None:
                return True, [snap.ptr], []
            return True, [], []
        if qname == self.bulk:
            return True, ([snap.bulk_soa] if qtype == _T.SOA else []), []
        if qname == self.rendezvous_list and snap.rendezvous is not None:
            return True, ([snap.rendezvous] if qtype == _T.TXT else []), []
        if qname == self.meta_service:
            if qtype == _T.PTR:
                target = dns.rdtypes.ANY.PTR.PTR(IN, _T.PTR, self.service)
                return True, [rrset(self.meta_service, _T.PTR, target)], []
            return True, [], []
        host = snap.hosts.get(qname.labels[0].lower()) if len(qname) == self._host_depth else None
        if host is not None:
            return True, [r for r in host if r.rdtype == qtype], []
        entry = snap.entries.get(qname)
        if entry is not None:
            if qtype == _T.SRV and entry.srv is not None:
                assert entry.address is not None
                return True, [entry.srv], [entry.address, entry.txt]
            if qtype == _T.TXT:
                return True, [entry.txt], []
            if entry.address is not None and qtype == entry.address.rdtype:
                return True, [entry.address], []
            return True, [], []
        # empty non-terminals: _udp.ZONE, _dns-sd._udp.ZONE
        if any(name.is_subdomain(qname) for name in (self.service, self.meta_service)):
            return True, [], []
        return False, [], []

    def transfer(self, query: dns.message.Message, max_size: int = TCP_LIMIT) -> Iterator[bytes]:
        """AXFR of the zone (or of the bulk directory) as wire messages, produced as they
        fill (for TCP only): SOA, records..., SOA. A query that is not an AXFR of either
        apex gets one error message (REFUSED for another name, as :meth:`answer` would
        say). ValueError for a record that fits no message of `max_size` bytes."""
        snap = self._snapshot
        if is_axfr_of(query, self.bulk):
            members = (entry.bulk for entry in snap.entries.values() if entry.bulk)
            yield from pack_messages(query, [snap.bulk_soa, *bulk_records(self.bulk, members),
                                             snap.bulk_soa], max_size)
            return
        if not is_axfr_of(query, self.zone):
            response = self.answer(query)
            if response.rcode() == dns.rcode.NOERROR:
                response = error_response(query, dns.rcode.REFUSED)
            yield encode_response(response, max_size)
            return
        rrsets: list[dns.rrset.RRset] = [snap.soa]
        rrsets += self._lookup(self.meta_service, _T.PTR, snap)[1]
        for entry in snap.entries.values():
            if entry.ptr is not None:
                rrsets.append(rrset(self.service, _T.PTR, entry.ptr))
            rrsets += [r for r in (entry.srv, entry.txt, entry.address) if r is not None]
        for host in snap.hosts.values():
            rrsets += host
        if snap.rendezvous is not None:
            rrsets.append(snap.rendezvous)
        rrsets.append(snap.soa)
        yield from pack_messages(query, rrsets, max_size)


def _host_rrsets(owner: dns.name.Name, addresses: Iterable[str]) -> tuple[dns.rrset.RRset, ...]:
    """A and AAAA rrsets at `owner` for mesh `addresses` (IP literals; ValueError else)."""
    by_type: dict[int, list[dns.rdata.Rdata]] = {}
    for text in addresses:
        ip = published_ip(text, "mesh_address")
        if ip.version == 4:
            by_type.setdefault(_T.A, []).append(dns.rdtypes.IN.A.A(IN, _T.A, str(ip)))
        else:
            by_type.setdefault(_T.AAAA, []).append(dns.rdtypes.IN.AAAA.AAAA(IN, _T.AAAA, str(ip)))
    return tuple(rrset(owner, rdtype, *rdatas) for rdtype, rdatas in by_type.items())
