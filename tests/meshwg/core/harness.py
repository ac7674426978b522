"""An in-memory network of WireGuardProtocol instances driven by a virtual clock.

No sockets, no threads, no sleeping: `Network.now` is the clock, the test moves it.
Datagrams a node emits go onto `Network.wire` (FIFO, zero latency); `pump()` delivers
them to the node listening at the destination address (receive_datagram, with the node's
`backlog` as the handshake backlog the device would pass) and collects what the receiver
queued in return. A node's `events` are what its protocol reported, in order. `run_until(t)` walks the clock through every protocol
deadline up to t, ticking and pumping at each one.

Also: builders for real IPv4/IPv6 packets (valid header, right total length).
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass, field
from typing import Callable, Iterable

from meshwg.core.crypto import generate_private_key, public_key
from meshwg.core.events import Event
from meshwg.core.messages import COUNTER_NONCE, TRANSPORT_HEADER
from meshwg.core.peer import Peer
from meshwg.core.protocol import WireGuardProtocol
from meshwg.core.timers import Timers

INITIATION, RESPONSE, COOKIE_REPLY, TRANSPORT = 1, 2, 3, 4
KIND_NAMES = {INITIATION: "initiation", RESPONSE: "response", COOKIE_REPLY: "cookie",
              TRANSPORT: "transport"}
WALL_OFFSET = 1_700_000_000.0      # wall clock = virtual now + this (TAI64N timestamps)
START = 1000.0
KEEPALIVE_SIZE = 32                # header + Poly1305 tag, empty plaintext

Endpoint = tuple[str, int]


# ---------------------------------------------------------------------- IP packets
def _checksum(header: bytes) -> int:
    total = sum(struct.unpack(f"!{len(header) // 2}H", header))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def ipv4_packet(src: str, dst: str, payload: bytes = b"", *, protocol: int = 17) -> bytes:
    """An IPv4 packet: 20-byte header with total length and header checksum filled in."""
    header = bytearray(struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(payload), 0, 0x4000,
                                   64, protocol, 0, ipaddress.IPv4Address(src).packed,
                                   ipaddress.IPv4Address(dst).packed))
    header[10:12] = struct.pack("!H", _checksum(bytes(header)))
    return bytes(header) + payload


def ipv6_packet(src: str, dst: str, payload: bytes = b"", *, next_header: int = 17) -> bytes:
    """An IPv6 packet: 40-byte header with the payload length filled in."""
    return struct.pack("!IHBB16s16s", 6 << 28, len(payload), next_header, 64,
                       ipaddress.IPv6Address(src).packed,
                       ipaddress.IPv6Address(dst).packed) + payload


# ---------------------------------------------------------------------- the network
@dataclass
class Datagram:
    data: bytes
    source: Endpoint
    destination: Endpoint
    sent_at: float
    sender: str                      # name of the node that emitted it

    @property
    def kind(self) -> int:
        return self.data[0] if self.data else 0

    def __repr__(self) -> str:
        return (f"<{KIND_NAMES.get(self.kind, self.kind)} {len(self.data)}B {self.sender} "
                f"{self.source}->{self.destination} @{self.sent_at:.3f}>")


@dataclass
class Node:
    name: str
    protocol: WireGuardProtocol
    private_key: bytes
    address: Endpoint
    ip4: str
    ip6: str
    net: "Network"
    received: list[tuple[float, bytes]] = field(default_factory=list)   # inner packets -> TUN
    backlog: int = 0                 # handshake backlog passed on receipt (load tests)
    event_log: list[Event] = field(default_factory=list)

    @property
    def public_key(self) -> bytes:
        """The key the node was created with (what its peers know it by)."""
        return public_key(self.private_key)

    def peer(self, other: "Node") -> Peer:
        return self.protocol.peers[other.public_key]

    def packet_to(self, other: "Node", payload: bytes = b"data", *, v6: bool = False) -> bytes:
        if v6:
            return ipv6_packet(self.ip6, other.ip6, payload)
        return ipv4_packet(self.ip4, other.ip4, payload)

    def send(self, *packets: bytes) -> list[Datagram]:
        """Hand IP packets to encrypt_packets at the network's now; returns the datagrams
        it sealed directly (also put on the wire, with whatever the call queued)."""
        out = self.protocol.encrypt_packets(list(packets), self.net.now)
        sealed = self.net.emit(self, out)
        self.net.collect()
        return sealed

    def initiate(self, other: "Node", at: float | None = None) -> Datagram:
        """Force a handshake initiation to `other` (at the network's now, or `at`); the
        datagram is put on the wire and returned."""
        self.protocol.initiate_handshake(self.peer(other), self.net.now if at is None else at)
        (d,) = self.net.emit(self, self.protocol.take_datagrams())
        return d

    @property
    def stats(self):
        return self.protocol.stats

    @property
    def events(self) -> list[Event]:
        """Every event the node's protocol reported so far, in order."""
        self.event_log.extend(self.protocol.take_events())
        return self.event_log


class Network:
    def __init__(self, start: float = START) -> None:
        self.now = start
        self.nodes: dict[str, Node] = {}
        self.listening: dict[Endpoint, Node] = {}
        self.wire: list[Datagram] = []
        self.log: list[Datagram] = []        # everything ever emitted
        self.dropped: list[Datagram] = []    # removed by a pump() filter
        self.lost: list[Datagram] = []       # nobody listens at the destination

    # -- setup
    def add_node(self, name: str, index: int, *, timers: Timers | None = None,
                 mtu: int = 1420, host: str | None = None) -> Node:
        private = generate_private_key()
        protocol = WireGuardProtocol(private, timers=timers, mtu=mtu, wall_offset=WALL_OFFSET)
        node = Node(name, protocol, private, (host or f"192.0.2.{index}", 51820 + index),
                    f"10.0.0.{index}", f"fd00::{index}", self)
        self.nodes[name] = node
        self.listening[node.address] = node
        return node

    def connect(self, a: Node, b: Node, *, psk: bytes | None = None, psk_b: bytes | None = None,
                endpoint_a: bool = True, endpoint_b: bool = True,
                allowed_b: Iterable[str] | None = None,
                allowed_a: Iterable[str] | None = None) -> None:
        """Make a and b peers of each other. a routes `allowed_b` (default b's /32 and /128)
        to b, and knows b's endpoint when endpoint_a; the same the other way round."""
        for me, other, allowed, knows, key in (
                (a, b, allowed_b, endpoint_a, psk), (b, a, allowed_a, endpoint_b,
                                                       psk if psk_b is None else psk_b)):
            peer = me.protocol.add_peer(other.public_key)
            me.protocol.set_preshared_key(peer, key)
            if knows:
                me.protocol.set_endpoint(peer, other.address)
            me.protocol.add_allowed_ips(peer, [ipaddress.ip_network(net) for net in
                                               allowed or (f"{other.ip4}/32", f"{other.ip6}/128")])

    def move(self, node: Node, address: Endpoint) -> None:
        """The node now sends from, and listens at, `address` (NAT rebinding, new network)."""
        self.listening.pop(node.address, None)
        node.address = address
        self.listening[address] = node

    # -- traffic
    def emit(self, node: Node, pairs: Iterable[tuple[bytes, Endpoint]]) -> list[Datagram]:
        out = []
        for data, endpoint in pairs:
            assert endpoint is not None, f"{node.name} emitted a datagram without endpoint"
            d = Datagram(bytes(data), node.address, endpoint, self.now, node.name)
            self.wire.append(d)
            self.log.append(d)
            out.append(d)
        return out

    def collect(self) -> None:
        for node in self.nodes.values():
            self.emit(node, node.protocol.take_datagrams())

    def deliver(self, d: Datagram, *, source: Endpoint | None = None) -> bytes | None:
        """Hand one datagram to its destination (optionally pretending another source)."""
        node = self.listening.get(d.destination)
        if node is None:
            self.lost.append(d)
            return None
        inner = self.inject(node, d.data, source or d.source)
        return inner

    def inject(self, node: Node, data: bytes, source: Endpoint) -> bytes | None:
        """Give raw bytes to `node` as if they arrived from `source`, like the device does."""
        inner = node.protocol.receive_datagram(data, source, self.now, node.backlog)
        if inner is not None:
            node.received.append((self.now, inner))
        self.collect()
        return inner

    def pump(self, drop: Callable[[Datagram], bool] | None = None, limit: int = 10_000) -> None:
        """Deliver everything on the wire (and what that provokes) until it is empty.
        Datagrams for which `drop` is true go to `dropped` instead."""
        self.collect()
        for _ in range(limit):
            if not self.wire:
                return
            d = self.wire.pop(0)
            if drop is not None and drop(d):
                self.dropped.append(d)
            else:
                self.deliver(d)
        raise AssertionError(f"network did not settle after {limit} datagrams")

    def tick(self) -> None:
        for node in self.nodes.values():
            node.protocol.tick(self.now)
        self.collect()

    def next_deadline(self) -> float | None:
        deadlines = [d for d in (n.protocol.next_deadline() for n in self.nodes.values())
                     if d is not None]
        return min(deadlines) if deadlines else None

    def run_until(self, t: float, drop: Callable[[Datagram], bool] | None = None,
                  limit: int = 100_000) -> None:
        """Advance the clock to t, firing every timer at its deadline on the way."""
        self.pump(drop)
        for _ in range(limit):
            deadline = self.next_deadline()
            if deadline is None or deadline > t:
                break
            self.now = max(self.now, deadline)
            self.tick()
            self.pump(drop)
        else:
            raise AssertionError(f"timers did not settle before {t}")
        self.now = max(self.now, t)
        self.tick()
        self.pump(drop)

    def advance(self, dt: float, drop: Callable[[Datagram], bool] | None = None) -> None:
        self.run_until(self.now + dt, drop)

    # -- inspection
    def sent(self, kind: int | None = None, sender: Node | None = None,
             since: float | None = None) -> list[Datagram]:
        return [d for d in self.log
                if (kind is None or d.kind == kind)
                and (sender is None or d.sender == sender.name)
                and (since is None or d.sent_at >= since)]


def seal_raw(sender: Node, receiver: Node, plaintext: bytes, counter: int) -> bytes:
    """A transport message sealed with sender's current keypair for receiver, with any
    counter and any plaintext (what a peer holding the keys could send)."""
    kp = sender.peer(receiver).current
    header = TRANSPORT_HEADER.pack(TRANSPORT, kp.remote_index, counter)
    return header + kp.send_aead.encrypt(COUNTER_NONCE.pack(counter), plaintext, None)


def counter_of(d: Datagram) -> int:
    """The counter in a transport datagram's header."""
    return TRANSPORT_HEADER.unpack_from(d.data)[2]


def pair(*, timers: Timers | None = None, psk: bytes | None = None, mtu: int = 1420,
         start: float = START) -> tuple[Network, Node, Node]:
    """Two connected nodes a (10.0.0.1) and b (10.0.0.2) that know each other's endpoint."""
    net = Network(start)
    a = net.add_node("a", 1, timers=timers, mtu=mtu)
    b = net.add_node("b", 2, timers=timers, mtu=mtu)
    net.connect(a, b, psk=psk)
    return net, a, b


def established(*, timers: Timers | None = None, psk: bytes | None = None,
                mtu: int = 1420) -> tuple[Network, Node, Node]:
    """A pair after a completed handshake initiated by a (b confirmed by a's keepalive)."""
    net, a, b = pair(timers=timers, psk=psk, mtu=mtu)
    a.initiate(b)
    net.pump()
    assert a.peer(b).current is not None and b.peer(a).current is not None
    return net, a, b
