"""The WireGuard protocol for one device, free of I/O.

`WireGuardProtocol` takes datagrams, packets from the TUN side and the current time, and
returns packets for the TUN side and datagrams to send; it never touches a socket or the
clock. The I/O layer (meshwg.device) calls:

- `encrypt_packets(packets, now)`     TUN -> network, returns [(datagram, endpoint), ...]
- `receive_transport(datagram, source, now)` network -> TUN for type-4 messages,
  returns the inner IP packet or None
- `receive_handshake(datagram, source, now)` types 1-3 (the slow path)
- `tick(now)`                          fires due timers
- `take_datagrams()`                   datagrams queued by the calls above and by config
- `next_deadline()`                    when tick should next run

Endpoints are opaque hashable addresses chosen by the I/O layer ((host, port) tuples).
Every counter of dropped input is in `stats`.
"""

from __future__ import annotations

import os
import struct
import threading
from collections import Counter, deque
from typing import Any, Iterable

from cryptography.exceptions import InvalidTag

from meshwg.core import messages, noise
from meshwg.core.allowedips import AllowedIPs
from meshwg.core.constants import (COOKIE_REPLY_SIZE, INITIATION_SIZE, MESSAGE_COOKIE_REPLY, MESSAGE_INITIATION,
                        MESSAGE_RESPONSE, PADDING_MULTIPLE, RESPONSE_SIZE,
                        UNDER_LOAD_HOLD_TIME, UNDER_LOAD_QUEUE_SIZE)
from meshwg.core.cookie import CookieChecker
from meshwg.core.crypto import DecryptionError, WeakKeyError, public_key, tai64n
from meshwg.core.deadlines import DeadlineQueue
from meshwg.core.keypair import Keypair
from meshwg.core.peer import Peer
from meshwg.core.ratelimiter import RateLimiter
from meshwg.core.timers import Timers

_HEADER = struct.Struct("<IIQ")
_NONCE_PREFIX = b"\x00\x00\x00\x00"
_PACK_Q = struct.Struct("<Q").pack
_NONCE = struct.Struct("<4xQ")           # the 12-byte AEAD nonce of a counter
_ZERO_PAD = bytes(PADDING_MULTIPLE)
_TRANSPORT_WORD = 4
_TRANSPORT_OVERHEAD = 32  # header + tag


class ProtocolEvent:
    """Base of the events the protocol reports to the layer above (discovery, logs)."""
    __slots__ = ("peer",)

    def __init__(self, peer: Peer):
        self.peer = peer


class HandshakeCompleted(ProtocolEvent):
    __slots__ = ()


class EndpointChanged(ProtocolEvent):
    __slots__ = ("endpoint",)

    def __init__(self, peer: Peer, endpoint: Any):
        super().__init__(peer)
        self.endpoint = endpoint


class WireGuardProtocol:
    def __init__(self, private_key: bytes | None = None, *, timers: Timers | None = None,
                 mtu: int = 1420, wall_offset: float = 0.0,
                 address_bytes=None):
        self.timers = timers or Timers()
        self.mtu = mtu
        self.wall_offset = wall_offset          # wall clock = monotonic now + wall_offset
        self.lock = threading.RLock()           # held by the slow paths and configuration
        self._admission_lock = threading.Lock() # cookie checker and rate limiter (receive thread)
        self.private_key: bytes | None = None
        self.public_key: bytes | None = None
        self.cookie_checker: CookieChecker | None = None
        self.peers: dict[bytes, Peer] = {}
        self.deadlines = DeadlineQueue()        # peers by earliest timer (next_deadline, tick)
        self._peer_order = 0
        self.allowed_ips = AllowedIPs()
        self.keypairs_by_index: dict[int, Keypair] = {}
        self.handshakes_by_index: dict[int, Peer] = {}
        self.rate_limiter = RateLimiter()
        self.handshake_backlog = 0
        self._under_load_until = 0.0
        self._initiations_window_start = 0.0
        self._initiations_in_window = 0
        self.under_load_rate = 1000  # handshake messages with a valid mac1 per second
        self.stats: Counter[str] = Counter()
        self.events: deque[ProtocolEvent] = deque(maxlen=4096)
        self._outgoing: deque[tuple[bytes, Any]] = deque()
        # address_bytes(endpoint) -> (ip bytes, cookie source bytes); set by the I/O layer
        self.address_bytes = address_bytes or _default_address_bytes
        if private_key is not None:
            self.set_private_key(private_key)

    # ------------------------------------------------------------------ configuration
    def set_private_key(self, private_key: bytes | None) -> None:
        with self.lock:
            if private_key == bytes(32):
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
                peer.set_local_static(self.private_key, self.public_key)
                self._expire_keys(peer)

    def add_peer(self, public_key_: bytes) -> Peer:
        with self.lock:
            peer = self.peers.get(public_key_)
            if peer is None:
                peer = Peer(public_key_, cookie_refresh_time=self.timers.cookie_refresh_time)
                peer.set_local_static(self.private_key, self.public_key)
                self._peer_order += 1
                peer.order = self._peer_order      # tick visits due peers in this order
                self.peers[public_key_] = peer
                self.deadlines.attach(peer)
            return peer

    def remove_peer(self, public_key_: bytes) -> None:
        with self.lock:
            peer = self.peers.pop(public_key_, None)
            if peer is None:
                return
            self.deadlines.detach(peer)
            self.allowed_ips.remove_peer(peer)
            self._expire_keys(peer)
            peer.staged.clear()

    def set_persistent_keepalive(self, peer: Peer, interval: int, now: float) -> None:
        with self.lock:
            was_off = peer.persistent_keepalive == 0
            peer.persistent_keepalive = interval
            if interval == 0:
                peer.persistent_keepalive_at = None
            elif was_off and self.private_key is not None:
                self.send_keepalive(peer, now)

    def set_preshared_key(self, peer: Peer, psk: bytes | None) -> None:
        peer.preshared_key = psk or bytes(32)

    def set_endpoint(self, peer: Peer, endpoint: Any) -> None:
        peer.endpoint = endpoint

    def _expire_keys(self, peer: Peer) -> None:
        """Forget every keypair and handshake of a peer (key change, removal, zeroing)."""
        for kp in peer.keypairs():
            self.keypairs_by_index.pop(kp.local_index, None)
            kp.zero()
        peer.previous = peer.current = peer.next = None
        self._clear_handshake(peer)

    def _clear_handshake(self, peer: Peer) -> None:
        if peer.handshake_index is not None:
            self.handshakes_by_index.pop(peer.handshake_index, None)
        peer.handshake_index = None
        peer.handshake_state = None

    def _new_index(self) -> int:
        while True:
            index = int.from_bytes(os.urandom(4), "little")
            if index not in self.keypairs_by_index and index not in self.handshakes_by_index:
                return index

    def wall_time(self, now: float) -> float:
        return now + self.wall_offset

    # ------------------------------------------------------------------ output queue
    def take_datagrams(self) -> list[tuple[bytes, Any]]:
        out = []
        q = self._outgoing
        while q:
            try:
                out.append(q.popleft())
            except IndexError:
                break
        return out

    def _send(self, peer: Peer, datagram: bytes, now: float) -> None:
        if peer.endpoint is None:
            self.stats["no_endpoint"] += 1
            return
        peer.tx_bytes += len(datagram)
        self._outgoing.append((datagram, peer.endpoint))

    # ------------------------------------------------------------------ data path: out
    def encrypt_packets(self, packets: Iterable[bytes], now: float) -> list[tuple[bytes, Any]]:
        """Route and seal IP packets from the TUN device. Packets without a route are
        dropped; packets for a peer without a usable keypair are staged and a handshake
        is started. Returns (datagram, endpoint) pairs (encrypt_batch, one per datagram)."""
        out: list[tuple[bytes, Any]] = []
        for view, size, endpoint in self.encrypt_batch(packets, now):
            data = bytes(view)
            out.extend((data[i:i + size], endpoint) for i in range(0, len(data), size))
        return out

    def encrypt_batch(self, packets: Iterable, now: float, buf: bytearray | None = None,
                      max_run_bytes: int = 65000, max_run_datagrams: int = 64
                      ) -> list[tuple[memoryview, int, Any]]:
        """Route and seal IP packets (bytes or memoryviews, each read only until the next
        is taken from `packets`) into transport datagrams laid out for UDP GSO.

        Returns runs (view, size, endpoint): each view holds consecutive datagrams for one
        endpoint, every one `size` bytes but the last, which may be shorter; a run has at
        most `max_run_datagrams` datagrams and `max_run_bytes` bytes. The views point into
        `buf` (reused by the caller; a new buffer is taken when it is full) and are valid
        until it is reused. Each datagram is sealed straight into its place (header packed
        in place, AEAD encrypt_into); packets that need padding go through a scratch copy.

        Bookkeeping is per run of consecutive packets to one peer, with the same effect
        as per packet: one route lookup per destination address, one keypair check, the
        tx counter, timers and the rekey check once (all packets share `now`)."""
        if buf is None:
            buf = bytearray(65536)
        runs: list[tuple[memoryview, int, Any]] = []
        mv = memoryview(buf)
        cap = len(buf)
        off = 0                   # write position in buf
        run_start = 0             # start of the open run in buf (run_count > 0)
        run_size = run_count = 0
        run_endpoint = None
        run_closed = False
        lookup = self.allowed_ips.lookup
        stats = self.stats
        timers = self.timers
        reject_messages = timers.reject_after_messages
        mtu = self.mtu
        header_into = _HEADER.pack_into
        nonce_of = _NONCE.pack
        scratch = bytearray(mtu + PADDING_MULTIPLE)
        scratch_mv = memoryview(scratch)
        last_dst = None
        peer = None               # peer of the open peer-run
        endpoint = None
        kp = None
        seal = counters = None    # None: the peer cannot send now (packets are staged)
        remote_index = 0
        sent_bytes = 0
        sent_data = False
        last_counter = -1
        for packet in packets:
            n = len(packet)
            if not n:
                continue
            version = packet[0] >> 4
            if version == 4 and n >= 20:
                dst = packet[16:20]
            elif version == 6 and n >= 40:
                dst = packet[24:40]
            else:
                stats["tun_malformed"] += 1
                continue
            if dst != last_dst:
                if type(dst) is not bytes:
                    dst = bytes(dst)
                    if dst == last_dst:
                        target = peer
                    else:
                        target = lookup(dst)
                else:
                    target = lookup(dst)
                last_dst = dst
                if target is None:
                    last_dst = None
                    stats["no_route"] += 1
                    continue
                if target is not peer:
                    if peer is not None and last_counter >= 0:
                        self._sent_data(peer, kp, sent_bytes, sent_data, last_counter, now)
                    peer = target
                    sent_bytes = 0
                    sent_data = False
                    last_counter = -1
                    kp = peer.current
                    endpoint = peer.endpoint
                    seal = None
                    if (kp is not None and endpoint is not None
                            and now - kp.created < timers.reject_after_time):
                        aead = kp.send_aead
                        if aead is not None:
                            seal = aead.encrypt_into
                            counters = kp._counter
                            remote_index = kp.remote_index
            if seal is None:
                self._stage(peer, packet if type(packet) is bytes else bytes(packet), now)
                continue
            counter = next(counters)
            if counter >= reject_messages:
                self._stage(peer, packet if type(packet) is bytes else bytes(packet), now)
                continue
            pad = -n % PADDING_MULTIPLE
            if pad and n + pad > mtu:
                pad = max(0, mtu - n)
            size = n + pad + _TRANSPORT_OVERHEAD
            if run_count and (run_closed or size > run_size or endpoint != run_endpoint
                              or run_count >= max_run_datagrams
                              or off - run_start + size > max_run_bytes):
                runs.append((mv[run_start:off], run_size, run_endpoint))
                run_count = 0
            if off + size > cap:          # buffer full: the rest goes into a new one
                if run_count:
                    runs.append((mv[run_start:off], run_size, run_endpoint))
                    run_count = 0
                buf = bytearray(max(cap, 65536))
                mv = memoryview(buf)
                cap = len(buf)
                off = 0
            if not run_count:
                run_start = off
                run_size = size
                run_endpoint = endpoint
                run_closed = False
            elif size < run_size:
                run_closed = True         # a shorter datagram ends its run
            run_count += 1
            if pad:
                scratch[:n] = packet
                scratch[n:n + pad] = _ZERO_PAD[:pad]
                plain = scratch_mv[:n + pad]
            else:
                plain = packet
            header_into(buf, off, _TRANSPORT_WORD, remote_index, counter)
            try:
                seal(nonce_of(counter), plain, None, mv[off + 16:off + size])
            except (TypeError, AttributeError, ValueError):
                stats["seal_failed"] += 1
                run_count -= 1
                continue
            off += size
            sent_bytes += size
            last_counter = counter
            if n:
                sent_data = True
        if run_count:
            runs.append((mv[run_start:off], run_size, run_endpoint))
        if peer is not None and last_counter >= 0:
            self._sent_data(peer, kp, sent_bytes, sent_data, last_counter, now)
        return runs

    def _sent_data(self, peer: Peer, kp: Keypair, sent_bytes: int, data: bool,
                   last_counter: int, now: float) -> None:
        """Bookkeeping after sealing transport packets for `peer` (one batch's worth):
        tx counter, timers (authenticated packet sent; data sent) and the rekey check."""
        timers = self.timers
        peer.tx_bytes += sent_bytes
        peer.keepalive_at = None
        if data and peer.new_handshake_at is None:
            peer.new_handshake_at = now + timers.keepalive_timeout + timers.rekey_timeout + timers.jitter()
        if peer.persistent_keepalive:
            peer.persistent_keepalive_at = now + peer.persistent_keepalive
        if (last_counter >= timers.rekey_after_messages
                or (kp.is_initiator and now - kp.created >= timers.rekey_after_time)):
            self._maybe_initiate(peer, now)

    def _seal(self, peer: Peer, packet: bytes, now: float) -> bytes | None:
        kp = peer.current
        timers = self.timers
        if (kp is None or peer.endpoint is None or kp.send_aead is None
                or now - kp.created >= timers.reject_after_time):
            self._stage(peer, packet, now)
            return None
        counter = kp.next_counter()
        if counter >= timers.reject_after_messages:
            self._stage(peer, packet, now)
            return None
        length = len(packet)
        pad = -length % PADDING_MULTIPLE
        if pad and length + pad > self.mtu:
            pad = max(0, self.mtu - length)
        try:
            sealed = kp.send_aead.encrypt(_NONCE_PREFIX + _PACK_Q(counter),
                                          packet + _ZERO_PAD[:pad] if pad else packet, None)
        except (TypeError, AttributeError):  # keypair zeroed under our feet
            self._stage(peer, packet, now)
            return None
        datagram = _HEADER.pack(_TRANSPORT_WORD, kp.remote_index, counter) + sealed
        peer.tx_bytes += len(datagram)
        # timers: any authenticated packet sent, data sent
        peer.keepalive_at = None
        if length and peer.new_handshake_at is None:
            peer.new_handshake_at = now + timers.keepalive_timeout + timers.rekey_timeout + timers.jitter()
        if peer.persistent_keepalive:
            peer.persistent_keepalive_at = now + peer.persistent_keepalive
        # keep the key fresh
        if (counter >= timers.rekey_after_messages
                or (kp.is_initiator and now - kp.created >= timers.rekey_after_time)):
            self._maybe_initiate(peer, now)
        return datagram

    def _stage(self, peer: Peer, packet: bytes, now: float) -> None:
        peer.staged.append(packet)
        self._maybe_initiate(peer, now)

    def send_keepalive(self, peer: Peer, now: float) -> None:
        """Send staged packets, or an empty keepalive when none are staged."""
        with self.lock:
            if not peer.staged:
                peer.staged.append(b"")
            self._flush_staged(peer, now)

    def _flush_staged(self, peer: Peer, now: float) -> None:
        kp = peer.current
        if kp is None or peer.endpoint is None or now - kp.created >= self.timers.reject_after_time:
            self._maybe_initiate(peer, now)
            return
        staged = list(peer.staged)
        peer.staged.clear()
        for packet in staged:
            datagram = self._seal(peer, packet, now)
            if datagram is not None:
                self._outgoing.append((datagram, peer.endpoint))

    # ------------------------------------------------------------------ data path: in
    def receive_transport(self, datagram: bytes, source: Any, now: float) -> bytes | None:
        """Open a type-4 message. Returns the inner IP packet to write to the TUN device, or
        None (keepalive, or dropped and counted). One datagram of receive_transport_batch."""
        if len(datagram) < _TRANSPORT_OVERHEAD or datagram[0] != _TRANSPORT_WORD:
            self.stats["malformed"] += 1
            return None
        packets, _ = self.receive_transport_batch(((datagram, len(datagram), source),), now,
                                                  bytearray(len(datagram)))
        return bytes(packets[0]) if packets else None

    def receive_transport_batch(self, batches: Iterable[tuple[Any, int, Any]], now: float,
                                out: bytearray | None = None
                                ) -> tuple[list[memoryview], list[tuple[bytes, Any]]]:
        """Open type-4 messages. `batches` holds (data, size, source): datagrams from one
        source laid back to back, each `size` bytes but the last (what one UDP GRO receive
        returns; a single datagram is (datagram, len(datagram), source)).

        Returns (inner IP packets for the TUN device, (datagram, source) of other types).
        Each packet is decrypted straight into `out` (the caller's reused buffer; a new
        one is taken when it is full) and returned as a view valid until `out` is reused.
        Dropped datagrams are counted in `stats` as receive_transport counts them.
        Bookkeeping is per run of consecutive datagrams to one keypair from one source,
        with the same effect as per datagram: one keypair lookup and expiry check, then
        endpoint, rx counter, timers and the rekey-on-receive check once."""
        packets: list[memoryview] = []
        others: list[tuple[bytes, Any]] = []
        if out is None:
            out = bytearray(65536)
        omv = memoryview(out)
        cap = len(out)
        po = 0
        stats = self.stats
        timers = self.timers
        reject_time = timers.reject_after_time
        reject_messages = timers.reject_after_messages
        keypairs = self.keypairs_by_index
        lookup = self.allowed_ips.lookup
        unpack_header = _HEADER.unpack_from
        nonce_of = _NONCE.pack
        last_receiver = None
        kp = None                 # keypair of the open run (None: none open)
        run_source = None
        run_bytes = 0
        run_data = False
        run_authenticated = False
        open_ = replay = None
        peer = None
        last_src = None
        src_ok = False
        for data, size, source in batches:
            total = len(data)
            if size <= 0:
                size = total or 1
            dmv = memoryview(data)
            if source != run_source and kp is not None:
                if run_authenticated:
                    self._received(peer, kp, run_source, run_bytes, run_data, now)
                run_bytes = 0
                run_data = run_authenticated = False
            run_source = source
            for o in range(0, total, size):
                end = o + size
                if end > total:
                    end = total
                dlen = end - o
                if data[o] != _TRANSPORT_WORD:
                    others.append((bytes(dmv[o:end]), source))
                    continue
                if dlen < _TRANSPORT_OVERHEAD:
                    stats["malformed"] += 1
                    continue
                word, receiver, counter = unpack_header(data, o)
                if word != _TRANSPORT_WORD:
                    stats["malformed"] += 1
                    continue
                if receiver != last_receiver:
                    if kp is not None and run_authenticated:
                        self._received(peer, kp, run_source, run_bytes, run_data, now)
                    run_bytes = 0
                    run_data = run_authenticated = False
                    last_src = None
                    last_receiver = receiver
                    kp = keypairs.get(receiver)
                    open_ = None
                    if kp is not None:
                        aead = kp.receive_aead
                        if aead is not None:
                            open_ = aead.decrypt_into
                            replay = kp.replay.check
                            peer = kp.peer
                            if now - kp.created >= reject_time:
                                open_ = False
                    if open_ is None:
                        kp = None
                if open_ is None:
                    stats["unknown_index"] += 1
                    continue
                if open_ is False or counter >= reject_messages:
                    stats["expired_keypair"] += 1
                    continue
                plen = dlen - _TRANSPORT_OVERHEAD
                if po + plen > cap:
                    out = bytearray(max(cap, 65536))
                    omv = memoryview(out)
                    cap = len(out)
                    po = 0
                try:
                    open_(nonce_of(counter), dmv[o + 16:end], None, omv[po:po + plen])
                except (InvalidTag, TypeError, AttributeError, ValueError):
                    stats["decrypt_failed"] += 1
                    continue
                if not replay(counter):
                    stats["replayed"] += 1
                    continue
                run_authenticated = True
                run_bytes += dlen
                if not plen:
                    stats["keepalives_received"] += 1
                    continue
                version = out[po] >> 4
                if version == 4 and plen >= 20:
                    length = (out[po + 2] << 8) | out[po + 3]
                    src = out[po + 12:po + 16]
                elif version == 6 and plen >= 40:
                    length = ((out[po + 4] << 8) | out[po + 5]) + 40
                    src = out[po + 8:po + 24]
                else:
                    stats["inner_malformed"] += 1
                    continue
                if length > plen or length < 20:
                    stats["inner_malformed"] += 1
                    continue
                if src != last_src:
                    last_src = bytes(src)
                    src_ok = lookup(last_src) is peer
                if not src_ok:
                    stats["inner_source_not_allowed"] += 1
                    continue
                run_data = True
                packets.append(omv[po:po + length])
                po += (plen + 15) & ~15
        if kp is not None and run_authenticated:
            self._received(peer, kp, run_source, run_bytes, run_data, now)
        return packets, others

    def _received(self, peer: Peer, kp: Keypair, source: Any, rx_bytes: int, data: bool,
                  now: float) -> None:
        """Bookkeeping after authenticated transport datagrams from `source` to `kp`:
        roaming, confirming the responder's next keypair, rx counter, timers and the
        initiator's rekey on receive."""
        if peer.endpoint != source:
            peer.endpoint = source
            self.events.append(EndpointChanged(peer, source))
        if kp is peer.next:
            self._confirm_next_keypair(peer, kp, now)
        peer.rx_bytes += rx_bytes
        timers = self.timers
        # timers: any authenticated packet received / traversal
        peer.new_handshake_at = None
        if peer.persistent_keepalive:
            peer.persistent_keepalive_at = now + peer.persistent_keepalive
        if kp.is_initiator and kp is peer.current and now - kp.created >= timers.rekey_on_receive_age:
            self._maybe_initiate(peer, now)
        if data and peer.keepalive_at is None:   # data received: answer within KEEPALIVE_TIMEOUT
            peer.keepalive_at = now + timers.keepalive_timeout

    def _confirm_next_keypair(self, peer: Peer, kp: Keypair, now: float) -> None:
        with self.lock:
            if peer.next is not kp:
                return
            self._discard_keypair(peer.previous)
            peer.previous = peer.current
            peer.current = kp
            peer.next = None
            peer.last_handshake = now        # handshake complete, responder side
            peer.retransmit_at = None        # a handshake of our own is no longer needed
            peer.handshake_attempts = 0
            self.events.append(HandshakeCompleted(peer))
            # we can now send: flush what waited for this keypair
            if peer.staged:
                self._flush_staged(peer, now)

    # ------------------------------------------------------------------ handshakes
    def is_under_load(self, now: float) -> bool:
        if self.handshake_backlog >= UNDER_LOAD_QUEUE_SIZE:
            self._under_load_until = now + UNDER_LOAD_HOLD_TIME
        return now < self._under_load_until

    def _count_handshake_rate(self, now: float) -> None:
        if now - self._initiations_window_start >= 1.0:
            self._initiations_window_start = now
            self._initiations_in_window = 0
        self._initiations_in_window += 1
        if self._initiations_in_window > self.under_load_rate:
            self._under_load_until = now + UNDER_LOAD_HOLD_TIME

    def admit_handshake(self, datagram: bytes, source: Any, now: float) -> bool:
        """The cheap checks, done on the receive thread before a handshake message is queued
        for the expensive work: type and exact size, mac1; under load also mac2 (answering
        with a cookie reply instead) and the per-source rate limit. Under a flood this keeps
        the queue for messages that can succeed. A message admitted here is then processed
        with receive_handshake(..., admitted=True), which does not check again."""
        kind = messages.message_type(datagram)
        size = len(datagram)
        if kind == MESSAGE_COOKIE_REPLY and size == COOKIE_REPLY_SIZE:
            return True
        if not ((kind == MESSAGE_INITIATION and size == INITIATION_SIZE)
                or (kind == MESSAGE_RESPONSE and size == RESPONSE_SIZE)):
            self.stats["malformed"] += 1
            return False
        sender = int.from_bytes(datagram[4:8], "little")
        with self._admission_lock:
            return self._check_macs(datagram, sender, source, now)

    def receive_handshake(self, datagram: bytes, source: Any, now: float, admitted: bool = False) -> None:
        """Process a type 1, 2 or 3 message. Replies go to the output queue."""
        kind = messages.message_type(datagram)
        with self.lock:
            try:
                if kind == MESSAGE_INITIATION:
                    self._receive_initiation(datagram, source, now, admitted)
                elif kind == MESSAGE_RESPONSE:
                    self._receive_response(datagram, source, now, admitted)
                elif kind == MESSAGE_COOKIE_REPLY:
                    self._receive_cookie_reply(datagram, now)
                else:
                    self.stats["malformed"] += 1
            except messages.MalformedPacket:
                self.stats["malformed"] += 1
            except (DecryptionError, WeakKeyError, InvalidTag):
                self.stats["handshake_failed"] += 1

    def _check_macs(self, datagram: bytes, sender_index: int, source: Any, now: float) -> bool:
        """mac1 always; under load mac2 too (else answer with a cookie) and the per-source
        rate limit. Returns True when the message may be processed."""
        checker = self.cookie_checker
        if checker is None:
            self.stats["no_private_key"] += 1
            return False
        if not checker.verify_mac1(datagram):
            self.stats["bad_mac1"] += 1
            return False
        self._count_handshake_rate(now)
        if not self.is_under_load(now):
            return True
        ip_bytes, source_bytes = self.address_bytes(source)
        if not checker.verify_mac2(datagram, source_bytes, now):
            reply = checker.create_reply(datagram, sender_index, source_bytes, now)
            self.stats["cookie_replies_sent"] += 1
            self._outgoing.append((reply, source))
            return False
        if not self.rate_limiter.allow(ip_bytes, now):
            self.stats["rate_limited"] += 1
            return False
        return True

    def _receive_initiation(self, datagram: bytes, source: Any, now: float, admitted: bool = False) -> None:
        msg = messages.parse_initiation(datagram)
        if not admitted and not self._check_macs(datagram, msg.sender, source, now):
            return
        state = noise.read_message1(
            self.private_key, self.public_key,
            noise.Message1(msg.ephemeral, msg.encrypted_static, msg.encrypted_timestamp),
            precomputed=self._own_initial_state())
        peer = self.peers.get(state.remote_static_public)
        if peer is None:
            self.stats["unknown_peer"] += 1
            return
        timestamp = state.payload
        if timestamp <= peer.last_timestamp:
            self.stats["replayed_initiation"] += 1
            return
        if (peer.last_initiation_consumed is not None
                and now - peer.last_initiation_consumed < 1 / 50):
            self.stats["initiation_flood"] += 1
            return
        peer.last_timestamp = timestamp
        peer.last_initiation_consumed = now
        peer.new_handshake_at = None       # an authenticated packet arrived
        # respond
        msg2, keys = noise.write_message2(state, peer.preshared_key)
        index = self._new_index()
        response = messages.Response(index, msg.sender, msg2.ephemeral, msg2.encrypted_payload).build()
        response = peer.cookie_generator.add_macs(response, now)
        kp = Keypair(keys, index, msg.sender, False, now, peer)
        self._discard_keypair(peer.next)
        peer.next = kp
        self.keypairs_by_index[index] = kp
        if peer.endpoint != source:
            peer.endpoint = source
            self.events.append(EndpointChanged(peer, source))
        peer.rx_bytes += len(datagram)
        self._session_derived(peer, now)
        self._send(peer, response, now)
        self._sent_authenticated(peer, now)

    def _own_initial_state(self) -> tuple[bytes, bytes]:
        cached = getattr(self, "_own_initial_cache", None)
        if cached is None or cached[0] != self.public_key:
            cached = (self.public_key, noise.initial_state(self.public_key))
            self._own_initial_cache = cached
        return cached[1]

    def _receive_response(self, datagram: bytes, source: Any, now: float, admitted: bool = False) -> None:
        msg = messages.parse_response(datagram)
        if not admitted and not self._check_macs(datagram, msg.sender, source, now):
            return
        peer = self.handshakes_by_index.get(msg.receiver)
        if peer is None or peer.handshake_state is None:
            self.stats["unknown_index"] += 1
            return
        _, keys = noise.read_message2(peer.handshake_state, peer.preshared_key,
                                      noise.Message2(msg.ephemeral, msg.encrypted_nothing))
        index = peer.handshake_index
        self._clear_handshake(peer)
        kp = Keypair(keys, index, msg.sender, True, now, peer)
        self.keypairs_by_index[index] = kp
        # rotate as wireguard-go does: previous <- next (or current), current <- new
        old_previous, old_current, old_next = peer.previous, peer.current, peer.next
        if old_next is not None:
            peer.previous, peer.next = old_next, None
            self._discard_keypair(old_current)
        else:
            peer.previous = old_current
        self._discard_keypair(old_previous)
        peer.current = kp
        if peer.endpoint != source:
            peer.endpoint = source
            self.events.append(EndpointChanged(peer, source))
        peer.rx_bytes += len(datagram)
        peer.last_handshake = now
        peer.handshake_attempts = 0
        peer.retransmit_at = None
        peer.new_handshake_at = None
        self._session_derived(peer, now)
        self.events.append(HandshakeCompleted(peer))
        # send what was staged, or a keepalive to confirm the keypair to the responder
        self.send_keepalive(peer, now)

    def _receive_cookie_reply(self, datagram: bytes, now: float) -> None:
        msg = messages.parse_cookie_reply(datagram)
        peer = self.handshakes_by_index.get(msg.receiver)
        if peer is None:
            kp = self.keypairs_by_index.get(msg.receiver)
            peer = kp.peer if kp is not None else None
        if peer is None:
            self.stats["unknown_index"] += 1
            return
        if peer.cookie_generator.consume_reply(msg, now):
            self.stats["cookie_replies_accepted"] += 1
        else:
            self.stats["bad_cookie_reply"] += 1

    def _session_derived(self, peer: Peer, now: float) -> None:
        peer.zero_keys_at = now + self.timers.key_zeroing_time

    def _discard_keypair(self, kp: Keypair | None) -> None:
        if kp is not None:
            self.keypairs_by_index.pop(kp.local_index, None)
            kp.zero()

    def _sent_authenticated(self, peer: Peer, now: float) -> None:
        peer.keepalive_at = None
        if peer.persistent_keepalive:
            peer.persistent_keepalive_at = now + peer.persistent_keepalive

    def _maybe_initiate(self, peer: Peer, now: float) -> None:
        """Start a handshake unless one was sent less than REKEY_TIMEOUT ago."""
        with self.lock:
            if peer.last_initiation_sent is not None and now - peer.last_initiation_sent < self.timers.rekey_timeout:
                return
            peer.handshake_attempts = 0
            self._send_initiation(peer, now)

    def initiate_handshake(self, peer: Peer, now: float) -> None:
        """Start a handshake now (used by `wg`-style forced handshakes and tests)."""
        with self.lock:
            peer.handshake_attempts = 0
            self._send_initiation(peer, now)

    PROBE_MIN_INTERVAL = 0.5

    def probe(self, peer: Peer, candidates: list[Any], now: float) -> bool:
        """Send one handshake initiation to each candidate endpoint without changing the
        peer's endpoint: if a candidate answers with an authenticated response, roaming
        moves the endpoint there. Candidates never replace a working endpoint unheard.
        Returns False when rate-limited (one probe round per PROBE_MIN_INTERVAL)."""
        with self.lock:
            if self.private_key is None or peer.static_static is None or not candidates:
                return False
            last = getattr(peer, "last_probe", None)
            if last is not None and now - last < self.PROBE_MIN_INTERVAL:
                self.stats["probe_rate_limited"] += 1
                return False
            peer.last_probe = now
            packet = self._new_initiation(peer, now)
            for endpoint in candidates:
                peer.tx_bytes += len(packet)
                self._outgoing.append((packet, endpoint))
            self.stats["probes_sent"] += len(candidates)
            return True

    def _new_initiation(self, peer: Peer, now: float) -> bytes:
        self._clear_handshake(peer)
        index = self._new_index()
        msg1, state = noise.write_message1(
            self.private_key, peer.public_key, tai64n(self.wall_time(now)),
            precomputed=peer.precomputed, static_static=peer.static_static)
        packet = messages.Initiation(index, msg1.ephemeral, msg1.encrypted_static,
                                     msg1.encrypted_payload).build()
        packet = peer.cookie_generator.add_macs(packet, now)
        peer.handshake_state = state
        peer.handshake_index = index
        self.handshakes_by_index[index] = peer
        return packet

    def _send_initiation(self, peer: Peer, now: float) -> None:
        if self.private_key is None or peer.static_static is None:
            return
        peer.last_initiation_sent = now
        peer.retransmit_at = now + self.timers.rekey_timeout + self.timers.jitter()
        if peer.endpoint is None:
            self.stats["no_endpoint"] += 1
            return
        packet = self._new_initiation(peer, now)
        self.stats["initiations_sent"] += 1
        self._send(peer, packet, now)
        self._sent_authenticated(peer, now)

    # ------------------------------------------------------------------ timers
    def next_deadline(self) -> float | None:
        """The earliest armed timer of all peers (None: none armed). O(log peers)."""
        return self.deadlines.earliest()

    def tick(self, now: float) -> None:
        """Fire the timers due at `now`. Visits only the peers with something due (and
        those whose persistent keepalive waits to be armed), in the order they were
        added: the same effects, in the same order, as visiting every peer."""
        with self.lock:
            queue = self.deadlines
            for peer in queue.take_due(now):
                self._tick_peer(peer, now)
                queue.requeue(peer)

    def _tick_peer(self, peer: Peer, now: float) -> None:
        timers = self.timers
        if peer.retransmit_at is not None and now >= peer.retransmit_at:
            peer.retransmit_at = None
            if peer.handshake_attempts >= timers.max_handshake_attempts:
                # give up: drop what waited, and forget the keys later
                peer.staged.clear()
                self._clear_handshake(peer)
                peer.handshake_attempts = 0
                if peer.zero_keys_at is None:
                    peer.zero_keys_at = now + timers.key_zeroing_time
                self.stats["handshake_gave_up"] += 1
            else:
                peer.handshake_attempts += 1
                self._send_initiation(peer, now)
        if peer.keepalive_at is not None and now >= peer.keepalive_at:
            peer.keepalive_at = None
            self.send_keepalive(peer, now)
        if peer.new_handshake_at is not None and now >= peer.new_handshake_at:
            # we sent data and heard nothing back: the peer may have lost its keys
            peer.new_handshake_at = None
            self._maybe_initiate(peer, now)
        if peer.persistent_keepalive_at is not None and now >= peer.persistent_keepalive_at:
            peer.persistent_keepalive_at = None
            if peer.persistent_keepalive:
                self.send_keepalive(peer, now)
        elif peer.persistent_keepalive and peer.persistent_keepalive_at is None:
            peer.persistent_keepalive_at = now + peer.persistent_keepalive
        if peer.zero_keys_at is not None and now >= peer.zero_keys_at:
            peer.zero_keys_at = None
            self._expire_keys(peer)
            self.stats["keys_zeroed"] += 1

    # ------------------------------------------------------------------ status
    def last_handshake_wall(self, peer: Peer) -> float | None:
        return None if peer.last_handshake is None else self.wall_time(peer.last_handshake)


def _default_address_bytes(endpoint: Any) -> tuple[bytes, bytes]:
    host, port = endpoint[0], endpoint[1]
    return host.encode(), f"{host}|{port}".encode()
