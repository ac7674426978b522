"""Unicast DNS-SD records for the meshwg rendezvous, in wgsd's layout (I/O-free).

The rendezvous serves, under ``ZONE``:

* ``_wireguard._udp.ZONE PTR B32._wireguard._udp.ZONE`` -- one per member that has
  an endpoint (B32 = lowercase RFC 4648 base32 of the 32-byte public key, 56 chars).
* ``B32._wireguard._udp.ZONE SRV 0 0 PORT B32._wireguard._udp.ZONE`` -- the endpoint
  port; the A or AAAA record (endpoint address) and the TXT record ride along in the
  additional section.
* ``B32._wireguard._udp.ZONE TXT "txtvers=1" "pub=BASE64" "allowed=CIDR,CIDR"`` plus
  meshwg keys wgsd lacks: ``name=``, ``addr=`` (mesh address), ``cand=IP:port,[v6]:port``
  (host candidates) and any ``extra`` key=value. List-valued keys (``allowed``, ``cand``)
  longer than one 255-byte TXT string are split over repeated keys; our parser joins them.
* ``B32._wireguard._udp.ZONE A|AAAA`` -- the endpoint address.
* ``_services._dns-sd._udp.ZONE PTR _wireguard._udp.ZONE`` (RFC 6763 section 9).
* ``ZONE SOA`` (minimum 60); NXDOMAIN and NODATA answers carry it in authority.

Beside the wgsd layout, a bulk path of ours for big directories: ``_directory._wireguard.
_udp.ZONE`` is a small zone of its own, transferred (AXFR, TCP only) as SOA, TXT..., SOA.
Each TXT record carries many members, one after the other: the first string is
``meshwg-directory=1``, then for each member its TXT strings without ``txtvers``, with
``ep=IP:port`` (its endpoint) after ``pub=``; a ``pub=`` string starts the next member.
One member's strings never straddle two records. Only members with an endpoint (those
in the PTR set) are listed, in PTR order. Parsing a few large TXT records costs a
fraction of parsing four records per member, so 10,000 members resolve in well under a
second; clients that do not know it use the wgsd records (or the zone's AXFR).

Every TTL is 0: endpoints change. Policies: names outside the zone -> REFUSED;
class other than IN -> REFUSED; opcode other than QUERY -> NOTIMP; not exactly one
question -> FORMERR; ANY -> the RFC 8482 minimal answer (one synthesized
``HINFO "RFC8482" ""`` at names that exist, NXDOMAIN elsewhere); AXFR is answered
only over TCP (:meth:`Directory.transfer`), over UDP it is REFUSED; IXFR -> NOTIMP.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
from dataclasses import dataclass, field, replace
from typing import Iterable, Iterator

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.opcode
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.rdtypes.ANY.HINFO
import dns.rdtypes.ANY.PTR
import dns.rdtypes.ANY.SOA
import dns.rdtypes.ANY.TXT
import dns.rdtypes.IN.A
import dns.rdtypes.IN.AAAA
import dns.rdtypes.IN.SRV
import dns.renderer
import dns.rrset

TTL = 0
SOA_MINIMUM = 60
OUR_UDP_PAYLOAD = 1232  # EDNS payload we advertise and cap UDP answers at
PLAIN_UDP_LIMIT = 512
TCP_LIMIT = 65535
KEY_LEN = 32
LABEL_LEN = 56
TXT_STRING_MAX = 255
# A compressed PTR record to a B32 instance is 71 bytes, so about 920 fit in 64 KiB;
# bigger PTR sets get TC without rendering (clients fall back to AXFR over TCP).
MAX_PTR_ANSWER = 900
SERVICE_LABELS = ("_wireguard", "_udp")
BULK_LABEL = "_directory"
BULK_VERSION = b"meshwg-directory=1"
BULK_RDATA_MAX = 60_000  # TXT bytes per bulk record: one record, and the SOA, fit 64 KiB
META_LABELS = ("_services", "_dns-sd", "_udp")
RESERVED_TXT_KEYS = frozenset({"txtvers", "pub", "allowed", "name", "addr", "cand", "ep"})
LIST_TXT_KEYS = frozenset({"allowed", "cand"})
_IN = dns.rdataclass.IN
_T = dns.rdatatype


@dataclass
class MemberRecord:
    """What the directory knows about one member (the rendezvous's view)."""

    public_key: bytes
    endpoint: tuple[str, int] | None
    allowed_ips: list[str]
    name: str = ""
    mesh_address: str = ""
    host_candidates: list[tuple[str, int]] = field(default_factory=list)
    extra: dict[str, str] = field(default_factory=dict)


# ---------------------------------------------------------------- names and labels


def instance_label(public_key: bytes) -> str:
    """RFC 4648 base32 of a 32-byte key, '=' padding kept, lowercase (56 chars)."""
    if not isinstance(public_key, (bytes, bytearray)) or len(public_key) != KEY_LEN:
        raise ValueError(f"public key must be {KEY_LEN} bytes, got {_describe(public_key)}")
    return base64.b32encode(bytes(public_key)).decode("ascii").lower()


def public_key_from_label(label: str | bytes) -> bytes:
    """Inverse of :func:`instance_label`; case-insensitive. Raises ValueError."""
    if isinstance(label, bytes):
        try:
            label = label.decode("ascii")
        except UnicodeDecodeError:
            raise ValueError("instance label is not ASCII") from None
    if len(label) != LABEL_LEN:
        raise ValueError(f"instance label must be {LABEL_LEN} chars, got {len(label)}")
    try:
        key = base64.b32decode(label.upper())
    except (binascii.Error, ValueError):
        raise ValueError(f"instance label {label!r} is not base32") from None
    if len(key) != KEY_LEN:
        raise ValueError(f"instance label {label!r} does not decode to {KEY_LEN} bytes")
    return key


def zone_name(zone: str | dns.name.Name) -> dns.name.Name:
    """The zone as an absolute dnspython name."""
    if isinstance(zone, dns.name.Name):
        return zone if zone.is_absolute() else zone.concatenate(dns.name.root)
    return dns.name.from_text(zone)


def service_name(zone: str | dns.name.Name) -> dns.name.Name:
    """``_wireguard._udp.ZONE``."""
    return dns.name.Name(SERVICE_LABELS).concatenate(zone_name(zone))


def instance_name(zone: str | dns.name.Name, public_key: bytes) -> dns.name.Name:
    """``B32._wireguard._udp.ZONE`` for a member key."""
    return dns.name.Name((instance_label(public_key),)).concatenate(service_name(zone))


def bulk_name(zone: str | dns.name.Name) -> dns.name.Name:
    """``_directory._wireguard._udp.ZONE``: the bulk directory (a zone of its own)."""
    return dns.name.Name((BULK_LABEL,)).concatenate(service_name(zone))


def _describe(value: object) -> str:
    if isinstance(value, (bytes, bytearray)):
        return f"{len(value)} bytes"
    return type(value).__name__


# ---------------------------------------------------------------- addresses


def _plain_ip(host: str, what: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    """Parse an IP literal; IPv4-mapped IPv6 becomes IPv4; scoped IPv6 is rejected."""
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(f"{what}: {host!r} is not an IP address") from None
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.scope_id:
            raise ValueError(f"{what}: scoped address {host!r} cannot be published")
        if ip.ipv4_mapped is not None:
            return ip.ipv4_mapped
    return ip


def _check_port(port: object, what: str) -> int:
    if not isinstance(port, int) or isinstance(port, bool) or not 1 <= port <= 65535:
        raise ValueError(f"{what}: port {port!r} is not in 1..65535")
    return port


def format_hostport(host: str, port: int) -> str:
    """``1.2.3.4:51820`` or ``[2001:db8::1]:51820``."""
    ip = _plain_ip(host, "candidate")
    return f"[{ip}]:{port}" if ip.version == 6 else f"{ip}:{port}"


def parse_hostport(text: str) -> tuple[str, int]:
    """Inverse of :func:`format_hostport`. Raises ValueError."""
    text = text.strip()
    if text.startswith("["):
        host, sep, port = text[1:].partition("]:")
        if not sep:
            raise ValueError(f"candidate {text!r}: expected [IPv6]:port")
        ip = _plain_ip(host, "candidate")
        if ip.version != 6:
            raise ValueError(f"candidate {text!r}: brackets hold an IPv6 address")
    else:
        host, sep, port = text.rpartition(":")
        if not sep:
            raise ValueError(f"candidate {text!r}: expected IP:port")
        ip = _plain_ip(host, "candidate")
        if ip.version != 4:
            raise ValueError(f"candidate {text!r}: IPv6 needs [brackets]")
    if not port.isdigit() or len(port) > 5:
        raise ValueError(f"candidate {text!r}: bad port")
    return str(ip), _check_port(int(port), f"candidate {text!r}")


# ---------------------------------------------------------------- TXT encoding


def _pack_list(key: str, items: list[str]) -> list[bytes]:
    """``key=a,b,c`` strings of at most 255 bytes; the key repeats when it overflows."""
    prefix = f"{key}=".encode()
    if not items:
        return [prefix]
    out: list[bytes] = []
    current = b""
    for item in items:
        piece = item.encode()
        if len(prefix) + len(piece) > TXT_STRING_MAX:
            raise ValueError(f"TXT {key}: item {item!r} is too long")
        candidate = piece if not current else current + b"," + piece
        if len(prefix) + len(candidate) > TXT_STRING_MAX:
            out.append(prefix + current)
            candidate = piece
        current = candidate
    out.append(prefix + current)
    return out


def _kv(key: str, value: str) -> bytes:
    data = f"{key}={value}".encode("utf-8")
    if len(data) > TXT_STRING_MAX:
        raise ValueError(f"TXT {key}: '{key}=value' is {len(data)} bytes, limit {TXT_STRING_MAX}")
    return data


def txt_strings(record: MemberRecord) -> list[bytes]:
    """The TXT character-strings for one member, wgsd keys first."""
    strings = [b"txtvers=1", _kv("pub", base64.b64encode(record.public_key).decode())]
    strings += _pack_list("allowed", list(record.allowed_ips))
    if record.name:
        strings.append(_kv("name", record.name))
    if record.mesh_address:
        strings.append(_kv("addr", record.mesh_address))
    if record.host_candidates:
        strings += _pack_list("cand", [format_hostport(h, p) for h, p in record.host_candidates])
    for key in sorted(record.extra):
        if not key or "=" in key or not key.isascii() or not key.isprintable():
            raise ValueError(f"TXT extra key {key!r} must be printable ASCII without '='")
        if key.lower() in RESERVED_TXT_KEYS:
            raise ValueError(f"TXT extra key {key!r} is reserved")
        strings.append(_kv(key, record.extra[key]))
    return strings


def parse_txt(strings: Iterable[bytes]) -> dict[str, str]:
    """Key=value pairs (keys lowercased). The first occurrence of a key wins (RFC 6763
    6.4), except list keys (``allowed``, ``cand``) whose repeats are joined with ','.
    Strings that are not UTF-8 are skipped; a bare key maps to ''."""
    out: dict[str, str] = {}
    for raw in strings:
        try:
            text = bytes(raw).decode("utf-8")
        except UnicodeDecodeError:
            continue
        key, _, value = text.partition("=")
        key = key.lower()
        if not key:
            continue
        if key in out:
            if key in LIST_TXT_KEYS and value:
                out[key] = f"{out[key]},{value}" if out[key] else value
            continue
        out[key] = value
    return out


# ---------------------------------------------------------------- directory


@dataclass(frozen=True)
class _Entry:
    key: tuple  # the record's fields, frozen: an unchanged member reuses its entry
    record: MemberRecord
    txt: dns.rrset.RRset
    srv: dns.rrset.RRset | None
    address: dns.rrset.RRset | None  # A or AAAA
    ptr: dns.rdata.Rdata | None  # its PTR target, when it has an endpoint
    bulk: tuple[bytes, ...] = ()  # its strings in the bulk directory, when it has an endpoint


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


@dataclass(frozen=True)
class _Snapshot:
    serial: int
    entries: dict[dns.name.Name, _Entry]
    ptr: dns.rrset.RRset | object | None  # _TOO_MANY when above MAX_PTR_ANSWER
    soa: dns.rrset.RRset
    bulk_soa: dns.rrset.RRset


_TOO_MANY = object()


class _Truncate(Exception):
    """The answer cannot fit any message: reply with TC and no records."""


def _rrset(name: dns.name.Name, rdtype: int, *rdatas: dns.rdata.Rdata) -> dns.rrset.RRset:
    rrset = dns.rrset.RRset(name, _IN, rdtype)
    for rdata in rdatas:
        rrset.add(rdata, TTL)
    return rrset


class Directory:
    """The rendezvous's member directory, answering DNS queries in wgsd's layout."""

    def __init__(self, zone: str) -> None:
        self.zone = zone_name(zone)
        self.service = service_name(self.zone)
        self.meta_service = dns.name.Name(META_LABELS).concatenate(self.zone)
        self.bulk = bulk_name(self.zone)
        self._serial = 0
        self._snapshot = _Snapshot(0, {}, None, self._soa(0), self._soa(0, self.bulk))
        self._snapshot = self._build([])

    # -- building

    def set_members(self, records: list[MemberRecord]) -> None:
        """Replace the whole member set at once. Raises ValueError (naming the member)
        for an invalid record; the previous set then stays in place."""
        self._snapshot = self._build(list(records))

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
            ptr = _rrset(self.service, _T.PTR, *targets)
        self._serial = (self._serial + 1) % (1 << 32)
        return _Snapshot(self._serial, entries, ptr, self._soa(self._serial),
                         self._soa(self._serial, self.bulk))

    def _soa(self, serial: int, owner: dns.name.Name | None = None) -> dns.rrset.RRset:
        return _rrset(
            owner or self.zone,
            _T.SOA,
            dns.rdtypes.ANY.SOA.SOA(
                _IN, _T.SOA,
                dns.name.Name(("ns",)).concatenate(self.zone),
                dns.name.Name(("hostmaster",)).concatenate(self.zone),
                serial, 60, 60, 600, SOA_MINIMUM,
            ),
        )

    def _entry(self, owner: dns.name.Name, key: tuple, record: MemberRecord) -> _Entry:
        for cidr in record.allowed_ips:
            try:
                ipaddress.ip_network(cidr, strict=False)
            except ValueError:
                raise ValueError(f"allowed_ips: {cidr!r} is not a CIDR") from None
        for host, port in record.host_candidates:
            _plain_ip(host, "host_candidates")
            _check_port(port, f"host_candidates {host!r}")
        strings = txt_strings(record)
        txt = _rrset(owner, _T.TXT, dns.rdtypes.ANY.TXT.TXT(_IN, _T.TXT, strings))
        srv = address = ptr = None
        bulk: tuple[bytes, ...] = ()
        if record.endpoint is not None:
            host, port = record.endpoint
            ip = _plain_ip(host, "endpoint")
            _check_port(port, f"endpoint {host!r}")
            srv = _rrset(owner, _T.SRV, dns.rdtypes.IN.SRV.SRV(_IN, _T.SRV, 0, 0, port, owner))
            if ip.version == 4:
                address = _rrset(owner, _T.A, dns.rdtypes.IN.A.A(_IN, _T.A, str(ip)))
            else:
                address = _rrset(owner, _T.AAAA, dns.rdtypes.IN.AAAA.AAAA(_IN, _T.AAAA, str(ip)))
            ptr = dns.rdtypes.ANY.PTR.PTR(_IN, _T.PTR, owner)
            bulk = (strings[1], _kv("ep", format_hostport(str(ip), port)), *strings[2:])
        return _Entry(key, record, txt, srv, address, ptr, bulk)

    # -- answering

    def answer(self, query: dns.message.Message) -> dns.message.Message:
        """The authoritative response to one parsed query. Never raises."""
        try:
            return self._answer(query, self._snapshot)
        except Exception:  # defensive: hostile input must never crash the server
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
        if question.rdclass != _IN or not qname.is_subdomain(self.zone):
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
            hinfo = dns.rdtypes.ANY.HINFO.HINFO(_IN, _T.HINFO, b"RFC8482", b"")
            return True, [_rrset(qname, _T.HINFO, hinfo)], []
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
        if qname == self.meta_service:
            if qtype == _T.PTR:
                target = dns.rdtypes.ANY.PTR.PTR(_IN, _T.PTR, self.service)
                return True, [_rrset(self.meta_service, _T.PTR, target)], []
            return True, [], []
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
        """AXFR of the zone as wire messages, produced as they fill (for TCP only):
        SOA, records..., SOA. A query that is not an AXFR of the apex gets one error
        message (REFUSED for another name, as :meth:`answer` would say)."""
        snap = self._snapshot
        if _is_axfr_of(query, self.bulk):
            yield from _pack_messages(query, [snap.bulk_soa, *self._bulk_records(snap), snap.bulk_soa],
                                      max_size)
            return
        if not _is_axfr_of(query, self.zone):
            response = self.answer(query)
            if response.rcode() == dns.rcode.NOERROR:
                response = error_response(query, dns.rcode.REFUSED)
            yield encode_response(response, max_size)
            return
        rrsets: list[dns.rrset.RRset] = [snap.soa]
        rrsets += self._lookup(self.meta_service, _T.PTR, snap)[1]
        for entry in snap.entries.values():
            if entry.ptr is not None:
                rrsets.append(_rrset(self.service, _T.PTR, entry.ptr))
            rrsets += [r for r in (entry.srv, entry.txt, entry.address) if r is not None]
        rrsets.append(snap.soa)
        yield from _pack_messages(query, rrsets, max_size)


    def _bulk_records(self, snap: _Snapshot) -> Iterator[dns.rrset.RRset]:
        """The bulk directory's TXT records: members packed up to BULK_RDATA_MAX bytes."""
        strings: list[bytes] = [BULK_VERSION]
        size = 1 + len(BULK_VERSION)
        for entry in snap.entries.values():
            if not entry.bulk:
                continue
            need = sum(1 + len(s) for s in entry.bulk)
            if size + need > BULK_RDATA_MAX and len(strings) > 1:
                yield _rrset(self.bulk, _T.TXT, dns.rdtypes.ANY.TXT.TXT(_IN, _T.TXT, strings))
                strings, size = [BULK_VERSION], 1 + len(BULK_VERSION)
            strings += entry.bulk
            size += need
        if len(strings) > 1:
            yield _rrset(self.bulk, _T.TXT, dns.rdtypes.ANY.TXT.TXT(_IN, _T.TXT, strings))


def _is_axfr_of(query: dns.message.Message, zone: dns.name.Name) -> bool:
    return (
        not query.flags & dns.flags.QR
        and query.opcode() == dns.opcode.QUERY
        and len(query.question) == 1
        and query.question[0].rdtype == _T.AXFR
        and query.question[0].rdclass == _IN
        and query.question[0].name == zone
        and query.edns <= 0
    )


def _pack_messages(
    query: dns.message.Message, rrsets: list[dns.rrset.RRset], max_size: int
) -> Iterator[bytes]:
    """Render rrsets into messages of at most ``max_size`` bytes, as they fill; an
    RRset too large for one message (the PTR set of a big zone) goes record by record."""
    question = query.question[0]

    def fresh(first: bool) -> dns.renderer.Renderer:
        renderer = dns.renderer.Renderer(query.id, dns.flags.QR | dns.flags.AA, max_size)
        if first:
            renderer.add_question(question.name, question.rdtype, question.rdclass)
        return renderer

    renderer = fresh(True)
    for rrset in rrsets:
        pieces = [rrset] if len(rrset) <= 1 else [_rrset(rrset.name, rrset.rdtype, r) for r in rrset]
        for piece in pieces:
            try:
                renderer.add_rrset(dns.renderer.ANSWER, piece)
            except dns.exception.TooBig:
                if renderer.counts[dns.renderer.ANSWER] == 0:
                    raise ValueError(f"record {piece.name} does not fit in a DNS message") from None
                renderer.write_header()
                yield renderer.get_wire()
                renderer = fresh(False)
                renderer.add_rrset(dns.renderer.ANSWER, piece)
    renderer.write_header()
    yield renderer.get_wire()


# ---------------------------------------------------------------- encoding helpers


def error_response(query: dns.message.Message, rcode: int) -> dns.message.Message:
    """A minimal response carrying ``rcode`` (question copied when sane)."""
    response = dns.message.Message(id=query.id)
    response.flags = dns.flags.QR | (query.flags & dns.flags.RD)
    try:
        response.set_opcode(query.opcode())
    except Exception:
        pass
    if len(query.question) == 1:
        response.question = list(query.question)
    if query.edns >= 0:
        response.use_edns(0, 0, OUR_UDP_PAYLOAD)
    response.set_rcode(rcode)
    return response


def udp_size_limit(query: dns.message.Message) -> int:
    """Largest UDP response for this query: 512 without EDNS, else its payload capped
    at what we advertise."""
    if query.edns < 0:
        return PLAIN_UDP_LIMIT
    return max(PLAIN_UDP_LIMIT, min(query.payload, OUR_UDP_PAYLOAD))


def encode_response(response: dns.message.Message, max_size: int) -> bytes:
    """Wire form; if too big, drop what does not fit (TC set when an answer or
    authority RRset had to go, RFC 2181 section 9)."""
    return response.to_wire(max_size=max_size, prefer_truncation=True)


# ---------------------------------------------------------------- client-side parsing


def parse_ptr_answers(
    zone: str | dns.name.Name, rrsets: Iterable[dns.rrset.RRset]
) -> list[dns.name.Name]:
    """Instance names from PTR rrsets at ``_wireguard._udp.ZONE``: only targets of the
    form ``B32._wireguard._udp.ZONE`` with a valid key label; duplicates dropped."""
    service = service_name(zone)
    seen: set[bytes] = set()  # lowercased labels: hashing dnspython Names is slow
    out: list[dns.name.Name] = []
    for rrset in rrsets:
        if rrset.rdtype != _T.PTR or rrset.rdclass != _IN or rrset.name != service:
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
    """Turn SRV/TXT/A/AAAA rrsets (from any sections of any responses) about one
    instance back into a MemberRecord. None when the instance label is not a key,
    when there is neither SRV nor TXT, or when TXT ``pub=`` contradicts the label."""
    try:
        key = public_key_from_label(instance.labels[0])
    except (ValueError, IndexError):
        return None
    rrsets = [r for r in rrsets if r.rdclass == _IN]

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
    if "pub" in fields and _decode_pub(fields["pub"]) != key:
        return None
    return _member_from_fields(key, endpoint, fields)


def _decode_pub(text: str) -> bytes | None:
    try:
        key = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return None
    return key if len(key) == KEY_LEN else None


def _member_from_fields(key: bytes, endpoint: tuple[str, int] | None,
                        fields: dict[str, str]) -> MemberRecord:
    """A MemberRecord from parsed TXT fields; invalid CIDRs and candidates are skipped."""
    allowed = [c.strip() for c in fields.get("allowed", "").split(",") if c.strip()]
    allowed = [c for c in allowed if _is_cidr(c)]
    candidates: list[tuple[str, int]] = []
    for text in fields.get("cand", "").split(","):
        if text.strip():
            try:
                candidates.append(parse_hostport(text))
            except ValueError:
                continue
    extra = {k: v for k, v in fields.items() if k not in RESERVED_TXT_KEYS}
    return MemberRecord(
        public_key=key,
        endpoint=endpoint,
        allowed_ips=allowed,
        name=fields.get("name", ""),
        mesh_address=fields.get("addr", ""),
        host_candidates=candidates,
        extra=extra,
    )


def parse_bulk_strings(strings: Iterable[bytes]) -> list[MemberRecord]:
    """Members from the strings of bulk directory TXT records (module docstring), in
    order. A record not starting with ``meshwg-directory=1`` is ignored; so are members
    without a valid ``pub=`` or ``ep=``, and repeats of a key already seen."""
    out: list[MemberRecord] = []
    seen: set[bytes] = set()
    current: list[bytes] = []
    started = False

    def finish() -> None:
        fields = parse_txt(current)
        key = _decode_pub(fields.get("pub", ""))
        if key is None or key in seen:
            return
        try:
            endpoint = parse_hostport(fields.get("ep", ""))
        except ValueError:
            return
        seen.add(key)
        fields.pop("ep", None)
        out.append(_member_from_fields(key, endpoint, fields))

    for raw in strings:
        raw = bytes(raw)
        if raw == BULK_VERSION:                  # a new record starts
            if current:
                finish()
            current, started = [], True
            continue
        if not started:
            continue
        if raw[:4].lower() == b"pub=" and current:
            finish()
            current = []
        current.append(raw)
    if current:
        finish()
    return out


def _is_cidr(text: str) -> bool:
    try:
        ipaddress.ip_network(text, strict=False)
    except ValueError:
        return False
    return True
