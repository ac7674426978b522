"""The lone-packet path: one short packet or datagram after an idle spell (a ping, an ACK),
with as little Python as it can take. No I/O.

A lone packet costs what the code it runs costs on a cold CPU: every function, object
and branch of the batch path (meshwg.core.send.encrypt_batch, receive.receive_batch) is
a cache miss when nothing ran for milliseconds. These two functions make the same
decisions as the batch path for one packet, with its same helpers, and leave the
bookkeeping (timers, counters, roaming) to a second call the device makes after the
packet is on its way, so the wire sees it sooner:

    sealed = seal_lone(protocol, packet, now, buf)      # None: use encrypt_batch
    ... send buf[:sealed.size] to sealed.endpoint ...
    finish_lone(protocol, sealed, now)

    opened = open_lone(protocol, datagram, source, now, out)   # None: use receive_batch
    ... write opened.packet to the TUN device when it is not None ...
    finish_lone(protocol, opened, now)

With the compiled crossing (meshwg.accel's Crossing: the read, these decisions, the
seal and the send, or the receive, open, write and the answer's crossing, in one call
that runs no Python) the device calls finish_sealed / finish_opened with what it returns
instead; these functions remain the path for what the crossing hands back.

Only the compiled data path (protocol.fastpath) takes it; whatever the batch path would
do differently from the plain case (no route, no usable keypair, staging, an expired
keypair, a refused or forged datagram) is left to the batch path, before any state
changed: seal_lone and open_lone return None and the caller hands the same packet to
encrypt_batch / receive_batch, which count and decide it as always."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, NamedTuple

from meshwg.core.constants import MESSAGE_TRANSPORT, TRANSPORT_MIN_SIZE
from meshwg.core.messages import TRANSPORT_HEADER

if TYPE_CHECKING:
    from meshwg.core.keypair import Keypair
    from meshwg.core.peer import Peer
    from meshwg.core.protocol import WireGuardProtocol

_unpack_header = TRANSPORT_HEADER.unpack_from
_new_tuple = tuple.__new__     # a Lone without its Python-level __new__ (a cold frame less)


class Lone(NamedTuple):
    """One sealed or opened lone packet: what finish_lone needs for the bookkeeping.
    `size` is the transport message's length; `endpoint` where it goes (sealed) or came
    from (opened); `packet` the inner IP packet to write to the TUN device (opened; None
    for a keepalive or an inner packet refused and counted)."""
    sent: bool
    peer: Peer
    kp: Keypair
    size: int
    counter: int
    endpoint: Any
    packet: Any = None


def seal_lone(protocol: WireGuardProtocol, packet: Any, now: float,
              buf: bytearray) -> Lone | None:
    """Seal one IP packet from the TUN device into buf[:size] (header, counter, padding
    and tag as encrypt_batch writes them), or None when the batch path must take it (no
    compiled path, malformed, no route, no keypair or endpoint, keypair too old or out
    of counters): then nothing changed but, at most, one send counter past
    REJECT_AFTER_MESSAGES was taken (the batch path stages that packet anyway)."""
    fast = protocol.fastpath
    n = len(packet)
    if fast is None or not n:
        return None
    version = packet[0] >> 4
    if version == 4 and n >= 20:
        dst = bytes(packet[16:20])
    elif version == 6 and n >= 40:
        dst = bytes(packet[24:40])
    else:
        return None
    peer = protocol.allowed_ips.lookup_recent(dst)
    if peer is None:
        return None
    kp = peer.current
    endpoint = peer.endpoint
    timers = protocol.timers
    if kp is None or endpoint is None or now - kp.created >= timers.reject_after_time:
        return None
    counter = kp.next_counter()
    if counter >= timers.reject_after_messages:
        return None
    size = kp.sealer(fast).seal(buf, 0, kp.remote_index, counter, packet, protocol.mtu)
    return _new_tuple(Lone, (True, peer, kp, size, counter, endpoint, None))


def open_lone(protocol: WireGuardProtocol, datagram: Any, source: Any, now: float,
              out: bytearray) -> Lone | None:
    """Open one transport datagram into `out` and judge its inner packet as
    receive_batch does (replay window after the tag, inner header, cryptokey routing of
    the inner source), or None when the batch path must take it, with nothing changed:
    no compiled path, not transport data, unknown receiver, expired keypair, a tag that
    does not verify or a replayed counter. A keepalive, or an inner packet refused (and
    counted), gives packet None."""
    fast = protocol.fastpath
    dlen = len(datagram)
    if fast is None or dlen < TRANSPORT_MIN_SIZE or datagram[0] != MESSAGE_TRANSPORT:
        return None
    word, receiver, counter = _unpack_header(datagram, 0)
    if word != MESSAGE_TRANSPORT:
        return None
    kp = protocol.keypairs_by_index.get(receiver)
    timers = protocol.timers
    if (kp is None or now - kp.created >= timers.reject_after_time
            or counter >= timers.reject_after_messages):
        return None
    plen = dlen - TRANSPORT_MIN_SIZE
    if len(out) < plen or not kp.opener(fast).open(counter, datagram, 16, dlen - 16, out, 0):
        return None
    # ReplayWindow.check's decision on the same state, in one compiled call (as open_run
    # applies it): on a cold CPU cheaper than the Python method
    replay = kp.replay
    last, (fresh,) = fast.replay_run(replay.ring, replay.last, replay.limit, (counter,))
    if not fresh:
        return None
    replay.last = last
    # authentic and new: from here on every outcome is this path's to count
    peer = kp.peer
    return _new_tuple(Lone, (False, peer, kp, dlen, counter, source,
                             _inner_packet(protocol, peer, out, plen) if plen
                             else _keepalive(protocol)))


def _keepalive(protocol: WireGuardProtocol) -> None:
    protocol.stats["keepalives_received"] += 1


def _inner_packet(protocol: WireGuardProtocol, peer: Peer, out: bytearray,
                  plen: int) -> memoryview | None:
    """The inner IP packet of `plen` opened bytes at out[0:], or None when it is
    malformed or its source is not routed to `peer` (counted as receive_batch counts)."""
    version = out[0] >> 4
    if version == 4 and plen >= 20:
        length = (out[2] << 8) | out[3]
        src = bytes(out[12:16])
    elif version == 6 and plen >= 40:
        length = ((out[4] << 8) | out[5]) + 40
        src = bytes(out[8:24])
    else:
        length = 0
    if length > plen or length < 20:
        protocol.stats["inner_malformed"] += 1
        return None
    if protocol.allowed_ips.lookup_recent(src) is not peer:
        protocol.stats["inner_source_not_allowed"] += 1
        return None
    return memoryview(out)[:length]


def finish_lone(protocol: WireGuardProtocol, lone: Lone, now: float) -> None:
    """The bookkeeping of a sealed or opened lone packet, once it is on its way: what
    encrypt_batch / receive_batch do after a batch (tx/rx counters, timers, rekey,
    roaming, confirming the responder's next keypair)."""
    if lone.sent:
        protocol._sent_data(lone.peer, lone.kp, lone.size, True, lone.counter, now)
    else:
        protocol._received(lone.peer, lone.kp, lone.endpoint, lone.size,
                           lone.packet is not None, now)


# the counter an opened lone packet's outcome adds to (Crossing.udp: 0 written,
# 1 keepalive, 2 malformed inner packet, 3 inner source not routed to the peer)
OUTCOME_STATS = (None, "keepalives_received", "inner_malformed", "inner_source_not_allowed")


def finish_sealed(protocol: WireGuardProtocol, sealed: tuple, now: float) -> None:
    """finish_lone for a packet the compiled crossing sealed and sent: `sealed` is
    Crossing.tun's (peer, keypair, size, counter, endpoint)."""
    peer, kp, size, counter, _endpoint = sealed
    protocol._sent_data(peer, kp, size, True, counter, now)


def finish_opened(protocol: WireGuardProtocol, peer: Peer, kp: Keypair, size: int,
                  source: Any, outcome: int, now: float) -> None:
    """finish_lone for a datagram the compiled crossing opened (Crossing.udp's fields),
    with the counting open_lone does for a keepalive or a refused inner packet."""
    stat = OUTCOME_STATS[outcome]
    if stat is not None:
        protocol.stats[stat] += 1
    protocol._received(peer, kp, source, size, outcome == 0, now)
