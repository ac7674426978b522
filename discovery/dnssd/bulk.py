"""The bulk directory, meshwg's fast path for big meshes (beside wgsd's layout). No I/O.

``_directory._wireguard._udp.ZONE`` is a small zone of its own, transferred (AXFR, TCP
only) as SOA, TXT..., SOA. Each TXT record carries many members, one after the other: the
first string is ``meshwg-directory=1``, then for each member its TXT strings
(discovery.dnssd.txt) without ``txtvers``, with ``ep=IP:port`` (its endpoint) after
``pub=``; a ``pub=`` string starts the next member. One member's strings never straddle
two records. Only members with an endpoint (those in the PTR set) are listed, in PTR
order. Parsing a few large TXT records costs a fraction of parsing four records per
member, so 10,000 members resolve in well under a second; clients that do not know it
use the wgsd records (or the zone's AXFR).
"""

from __future__ import annotations

from typing import Iterable, Iterator

import dns.name
import dns.rdatatype
import dns.rdtypes.ANY.TXT
import dns.rrset

from discovery.dnssd.member import MemberRecord, format_published, parse_published
from discovery.dnssd.txt import decode_pub, member_from_fields, parse_txt, txt_pair
from discovery.dnssd.wire import IN, rrset

BULK_VERSION = b"meshwg-directory=1"
BULK_RDATA_MAX = 60_000  # TXT bytes per bulk record: one record, and the SOA, fit 64 KiB


def member_strings(txt: list[bytes], ip: str, port: int) -> tuple[bytes, ...]:
    """One member's strings in the bulk directory, from its TXT strings
    (``txtvers=1``, ``pub=``, rest) and its endpoint: ``pub=``, ``ep=``, rest."""
    return (txt[1], txt_pair("ep", format_published(ip, port, "endpoint")), *txt[2:])


def bulk_records(owner: dns.name.Name, members: Iterable[tuple[bytes, ...]]) -> Iterator[dns.rrset.RRset]:
    """The bulk directory's TXT records at `owner`: members' strings packed up to
    BULK_RDATA_MAX bytes per record, each record opened by BULK_VERSION."""
    strings: list[bytes] = [BULK_VERSION]
    size = 1 + len(BULK_VERSION)
    for member in members:
        need = sum(1 + len(s) for s in member)
        if size + need > BULK_RDATA_MAX and len(strings) > 1:
            yield rrset(owner, dns.rdatatype.TXT, dns.rdtypes.ANY.TXT.TXT(IN, dns.rdatatype.TXT, strings))
            strings, size = [BULK_VERSION], 1 + len(BULK_VERSION)
        strings += member
        size += need
    if len(strings) > 1:
        yield rrset(owner, dns.rdatatype.TXT, dns.rdtypes.ANY.TXT.TXT(IN, dns.rdatatype.TXT, strings))


def parse_bulk_strings(strings: Iterable[bytes]) -> list[MemberRecord]:
    """Members from the strings of bulk directory TXT records, in order. A record not
    starting with ``meshwg-directory=1`` is ignored; so are members without a valid
    ``pub=`` or ``ep=``, and repeats of a key already seen."""
    out: list[MemberRecord] = []
    seen: set[bytes] = set()
    current: list[bytes] = []
    started = False

    def finish() -> None:
        fields = parse_txt(current)
        key = decode_pub(fields.get("pub", ""))
        if key is None or key in seen:
            return
        try:
            endpoint = parse_published(fields.get("ep", ""), "ep")
        except ValueError:
            return
        seen.add(key)
        fields.pop("ep", None)
        out.append(member_from_fields(key, endpoint, fields))

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
