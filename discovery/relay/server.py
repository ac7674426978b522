"""The relay server: forwards members' WireGuard datagrams between members that have no
direct path (discovery.relay.wire has the format and the rules).

Members only: each datagram's MAC must verify under the sending member's relay key; a
member first binds its current public address (an authenticated BIND with a growing
timestamp, refreshed every BIND_REFRESH seconds by the client); a SEND is forwarded, as a
DELIVER of the same size, only to the destination's bound address, never back to a
source that did not bind. Everything else is dropped and counted by reason (`counters`),
logged at debug. One Service thread, blocking on the socket without timeouts.

Over TCP (`tcp_port`, with a TLS `identity`: discovery.relay.tls) the same datagrams come
framed (discovery.relay.stream) for members whose network blocks UDP: a member binds its
connection instead of a UDP address, and what is forwarded to it goes down that
connection. A connection must complete TLS and a valid BIND within CONNECT_DEADLINE
seconds and stays only while frames come (IDLE_TIMEOUT); at most MAX_CONNECTIONS at once
and MAX_PER_SOURCE from one IP address; a stranger, a bad length or a stall ends it.

A SEND addressed to the relay itself (the relay's own member id) carries the member's
WireGuard datagram for the relay host's engine (`engine_port`): it is sent from a
loopback socket of that member's own (127.0.0.1:P, the host proxy) to the engine, and
what the engine sends back to that proxy returns to the member as a DELIVER from the
relay's id. So a member with all UDP blocked keeps its tunnel to the rendezvous.
"""

from __future__ import annotations

import logging
import queue
import socket
import threading
import time
from dataclasses import dataclass
from typing import Iterable, Mapping, Union

from meshwg.core import crypto
from meshwg.util.endpoint import Endpoint, format_endpoint, normalize_endpoint
from meshwg.util.errors import MeshwgError
from meshwg.util.service import Service, StreamReader, Waker
from meshwg.util.resolve import family_of
from meshwg.util.sockbuf import FORWARDER_BUFFER, grow_buffers

from discovery.relay import stream, tls, wire

log = logging.getLogger("meshwg.relay")

BIND_TTL = 75.0          # seconds a bind lasts without a refresh (clients refresh every 20 s)
DROP_REASONS = ("malformed", "unknown_member", "bad_mac", "replayed_bind", "unbound_sender",
                "unbound_destination", "wrong_direction")
TCP_DROP_REASONS = ("tls", "stranger", "bad_frame", "queue_full", "over_limit")
CONNECT_DEADLINE = 10.0  # seconds for a TCP connection's TLS handshake and first BIND
IDLE_TIMEOUT = 90.0      # seconds a TCP connection may stay silent (clients bind every 20 s)
MAX_CONNECTIONS = 512
MAX_PER_SOURCE = 32      # connections from one IP (members behind one NAT share it)
LINK_QUEUE = 512         # frames waiting to go down one member's connection
LOOPBACK = "127.0.0.1"


class _Link:
    """A member's TCP connection (TLS): where frames for it go. send() only queues (at
    most LINK_QUEUE frames; more are dropped, as a full UDP buffer would): writer() sends
    them in a thread of its own, so a member that stops reading stalls nobody else."""

    def __init__(self, conn: tls.TlsConnection, peer: Endpoint):
        self.conn = conn
        self.peer = peer
        self.closed = False
        self._queue: queue.Queue[bytes | None] = queue.Queue(LINK_QUEUE)

    def send(self, datagram: bytes) -> None:
        """Raises queue.Full when the queue is full, OSError when the connection is gone."""
        if self.closed:
            raise OSError("connection closed")
        self._queue.put_nowait(stream.encode_frame(datagram))

    def writer(self) -> None:
        """Send queued frames until close() or a failed (or, after SEND_TIMEOUT, stalled) send."""
        while (frame := self._queue.get()) is not None and not self.closed:
            try:
                self.conn.sendall(frame)
            except OSError as exc:
                log.debug("relay: TCP %s: send failed: %s", format_endpoint(self.peer), exc)
                self.close()

    def close(self) -> None:
        """End the connection: the reader sees its end, the writer stops."""
        self.closed = True
        try:
            self.conn.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        try:
            self._queue.put_nowait(None)
        except queue.Full:
            pass            # the writer is sending: its send fails on the shut-down socket


@dataclass
class _HostProxy:
    """A member's loopback socket towards the relay host's engine."""

    ident: bytes
    sock: socket.socket


Target = Union[Endpoint, _Link, _HostProxy]


class RelayError(MeshwgError):
    """The relay could not start (its port is taken, ...)."""


@dataclass
class _Member:
    public_key: bytes
    key: bytes                      # the relay key
    address: Endpoint | _Link | None = None     # a UDP address or a TCP connection
    bound_at: float = 0.0           # monotonic seconds
    host_proxy: _HostProxy | None = None
    forwarded_datagrams: int = 0    # SENDs from this member forwarded
    forwarded_bytes: int = 0


class RelayServer:
    """A relay on UDP `host`:`port` (port 0: any) for the members whose public keys
    set_members() names; `private_key` is the relay's X25519 key (the rendezvous's or the
    relaying member's WireGuard key). With `identity` (discovery.relay.tls.Identity) and
    `tcp_port` (0: any; None: no TCP) it also relays over TLS on TCP; with `engine_port`
    (the host's WireGuard engine on loopback) members may send to the host itself.
    start() binds and starts the threads."""

    def __init__(self, private_key: bytes, host: str = "::", port: int = 0,
                 members: Iterable[bytes] = (), *, identity: tls.Identity | None = None,
                 tcp_port: int | None = None, engine_port: int | None = None):
        self.private_key = private_key
        self.public_key = crypto.public_key(private_key)
        self.own_id = wire.member_id(self.public_key)
        self.host = host
        self.requested_port = port
        self.port = 0
        self.identity = identity
        self.requested_tcp_port = tcp_port if identity is not None else None
        self.tcp_port = 0
        self.engine_port = engine_port
        self.counters: dict[str, int] = {"forwarded_datagrams": 0, "forwarded_bytes": 0,
                                         "binds": 0, "to_host_datagrams": 0, "from_host_datagrams": 0,
                                         "tcp_connections": 0,
                                         **{f"dropped_{r}": 0 for r in DROP_REASONS},
                                         **{f"tcp_dropped_{r}": 0 for r in TCP_DROP_REASONS}}
        self._lock = threading.Lock()     # guards _members, counters
        self._members: dict[bytes, _Member] = {}
        self._clock = wire.BindClock()
        self._sock: socket.socket | None = None
        self._waker = Waker()                       # a new host proxy for the proxy loop
        self.service = Service("relay")
        self.service.on_close(self._close_proxies)
        self.set_members(members)

    # ------------------------------------------------------------------ membership
    def set_members(self, public_keys: Iterable[bytes]) -> None:
        """The members allowed to bind and send; others' bindings end at once."""
        fresh: dict[bytes, _Member] = {}
        with self._lock:
            for public_key in public_keys:
                ident = wire.member_id(public_key)
                old = self._members.get(ident)
                if old is not None and old.public_key == public_key:
                    fresh[ident] = old
                    continue
                try:
                    key = wire.relay_key(self.private_key, self.public_key, public_key, member_side=False)
                except crypto.WeakKeyError:
                    continue
                fresh[ident] = _Member(public_key, key)
            for ident in self._members.keys() - fresh.keys():
                self._clock.forget(ident)
                gone = self._members[ident]
                if gone.host_proxy is not None:
                    gone.host_proxy.sock.close()
                if isinstance(gone.address, _Link):
                    gone.address.close()          # a revoked member's connection ends
            self._members = fresh
        self._waker.wake()

    def member_counters(self) -> dict[bytes, dict[str, int]]:
        """Per member public key that sent any: forwarded_datagrams, forwarded_bytes."""
        with self._lock:
            return {m.public_key: {"forwarded_datagrams": m.forwarded_datagrams,
                                   "forwarded_bytes": m.forwarded_bytes}
                    for m in self._members.values() if m.forwarded_datagrams}

    def status(self, names: Mapping[bytes, str]) -> dict:
        """What `meshwg status --json` (a relaying member) and `meshwg members --json` (the
        rendezvous) show: the UDP port, the counters (dropped by reason) and what was
        forwarded per member, named by `names` (public key -> name; hex otherwise)."""
        with self._lock:
            counters = dict(self.counters)
        return {"port": self.port, "counters": counters,
                "members": {names.get(key, key.hex()): value
                            for key, value in self.member_counters().items()}}

    def bound(self, now: float | None = None) -> dict[bytes, Endpoint]:
        """Bound members' public keys -> their bound addresses (`now`: monotonic seconds;
        a member bound over TCP: its connection's remote address)."""
        now = time.monotonic() if now is None else now
        with self._lock:
            return {m.public_key: (m.address.peer if isinstance(m.address, _Link) else m.address)
                    for m in self._members.values()
                    if m.address is not None and now - m.bound_at <= BIND_TTL}

    def transport(self, public_key: bytes) -> str | None:
        """"udp" or "tcp": how a member is bound (None: not bound)."""
        with self._lock:
            member = self._members.get(wire.member_id(public_key))
            if member is None or member.address is None:
                return None
            return "tcp" if isinstance(member.address, _Link) else "udp"

    # ------------------------------------------------------------------ lifecycle
    def _listen(self, kind: int, port: int) -> socket.socket:
        family = family_of(self.host)
        sock = socket.socket(family, kind)
        try:
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
            if kind == socket.SOCK_STREAM:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            else:       # every relayed datagram of every pair passes this socket
                grow_buffers(sock, FORWARDER_BUFFER)
            sock.bind((self.host, port))
            if kind == socket.SOCK_STREAM:
                sock.listen(128)
        except OSError as exc:
            sock.close()
            proto = "TCP" if kind == socket.SOCK_STREAM else "UDP"
            raise RelayError(f"relay: cannot bind {proto} {format_endpoint((self.host, port))}: "
                             f"{exc.strerror}") from None
        sock.setblocking(False)
        self.service.on_close(sock.close)
        return sock

    def start(self) -> "RelayServer":
        self._sock = self._listen(socket.SOCK_DGRAM, self.requested_port)
        self.port = self._sock.getsockname()[1]
        if self.requested_tcp_port is not None:
            listener = self._listen(socket.SOCK_STREAM, self.requested_tcp_port)
            self.tcp_port = listener.getsockname()[1]
            self._tls_context = self.identity.server_context()
            self.service.spawn(lambda: self.service.serve_connections(
                listener, self._serve_tcp, limit=MAX_CONNECTIONS, per_source=MAX_PER_SOURCE,
                name="relay-tcp",
                on_reject=lambda: self._count("tcp_dropped_over_limit")), name="relay-accept")
        self.service.spawn(self._loop)
        if self.engine_port is not None:
            self.service.spawn(self._proxy_loop, name="relay-host")
        log.info("relay on UDP %s%s", format_endpoint((self.host, self.port)),
                 f" and TLS on TCP {self.tcp_port}" if self.tcp_port else "")
        return self

    def stop(self) -> None:
        self._waker.wake()
        self.service.stop()

    def _close_proxies(self) -> None:
        with self._lock:
            for member in self._members.values():
                if member.host_proxy is not None:
                    member.host_proxy.sock.close()
                    member.host_proxy = None
        self._waker.close()

    def _count(self, name: str) -> None:
        with self._lock:
            self.counters[name] += 1

    # ------------------------------------------------------------------ datagrams
    def _loop(self) -> None:
        sock = self._sock
        while self.service.wait_readable(sock):
            for _ in range(64):                 # a burst, then look at the stop flag again
                try:
                    data, address = sock.recvfrom(wire.MAX_DATAGRAM + 1)
                except (BlockingIOError, InterruptedError):
                    break
                except OSError:                 # an ICMP error from an earlier send
                    continue
                reply = self.handle(data, normalize_endpoint(address))
                if reply is not None:
                    self._send(*reply)

    def _send(self, out: bytes, target: Target) -> None:
        """Send one datagram to a UDP address, down a member's connection or, from its
        host proxy, to the host's engine."""
        try:
            if isinstance(target, _Link):
                target.send(out)
            elif isinstance(target, _HostProxy):
                target.sock.sendto(out, (LOOPBACK, self.engine_port))
            else:
                self._sock.sendto(out, self._sockaddr(target))
        except queue.Full:
            self._count("tcp_dropped_queue_full")
        except OSError as exc:
            log.debug("relay: send failed: %s", exc)

    def _sockaddr(self, target: Endpoint) -> Endpoint:
        if self._sock is not None and self._sock.family == socket.AF_INET6 and ":" not in target[0]:
            return "::ffff:" + target[0], target[1]
        return target

    def _drop(self, reason: str, source: Endpoint | _Link) -> None:
        self.counters[f"dropped_{reason}"] += 1
        where = source.peer if isinstance(source, _Link) else source
        log.debug("relay: dropped a datagram from %s (%s)", format_endpoint(where), reason)

    def handle(self, data: bytes, source: Endpoint | _Link, now: float | None = None,
               now_ns: int | None = None) -> tuple[bytes, Target] | None:
        """One received datagram (from a UDP address or a member's TCP connection) ->
        what to send and where (None: nothing). Counts."""
        now = time.monotonic() if now is None else now
        try:
            datagram = wire.parse(data)
        except wire.Malformed:
            with self._lock:
                self._drop("malformed", source)
            return None
        with self._lock:
            if datagram.kind not in (wire.BIND, wire.SEND):
                self._drop("wrong_direction", source)
                return None
            sender = self._members.get(datagram.first_id)
            if sender is None:
                self._drop("unknown_member", source)
                return None
            try:
                wire.verify(datagram, sender.key)
            except wire.BadMac:
                self._drop("bad_mac", source)
                return None
            if datagram.kind == wire.BIND:
                now_ns = time.time_ns() if now_ns is None else now_ns
                if not self._clock.accept(datagram.first_id, datagram.timestamp, now_ns):
                    self._drop("replayed_bind", source)
                    return None
                if sender.address != source:
                    where = source.peer if isinstance(source, _Link) else source
                    log.debug("relay: member %s bound %s%s", datagram.first_id.hex(), format_endpoint(where),
                              " (tcp)" if isinstance(source, _Link) else "")
                sender.address, sender.bound_at = source, now
                self.counters["binds"] += 1
                return wire.encode_bind(wire.BIND_ACK, sender.key, datagram.first_id,
                                        datagram.timestamp), source
            if sender.address is None or now - sender.bound_at > BIND_TTL:
                self._drop("unbound_sender", source)
                return None
            if datagram.second_id == self.own_id and self.engine_port is not None:
                self.counters["to_host_datagrams"] += 1
                return datagram.payload, self._host_proxy(sender, datagram.first_id)
            destination = self._members.get(datagram.second_id)
            if destination is None or destination.address is None or now - destination.bound_at > BIND_TTL:
                self._drop("unbound_destination", source)
                return None
            out = wire.forward(datagram, destination.key)
            self.counters["forwarded_datagrams"] += 1
            self.counters["forwarded_bytes"] += len(out)
            sender.forwarded_datagrams += 1
            sender.forwarded_bytes += len(out)
            return out, destination.address

    # ------------------------------------------------------------------ the host's engine
    def _host_proxy(self, member: _Member, ident: bytes) -> _HostProxy:
        """The member's loopback socket towards the engine (made on first use; under _lock)."""
        if member.host_proxy is None:
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            grow_buffers(sock, FORWARDER_BUFFER)
            sock.bind((LOOPBACK, 0))
            sock.setblocking(False)
            member.host_proxy = _HostProxy(ident, sock)
            self._waker.wake()
        return member.host_proxy

    def _proxy_loop(self) -> None:
        """What the host's engine sends to a member's host proxy goes to that member."""
        while not self.service.stopping:
            with self._lock:
                proxies = {m.host_proxy.sock.fileno(): m for m in self._members.values()
                           if m.host_proxy is not None}
            ready = self.service.wait_readable(self._waker, *proxies.keys())
            for fd in ready:
                if fd is self._waker:
                    self._waker.drain()
                elif fd in proxies:
                    self._from_host(proxies[fd])

    def _from_host(self, member: _Member) -> None:
        proxy = member.host_proxy
        if proxy is None:
            return
        for _ in range(64):
            try:
                data, address = proxy.sock.recvfrom(wire.MAX_PAYLOAD + 1)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:                     # closed meanwhile, or an ICMP error
                return
            if normalize_endpoint(address) != (LOOPBACK, self.engine_port) or len(data) > wire.MAX_PAYLOAD:
                self._count("dropped_wrong_direction")   # only the host's engine may use it
                continue
            with self._lock:
                target = member.address if time.monotonic() - member.bound_at <= BIND_TTL else None
                if target is not None:
                    self.counters["from_host_datagrams"] += 1
            if target is None:
                self._count("dropped_unbound_destination")
                continue
            self._send(wire.encode_send(wire.DELIVER, member.key, self.own_id, proxy.ident, data), target)

    # ------------------------------------------------------------------ TCP (TLS)
    def _serve_tcp(self, raw: socket.socket, address: tuple) -> None:
        """One member connection: TLS, a BIND first, then frames until it ends."""
        peer = normalize_endpoint(address)
        self._count("tcp_connections")
        link: _Link | None = None
        try:
            conn = tls.TlsConnection(raw, self._tls_context, server_side=True)
            deadline = time.monotonic() + CONNECT_DEADLINE
            try:
                conn.handshake(deadline)
            except tls.TlsError as exc:
                self._count("tcp_dropped_tls")
                log.debug("relay: TCP %s: %s", format_endpoint(peer), exc)
                return
            link = _Link(conn, peer)
            self.service.spawn(link.writer, name="relay-tcp-writer")
            reader = StreamReader(conn, self.service, deadline=deadline, idle_timeout=IDLE_TIMEOUT,
                                  chunk=65536)
            first = True
            while not link.closed:
                try:
                    data = stream.read_frame(reader)
                except stream.FrameError:
                    self._count("tcp_dropped_bad_frame")
                    return
                if data is None:
                    if first:
                        self._count("tcp_dropped_stranger")
                    return
                reply = self.handle(data, link)
                if first:       # a stranger's connection ends at its first frame
                    if reply is None or reply[1] is not link:
                        self._count("tcp_dropped_stranger")
                        return
                    first, reader.deadline = False, None
                if reply is not None:
                    self._send(*reply)
        finally:
            if link is not None:
                link.close()
                with self._lock:
                    for member in self._members.values():
                        if member.address is link:
                            member.address = None
