"""The member side of a relay: one UDP socket to the relay, and one loopback socket per
relayed peer that the engine uses as that peer's endpoint.

The engine sends a peer's WireGuard datagrams to 127.0.0.1:P (P: the peer's proxy port);
the client wraps each in a SEND to the relay. A DELIVER from the relay for that peer is
verified and its payload sent from the peer's proxy socket to the engine's listen port, so
WireGuard roaming sees the peer at 127.0.0.1:P. The client binds its public address at
the relay at once and every BIND_REFRESH seconds (NAT mappings may expire after 20-30 s).
One Service thread polls every socket; it sleeps until a datagram or the next refresh.

With `tls` (the relay's TCP address and certificate pin) the client falls back to the
relay over TLS on TCP (discovery.relay.stream, .tls) when UDP_GIVE_UP binds in a row go
unanswered (UDP blocked): a second thread holds the connection, binds over it and reads
DELIVERs from it; SENDs go down it while `transport` is "tcp". A UDP bind is still sent
every UDP_RETRY seconds and, once one is acknowledged, the client goes back to UDP and
closes the connection. host_endpoint() is a proxy for the relay host itself: what the
engine sends there reaches the relay host's own engine (its WireGuard peer) through the
relay, so the member's tunnel to the rendezvous works with all UDP blocked.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Iterable

from meshwg.core import crypto
from meshwg.util.endpoint import Endpoint, format_endpoint, normalize_endpoint
from meshwg.util.service import Service, StreamReader, Waker
from meshwg.util.resolve import family_of
from meshwg.util.sockbuf import FORWARDER_BUFFER, grow_buffers

from discovery.relay import stream, wire

if TYPE_CHECKING:   # imported once UDP fails (_tls_loop): its x509 import cost every join ~0.1 s
    from discovery.relay import tls

log = logging.getLogger("meshwg.relay")

BIND_REFRESH = 20.0        # seconds between binds once acknowledged
BIND_RETRY = 1.0           # seconds between binds until the first acknowledgement
LOOPBACK = "127.0.0.1"
UDP_GIVE_UP = 3            # unanswered UDP binds in a row before trying TLS over TCP
UDP_RETRY = 30.0           # seconds between UDP binds while on TCP (prefer UDP when it works)
TLS_RETRY_START = 1.0      # seconds before a failed TLS connection is tried again; doubles
TLS_RETRY_MAX = 30.0
TLS_IDLE = 3 * BIND_REFRESH    # a connection silent this long (no ack, no data) is dead


@dataclass
class RelayedPeer:
    """One peer's proxy socket and relayed byte counters (WireGuard datagram bytes)."""

    public_key: bytes
    sock: socket.socket
    rx_bytes: int = 0          # from the relay to the engine
    tx_bytes: int = 0          # from the engine to the relay

    @property
    def endpoint(self) -> Endpoint:
        return LOOPBACK, self.sock.getsockname()[1]


class RelayClient:
    """A member's link to one relay at `relay` (IP, port) with public key `relay_public`;
    `engine_port`: the local engine's UDP port. set_peers() makes one proxy per peer
    key; endpoint(key) is the endpoint to give the engine for it. `on_bound()` is called
    (from the client's thread) when the relay first acknowledges a bind."""

    def __init__(self, private_key: bytes, relay_public: bytes, relay: Endpoint, engine_port: int,
                 name: str = "rendezvous", on_bound: Callable[[], None] | None = None,
                 tls_target: tuple[Endpoint, bytes] | None = None):
        self.on_bound = on_bound
        self.tls_target = tls_target          # ((ip, TCP port), certificate pin) or None
        self.transport: str | None = None     # "udp" or "tcp" once a bind was acknowledged
        self.tls_error: str | None = None     # why the last TLS connection failed
        self.private_key = private_key
        self.public_key = crypto.public_key(private_key)
        self.relay_public = relay_public
        self.relay = relay
        self.engine_port = engine_port
        self.name = name
        self.own_id = wire.member_id(self.public_key)
        self.key = wire.relay_key(private_key, self.public_key, relay_public, member_side=True)
        self.bound_at: float | None = None     # monotonic time of the last acknowledged bind
        self.counters = {"binds_sent": 0, "binds_acked": 0, "dropped": 0, "tls_connects": 0,
                         "tls_failures": 0}
        self._peers: dict[bytes, RelayedPeer] = {}          # by member id
        self._lock = threading.Lock()
        self._pending: dict[int, str] = {}      # bind timestamps sent -> "udp" / "tcp"
        self._last_acked = 0                    # the newest acknowledged bind's timestamp
        self._next_bind = 0.0
        self._next_udp_bind = 0.0
        self._unanswered_udp = 0
        self._tls: tls.TlsConnection | None = None
        self._tls_wanted = threading.Event()
        self._stopping = False
        self._host_id = wire.member_id(relay_public)
        family = family_of(relay[0])
        self._sock = socket.socket(family, socket.SOCK_DGRAM)
        grow_buffers(self._sock, FORWARDER_BUFFER)     # every peer's traffic comes here
        self._sock.setblocking(False)
        self._waker = Waker()
        self.service = Service(f"relay-client-{name}")
        self.service.on_close(self._close)

    # ------------------------------------------------------------------ peers
    def set_peers(self, public_keys: Iterable[bytes]) -> None:
        """One proxy socket per key (new ones opened, gone ones closed)."""
        wanted = {wire.member_id(k): k for k in public_keys if k != self.public_key}
        if self.tls_target is not None:     # the relay host itself, for when UDP is blocked
            wanted[self._host_id] = self.relay_public
        with self._lock:
            if wanted.keys() == self._peers.keys():
                return
            for ident in [i for i in self._peers if i not in wanted]:
                self._peers.pop(ident).sock.close()
            for ident, key in wanted.items():
                if ident not in self._peers:
                    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                    grow_buffers(sock, FORWARDER_BUFFER)   # the engine's UDP GSO bursts
                    sock.bind((LOOPBACK, 0))
                    sock.setblocking(False)
                    self._peers[ident] = RelayedPeer(key, sock)
        self._wake()

    def endpoint(self, public_key: bytes) -> Endpoint | None:
        """The proxy endpoint for a peer (None: not relayed)."""
        with self._lock:
            peer = self._peers.get(wire.member_id(public_key))
            return peer.endpoint if peer is not None else None

    def endpoints(self) -> dict[bytes, Endpoint]:
        """The proxy endpoint per relayed peer (not the relay host's)."""
        with self._lock:
            return {p.public_key: p.endpoint for i, p in self._peers.items() if i != self._host_id}

    def host_endpoint(self) -> Endpoint | None:
        """The proxy for the relay host's own engine (None before set_peers)."""
        with self._lock:
            peer = self._peers.get(self._host_id)
            return peer.endpoint if peer is not None else None

    @property
    def label(self) -> str:
        """The relay's name with the transport when it is TCP: "rendezvous (tcp)"."""
        return f"{self.name} (tcp)" if self.transport == "tcp" else self.name

    def peer_counters(self) -> dict[bytes, tuple[int, int]]:
        """Relayed (rx_bytes, tx_bytes) per peer key."""
        with self._lock:
            return {p.public_key: (p.rx_bytes, p.tx_bytes) for p in self._peers.values()}

    @property
    def bound(self) -> bool:
        return self.bound_at is not None and time.monotonic() - self.bound_at <= 3 * BIND_REFRESH

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> "RelayClient":
        self.service.spawn(self._loop)
        if self.tls_target is not None:
            self.service.spawn(self._tls_loop, name=f"relay-tls-{self.name}")
        return self

    def stop(self) -> None:
        self._stopping = True
        self._tls_wanted.set()          # let the TLS thread see the stop flag
        self._drop_tls()
        self.service.stop()

    def rebind(self) -> None:
        """Bind again now (our addresses changed, or the relay may have restarted)."""
        self._next_bind = 0.0
        self._wake()

    def _wake(self) -> None:
        self._waker.wake()

    def _close(self) -> None:
        self._drop_tls()
        self._sock.close()
        with self._lock:
            for peer in self._peers.values():
                peer.sock.close()
            self._peers.clear()
        self._waker.close()

    # ------------------------------------------------------------------ loop
    def _send_bind(self, now: float) -> None:
        """A bind on the current transport; on TCP also one over UDP every UDP_RETRY s."""
        conn = self._tls
        if self.transport == "tcp" and conn is not None:
            self._bind_over("tcp", conn)
            if now >= self._next_udp_bind:
                self._bind_over("udp", None)
                self._next_udp_bind = now + UDP_RETRY
        else:
            self._bind_over("udp", None)
            self._unanswered_udp += 1
            if self._unanswered_udp > UDP_GIVE_UP and self.tls_target is not None:
                self._tls_wanted.set()
                if conn is not None:
                    self._bind_over("tcp", conn)
        self._next_bind = now + BIND_RETRY          # until acknowledged: then BIND_REFRESH

    def _bind_over(self, transport: str, conn: tls.TlsConnection | None) -> None:
        stamp = time.time_ns()
        with self._lock:
            while stamp in self._pending or (self._pending and stamp <= max(self._pending)):
                stamp += 1                      # the relay wants growing timestamps
            self._pending[stamp] = transport
            for old in sorted(self._pending)[:-8]:
                del self._pending[old]
        bind = wire.encode_bind(wire.BIND, self.key, self.own_id, stamp)
        try:
            if conn is not None:
                conn.sendall(stream.encode_frame(bind))
            else:
                self._sock.sendto(bind, self.relay)
            self.counters["binds_sent"] += 1
        except OSError as exc:
            log.debug("relay %s: bind over %s failed: %s", self.name, transport, exc)
            if conn is not None:
                self._drop_tls(conn)

    def _loop(self) -> None:
        while not self.service.stopping:
            now = time.monotonic()
            if now >= self._next_bind:
                self._send_bind(now)
            with self._lock:
                by_fd = {p.sock.fileno(): p for p in self._peers.values()}
            ready = self.service.wait_readable(self._sock, self._waker, *by_fd.keys(),
                                               timeout=max(0.0, self._next_bind - time.monotonic()))
            if self.service.stopping:
                return
            for item in ready:
                if item is self._sock:
                    self._from_udp()
                elif item is self._waker:
                    self._waker.drain()
                else:
                    peer = by_fd.get(item)
                    if peer is not None:
                        self._from_engine(peer)

    def _from_engine(self, peer: RelayedPeer) -> None:
        ident = wire.member_id(peer.public_key)
        for _ in range(64):
            try:
                data, address = peer.sock.recvfrom(wire.MAX_PAYLOAD + 1)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:       # closed by set_peers meanwhile, or an ICMP error
                return
            if normalize_endpoint(address) != (LOOPBACK, self.engine_port) or len(data) > wire.MAX_PAYLOAD:
                self.counters["dropped"] += 1     # only our engine may use the relay
                continue
            out = wire.encode_send(wire.SEND, self.key, self.own_id, ident, data)
            conn = self._tls if self.transport == "tcp" else None
            try:
                if conn is not None:
                    conn.sendall(stream.encode_frame(out))
                else:
                    self._sock.sendto(out, self.relay)
                peer.tx_bytes += len(data)
            except OSError as exc:
                log.debug("relay %s: send failed: %s", self.name, exc)
                if conn is not None:
                    self._drop_tls(conn)

    def _from_udp(self) -> None:
        for _ in range(64):
            try:
                data, address = self._sock.recvfrom(wire.MAX_DATAGRAM + 1)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                continue
            if normalize_endpoint(address) != self.relay:
                self.counters["dropped"] += 1
                continue
            self._from_relay(data)

    def _from_relay(self, data: bytes) -> None:
        """One datagram from the relay (over UDP or TCP): an ack or a delivery."""
        try:
            datagram = wire.parse(data)
            wire.verify(datagram, self.key)
        except (wire.Malformed, wire.BadMac):
            self.counters["dropped"] += 1
            log.debug("relay %s: dropped a bad datagram", self.name)
            return
        if datagram.kind == wire.BIND_ACK:
            with self._lock:
                transport = self._pending.pop(datagram.timestamp, None) \
                    if datagram.first_id == self.own_id else None
                # binds over UDP and TCP go out together and their acks come back on
                # different paths: one older than an ack already taken (a TCP ack read
                # after the UDP ack that moved the client back to UDP) changes nothing
                if transport is not None and datagram.timestamp < self._last_acked:
                    transport = None
                if transport is not None:
                    self._last_acked = datagram.timestamp
            if transport is not None:
                self._acked(transport)
            return
        if datagram.kind != wire.DELIVER or datagram.second_id != self.own_id:
            self.counters["dropped"] += 1
            return
        self._deliver(datagram)

    def _acked(self, transport: str) -> None:
        first = self.bound_at is None
        changed = transport != self.transport
        self.bound_at = time.monotonic()
        self._next_bind = self.bound_at + BIND_REFRESH
        self.transport = transport
        self.counters["binds_acked"] += 1
        if transport == "udp":
            self._unanswered_udp = 0
            if self._tls_wanted.is_set() or self._tls is not None:
                self._tls_wanted.clear()        # UDP works: leave TCP
                self._drop_tls()
                self._next_bind = 0.0           # and bind once more over UDP: the last bind counts
        else:
            self._next_udp_bind = max(self._next_udp_bind, self.bound_at + UDP_RETRY)
        if changed:
            log.info("relay %s at %s: bound over %s", self.name, format_endpoint(self.relay), transport)
        if (first or changed) and self.on_bound is not None:
            self.on_bound()
        self._wake()

    def _deliver(self, datagram: wire.Datagram) -> None:
        """A DELIVER's payload to the engine, from the sending peer's proxy."""
        with self._lock:
            peer = self._peers.get(datagram.first_id)
        if peer is None:
            self.counters["dropped"] += 1
            return
        try:
            peer.sock.sendto(datagram.payload, (LOOPBACK, self.engine_port))
            peer.rx_bytes += len(datagram.payload)
        except OSError as exc:
            log.debug("relay %s: delivery to the engine failed: %s", self.name, exc)

    # ------------------------------------------------------------------ TLS over TCP
    def _drop_tls(self, conn: tls.TlsConnection | None = None) -> None:
        """End the TLS connection (`conn`: only if it is still the current one)."""
        with self._lock:
            current = self._tls
            if current is None or (conn is not None and conn is not current):
                return
            self._tls = None
        try:
            current.sock.shutdown(socket.SHUT_RDWR)     # wakes its reader
        except OSError:
            pass
        if self.transport == "tcp":
            self.transport = None
            self.bound_at = None
            self._next_bind = 0.0
            self._wake()

    def _tls_loop(self) -> None:
        """Connect when wanted, read frames until the connection ends, retry with backoff."""
        backoff = TLS_RETRY_START
        while not self._stopping:
            self._tls_wanted.wait()
            if self._stopping:
                return
            address, pin = self.tls_target
            from discovery.relay import tls     # once UDP failed: not with every join
            try:
                conn = tls.connect(address, pin)
            except tls.TlsError as exc:
                self.tls_error = str(exc)
                self.counters["tls_failures"] += 1
                log.info("relay %s: %s", self.name, exc)
                self.service.sleep(backoff)
                backoff = min(TLS_RETRY_MAX, backoff * 2)
                continue
            self.counters["tls_connects"] += 1
            self.tls_error = None
            log.info("relay %s: UDP unanswered, TLS to TCP %s", self.name, format_endpoint(address))
            with self._lock:
                self._tls = conn
            self._next_bind = 0.0                   # bind over it now
            self._wake()
            try:
                self._read_tls(conn)
            finally:
                self._drop_tls(conn)
                conn.close()
            if self.bound_at is None or not self._tls_wanted.is_set():
                backoff = TLS_RETRY_START
            self.service.sleep(TLS_RETRY_START)

    def _read_tls(self, conn: tls.TlsConnection) -> None:
        reader = StreamReader(conn, self.service, idle_timeout=TLS_IDLE, chunk=65536)
        while self._tls is conn and not self.service.stopping:
            try:
                data = stream.read_frame(reader)
            except stream.FrameError as exc:
                self.counters["dropped"] += 1
                log.debug("relay %s: %s", self.name, exc)
                return
            if data is None:
                return
            self._from_relay(data)
