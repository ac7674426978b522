"""The member side of a relay: one UDP socket to the relay, and one loopback socket per
relayed peer that the engine uses as that peer's endpoint.

The engine sends a peer's WireGuard datagrams to 127.0.0.1:P (P: the peer's proxy port);
the client wraps each in a SEND to the relay. A DELIVER from the relay for that peer is
verified and its payload sent from the peer's proxy socket to the engine's listen port, so
WireGuard roaming sees the peer at 127.0.0.1:P. The client binds its public address at
the relay at once and every BIND_REFRESH seconds (NAT mappings may expire after 20-30 s).
One Service thread polls every socket; it sleeps until a datagram or the next refresh.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from dataclasses import dataclass
from typing import Callable, Iterable

from meshwg.core import crypto
from meshwg.util.endpoint import Endpoint, format_endpoint, normalize_endpoint
from meshwg.util.service import Service
from meshwg.util.resolve import family_of

from discovery.relay import wire

log = logging.getLogger("meshwg.relay")

BIND_REFRESH = 20.0        # seconds between binds once acknowledged
BIND_RETRY = 1.0           # seconds between binds until the first acknowledgement
LOOPBACK = "127.0.0.1"


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
                 name: str = "rendezvous", on_bound: Callable[[], None] | None = None):
        self.on_bound = on_bound
        self.private_key = private_key
        self.public_key = crypto.public_key(private_key)
        self.relay_public = relay_public
        self.relay = relay
        self.engine_port = engine_port
        self.name = name
        self.own_id = wire.member_id(self.public_key)
        self.key = wire.relay_key(private_key, self.public_key, relay_public, member_side=True)
        self.bound_at: float | None = None     # monotonic time of the last acknowledged bind
        self.counters = {"binds_sent": 0, "binds_acked": 0, "dropped": 0}
        self._peers: dict[bytes, RelayedPeer] = {}          # by member id
        self._lock = threading.Lock()
        self._pending_bind: int | None = None
        self._next_bind = 0.0
        family = family_of(relay[0])
        self._sock = socket.socket(family, socket.SOCK_DGRAM)
        self._sock.setblocking(False)
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        self.service = Service(f"relay-client-{name}")
        self.service.on_close(self._close)

    # ------------------------------------------------------------------ peers
    def set_peers(self, public_keys: Iterable[bytes]) -> None:
        """One proxy socket per key (new ones opened, gone ones closed)."""
        wanted = {wire.member_id(k): k for k in public_keys if k != self.public_key}
        with self._lock:
            if wanted.keys() == self._peers.keys():
                return
            for ident in [i for i in self._peers if i not in wanted]:
                self._peers.pop(ident).sock.close()
            for ident, key in wanted.items():
                if ident not in self._peers:
                    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
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
        with self._lock:
            return {p.public_key: p.endpoint for p in self._peers.values()}

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
        return self

    def stop(self) -> None:
        self.service.stop()

    def rebind(self) -> None:
        """Bind again now (our addresses changed, or the relay may have restarted)."""
        self._next_bind = 0.0
        self._wake()

    def _wake(self) -> None:
        try:
            os.write(self._wake_w, b"x")
        except OSError:
            pass

    def _close(self) -> None:
        self._sock.close()
        with self._lock:
            for peer in self._peers.values():
                peer.sock.close()
            self._peers.clear()
        for fd in (self._wake_r, self._wake_w):
            os.close(fd)

    # ------------------------------------------------------------------ loop
    def _send_bind(self, now: float) -> None:
        stamp = time.time_ns()
        self._pending_bind = stamp
        try:
            self._sock.sendto(wire.encode_bind(wire.BIND, self.key, self.own_id, stamp), self.relay)
            self.counters["binds_sent"] += 1
        except OSError as exc:
            log.debug("relay %s: bind failed: %s", self.name, exc)
        self._next_bind = now + BIND_RETRY          # until acknowledged: then BIND_REFRESH

    def _loop(self) -> None:
        while not self.service.stopping:
            now = time.monotonic()
            if now >= self._next_bind:
                self._send_bind(now)
            with self._lock:
                by_fd = {p.sock.fileno(): p for p in self._peers.values()}
            ready = self.service.wait_readable(self._sock, self._wake_r, *by_fd.keys(),
                                               timeout=max(0.0, self._next_bind - time.monotonic()))
            if self.service.stopping:
                return
            for item in ready:
                if item is self._sock:
                    self._from_relay()
                elif item == self._wake_r:
                    try:
                        os.read(self._wake_r, 4096)
                    except OSError:
                        pass
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
            try:
                self._sock.sendto(wire.encode_send(wire.SEND, self.key, self.own_id, ident, data),
                                  self.relay)
                peer.tx_bytes += len(data)
            except OSError as exc:
                log.debug("relay %s: send failed: %s", self.name, exc)

    def _from_relay(self) -> None:
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
            try:
                datagram = wire.parse(data)
                wire.verify(datagram, self.key)
            except (wire.Malformed, wire.BadMac):
                self.counters["dropped"] += 1
                log.debug("relay %s: dropped a bad datagram", self.name)
                continue
            if datagram.kind == wire.BIND_ACK:
                if datagram.first_id == self.own_id and datagram.timestamp == self._pending_bind:
                    first = self.bound_at is None
                    self.bound_at = time.monotonic()
                    self._next_bind = self.bound_at + BIND_REFRESH
                    self._pending_bind = None
                    if first:
                        log.info("relay %s at %s: bound", self.name, format_endpoint(self.relay))
                        if self.on_bound is not None:
                            self.on_bound()
                    self.counters["binds_acked"] += 1
                continue
            if datagram.kind != wire.DELIVER or datagram.second_id != self.own_id:
                self.counters["dropped"] += 1
                continue
            with self._lock:
                peer = self._peers.get(datagram.first_id)
            if peer is None:
                self.counters["dropped"] += 1
                continue
            try:
                peer.sock.sendto(datagram.payload, (LOOPBACK, self.engine_port))
                peer.rx_bytes += len(datagram.payload)
            except OSError as exc:
                log.debug("relay %s: delivery to the engine failed: %s", self.name, exc)
