"""Unicast DNS-SD client: resolve the rendezvous's member directory (wgsd layout).

:func:`resolve_zone` reads the PTR set at ``_wireguard._udp.ZONE`` (UDP, then TCP when
truncated), then asks SRV for every instance, many at once over a single UDP socket
(the SRV answer carries the A/AAAA and TXT records in its additional section; missing
pieces are asked for separately). When even the TCP PTR answer is truncated (more than
about 900 members do not fit one 64 KiB message) the client transfers the bulk directory
(``_directory._wireguard._udp.ZONE``, see discovery.records: a few large TXT records
over one TCP connection, 10,000 members in a fraction of a second); a server without it
(REFUSED, or not a transfer) gets an AXFR of the zone instead.
"""

from __future__ import annotations

import itertools
import random
import selectors
import socket
import time
from dataclasses import dataclass

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

from discovery.dnssd.records import (
    MemberRecord,
    bulk_name,
    instance_name,
    parse_bulk_strings,
    parse_member_answers,
    parse_ptr_answers,
    service_name,
    zone_name,
)

DEFAULT_WINDOW = 256  # queries in flight on the UDP socket
ATTEMPTS = 3  # per query, spread over the timeout
_T = dns.rdatatype


class DiscoveryError(Exception):
    """The directory could not be resolved (timeout, refused, server failure)."""


Server = tuple[str, int]


def _where(server: Server) -> str:
    host, port = server
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _make_query(qname: dns.name.Name, rdtype: int) -> dns.message.Message:
    query = dns.message.make_query(qname, rdtype, use_edns=0, payload=1232)
    query.flags &= ~dns.flags.RD
    return query


def _check_rcode(server: Server, query: dns.message.Message, response: dns.message.Message) -> None:
    """Raise DiscoveryError unless NOERROR or NXDOMAIN."""
    rcode = response.rcode()
    if rcode in (dns.rcode.NOERROR, dns.rcode.NXDOMAIN):
        return
    question = query.question[0]
    what = f"{question.name} {_T.to_text(question.rdtype)}"
    if rcode == dns.rcode.REFUSED:
        raise DiscoveryError(f"DNS server {_where(server)} refused {what} (is the zone right?)")
    raise DiscoveryError(f"DNS server {_where(server)} answered {dns.rcode.to_text(rcode)} to {what}")


def _sockaddr(server: Server) -> tuple[int, tuple]:
    host, port = server
    try:
        info = socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM)
    except socket.gaierror as exc:
        raise DiscoveryError(f"DNS server {_where(server)}: cannot resolve host: {exc}") from None
    family, _, _, _, sockaddr = info[0]
    return family, sockaddr


# ---------------------------------------------------------------- transports


def _tcp_exchange(server: Server, queries: list[dns.message.Message], timeout: float) -> list[dns.message.Message]:
    """Send each query over one TCP connection, in turn; the responses in order."""
    family, sockaddr = _sockaddr(server)
    out: list[dns.message.Message] = []
    try:
        with socket.socket(family, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout)
            sock.connect(sockaddr)
            for query in queries:
                expiration = time.time() + timeout
                dns.query.send_tcp(sock, query, expiration)
                while True:
                    response, _ = dns.query.receive_tcp(sock, expiration)
                    if query.is_response(response):
                        break
                _check_rcode(server, query, response)
                out.append(response)
    except (dns.exception.Timeout, socket.timeout):
        raise DiscoveryError(f"DNS server {_where(server)}: no TCP answer within {timeout} s") from None
    except (ConnectionError, EOFError) as exc:
        raise DiscoveryError(f"DNS server {_where(server)}: TCP connection failed: {exc}") from None
    except dns.exception.DNSException as exc:
        raise DiscoveryError(f"DNS server {_where(server)}: bad TCP answer: {exc}") from None
    except OSError as exc:
        raise DiscoveryError(f"DNS server {_where(server)}: TCP error: {exc}") from None
    return out


@dataclass
class _Flight:
    index: int
    wire: bytes
    deadline: float
    attempts: int


def _udp_exchange(
    server: Server,
    queries: list[dns.message.Message],
    timeout: float,
    window: int = DEFAULT_WINDOW,
) -> list[dns.message.Message]:
    """Send many queries over one UDP socket with up to ``window`` in flight, matching
    answers by id and question; each query gets ``ATTEMPTS`` tries within ``timeout``.
    Truncated answers are asked again over TCP. Responses in query order."""
    if not queries:
        return []
    family, sockaddr = _sockaddr(server)
    per_try = timeout / ATTEMPTS
    results: list[dns.message.Message | None] = [None] * len(queries)
    truncated: list[int] = []
    ids = itertools.count(random.randrange(1 << 16))
    window = max(1, min(window, 4096))
    pending = iter(range(len(queries)))
    inflight: dict[int, _Flight] = {}
    exhausted = False
    with socket.socket(family, socket.SOCK_DGRAM) as sock, selectors.DefaultSelector() as sel:
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 21)
        except OSError:
            pass
        try:
            sock.connect(sockaddr)  # the kernel drops datagrams from anyone else
        except OSError as exc:
            raise DiscoveryError(f"DNS server {_where(server)}: {exc}") from None
        sock.setblocking(False)
        sel.register(sock, selectors.EVENT_READ)
        while True:
            now = time.monotonic()
            while not exhausted and len(inflight) < window:
                index = next(pending, None)
                if index is None:
                    exhausted = True
                    break
                qid = next(ids) & 0xFFFF
                while qid in inflight:
                    qid = next(ids) & 0xFFFF
                queries[index].id = qid
                flight = _Flight(index, queries[index].to_wire(), now + per_try, 1)
                inflight[qid] = flight
                _send(sock, flight.wire)
            if not inflight:
                break
            wait = max(0.0, min(f.deadline for f in inflight.values()) - now)
            if sel.select(wait):
                while True:
                    try:
                        data = sock.recv(65535)
                    except (BlockingIOError, InterruptedError):
                        break
                    except OSError:
                        break  # ICMP port unreachable etc.: the retry timer handles it
                    if len(data) < 2:
                        continue
                    flight = inflight.get(int.from_bytes(data[:2], "big"))
                    if flight is None:
                        continue
                    query = queries[flight.index]
                    try:
                        response = dns.message.from_wire(data)
                    except Exception:
                        continue
                    if not query.is_response(response):
                        continue
                    del inflight[query.id]
                    if response.flags & dns.flags.TC:
                        truncated.append(flight.index)
                    else:
                        _check_rcode(server, query, response)
                        results[flight.index] = response
            now = time.monotonic()
            for qid, flight in list(inflight.items()):
                if flight.deadline > now:
                    continue
                if flight.attempts >= ATTEMPTS:
                    question = queries[flight.index].question[0]
                    raise DiscoveryError(
                        f"DNS server {_where(server)}: no answer for {question.name} "
                        f"{_T.to_text(question.rdtype)} within {timeout} s"
                    )
                flight.attempts += 1
                flight.deadline = now + per_try
                _send(sock, flight.wire)
    if truncated:
        for index, response in zip(truncated, _tcp_exchange(server, [queries[i] for i in truncated], timeout)):
            results[index] = response
    return [r for r in results if r is not None]


def _send(sock: socket.socket, wire: bytes) -> None:
    try:
        sock.send(wire)
    except (BlockingIOError, InterruptedError):
        pass  # socket buffer full: the retry timer resends
    except OSError:
        pass  # e.g. ECONNREFUSED from an earlier ICMP: retry timer, then timeout


# ---------------------------------------------------------------- resolution


def _answer_rrsets(response: dns.message.Message) -> list[dns.rrset.RRset]:
    return list(response.answer) + list(response.additional)


def _list_instances(server: Server, zone: dns.name.Name, timeout: float) -> list[dns.name.Name] | None:
    """Instance names from the PTR set, or None when it does not fit even over TCP."""
    query = _make_query(service_name(zone), _T.PTR)
    response = _udp_exchange(server, [query], timeout)[0]
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
            follow.append((name, _make_query(name, _T.TXT)))
        for rdata in srv:
            if (rdata.target, _T.A) not in have and (rdata.target, _T.AAAA) not in have:
                follow.append((name, _make_query(rdata.target, _T.A)))
                follow.append((name, _make_query(rdata.target, _T.AAAA)))
            break
    if follow:
        responses = _udp_exchange(server, [q for _, q in follow], timeout, window)
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
                    f"DNS server {_where(server)} answered {dns.rcode.to_text(message.rcode())} to AXFR {zone}"
                )
            rrsets += message.answer
    except dns.exception.Timeout:
        raise DiscoveryError(f"DNS server {_where(server)}: zone transfer timed out after {timeout} s") from None
    except dns.exception.DNSException as exc:
        raise DiscoveryError(f"DNS server {_where(server)}: zone transfer failed: {exc}") from None
    except OSError as exc:
        raise DiscoveryError(f"DNS server {_where(server)}: zone transfer failed: {exc}") from None
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
        raise DiscoveryError(f"DNS server {_where(server)}: bulk transfer timed out after {timeout} s") from None
    except dns.exception.DNSException as exc:
        raise DiscoveryError(f"DNS server {_where(server)}: bulk transfer failed: {exc}") from None
    except OSError as exc:
        raise DiscoveryError(f"DNS server {_where(server)}: bulk transfer failed: {exc}") from None
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
    responses = _udp_exchange(server, [_make_query(n, _T.SRV) for n in instances], timeout, window)
    rrsets = {name: _answer_rrsets(r) for name, r in zip(instances, responses)}
    return _complete(server, origin, instances, rrsets, timeout, window)


def resolve_member(
    server: Server, zone: str, public_key: bytes, timeout: float = 2.0
) -> MemberRecord | None:
    """One member by key, or None if the directory does not know it. A member known
    without an endpoint comes back with ``endpoint=None`` (from its TXT record)."""
    origin = zone_name(zone)
    name = instance_name(origin, public_key)
    srv_response = _udp_exchange(server, [_make_query(name, _T.SRV)], timeout)[0]
    if srv_response.rcode() == dns.rcode.NXDOMAIN:
        return None
    rrsets = {name: _answer_rrsets(srv_response)}
    if not any(r.rdtype == _T.SRV for r in srv_response.answer):
        txt_response = _udp_exchange(server, [_make_query(name, _T.TXT)], timeout)[0]
        return parse_member_answers(name, _answer_rrsets(txt_response))
    records = _complete(server, origin, [name], rrsets, timeout, 1)
    return records[0] if records else None
