"""A small authoritative DNS server (UDP + TCP) in background threads, answering from a
:class:`discovery.records.Directory`.

Network input is hostile: anything that does not parse as a DNS query is dropped and
counted in ``malformed``; the server never answers a response (QR set). TCP clients
are bounded in number and idle time. AXFR of the zone is served over TCP only.
"""

from __future__ import annotations

import errno
import ipaddress
import selectors
import socket
import struct
import threading
from dataclasses import asdict, dataclass
from typing import Iterable, Iterator

import dns.flags
import dns.message
import dns.rcode
import dns.rdatatype

from discovery.dnssd.records import TCP_LIMIT, Directory, encode_response, udp_size_limit

UDP_RECV_SIZE = 65535
CACHE_LIMIT = 100_000


class ResponseCache:
    """Rendered answers keyed by (transport, query bytes after the 2-byte ID), valid for
    one directory serial. ``Directory.answer`` is a pure function of the query and the
    snapshot, so identical query bytes get identical answers; a hit skips parsing and
    rendering and only carries the query's ID over (messages rendered by dnspython)."""

    def __init__(self, limit: int = CACHE_LIMIT) -> None:
        self.limit = limit
        self.hits = 0
        self._serial = -1
        self._data: dict[tuple[str, bytes], list[bytes]] = {}
        self._lock = threading.Lock()

    def get(self, serial: int, transport: str, query_wire: bytes) -> list[bytes] | None:
        """The cached response messages re-stamped with this query's ID, or None."""
        with self._lock:
            if serial != self._serial:
                self._serial, self._data = serial, {}
                return None
            bodies = self._data.get((transport, query_wire[2:]))
            if bodies is None:
                return None
            self.hits += 1
        query_id = query_wire[:2]
        return [query_id + body[2:] for body in bodies]

    def put(self, serial: int, transport: str, query_wire: bytes, wires: list[bytes]) -> None:
        with self._lock:
            if serial != self._serial:
                return
            if len(self._data) >= self.limit:
                self._data = {}
            self._data[(transport, query_wire[2:])] = wires


class DnsServerError(OSError):
    """The server could not start (bind failure)."""


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
    ) -> None:
        self.directory = directory
        self.address = address
        self.requested_port = port
        self.max_tcp_clients = max_tcp_clients
        self.tcp_idle_timeout = tcp_idle_timeout
        self._counters = ServerCounters()
        self._lock = threading.Lock()
        self._udp: socket.socket | None = None
        self._tcp: socket.socket | None = None
        self._wake_r: socket.socket | None = None
        self._wake_w: socket.socket | None = None
        self._threads: list[threading.Thread] = []
        self._clients: set[socket.socket] = set()
        self._stopping = threading.Event()
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
        """Bind both sockets and start the serving threads."""
        if self._udp is not None:
            raise RuntimeError("DnsServer already started")
        try:
            family = socket.AF_INET6 if ipaddress.ip_address(self.address).version == 6 else socket.AF_INET
        except ValueError:
            raise DnsServerError(errno.EINVAL, f"DNS server address {self.address!r} is not an IP address") from None
        self._udp, self._tcp = self._bind_pair(family)
        self._port = self._udp.getsockname()[1]
        self._wake_r, self._wake_w = socket.socketpair()
        self._stopping.clear()
        for target, name in ((self._serve_udp, "udp"), (self._serve_tcp, "tcp")):
            thread = threading.Thread(target=target, name=f"dns-{name}-{self._port}", daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def stop(self) -> None:
        """Stop serving and close every socket; waits for the threads."""
        if self._udp is None:
            return
        self._stopping.set()
        assert self._wake_w is not None
        try:
            self._wake_w.send(b"x")
        except OSError:
            pass
        with self._lock:
            clients = list(self._clients)
        for client in clients:
            try:
                client.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        for thread in self._threads:
            thread.join(timeout=5.0)
        for sock in (self._udp, self._tcp, self._wake_r, self._wake_w):
            if sock is not None:
                sock.close()
        self._udp = self._tcp = self._wake_r = self._wake_w = None
        self._threads = []

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
            f"cannot bind DNS server to {self.address}:{self.requested_port}: {last}",
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
        except Exception:  # dnspython raises many types on hostile input
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
            else:
                limit = TCP_LIMIT if transport == "tcp" else udp_size_limit(query)
                response = self.directory.answer(query)
                wires = [encode_response(response, limit)]
                if response.flags & dns.flags.TC or wires[0][2] & 0x02:  # TC bit of header
                    self._count(truncated=1)
                if response.rcode() == dns.rcode.SERVFAIL:
                    return wires
        except Exception:
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

    def _serve_udp(self) -> None:
        assert self._udp is not None and self._wake_r is not None
        udp = self._udp
        with selectors.DefaultSelector() as sel:
            sel.register(udp, selectors.EVENT_READ)
            sel.register(self._wake_r, selectors.EVENT_READ)
            while not self._stopping.is_set():
                sel.select()
                while not self._stopping.is_set():
                    try:
                        data, peer = udp.recvfrom(UDP_RECV_SIZE)
                    except (BlockingIOError, InterruptedError):
                        break
                    except OSError:
                        break  # e.g. ICMP-induced errors; keep serving
                    self._count(queries_udp=1)
                    for wire in self._handle(data, "udp"):
                        try:
                            udp.sendto(wire, peer)
                            self._count(responses=1)
                        except OSError:
                            self._count(send_errors=1)

    # -- TCP

    def _serve_tcp(self) -> None:
        assert self._tcp is not None and self._wake_r is not None
        with selectors.DefaultSelector() as sel:
            sel.register(self._tcp, selectors.EVENT_READ)
            sel.register(self._wake_r, selectors.EVENT_READ)
            while not self._stopping.is_set():
                sel.select()
                if self._stopping.is_set():
                    break
                try:
                    client, _ = self._tcp.accept()
                except (BlockingIOError, InterruptedError):
                    continue
                except OSError:
                    continue
                with self._lock:
                    full = len(self._clients) >= self.max_tcp_clients
                    if not full:
                        self._clients.add(client)
                        self._counters.tcp_connections += 1
                    else:
                        self._counters.tcp_rejected += 1
                if full:
                    client.close()
                    continue
                thread = threading.Thread(target=self._serve_client, args=(client,), daemon=True)
                thread.start()
        with self._lock:
            clients = list(self._clients)
        for client in clients:
            try:
                client.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def _serve_client(self, client: socket.socket) -> None:
        try:
            client.setblocking(True)
            client.settimeout(self.tcp_idle_timeout)
            while not self._stopping.is_set():
                header = _recv_exact(client, 2)
                if header is None:
                    return
                (length,) = struct.unpack("!H", header)
                data = _recv_exact(client, length) if length else b""
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
            client.close()


def _recv_exact(sock: socket.socket, n: int) -> bytes | None:
    """n bytes, or None on EOF/timeout."""
    chunks = bytearray()
    while len(chunks) < n:
        try:
            chunk = sock.recv(n - len(chunks))
        except (socket.timeout, OSError):
            return None
        if not chunk:
            return None
        chunks += chunk
    return bytes(chunks)
