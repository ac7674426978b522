"""The handshake side of the protocol: admission of handshake messages (the cheap checks),
initiation / response / cookie reply processing, starting handshakes and probes. No I/O.

A handshake message is classified once, in admit_handshake, which the receive side calls
on the device's receive thread; what passes comes back as an AdmittedHandshake (kind,
datagram, source) that process_handshake (the device's handshake worker) finishes without
looking at the type or the MACs again.

Mixed into WireGuardProtocol (meshwg.core.protocol), whose keys, peers, indexes, timers,
counters and output queue it uses.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, NamedTuple

from meshwg.core import messages, noise
from meshwg.core.constants import (COOKIE_REPLY_SIZE, HANDSHAKE_INITIATION_RATE,
                                   INITIATION_SIZE, MESSAGE_COOKIE_REPLY, MESSAGE_INITIATION,
                                   MESSAGE_RESPONSE, RESPONSE_SIZE, UNDER_LOAD_HOLD_TIME,
                                   UNDER_LOAD_QUEUE_SIZE)
from meshwg.core.crypto import DecryptionError, WeakKeyError, tai64n
from meshwg.core.events import EndpointChanged, HandshakeCompleted, ProbeAnswered
from meshwg.core.keypair import Keypair

if TYPE_CHECKING:
    from meshwg.core.peer import Peer
    from meshwg.core.protocol import WireGuardProtocol

_SIZES = {MESSAGE_INITIATION: INITIATION_SIZE, MESSAGE_RESPONSE: RESPONSE_SIZE,
          MESSAGE_COOKIE_REPLY: COOKIE_REPLY_SIZE}


class AdmittedHandshake(NamedTuple):
    """A handshake message that passed admission: its type (1, 2 or 3), the datagram
    and the endpoint it came from."""
    kind: int
    datagram: bytes
    source: Any


class Handshakes:
    """Admission, processing, initiation and probes of handshake messages."""

    PROBE_MIN_INTERVAL = 0.5
    # The compiled handshake chain (meshwg.accel._noise) or None for the Python one; the
    # device sets it with the data path (meshwg.accel.select_handshake). Same bytes either way.
    handshake_accel: Any = None

    # ------------------------------------------------------------------ admission
    def is_under_load(self: WireGuardProtocol, now: float, handshake_backlog: int = 0) -> bool:
        """True while handshake messages must carry a valid mac2 (a cookie): the backlog
        reached UNDER_LOAD_QUEUE_SIZE, or more than `under_load_rate` messages with a
        valid mac1 came in one second, within the last UNDER_LOAD_HOLD_TIME."""
        if handshake_backlog >= UNDER_LOAD_QUEUE_SIZE:
            self._under_load_until = now + UNDER_LOAD_HOLD_TIME
        return now < self._under_load_until

    def _count_handshake_rate(self: WireGuardProtocol, now: float) -> None:
        if now - self._initiations_window_start >= 1.0:
            self._initiations_window_start = now
            self._initiations_in_window = 0
        self._initiations_in_window += 1
        if self._initiations_in_window > self.under_load_rate:
            self._under_load_until = now + UNDER_LOAD_HOLD_TIME

    def admit_handshake(self: WireGuardProtocol, datagram: bytes, source: Any, now: float,
                        handshake_backlog: int = 0) -> AdmittedHandshake | None:
        """The cheap checks of a message that is not transport data: type and exact size,
        mac1; under load also mac2 (answering with a cookie reply instead) and the
        per-source rate limit. Under a flood this keeps the backlog for messages that can
        succeed. Returns the admitted message, or None (dropped and counted)."""
        kind = messages.message_type(datagram)
        if _SIZES.get(kind) != len(datagram):
            self.stats["malformed"] += 1
            return None
        if kind == MESSAGE_COOKIE_REPLY:
            return AdmittedHandshake(kind, datagram, source)
        checker = self.cookie_checker
        if checker is None:
            self.stats["no_private_key"] += 1
            return None
        if not checker.verify_mac1(datagram):
            self.stats["bad_mac1"] += 1
            return None
        self._count_handshake_rate(now)
        if not self.is_under_load(now, handshake_backlog):
            return AdmittedHandshake(kind, datagram, source)
        ip_bytes, source_bytes = self.address_bytes(source)
        if not checker.verify_mac2(datagram, source_bytes, now):
            sender = int.from_bytes(datagram[4:8], "little")
            reply = checker.create_reply(datagram, sender, source_bytes, now)
            self.stats["cookie_replies_sent"] += 1
            self._outgoing.append((reply, source))
            return None
        if not self.rate_limiter.allow(ip_bytes, now):
            self.stats["rate_limited"] += 1
            return None
        return AdmittedHandshake(kind, datagram, source)

    # ------------------------------------------------------------------ processing
    def process_handshake(self: WireGuardProtocol, handshake: AdmittedHandshake,
                          now: float) -> None:
        """The expensive part of an admitted handshake message (Diffie-Hellman, AEAD).
        Replies go to the output queue; failures are counted in `stats`."""
        kind, datagram, source = handshake
        if kind == MESSAGE_COOKIE_REPLY:
            self._receive_cookie_reply(datagram, now)
            return
        if self.private_key is None:          # removed since admission
            self.stats["no_private_key"] += 1
            return
        try:
            if kind == MESSAGE_INITIATION:
                self._receive_initiation(datagram, source, now)
            else:
                self._receive_response(datagram, source, now)
        except (DecryptionError, WeakKeyError):
            self.stats["handshake_failed"] += 1

    def _receive_initiation(self: WireGuardProtocol, datagram: bytes, source: Any,
                            now: float) -> None:
        msg = messages.parse_initiation(datagram)
        state = noise.read_message1(
            self.private_key, self.public_key,
            noise.Message1(msg.ephemeral, msg.encrypted_static, msg.encrypted_timestamp),
            precomputed=self._own_initial_state(), static_static=self._static_static_of,
            accel=self.handshake_accel)
        if state is None:
            self.stats["unknown_peer"] += 1
            return
        peer = self.peers[state.remote_static_public]
        timestamp = state.payload
        if timestamp <= peer.last_timestamp:
            self.stats["replayed_initiation"] += 1
            return
        if (peer.last_initiation_consumed is not None
                and now - peer.last_initiation_consumed < HANDSHAKE_INITIATION_RATE):
            self.stats["initiation_flood"] += 1
            return
        peer.last_timestamp = timestamp
        peer.last_initiation_consumed = now
        peer.new_handshake_at = None       # an authenticated packet arrived
        peer.unanswered_at = None
        peer.last_rx = now
        # respond
        msg2, keys = noise.write_message2(state, peer.preshared_key, accel=self.handshake_accel)
        index = self._new_index()
        response = messages.Response(index, msg.sender, msg2.ephemeral, msg2.encrypted_payload).build()
        response = peer.cookie_generator.add_macs(response, now)
        kp = Keypair(keys, index, msg.sender, False, now, peer)
        self._discard_keypair(peer.next)
        peer.next = kp
        self.keypairs_by_index[index] = kp
        peer.rx_bytes += len(datagram)
        self._session_derived(peer, now)
        if self.roam_on_initiation or peer.endpoint is None:
            self._roam(peer, source)
            self._send(peer, response)
        else:
            # answered where it came from; the endpoint moves with the initiator's first
            # transport message from there (a probe does not move a working path)
            peer.tx_bytes += len(response)
            self._outgoing.append((response, source))
        self._sent_authenticated(peer, now)

    def _static_static_of(self: WireGuardProtocol, remote_static: bytes) -> bytes | None:
        """DH(our static, a peer's static), cached on the peer; None for an unknown key.
        A peer whose key gives a weak shared secret has none cached: its handshakes fail."""
        peer = self.peers.get(remote_static)
        if peer is None:
            return None
        if peer.static_static is None:
            raise WeakKeyError("peer's static key gives an all-zero shared secret")
        return peer.static_static

    def _own_initial_state(self: WireGuardProtocol) -> tuple[bytes, bytes]:
        cached = self._own_initial_cache
        if cached is None or cached[0] != self.public_key:
            cached = (self.public_key, noise.initial_state(self.public_key))
            self._own_initial_cache = cached
        return cached[1]

    def _receive_response(self: WireGuardProtocol, datagram: bytes, source: Any,
                          now: float) -> None:
        msg = messages.parse_response(datagram)
        peer = self.handshakes_by_index.get(msg.receiver)
        if peer is None or peer.handshake_state is None:
            self.stats["unknown_index"] += 1
            return
        _, keys = noise.read_message2(peer.handshake_state, peer.preshared_key,
                                      noise.Message2(msg.ephemeral, msg.encrypted_nothing),
                                      accel=self.handshake_accel)
        index = peer.handshake_index
        self._clear_handshake(peer)
        peer.unanswered_at = None
        peer.last_rx = now
        probe = index == peer.probe_index
        hold = probe and peer.probe_holds and peer.endpoint is not None
        if probe:
            peer.probe_index = None
            self._event(ProbeAnswered(peer.public_key, source, now - (peer.last_probe or now)))
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
        if not hold:
            self._roam(peer, source)
        peer.rx_bytes += len(datagram)
        peer.last_handshake = now
        peer.handshake_attempts = 0
        peer.retransmit_at = None
        peer.new_handshake_at = None
        self._session_derived(peer, now)
        self._event(HandshakeCompleted(peer.public_key, peer.endpoint))
        # send what was staged, or a keepalive to confirm the keypair to the responder
        self.send_keepalive(peer, now)

    def _receive_cookie_reply(self: WireGuardProtocol, datagram: bytes, now: float) -> None:
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

    def _roam(self: WireGuardProtocol, peer: Peer, source: Any) -> None:
        """An authenticated handshake message came from `source`: reply there."""
        if peer.endpoint != source:
            peer.endpoint = source
            self._event(EndpointChanged(peer.public_key, source))

    def _session_derived(self: WireGuardProtocol, peer: Peer, now: float) -> None:
        peer.zero_keys_at = now + self.timers.key_zeroing_time

    def _sent_authenticated(self: WireGuardProtocol, peer: Peer, now: float) -> None:
        peer.keepalive_at = None
        if peer.persistent_keepalive:
            peer.persistent_keepalive_at = now + peer.persistent_keepalive

    # ------------------------------------------------------------------ initiating
    def _maybe_initiate(self: WireGuardProtocol, peer: Peer, now: float) -> None:
        """Start a handshake unless one was sent less than REKEY_TIMEOUT ago."""
        if peer.last_initiation_sent is not None and now - peer.last_initiation_sent < self.timers.rekey_timeout:
            return
        peer.handshake_attempts = 0
        self._send_initiation(peer, now)

    def initiate_handshake(self: WireGuardProtocol, peer: Peer, now: float) -> None:
        """Start a handshake now (used by `wg`-style forced handshakes and tests)."""
        peer.handshake_attempts = 0
        self._send_initiation(peer, now)

    def probe(self: WireGuardProtocol, peer: Peer, candidates: list[Any], now: float,
              hold: bool = False) -> bool:
        """Send one handshake initiation to each candidate endpoint without changing the
        peer's endpoint: if a candidate answers with an authenticated response, roaming
        moves the endpoint there (with `hold`, it stays: the session is renewed, the answer
        reported as ProbeAnswered and the layer above decides). Candidates never replace a
        working endpoint unheard. Every answer is reported as ProbeAnswered (with its RTT).
        Returns False when rate-limited (one probe round per PROBE_MIN_INTERVAL)."""
        if self.private_key is None or peer.static_static is None or not candidates:
            return False
        last = peer.last_probe
        if last is not None and now - last < self.PROBE_MIN_INTERVAL:
            self.stats["probe_rate_limited"] += 1
            return False
        peer.last_probe = now
        packet = self._new_initiation(peer, now)
        peer.probe_index, peer.probe_holds = peer.handshake_index, hold
        for endpoint in candidates:
            peer.tx_bytes += len(packet)
            self._outgoing.append((packet, endpoint))
        self.stats["probes_sent"] += len(candidates)
        return True

    def _new_initiation(self: WireGuardProtocol, peer: Peer, now: float) -> bytes:
        self._clear_handshake(peer)
        index = self._new_index()
        msg1, state = noise.write_message1(
            self.private_key, peer.public_key, tai64n(self.wall_time(now)),
            precomputed=peer.precomputed, static_static=peer.static_static,
            local_static_public=self.public_key, accel=self.handshake_accel)
        packet = messages.Initiation(index, msg1.ephemeral, msg1.encrypted_static,
                                     msg1.encrypted_payload).build()
        packet = peer.cookie_generator.add_macs(packet, now)
        peer.handshake_state = state
        peer.handshake_index = index
        self.handshakes_by_index[index] = peer
        return packet

    def _send_initiation(self: WireGuardProtocol, peer: Peer, now: float) -> None:
        if self.private_key is None or peer.static_static is None:
            return
        peer.last_initiation_sent = now
        peer.retransmit_at = now + self.timers.rekey_timeout + self.timers.jitter()
        if peer.endpoint is None:
            self.stats["no_endpoint"] += 1
            return
        packet = self._new_initiation(peer, now)
        self.stats["initiations_sent"] += 1
        self._send(peer, packet)
        self._sent_authenticated(peer, now)
