"""A small authoritative DNS server (UDP + TCP) answering from a
:class:`discovery.dnssd.zone.Directory`.

Its threads run on meshwg.util.service.Service: they block on their sockets without
timeouts (an idle server costs no CPU) and stop() ends them at once. Network input is
hostile: anything that does not parse as a DNS query is dropped and counted in
``malformed``; the server never answers a response (QR set). TCP clients are bounded in
number (`max_tcp_clients`) and idle time (`tcp_idle_timeout` seconds). AXFR of the zone
is served over TCP only. With an ``ingress`` (meshwg.util.ingress) both sockets take only
what arrived on the tunnel interface, and sources it does not admit are dropped (UDP) or
disconnected (TCP) and counted in ``refused``.
"""

from __future__ import annotations

import errno
import ipaddress
import socket
import struct
import threading
from dataclasses import asdict, dataclass
from typing import Iterable, Iterator

import dns.flags
import dns.message
import dns.rcode
import dns.rdatatype

from meshwg.util.endpoint import format_endpoint
from meshwg.util.errors import MeshwgError
from meshwg.util.ingress import Ingress, admitted, restrict
from meshwg.util.service import Service, StreamReader
from meshwg.util.resolve import family_of

from discovery.dnssd.cache import ResponseCache
from discovery.dnssd.wire import TCP_LIMIT, encode_response, udp_size_limit
from discovery.dnssd.zone import Directory

UDP_RECV_SIZE = 65535


class DnsServerError(MeshwgError, OSError):
    """The server could not start (bind failure); ``errno`` says why."""


@dataclass
class ServerCounters:
    """What the server has seen since start."""

    queries_udp: int = 0
    queries_tcp: int = 0
    malformed: int = 0
    responses: int = 0
    truncated: int = 0
    transfers: int = 0
    tcp_connections: int = 0
    tcp_rejected: int = 0
    send_errors: int = 0
    cache_hits: int = 0
    refused: int = 0

    @property
    def queries(self) -> int:
        return self.queries_udp + self.queries_tcp


class DnsServer:
    """Serve ``directory`` on ``address``:``port`` over UDP and TCP (port 0: kernel picks
    one free for both)."""

    def __init__(
        self,
        directory: Directory,
        address: str = "127.0.0.1",
        port: int = 53,
        *,
        max_tcp_clients: int = 64,
        tcp_idle_timeout: float = 10.0,
        ingress: Ingress | None = None,
    ) -> None:
        self.directory = directory
        self.address = address
        self.requested_port = port
        self.max_tcp_clients = max_tcp_clients
        self.tcp_idle_timeout = tcp_idle_timeout
        self.ingress = ingress
        self._counters = ServerCounters()
        self._lock = threading.Lock()
        self._service: Service | None = None
        self._clients: set[socket.socket] = set()
        self._port = 0
        self._cache = ResponseCache()

    # -- lifecycle

    @property
    def port(self) -> int:
        """The bound port (valid after :meth:`start`)."""
        return self._port

    @property
    def counters(self) -> ServerCounters:
        """A consistent snapshot of the counters."""
        with self._lock:
            counters = ServerCounters(**asdict(self._counters))
        counters.cache_hits = self._cache.hits
        return counters

    def start(self) -> "DnsServer":
        """Bind both sockets and start serving. Raises DnsServerError."""
        if self._service is not None:
            raise RuntimeError("DnsServer already started")
        try:
            family = family_of(str(ipaddress.ip_address(self.address)))
        except ValueError:
            raise DnsServerError(errno.EINVAL, f"DNS server address {self.address!r} is not an IP address") from None
        udp, tcp = self._bind_pair(family)
        self._port = udp.getsockname()[1]
        service = Service(f"dns-{self._port}")
        service.on_close(udp.close)
        service.on_close(tcp.close)
        service.spawn(self._serve_udp, service, udp, name=f"dns-udp-{self._port}")
        service.spawn(lambda: service.serve_connections(
            tcp, lambda client, peer: self._serve_client(service, client, peer[0]),
            limit=self.max_tcp_clients, name=f"dns-tcp-client-{self._port}",
            on_reject=lambda: self._count(tcp_rejected=1)), name=f"dns-tcp-{self._port}")
        self._service = service
        return self

    def stop(self) -> None:
        """Stop serving and close every socket; waits for the threads."""
        service, self._service = self._service, None
        if service is None:
            return
        with self._lock:
            clients = list(self._clients)
        for client in clients:          # wakes a thread blocked writing to a slow client
            try:
                client.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        service.stop(timeout=5.0)

    def __enter__(self) -> "DnsServer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _bind_pair(self, family: int) -> tuple[socket.socket, socket.socket]:
        attempts = 20 if self.requested_port == 0 else 1
        last: OSError | None = None
        for _ in range(attempts):
            udp = socket.socket(family, socket.SOCK_DGRAM)
            tcp = socket.socket(family, socket.SOCK_STREAM)
            try:
                restrict(udp, self.ingress)
                restrict(tcp, self.ingress)
                udp.bind((self.address, self.requested_port))
                port = udp.getsockname()[1]
                tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                tcp.bind((self.address, port))
                tcp.listen(128)
                for sock in (udp, tcp):
                    sock.setblocking(False)
                try:
                    udp.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 21)
                except OSError:
                    pass
                return udp, tcp
            except OSError as exc:
                udp.close()
                tcp.close()
                last = exc
                if exc.errno != errno.EADDRINUSE:
                    break
        raise DnsServerError(
            getattr(last, "errno", errno.EADDRINUSE),
            f"cannot bind DNS server to {format_endpoint((self.address, self.requested_port))}: {last}",
        )

    def _count(self, **deltas: int) -> None:
        with self._lock:
            for name, delta in deltas.items():
                setattr(self._counters, name, getattr(self._counters, name) + delta)

    # -- request handling (shared)

    def _parse(self, wire: bytes) -> dns.message.Message | None:
        """A parsed query, or None (counted as malformed) for anything else."""
        try:
            query = dns.message.from_wire(wire)
        except Exception:  # noqa: BLE001 -- dnspython raises many types on hostile input
            self._count(malformed=1)
            return None
        if query.flags & dns.flags.QR:
            self._count(malformed=1)  # never answer a response: no reflection loops
            return None
        return query

    def _handle(self, data: bytes, transport: str) -> Iterable[bytes]:
        """The response messages for one received message (none when dropped)."""
        serial = self.directory.serial
        cached = self._cache.get(serial, transport, data)
        if cached is not None:
            return cached
        query = self._parse(data)
        if query is None:
            return []
        try:
            if transport == "tcp" and len(query.question) == 1 and query.question[0].rdtype == dns.rdatatype.AXFR:
                self._count(transfers=1)
                return self._stream_transfer(serial, data, query)
            limit = TCP_LIMIT if transport == "tcp" else udp_size_limit(query)
            response = self.directory.answer(query)
            wires = [encode_response(response, limit)]
            if response.flags & dns.flags.TC or wires[0][2] & 0x02:  # TC bit of header
                self._count(truncated=1)
            if response.rcode() == dns.rcode.SERVFAIL:
                return wires
        except Exception:  # noqa: BLE001 -- a query we cannot render is dropped, counted
            self._count(send_errors=1)
            return []
        self._cache.put(serial, transport, data, wires)
        return wires

    def _stream_transfer(self, serial: int, data: bytes, query: dns.message.Message) -> Iterator[bytes]:
        """AXFR messages as they are rendered; cached once complete."""
        wires: list[bytes] = []
        try:
            for wire in self.directory.transfer(query, TCP_LIMIT):
                wires.append(wire)
                yield wire
        except ValueError:
            self._count(send_errors=1)
            return
        self._cache.put(serial, "tcp", data, wires)

    # -- UDP

    def _serve_udp(self, service: Service, udp: socket.socket) -> None:
        while service.wait_readable(udp):
            while not service.stopping:
                try:
                    data, peer = udp.recvfrom(UDP_RECV_SIZE)
                except (BlockingIOError, InterruptedError):
                    break
                except OSError:
                    break  # e.g. ICMP-induced errors; keep serving
                if not admitted(self.ingress, peer[0]):
                    self._count(refused=1)
                    continue
                self._count(queries_udp=1)
                for wire in self._handle(data, "udp"):
                    try:
                        udp.sendto(wire, peer)
                        self._count(responses=1)
                    except OSError:
                        self._count(send_errors=1)

    # -- TCP

    def _serve_client(self, service: Service, client: socket.socket, source: str) -> None:
        """One TCP client: length-prefixed queries (RFC 1035 section 4.2.2) until it
        closes, idles for tcp_idle_timeout seconds or the server stops."""
        if not admitted(self.ingress, source):
            self._count(refused=1)
            return
        with self._lock:
            self._clients.add(client)
            self._counters.tcp_connections += 1
        reader = StreamReader(client, service, idle_timeout=self.tcp_idle_timeout)
        try:
            client.settimeout(self.tcp_idle_timeout)  # bounds writes; reads wait on the service
            while True:
                header = reader.read_exact(2)
                if header is None:
                    return
                (length,) = struct.unpack("!H", header)
                data = reader.read_exact(length) if length else b""
                if data is None:
                    return
                self._count(queries_tcp=1)
                # a malformed message is dropped; framing is intact, so keep the connection
                for wire in self._handle(data, "tcp"):
                    client.sendall(struct.pack("!H", len(wire)) + wire)
                    self._count(responses=1)
        except (OSError, ValueError):
            return
        finally:
            with self._lock:
                self._clients.discard(client)
