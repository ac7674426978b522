"""DNS exchanges with the rendezvous's server, for the client (discovery.dnssd.client):
many queries pipelined over one UDP socket, queries in turn over one TCP connection.
Messages are built and parsed by dnspython. Failures raise DiscoveryError naming the
server and the question.
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
import dns.rdatatype

from meshwg.util.endpoint import EndpointError, format_endpoint
from meshwg.util.resolve import resolve
from meshwg.util.errors import MeshwgError

from discovery.dnssd.wire import OUR_UDP_PAYLOAD

DEFAULT_WINDOW = 256  # queries in flight on the UDP socket
ATTEMPTS = 3  # per query, spread over the timeout
_T = dns.rdatatype


class DiscoveryError(MeshwgError):
    """The directory could not be resolved (timeout, refused, server failure)."""


Server = tuple[str, int]


def make_query(qname: dns.name.Name, rdtype: int) -> dns.message.Message:
    """A non-recursive query with EDNS (payload OUR_UDP_PAYLOAD)."""
    query = dns.message.make_query(qname, rdtype, use_edns=0, payload=OUR_UDP_PAYLOAD)
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
        raise DiscoveryError(f"DNS server {format_endpoint(server)} refused {what} (is the zone right?)")
    raise DiscoveryError(f"DNS server {format_endpoint(server)} answered {dns.rcode.to_text(rcode)} to {what}")


def _sockaddr(server: Server) -> tuple[int, tuple]:
    host, port = server
    try:
        return resolve(host, port)[0]
    except EndpointError as exc:
        raise DiscoveryError(f"DNS server {format_endpoint(server)}: {exc}") from None


def tcp_exchange(server: Server, queries: list[dns.message.Message], timeout: float) -> list[dns.message.Message]:
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
        raise DiscoveryError(f"DNS server {format_endpoint(server)}: no TCP answer within {timeout} s") from None
    except (ConnectionError, EOFError) as exc:
        raise DiscoveryError(f"DNS server {format_endpoint(server)}: TCP connection failed: {exc}") from None
    except dns.exception.DNSException as exc:
        raise DiscoveryError(f"DNS server {format_endpoint(server)}: bad TCP answer: {exc}") from None
    except OSError as exc:
        raise DiscoveryError(f"DNS server {format_endpoint(server)}: TCP error: {exc}") from None
    return out


@dataclass
class _Flight:
    index: int
    wire: bytes
    deadline: float
    attempts: int


def udp_exchange(
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
            raise DiscoveryError(f"DNS server {format_endpoint(server)}: {exc}") from None
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
                        f"DNS server {format_endpoint(server)}: no answer for {question.name} "
                        f"{_T.to_text(question.rdtype)} within {timeout} s"
                    )
                flight.attempts += 1
                flight.deadline = now + per_try
                _send(sock, flight.wire)
    if truncated:
        for index, response in zip(truncated, tcp_exchange(server, [queries[i] for i in truncated], timeout)):
            results[index] = response
    return [r for r in results if r is not None]


def _send(sock: socket.socket, wire: bytes) -> None:
    try:
        sock.send(wire)
    except (BlockingIOError, InterruptedError):
        pass  # socket buffer full: the retry timer resends
    except OSError:
        pass  # e.g. ECONNREFUSED from an earlier ICMP: retry timer, then timeout
