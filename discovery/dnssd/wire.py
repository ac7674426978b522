"""DNS messages on the wire for the rendezvous's server: size limits, error responses,
truncation and zone-transfer packing, all through dnspython. No I/O.

Every TTL is 0 (endpoints change). UDP answers fit 512 bytes without EDNS, else the
client's payload capped at OUR_UDP_PAYLOAD; TCP messages fit TCP_LIMIT.
"""

from __future__ import annotations

from typing import Iterator

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.opcode
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.renderer
import dns.rrset

TTL = 0
OUR_UDP_PAYLOAD = 1232  # EDNS payload we advertise and cap UDP answers at
PLAIN_UDP_LIMIT = 512
TCP_LIMIT = 65535
IN = dns.rdataclass.IN


def rrset(name: dns.name.Name, rdtype: int, *rdatas: dns.rdata.Rdata) -> dns.rrset.RRset:
    """An IN RRset at `name` holding `rdatas`, TTL 0."""
    out = dns.rrset.RRset(name, IN, rdtype)
    for rdata in rdatas:
        out.add(rdata, TTL)
    return out


def error_response(query: dns.message.Message, rcode: int) -> dns.message.Message:
    """A minimal response carrying ``rcode`` (question copied when sane)."""
    response = dns.message.Message(id=query.id)
    response.flags = dns.flags.QR | (query.flags & dns.flags.RD)
    try:
        response.set_opcode(query.opcode())
    except Exception:  # noqa: BLE001 -- a hostile header may carry any opcode value
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


def is_axfr_of(query: dns.message.Message, zone: dns.name.Name) -> bool:
    """Whether `query` is a plain (no EDNS version > 0) AXFR query of `zone`."""
    return (
        not query.flags & dns.flags.QR
        and query.opcode() == dns.opcode.QUERY
        and len(query.question) == 1
        and query.question[0].rdtype == dns.rdatatype.AXFR
        and query.question[0].rdclass == IN
        and query.question[0].name == zone
        and query.edns <= 0
    )


def pack_messages(
    query: dns.message.Message, rrsets: list[dns.rrset.RRset], max_size: int
) -> Iterator[bytes]:
    """Render rrsets into answer messages of at most ``max_size`` bytes, as they fill
    (the question only in the first); an RRset too large for one message (the PTR set of
    a big zone) goes record by record. ValueError for a record that fits no message."""
    question = query.question[0]

    def fresh(first: bool) -> dns.renderer.Renderer:
        renderer = dns.renderer.Renderer(query.id, dns.flags.QR | dns.flags.AA, max_size)
        if first:
            renderer.add_question(question.name, question.rdtype, question.rdclass)
        return renderer

    renderer = fresh(True)
    for whole in rrsets:
        pieces = [whole] if len(whole) <= 1 else [rrset(whole.name, whole.rdtype, r) for r in whole]
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
