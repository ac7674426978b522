"""The send side of the protocol: IP packets from the TUN device -> sealed transport
datagrams, packets staged while no keypair is usable, keepalives. No I/O.

Mixed into WireGuardProtocol (meshwg.core.protocol), whose peers, routing table, timers,
counters and output queue it uses; it starts handshakes through the protocol's
Handshakes part (meshwg.core.handshake).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Iterable

from meshwg.core.constants import MESSAGE_TRANSPORT, PADDING_MULTIPLE, TRANSPORT_MIN_SIZE
from meshwg.core.messages import COUNTER_NONCE, TRANSPORT_HEADER

if TYPE_CHECKING:
    from meshwg.core.keypair import Keypair
    from meshwg.core.peer import Peer
    from meshwg.core.protocol import WireGuardProtocol

_ZERO_PAD = bytes(PADDING_MULTIPLE)
Run = tuple[memoryview, int, Any]     # (datagrams back to back, size of each, endpoint)


class SendPath:
    """encrypt_batch (the device's call), encrypt_packets, send_keepalive."""

    # The compiled data path (meshwg.accel._fastpath) or None for cryptography's AEAD; the
    # device sets it (meshwg.accel.select). The core itself never chooses.
    fastpath: Any = None

    def encrypt_packets(self: WireGuardProtocol, packets: Iterable[bytes],
                        now: float) -> list[tuple[bytes, Any]]:
        """Route and seal IP packets from the TUN device. Packets without a route are
        dropped; packets for a peer without a usable keypair are staged and a handshake
        is started. Returns (datagram, endpoint) pairs (encrypt_batch, one per datagram)."""
        out: list[tuple[bytes, Any]] = []
        for view, size, endpoint in self.encrypt_batch(packets, now):
            data = bytes(view)
            out.extend((data[i:i + size], endpoint) for i in range(0, len(data), size))
        return out

    def encrypt_batch(self: WireGuardProtocol, packets: Iterable, now: float,
                      buf: bytearray | None = None, max_run_bytes: int = 65000,
                      max_run_datagrams: int = 64) -> list[Run]:
        """Route and seal IP packets (bytes or memoryviews, each read only until the next
        is taken from `packets`) into transport datagrams laid out for UDP GSO.

        An item may also be a TSO frame's segments, a tuple (segments, size) as
        meshwg.tun.tso yields it: the packets back to back, each `size` bytes but the last
        (segments_of). With the compiled path such a frame is sealed by ONE call
        (Sealer.seal_segments) under one route lookup and one reservation of counters; a
        frame that would cross REJECT_AFTER_MESSAGES, a peer that cannot send, and the
        pure Python path take it packet by packet. Either way the datagrams are the same.

        Returns runs (view, size, endpoint): each view holds consecutive datagrams for one
        endpoint, every one `size` bytes but the last, which may be shorter; a run has at
        most `max_run_datagrams` datagrams and `max_run_bytes` bytes (the defaults are UDP
        GSO's limits, meshwg.conn.gso). The views point into `buf` (reused by the caller;
        a new buffer is taken when it is full; a frame is never split across two) and are
        valid until it is reused. Each datagram is sealed straight into its place: with
        the compiled path one call writes header, padding and sealed packet (Sealer.seal,
        seal_segments); else the header is packed in place and the AEAD's encrypt_into
        seals (packets that need padding go through a scratch copy).

        Bookkeeping is per run of consecutive packets to one peer, with the same effect
        as per packet: one route lookup per destination address, one keypair check, the
        tx counter, timers and the rekey check once (all packets share `now`)."""
        if buf is None:
            buf = bytearray(65536)
        runs: list[Run] = []
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
        header_into = TRANSPORT_HEADER.pack_into
        nonce_of = COUNTER_NONCE.pack
        scratch = bytearray(mtu + PADDING_MULTIPLE)
        scratch_mv = memoryview(scratch)
        last_dst = None
        peer = None               # peer of the open peer-run
        endpoint = None
        kp = None
        seal = None               # None: the peer cannot send now (packets are staged)
        fast = self.fastpath
        fast_seal = None          # the keypair's compiled Sealer.seal (fast is not None)
        fast_segments = None      # and its seal_segments
        remote_index = 0
        sent_bytes = 0
        sent_data = False
        last_counter = -1
        for item in packets:
            if type(item) is tuple:
                packet, segment = item        # a TSO frame's segments
            else:
                packet = item
                segment = 0
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
                    seal = fast_seal = fast_segments = None
                    if (kp is not None and endpoint is not None
                            and now - kp.created < timers.reject_after_time):
                        seal = kp.send_aead.encrypt_into
                        if fast is not None:
                            sealer = kp.sealer(fast)
                            fast_seal = sealer.seal
                            fast_segments = sealer.seal_segments
                        remote_index = kp.remote_index
            if segment and fast_segments is not None:
                count = (n + segment - 1) // segment
                counter = kp.send_next
                if counter + count <= reject_messages and count <= fast.MAX_RUN:
                    # the whole frame in one call: count - 1 datagrams of `full` bytes,
                    # then one of `last`; placed into runs as the loop below would
                    full = segment + padding(segment, mtu) + TRANSPORT_MIN_SIZE
                    tail = n - (count - 1) * segment
                    last = tail + padding(tail, mtu) + TRANSPORT_MIN_SIZE
                    total = (count - 1) * full + last
                    if off + total > cap:         # a frame is never split across buffers
                        if run_count:
                            runs.append((mv[run_start:off], run_size, run_endpoint))
                            run_count = 0
                        buf = bytearray(max(cap, 65536, total))
                        mv = memoryview(buf)
                        cap = len(buf)
                        off = 0
                    kp.send_next = counter + count
                    fast_segments(buf, off, remote_index, counter, packet, segment, mtu)
                    for k, size in ((count - 1, full), (1, last)):
                        while k:
                            if run_count and (run_closed or size > run_size
                                              or endpoint != run_endpoint
                                              or run_count >= max_run_datagrams
                                              or off - run_start + size > max_run_bytes):
                                runs.append((mv[run_start:off], run_size, run_endpoint))
                                run_count = 0
                            if not run_count:
                                run_start = off
                                run_size = size
                                run_endpoint = endpoint
                                run_closed = False
                                take = max(1, min(k, max_run_datagrams,
                                                  max_run_bytes // size))
                            elif size < run_size:
                                run_closed = True
                                take = 1
                            else:
                                take = min(k, max_run_datagrams - run_count,
                                           (max_run_bytes - (off - run_start)) // size)
                            run_count += take
                            off += take * size
                            k -= take
                    sent_bytes += total
                    last_counter = counter + count - 1
                    sent_data = True
                    continue
            for packet in (segments_of(item) if segment else (packet,)):
                n = len(packet)
                if seal is None:
                    self._stage(peer, packet if type(packet) is bytes else bytes(packet), now)
                    continue
                counter = kp.send_next
                kp.send_next = counter + 1
                if counter >= reject_messages:
                    self._stage(peer, packet if type(packet) is bytes else bytes(packet), now)
                    continue
                pad = -n % PADDING_MULTIPLE     # padding(n, mtu), inlined
                if pad and n + pad > mtu:
                    pad = max(0, mtu - n)
                size = n + pad + TRANSPORT_MIN_SIZE
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
                if fast_seal is not None:
                    off += fast_seal(buf, off, remote_index, counter, packet, mtu)
                    sent_bytes += size
                    last_counter = counter
                    sent_data = True
                    continue
                if pad:
                    scratch[:n] = packet
                    scratch[n:n + pad] = _ZERO_PAD[:pad]
                    plain = scratch_mv[:n + pad]
                else:
                    plain = packet
                header_into(buf, off, MESSAGE_TRANSPORT, remote_index, counter)
                seal(nonce_of(counter), plain, None, mv[off + 16:off + size])
                off += size
                sent_bytes += size
                last_counter = counter
                sent_data = True
        if run_count:
            runs.append((mv[run_start:off], run_size, run_endpoint))
        if peer is not None and last_counter >= 0:
            self._sent_data(peer, kp, sent_bytes, sent_data, last_counter, now)
        return runs

    def _sent_data(self: WireGuardProtocol, peer: Peer, kp: Keypair, sent_bytes: int,
                   data: bool, last_counter: int, now: float) -> None:
        """Bookkeeping after sealing transport packets for `peer` (one batch's worth):
        tx counter, timers (authenticated packet sent; data sent) and the rekey check."""
        timers = self.timers
        peer.tx_bytes += sent_bytes
        peer.keepalive_at = None
        if data and peer.new_handshake_at is None:
            peer.new_handshake_at = now + timers.keepalive_timeout + timers.rekey_timeout + timers.jitter()
        if data and timers.unanswered_after and peer.unanswered_at is None:
            peer.unanswered_at = now + timers.unanswered_after
        if peer.persistent_keepalive:
            peer.persistent_keepalive_at = now + peer.persistent_keepalive
        if (last_counter >= timers.rekey_after_messages
                or (kp.is_initiator and now - kp.created >= timers.rekey_after_time)):
            self._maybe_initiate(peer, now)

    def _stage(self: WireGuardProtocol, peer: Peer, packet: bytes, now: float) -> None:
        peer.staged.append(packet)
        self._maybe_initiate(peer, now)

    def send_keepalive(self: WireGuardProtocol, peer: Peer, now: float) -> None:
        """Send staged packets, or an empty keepalive when none are staged."""
        if not peer.staged:
            peer.staged.append(b"")
        self._flush_staged(peer, now)

    def _flush_staged(self: WireGuardProtocol, peer: Peer, now: float) -> None:
        """Seal what waited for a keypair (the empty packet is a keepalive) and queue it;
        without a usable keypair, start a handshake instead."""
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

    def _seal(self: WireGuardProtocol, peer: Peer, packet: bytes, now: float) -> bytes | None:
        """One transport datagram for `peer` (encrypt_batch's work for a single packet,
        without the route lookup: staged packets were routed when they came in, and an
        empty keepalive has no address). Staged again when no keypair can seal it."""
        kp = peer.current
        timers = self.timers
        if (kp is None or peer.endpoint is None
                or now - kp.created >= timers.reject_after_time):
            self._stage(peer, packet, now)
            return None
        counter = kp.next_counter()
        if counter >= timers.reject_after_messages:
            self._stage(peer, packet, now)
            return None
        n = len(packet)
        pad = padding(n, self.mtu)
        datagram = bytearray(n + pad + TRANSPORT_MIN_SIZE)
        if self.fastpath is not None:
            kp.sealer(self.fastpath).seal(datagram, 0, kp.remote_index, counter, packet, self.mtu)
            self._sent_data(peer, kp, len(datagram), n > 0, counter, now)
            return bytes(datagram)
        TRANSPORT_HEADER.pack_into(datagram, 0, MESSAGE_TRANSPORT, kp.remote_index, counter)
        kp.send_aead.encrypt_into(COUNTER_NONCE.pack(counter),
                                  packet + _ZERO_PAD[:pad] if pad else packet, None,
                                  memoryview(datagram)[16:])
        self._sent_data(peer, kp, len(datagram), n > 0, counter, now)
        return bytes(datagram)


def padding(length: int, mtu: int) -> int:
    """Zero bytes appended to a plaintext of `length` bytes: up to a multiple of 16, but
    never past the MTU (whitepaper section 5.4.6)."""
    pad = -length % PADDING_MULTIPLE
    if pad and length + pad > mtu:
        pad = max(0, mtu - length)
    return pad


def segments_of(item) -> Iterable:
    """The IP packets of one encrypt_batch item: the packet itself, or the views of a TSO
    frame's (segments, size) tuple (meshwg.tun.tso.split_frame_in_place)."""
    if type(item) is not tuple:
        return (item,)
    data, size = item
    return (data[i:i + size] for i in range(0, len(data), size))
