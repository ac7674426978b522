"""Several rendezvous writing one directory into a DNS zone (issue 10): which member
records a rendezvous writes, and what it serves. No I/O, no clock (callers pass `now`).

Each rendezvous observes the endpoints of the members whose tunnels it carries (its
engine's view) and writes those members' wgsd-layout records into the zone
(discovery.stores.zone_membership.DirectoryPublisher.write); it serves the union of its
own observations and the records the others wrote, so a member's endpoint reaches members
that read at a rendezvous without a tunnel to it.

Freshness: newest observation wins. A rendezvous stamps each of its observations with the
time its content (endpoint, host candidates, TXT extras) last changed, in milliseconds,
published as TXT ``obs=MS`` (:data:`STAMP_TXT`). It writes a member's record only when its
observation differs from the zone's record (stamp aside) and is newer than it; everybody
serves, per member, the newer of its own observation and the zone's record (its own on a
tie). Two rendezvous that see one member at different endpoints (an endpoint-dependent NAT
mapping) therefore do not flap the record: each writes only when its own view changes, and
a write never answers a newer one. A rendezvous that restarts stamps its views anew and
writes those that differ (its view is current). Stamps compare wall clocks of different
hosts: skew beyond the interval between two endpoint changes can keep an older view (NTP
keeps it far below that).

The membership fields of a served record (allowed IPs, name, mesh address) always come
from the membership as read; only the endpoint, host candidates and extras are taken from
another rendezvous's record. Removed members' records are deleted by the removal itself
(ZoneMembership.remove_member, one update), and a write requires the member's entry to
exist (an RFC 2136 prerequisite), so a write racing a removal cannot bring them back.
"""

from __future__ import annotations

import dataclasses
from typing import Iterable

import dns.name
import dns.rdatatype

from discovery.dnssd.member import MemberRecord
from discovery.dnssd.names import service_name
from discovery.dnssd.parse import parse_member_answers
from discovery.dnssd.update import ZoneContent
from discovery.dnssd.wire import IN

STAMP_TXT = "obs"           # TXT obs=MS: when the writer's observation last changed (Unix ms)
_T = dns.rdatatype


def stamp_of(record: MemberRecord | None) -> int:
    """The record's observation stamp (Unix milliseconds); 0 without a valid one."""
    if record is None:
        return 0
    text = record.extra.get(STAMP_TXT, "")
    if not text.isdigit() or len(text) > 16:
        return 0
    return int(text)


def content_of(record: MemberRecord) -> tuple:
    """What an observation says, stamp aside: equal contents need no write."""
    return (None if record.endpoint is None else tuple(record.endpoint),
            tuple(tuple(c) for c in record.host_candidates),
            tuple(sorted((k, v) for k, v in record.extra.items() if k != STAMP_TXT)))


def record_key(record: MemberRecord) -> tuple:
    """Everything a record publishes, as a comparable value (what a writer keeps of
    what it wrote)."""
    return (bytes(record.public_key), tuple(record.allowed_ips), record.name,
            record.mesh_address) + content_of(record)


class _Read(list):
    """The rdatas of one (name, type) as a transfer read them, with what
    discovery.dnssd.parse reads of an RRset (building real RRsets hashes every rdata:
    most of the time a 10,000-member zone took)."""

    rdclass = IN

    def __init__(self, name: dns.name.Name, rdtype: int, rdatas: list) -> None:
        super().__init__(rdatas)
        self.name, self.rdtype = name, rdtype


def zone_records(content: ZoneContent, zone: str | dns.name.Name) -> dict[bytes, MemberRecord]:
    """The member records under ``_wireguard._udp.ZONE`` in a transfer, by public key.
    Hostile or malformed instances are skipped (discovery.dnssd.parse)."""
    service = tuple(label.lower() for label in service_name(zone).labels)
    depth = len(service) + 1
    # by the instance label (hashing a dns.name.Name costs ~20x hashing its bytes)
    by_instance: dict[bytes, list[_Read]] = {}
    for (name, rdtype), rdatas in content.records.items():
        labels = name.labels
        if len(labels) != depth or rdtype not in (_T.SRV, _T.TXT, _T.A, _T.AAAA) or \
                tuple(label.lower() for label in labels[1:]) != service:
            continue
        by_instance.setdefault(labels[0].lower(), []).append(_Read(name, rdtype, rdatas))
    out: dict[bytes, MemberRecord] = {}
    for rrsets in by_instance.values():
        record = parse_member_answers(rrsets[0].name, rrsets)
        if record is not None:
            out[record.public_key] = record
    return out


class Observations:
    """This rendezvous's stamped views of the members it has a tunnel to (endpoint known).
    :meth:`stamp` keeps a member's stamp while its content stays the same."""

    def __init__(self) -> None:
        self._seen: dict[bytes, tuple[tuple, int]] = {}     # key -> (content, stamp)

    def stamp(self, records: Iterable[MemberRecord], now_ms: int) -> dict[bytes, MemberRecord]:
        """The records with an endpoint, each a copy carrying TXT obs= (the time its
        content last changed, `now_ms` for a new or changed one), by key. Members not
        in `records` (or without an endpoint now) are forgotten."""
        out: dict[bytes, MemberRecord] = {}
        seen: dict[bytes, tuple[tuple, int]] = {}
        for record in records:
            if record.endpoint is None:
                continue
            content = content_of(record)
            previous = self._seen.get(record.public_key)
            stamp = previous[1] if previous is not None and previous[0] == content else now_ms
            seen[record.public_key] = (content, stamp)
            out[record.public_key] = dataclasses.replace(
                record, extra={**record.extra, STAMP_TXT: str(stamp)})
        self._seen = seen
        return out


def to_write(own: dict[bytes, MemberRecord], zone: dict[bytes, MemberRecord]
             ) -> list[MemberRecord]:
    """The own observations the zone should get: those whose content differs from the
    zone's record for the member (or it has none) and whose stamp is newer."""
    out = []
    for key, record in own.items():
        theirs = zone.get(key)
        if theirs is not None and (content_of(theirs) == content_of(record)
                                   or stamp_of(theirs) >= stamp_of(record)):
            continue
        out.append(record)
    return out


def served(records: list[MemberRecord], own: dict[bytes, MemberRecord],
           zone: dict[bytes, MemberRecord]) -> list[MemberRecord]:
    """The directory to serve: `records` (the membership, this rendezvous's own view, in
    order) with each member's endpoint, host candidates and extras taken from the newer of
    its own stamped observation (`own`) and the zone's record (own wins a tie; a zone
    record without an endpoint is ignored)."""
    out = []
    for record in records:
        mine, theirs = own.get(record.public_key), zone.get(record.public_key)
        best = mine
        if theirs is not None and theirs.endpoint is not None and \
                (mine is None or stamp_of(theirs) > stamp_of(mine)):
            best = theirs
        if best is None:
            out.append(record)
            continue
        out.append(dataclasses.replace(record, endpoint=best.endpoint,
                                       host_candidates=list(best.host_candidates),
                                       extra=dict(best.extra)))
    return out
