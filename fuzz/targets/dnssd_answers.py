"""DNS-SD answers as a member reads them (discovery.dnssd.parse: parse_ptr_answers,
parse_member_answers; discovery.dnssd.bulk.parse_bulk_strings; the relay offer,
discovery.dnssd.relays.relay_endpoint): a response message is
parsed by dnspython (what it refuses never reaches our code: dropped), then every rrset it
carries is read the way the client reads answers, transfers and the bulk directory. Hostile
records are skipped, never fatal: nothing may escape."""

from __future__ import annotations

import dns.message
import dns.rdataclass
import dns.rdatatype

from discovery.dnssd.bulk import parse_bulk_strings
from discovery.dnssd.names import service_name
from discovery.dnssd.parse import parse_member_answers, parse_ptr_answers
from discovery.dnssd.relays import relay_endpoint
from discovery.dnssd.wire import TCP_LIMIT, encode_response
from fuzz.targets.dns_server import DIRECTORY, TOKENS as _QUERY_TOKENS, ZONE, queries

ALLOWED: tuple[type[BaseException], ...] = ()
TOKENS = _QUERY_TOKENS + (b"pub=", b"ep=", b"txtvers=1", b"meshwg-directory=1", b"name=",
                          b"allowed=", b"relay=")
DEPTH = len(service_name(ZONE)) + 1


def one_input(data: bytes) -> None:
    try:
        message = dns.message.from_wire(data)
    except Exception:  # noqa: BLE001 -- dnspython's refusal; the client gets no answer
        return
    rrsets = list(message.answer) + list(message.additional) + list(message.authority)
    by_label: dict[bytes, list] = {}      # as the client groups a transfer: linear, not n*n
    for rrset in rrsets:
        if len(rrset.name) == DEPTH:
            by_label.setdefault(rrset.name.labels[0].lower(), []).append(rrset)
    names = parse_ptr_answers(ZONE, rrsets) + [r.name for r in rrsets if len(r.name) == DEPTH]
    records = [parse_member_answers(name, by_label.get(name.labels[0].lower(), []))
               for name in dict.fromkeys(names)]
    strings = [s for r in rrsets if r.rdtype == dns.rdatatype.TXT and r.rdclass == dns.rdataclass.IN
               for rdata in r for s in rdata.strings]
    for record in records + parse_bulk_strings(strings):
        if record is not None:
            relay_endpoint(record)          # what the member makes of a relay= offer


def seeds() -> dict[str, bytes]:
    out = {}
    for label, query in queries().items():
        if query.question[0].rdtype == dns.rdatatype.AXFR:
            for i, wire in enumerate(DIRECTORY.transfer(query)):
                out[f"{label}-{i}"] = wire
        else:
            out[label] = encode_response(DIRECTORY.answer(query), TCP_LIMIT)
    return out
