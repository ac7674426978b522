"""The receive side of the protocol: datagrams from the network -> IP packets for the TUN
device (transport data: open, replay check, cryptokey routing check, roaming), and the
cheap admission of handshake messages. No I/O.

Mixed into WireGuardProtocol (meshwg.core.protocol), whose keypair index, routing table,
timers and counters it uses; handshake messages go to its Handshakes part
(meshwg.core.handshake).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Iterable

from cryptography.exceptions import InvalidTag

from meshwg.core.constants import MESSAGE_TRANSPORT, TRANSPORT_MIN_SIZE
from meshwg.core.events import EndpointChanged, HandshakeCompleted
from meshwg.core.handshake import AdmittedHandshake
from meshwg.core.messages import COUNTER_NONCE, TRANSPORT_HEADER

if TYPE_CHECKING:
    from meshwg.core.keypair import Keypair
    from meshwg.core.peer import Peer
    from meshwg.core.protocol import WireGuardProtocol

ReceivedRun = tuple[Any, int, Any]   # (datagrams of one source back to back, size of each, source)
# what the compiled open_run's negative plaintext lengths mean, as counted in stats
# (-3: counter at or past the limit, not opened; -2: replayed; -1: tag did not verify)
_REFUSED = ("expired_keypair", "replayed", "decrypt_failed")


def inner_header(plaintext: Any, at: int, plen: int) -> tuple[int, bytes | None]:
    """(inner length, inner source) of the plaintext at plaintext[at:at + plen] (plen > 0)
    as its IP header says, as the compiled open_run(..., inner=True) reports it: IPv4
    (version 4, at least 20 bytes) total length and 4-byte source, IPv6 (version 6, at
    least 40 bytes) payload length + 40 and 16-byte source, else (-1, None). Only read:
    whether the length is valid and the source allowed is receive_batch's decision."""
    version = plaintext[at] >> 4
    if version == 4 and plen >= 20:
        return (plaintext[at + 2] << 8) | plaintext[at + 3], bytes(plaintext[at + 12:at + 16])
    if version == 6 and plen >= 40:
        return ((plaintext[at + 4] << 8) | plaintext[at + 5]) + 40, bytes(plaintext[at + 8:at + 24])
    return -1, None


class ReceivePath:
    """receive_batch (the device's call) and receive_datagram (one datagram, any type)."""

    def receive_datagram(self: WireGuardProtocol, datagram: bytes, source: Any, now: float,
                         handshake_backlog: int = 0) -> bytes | None:
        """One datagram of any type, all its work done now: returns the inner IP packet
        for the TUN device, or None (keepalive, handshake message, or dropped and counted).
        A handshake message is admitted and processed at once (admit_handshake, as
        receive_batch would, then process_handshake); replies go to the output queue."""
        if datagram and datagram[0] != MESSAGE_TRANSPORT:
            # a handshake message: what receive_batch would do with it, without its setup
            admitted = self.admit_handshake(bytes(datagram), source, now, handshake_backlog)
            if admitted is not None:
                self.process_handshake(admitted, now)
            return None
        packets, handshakes = self.receive_batch(((datagram, len(datagram), source),), now,
                                                 bytearray(len(datagram)), handshake_backlog)
        for handshake in handshakes:
            self.process_handshake(handshake, now)
        return bytes(packets[0]) if packets else None

    def receive_batch(self: WireGuardProtocol, runs: Iterable[ReceivedRun], now: float,
                      out: bytearray | None = None, handshake_backlog: int = 0
                      ) -> tuple[list[memoryview], list[AdmittedHandshake]]:
        """Datagrams from the network. `runs` holds (data, size, source): datagrams from
        one source laid back to back, each `size` bytes but the last (what one UDP GRO
        receive returns; a single datagram is (datagram, len(datagram), source)).

        Returns (inner IP packets for the TUN device, handshake messages admitted for
        process_handshake). Transport data is decrypted straight into `out` (the caller's
        reused buffer; a new one is taken when it is full); each packet is a view valid
        until `out` is reused. Handshake messages get the cheap checks here (admit:
        type, size, mac1, and under load mac2 and the rate limit); `handshake_backlog`
        is how many admitted messages wait for processing, which with the rate of
        admissions decides whether the device is under load. Every dropped datagram is
        counted in `stats`.

        With the compiled path (self.fastpath) the datagrams of a run to one keypair are
        opened by the keypair's Opener in one call (open_run), which also applies the
        keypair's replay window to their counters (the window's state passed in and
        back) and reads each inner IP header (length and source, consecutive equal
        sources as one object); else each by the AEAD's decrypt_into,
        ReplayWindow.check and inner_header. Both count and decide the same per
        datagram; the allowed-IPs lookup is done once per change of inner source.

        Bookkeeping is per run of consecutive datagrams to one keypair from one source,
        with the same effect as per datagram: one keypair lookup and expiry check, then
        endpoint, rx counter, timers and the rekey-on-receive check once."""
        packets: list[memoryview] = []
        handshakes: list[AdmittedHandshake] = []
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
        unpack_header = TRANSPORT_HEADER.unpack_from
        nonce_of = COUNTER_NONCE.pack
        last_receiver = None
        kp = None                 # keypair of the open run (None: none open)
        run_source = None
        run_bytes = 0
        run_data = False
        run_authenticated = False
        open_ = replay = window = None
        fast = self.fastpath
        fast_run = None           # the keypair's compiled Opener.open_run (fast is not None)
        refused = _REFUSED
        peer = None
        last_src = None
        src_ok = False
        for data, size, source in runs:
            total = len(data)
            if not total:
                stats["malformed"] += 1
                continue
            if size <= 0:
                size = total
            dmv = memoryview(data)
            if source != run_source and kp is not None:
                if run_authenticated:
                    self._received(peer, kp, run_source, run_bytes, run_data, now)
                run_bytes = 0
                run_data = run_authenticated = False
            run_source = source
            end = 0
            while end < total:
                o = end
                end = o + size
                if end > total:
                    end = total
                dlen = end - o
                if data[o] != MESSAGE_TRANSPORT:
                    admitted = self.admit_handshake(bytes(dmv[o:end]), source, now,
                                                    handshake_backlog + len(handshakes))
                    if admitted is not None:
                        handshakes.append(admitted)
                    continue
                if dlen < TRANSPORT_MIN_SIZE:
                    stats["malformed"] += 1
                    continue
                word, receiver, counter = unpack_header(data, o)
                if word != MESSAGE_TRANSPORT:
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
                    open_ = fast_run = None
                    if kp is not None:
                        open_ = kp.receive_aead.decrypt_into
                        if fast is not None:
                            fast_run = kp.opener(fast).open_run
                        window = kp.replay
                        replay = window.check
                        peer = kp.peer
                        if now - kp.created >= reject_time:
                            open_ = False
                if open_ is None:
                    stats["unknown_index"] += 1
                    continue
                results = None
                if fast_run is not None and open_ is not False:
                    # compiled: this datagram and the ones after it to the same receiver,
                    # opened and replay-checked in one call
                    stop, results, window.last = fast_run(
                        data, o, total, size, receiver, out, po,
                        window.ring, window.last, window.limit, reject_messages, True)
                    end = stop if results else end
                if not results:   # pure Python, or no room left in out: this datagram
                    if open_ is False or counter >= reject_messages:
                        stats["expired_keypair"] += 1
                        continue
                    plen = dlen - TRANSPORT_MIN_SIZE
                    if po + plen > cap:
                        out = bytearray(max(cap, 65536))
                        omv = memoryview(out)
                        cap = len(out)
                        po = 0
                    try:
                        open_(nonce_of(counter), dmv[o + 16:end], None, omv[po:po + plen])
                    except InvalidTag:
                        stats["decrypt_failed"] += 1
                        continue
                    if not replay(counter):
                        stats["replayed"] += 1
                        continue
                    results = ((counter, po, plen, *inner_header(out, po, plen)),) if plen \
                        else ((counter, po, 0, -1, None),)
                for counter, at, plen, length, src in results:
                    if plen < 0:
                        stats[refused[plen]] += 1
                        continue
                    run_authenticated = True
                    run_bytes += plen + TRANSPORT_MIN_SIZE
                    if not plen:
                        stats["keepalives_received"] += 1
                        continue
                    if length > plen or length < 20:    # -1: no IPv4/IPv6 header
                        stats["inner_malformed"] += 1
                        continue
                    if src != last_src:
                        last_src = src
                        src_ok = lookup(src) is peer
                    if not src_ok:
                        stats["inner_source_not_allowed"] += 1
                        continue
                    run_data = True
                    packets.append(omv[at:at + length])
                # the next plaintext's place: after the last one kept (a refused one's
                # offset is where it would have gone)
                po = at + ((plen + 15) & ~15) if plen > 0 else at
                if po > cap:
                    po = cap
        if kp is not None and run_authenticated:
            self._received(peer, kp, run_source, run_bytes, run_data, now)
        return packets, handshakes

    def _received(self: WireGuardProtocol, peer: Peer, kp: Keypair, source: Any,
                  rx_bytes: int, data: bool, now: float) -> None:
        """Bookkeeping after authenticated transport datagrams from `source` to `kp`:
        roaming, confirming the responder's next keypair, rx counter, timers and the
        initiator's rekey on receive."""
        if peer.endpoint != source and now >= peer.pinned_until:
            peer.endpoint = source
            self._event(EndpointChanged(peer.public_key, source))
        if kp is peer.next:
            self._confirm_next_keypair(peer, kp, now)
        peer.rx_bytes += rx_bytes
        timers = self.timers
        # timers: any authenticated packet received. Unlike wireguard-go's traversal timer,
        # receiving does not postpone the persistent keepalive: it counts our own silence,
        # so on an idle pair both sides send (each keeps its own NAT mapping: RFC 4787
        # REQ-6 requires NATs to refresh on outbound packets only) and each hears the other
        peer.new_handshake_at = None
        peer.unanswered_at = None
        peer.last_rx = now
        if kp.is_initiator and kp is peer.current and now - kp.created >= timers.rekey_on_receive_age:
            self._maybe_initiate(peer, now)
        if data and peer.keepalive_at is None:   # data received: answer within KEEPALIVE_TIMEOUT
            # (within unanswered_after / 2 where the peer judges paths by it: the last
            # packet of an exchange is answered before it counts as unanswered)
            answer = timers.keepalive_timeout
            if timers.unanswered_after:
                answer = min(answer, timers.unanswered_after / 2)
            peer.keepalive_at = now + answer

    def _confirm_next_keypair(self: WireGuardProtocol, peer: Peer, kp: Keypair,
                              now: float) -> None:
        """The responder's first transport message under `kp` from the initiator: the
        handshake is complete, `kp` becomes current."""
        self._discard_keypair(peer.previous)
        peer.previous = peer.current
        peer.current = kp
        peer.next = None
        peer.last_handshake = now        # handshake complete, responder side
        peer.retransmit_at = None        # a handshake of our own is no longer needed
        peer.handshake_attempts = 0
        self._event(HandshakeCompleted(peer.public_key, peer.endpoint))
        # we can now send: flush what waited for this keypair
        if peer.staged:
            self._flush_staged(peer, now)
