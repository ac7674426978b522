"""The WireGuard protocol for one device, free of I/O, threads and the clock.

`WireGuardProtocol` takes bytes and the current time and gives back bytes, events and its
next deadline; it never touches a socket, a thread or a clock, so every call must come
from one thread at a time (the device serialises them with its lock). `now` is seconds
of one monotonic clock the caller chooses. The parts, by job:

- send       (meshwg.core.send)          TUN -> network: encrypt_batch(packets, now, buf)
                                         -> runs for UDP GSO (encrypt_packets: one by one)
- receive    (meshwg.core.receive)       network -> TUN: receive_batch(runs, now, out,
                                         handshake_backlog) -> (packets, admitted
                                         handshakes); receive_datagram(datagram, source,
                                         now): one datagram of any type, all at once
- handshake  (meshwg.core.handshake)     process_handshake(admitted, now), the expensive
                                         part; initiate_handshake, probe
- timers     (meshwg.core.timer_events)  tick(now) fires what is due; next_deadline()

Configuration is the methods below (keys, peers, endpoints, allowed IPs, keepalives).
Outputs: take_datagrams() -> [(datagram, endpoint)], take_events() -> [Event]
(meshwg.core.events), next_deadline(), the packets the receive calls return, and `stats`,
the counters of dropped or noted input by reason (read them; only the core writes them).

Endpoints are opaque hashable addresses chosen by the I/O layer ((host, port) tuples);
`address_bytes(endpoint)` maps one to the keys of cookies and the rate limiter.
"""

from __future__ import annotations

import os
import struct
from collections import Counter, deque
from typing import Any, Callable, Iterable

from meshwg.core.allowedips import AllowedIPs, Network
from meshwg.core.cookie import CookieChecker
from meshwg.core.crypto import public_key
from meshwg.core.deadlines import DeadlineQueue
from meshwg.core.events import Event
from meshwg.core.handshake import Handshakes
from meshwg.core.keypair import Keypair
from meshwg.core.peer import ZERO_KEY, Peer
from meshwg.core.ratelimiter import RateLimiter
from meshwg.core.receive import ReceivePath
from meshwg.core.send import SendPath
from meshwg.core.timer_events import TimerEvents
from meshwg.core.timers import Timers
from meshwg.util.endpoint import address_bytes as endpoint_address_bytes

MAX_PENDING_EVENTS = 4096      # events kept until take_events(); older ones are dropped
_INDEX_BATCH = struct.Struct("<64I")   # random indexes read from os.urandom at once


class WireGuardProtocol(SendPath, ReceivePath, Handshakes, TimerEvents):
    """One device's peers, keys, indexes and output queues (see the module docstring)."""

    def __init__(self, private_key: bytes | None = None, *, timers: Timers | None = None,
                 mtu: int = 1420, wall_offset: float = 0.0,
                 address_bytes: Callable[[Any], tuple[bytes, bytes]] = endpoint_address_bytes):
        self.timers = timers or Timers()
        self.mtu = mtu
        self.wall_offset = wall_offset          # wall clock = now + wall_offset (set_wall_clock)
        self.private_key: bytes | None = None
        self.public_key: bytes | None = None
        self.cookie_checker: CookieChecker | None = None
        self.peers: dict[bytes, Peer] = {}
        self.deadlines = DeadlineQueue()        # peers by earliest timer (next_deadline, tick)
        self._peer_order = 0
        self.allowed_ips = AllowedIPs()
        self.keypairs_by_index: dict[int, Keypair] = {}
        self.handshakes_by_index: dict[int, Peer] = {}
        self._index_pool: list[int] = []       # random indexes not yet handed out
        self.rate_limiter = RateLimiter()
        self._under_load_until = 0.0
        self._initiations_window_start = 0.0
        self._initiations_in_window = 0
        self.under_load_rate = 1000  # handshake messages with a valid mac1 per second
        self._own_initial_cache: tuple[bytes, tuple[bytes, bytes]] | None = None
        self.stats: Counter[str] = Counter()
        self._events: deque[Event] = deque()
        self._outgoing: deque[tuple[bytes, Any]] = deque()
        self.address_bytes = address_bytes
        # WireGuard's roaming: an initiation from a new source moves the peer's endpoint.
        # False (the mesh member): it is answered at its source, and the endpoint moves
        # with the first transport message from there, so a probe through another path
        # does not move a working one
        self.roam_on_initiation = True
        if private_key is not None:
            self.set_private_key(private_key)

    # ------------------------------------------------------------------ configuration
    def set_private_key(self, private_key: bytes | None) -> None:
        """Our static key (None or all zeros: none). Changing it ends every session."""
        if private_key == ZERO_KEY:
            private_key = None
        if private_key == self.private_key:   # unchanged (wg setconf): keep sessions
            return
        if private_key is None:
            self.private_key = self.public_key = None
            self.cookie_checker = None
        else:
            self.private_key = private_key
            self.public_key = public_key(private_key)
            self.cookie_checker = CookieChecker(self.public_key)
            own = self.peers.get(self.public_key)
            if own is not None:          # a peer with our own key makes no sense
                self.remove_peer(own.public_key)
        for peer in self.peers.values():
            peer.set_local_static(self.private_key)
            self._expire_keys(peer)

    def add_peer(self, public_key_: bytes) -> Peer:
        """The peer with this static public key, added if new."""
        peer = self.peers.get(public_key_)
        if peer is None:
            peer = Peer(public_key_, cookie_refresh_time=self.timers.cookie_refresh_time)
            peer.set_local_static(self.private_key)
            self._peer_order += 1
            peer.order = self._peer_order      # tick visits due peers in this order
            self.peers[public_key_] = peer
            self.deadlines.attach(peer)
        return peer

    def remove_peer(self, public_key_: bytes) -> None:
        """Forget a peer: its sessions, routes, timers and staged packets."""
        peer = self.peers.pop(public_key_, None)
        if peer is None:
            return
        self.deadlines.detach(peer)
        self.allowed_ips.remove_peer(peer)
        self._expire_keys(peer)
        peer.staged.clear()

    def set_persistent_keepalive(self, peer: Peer, interval: int, now: float) -> None:
        """Send a keepalive every `interval` seconds in which we sent nothing (0: off);
        what we receive does not postpone it (wireguard-go's does: on an idle pair with
        keepalives on both ends only one end would send). Turning it on sends one now
        when the peer can be reached (wireguard-go does the same)."""
        was_off = not peer.persistent_keepalive
        peer.persistent_keepalive = interval
        if not interval:
            peer.persistent_keepalive_at = None
            return
        if was_off and self.private_key is not None and peer.endpoint is not None:
            self.send_keepalive(peer, now)
        if peer.persistent_keepalive_at is None:
            peer.persistent_keepalive_at = now + interval

    def set_preshared_key(self, peer: Peer, psk: bytes | None) -> None:
        """The peer's preshared key (None or all zeros: none)."""
        peer.preshared_key = psk or ZERO_KEY

    def set_endpoint(self, peer: Peer, endpoint: Any) -> None:
        """Where to send to the peer until an authenticated message says otherwise."""
        peer.endpoint = endpoint

    def move_endpoint(self, peer: Peer, endpoint: Any, now: float, pin: float) -> None:
        """A deliberate move (the mesh's path choice): send there from now on, tell the
        peer at once with a keepalive from there (its roaming follows), and for `pin`
        seconds let no transport message from elsewhere move the endpoint back (packets
        the peer sent on the old path before it followed). Without a usable session
        nothing is sent (the caller's probe makes one)."""
        peer.endpoint = endpoint
        peer.pinned_until = now + pin
        kp = peer.current
        if kp is not None and now - kp.created < self.timers.reject_after_time:
            self.send_keepalive(peer, now)

    def set_allowed_ips(self, peer: Peer, networks: Iterable[Network]) -> None:
        """Route exactly `networks` to the peer (wg's replace_allowed_ips + allowed_ip)."""
        self.allowed_ips.remove_peer(peer)
        self.add_allowed_ips(peer, networks)

    def add_allowed_ips(self, peer: Peer, networks: Iterable[Network]) -> None:
        """Route `networks` to the peer, in order; a network another peer had moves here."""
        for network in networks:
            self.allowed_ips.insert(network, peer)

    def remove_allowed_ips(self, peer: Peer, networks: Iterable[Network]) -> None:
        """Stop routing `networks` to the peer (those it does not own are left alone)."""
        for network in networks:
            self.allowed_ips.remove(network, peer)

    # ------------------------------------------------------------------ sessions, indexes
    def _expire_keys(self, peer: Peer) -> None:
        """Forget every keypair and handshake of a peer (key change, removal, zeroing)."""
        for kp in peer.keypairs():
            self._discard_keypair(kp)
        peer.previous = peer.current = peer.next = None
        self._clear_handshake(peer)

    def _discard_keypair(self, kp: Keypair | None) -> None:
        if kp is not None:
            self.keypairs_by_index.pop(kp.local_index, None)
            kp.zero()

    def _clear_handshake(self, peer: Peer) -> None:
        if peer.handshake_index is not None:
            self.handshakes_by_index.pop(peer.handshake_index, None)
        peer.handshake_index = None
        peer.handshake_state = None

    def _new_index(self) -> int:
        """A random 32-bit index used by no keypair or handshake of ours (from os.urandom,
        read _INDEX_BATCH indexes at a time: one system call per batch, not per handshake)."""
        pool = self._index_pool
        while True:
            if not pool:
                pool.extend(_INDEX_BATCH.unpack(os.urandom(_INDEX_BATCH.size)))
            index = pool.pop()
            if index not in self.keypairs_by_index and index not in self.handshakes_by_index:
                return index

    def set_wall_clock(self, wall: float, now: float) -> None:
        """The wall clock (Unix seconds) reads `wall` at monotonic `now`. The caller
        passes it with its inputs (the device: time.time() with every batch), so the
        TAI64N timestamp of each initiation follows a clock set after start (a router
        that boots before NTP), as wireguard-go and the kernel read the clock for each
        initiation (whitepaper section 5.1; wireguard-go device/noise-protocol.go)."""
        self.wall_offset = wall - now

    def wall_time(self, now: float) -> float:
        """Wall-clock seconds at monotonic `now`, by the latest set_wall_clock."""
        return now + self.wall_offset

    def last_handshake_wall(self, peer: Peer) -> float | None:
        """Wall-clock time (Unix seconds) of the peer's latest handshake, or None."""
        return None if peer.last_handshake is None else self.wall_time(peer.last_handshake)

    # ------------------------------------------------------------------ outputs
    def take_datagrams(self) -> list[tuple[bytes, Any]]:
        """Datagrams queued since the last call, in order, as (datagram, endpoint)."""
        out = list(self._outgoing)
        self._outgoing.clear()
        return out

    def take_events(self) -> list[Event]:
        """Events since the last call, in order (at most MAX_PENDING_EVENTS: older ones
        were dropped and counted as events_dropped)."""
        out = list(self._events)
        self._events.clear()
        return out

    def _send(self, peer: Peer, datagram: bytes) -> None:
        if peer.endpoint is None:
            self.stats["no_endpoint"] += 1
            return
        peer.tx_bytes += len(datagram)
        self._outgoing.append((datagram, peer.endpoint))

    def _event(self, event: Event) -> None:
        events = self._events
        if len(events) >= MAX_PENDING_EVENTS:
            events.popleft()
            self.stats["events_dropped"] += 1
        events.append(event)
