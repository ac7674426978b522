"""The engine socket's NAT mapping on every address family: a dual-stack member is observed
and published on each family it has, not only on the one it reaches the rendezvous over.

The rendezvous's engine sees one endpoint per member: the source of its tunnel's packets,
in the family the member talks to it over (a dual-stack member whose rendezvous name has A
and AAAA records often uses IPv6). Peers of the other family learn nothing from that. So
for every other family in which the member has a route to one of the rendezvous's
addresses, it sends observation requests (discovery.netcheck.wire, answered by the
rendezvous's responder on its WireGuard port + 2: discovery.netcheck.responder) from its
engine's own UDP socket (meshwg.device.Device.send_side; a port-rewriting NAT gives every
socket its own port, so another socket's mapping would be useless), and reports the
answer, its reflexive endpoint in that family, as a host candidate (the report travels
inside the tunnel: discovery.traversal.report).

What is accepted is bounded and checked: an answer counts only when it comes from the very
responder address a request went to, carries a transaction id sent there and not answered
yet (at most MAX_PENDING per target, 12 random bytes: an off-path forger must guess it),
and names an address of that family; anything else is dropped and counted. The worst a
forged answer can do is one wrong candidate, which costs a handshake initiation: WireGuard
authenticates every path.

Schedule per target: requests at RETRY_SCHEDULE until one is answered, then one every
REFRESH seconds (which also keeps that family's mapping open, like a keepalive); an
observation not confirmed for STALE_AFTER seconds is dropped (the family lost its route).

MappingObserver decides (I/O-free, the clock is the caller's `now`); EngineMappingObserver
wires it to a running Device; choose_rendezvous picks the address the engine uses and the
observation targets from the rendezvous host's resolved addresses.
"""

from __future__ import annotations

import ipaddress
import logging
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Callable, Iterable

from meshwg.util.endpoint import Endpoint

from discovery.netcheck import wire
from discovery.netcheck.responder import observe_ports

log = logging.getLogger("meshwg.netcheck")

RETRY_SCHEDULE = (0.0, 1.0, 2.0, 4.0, 8.0)   # seconds after start: sends until answered
REFRESH = 25.0                                # seconds between observations once answered
STALE_AFTER = 3 * REFRESH + 5.0               # an observation this old without an answer is dropped
MAX_PENDING = 4                               # unanswered transaction ids kept per target


def _canonical(endpoint: Endpoint) -> Endpoint:
    """(canonical IP text, port); IPv4-mapped IPv6 as IPv4. ValueError for a non-IP host."""
    ip = ipaddress.ip_address(endpoint[0].split("%", 1)[0])
    if ip.version == 6 and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return str(ip), endpoint[1]


def _version(host: str) -> int:
    return ipaddress.ip_address(host).version


def choose_rendezvous(addresses: Iterable[Endpoint], routable: Callable[[str], bool]
                      ) -> tuple[Endpoint, list[Endpoint]]:
    """From the rendezvous's resolved (ip, WireGuard port) addresses, in the resolver's
    order: (the one the engine uses: the first we have a route to, else the first; the
    observation responder's endpoint, WireGuard port + 2, of the first routable address of
    each other family). `routable(ip)` asks whether the kernel has a route there.
    ValueError for no address."""
    listed = [_canonical(a) for a in addresses]
    if not listed:
        raise ValueError("the rendezvous has no address")
    usable = [a for a in listed if routable(a[0])]
    primary = (usable or listed)[0]
    targets: list[Endpoint] = []
    families = {_version(primary[0])}
    for host, port in usable:
        if _version(host) not in families:
            families.add(_version(host))
            targets.append((host, observe_ports(port)[0]))
    return primary, targets


@dataclass
class _Target:
    endpoint: Endpoint
    start: float
    pending: "OrderedDict[bytes, float]" = field(default_factory=OrderedDict)  # txid -> sent at
    attempt: int = 0
    next_send: float = 0.0
    reflexive: Endpoint | None = None
    confirmed_at: float | None = None


class MappingObserver:
    """Observation of one socket's reflexive endpoint at each of `targets` (responder
    endpoints, one per family). Not thread-safe: EngineMappingObserver serialises it.
    Counters: sent, answered, dropped."""

    def __init__(self, targets: Iterable[Endpoint] = (), now: float = 0.0,
                 new_txid: Callable[[], bytes] = wire.new_txid):
        self._new_txid = new_txid
        self._targets: dict[Endpoint, _Target] = {}
        self.sent = self.answered = self.dropped = 0
        self.set_targets(targets, now)

    def set_targets(self, targets: Iterable[Endpoint], now: float) -> bool:
        """Observe at `targets` from now on; a target kept keeps what it observed, a new
        one starts its retry schedule at `now`. True when the observed endpoints changed."""
        before = self.endpoints()
        wanted = [_canonical(t) for t in targets]
        self._targets = {t: self._targets.get(t) or _Target(t, now, next_send=now) for t in wanted}
        return self.endpoints() != before

    def refresh(self, now: float) -> None:
        """Observe again at once (our addresses changed: the mappings may have moved)."""
        for target in self._targets.values():
            target.start, target.attempt, target.next_send = now, 0, now

    def endpoints(self) -> list[Endpoint]:
        """The reflexive endpoints observed, one per family at most, in target order."""
        return [t.reflexive for t in self._targets.values() if t.reflexive is not None]

    def due(self, now: float) -> tuple[list[tuple[bytes, Endpoint]], bool]:
        """(requests to send now as (datagram, responder endpoint), whether the observed
        endpoints changed because one went stale)."""
        out: list[tuple[bytes, Endpoint]] = []
        changed = False
        for target in self._targets.values():
            if target.confirmed_at is not None and now - target.confirmed_at >= STALE_AFTER:
                target.reflexive = target.confirmed_at = None
                target.start, target.attempt, target.next_send = now, 0, now   # retry at once
                changed = True
            if now < target.next_send:
                continue
            txid = self._new_txid()
            target.pending[txid] = now
            while len(target.pending) > MAX_PENDING:
                target.pending.popitem(last=False)
            out.append((wire.encode_request(txid), target.endpoint))
            self.sent += 1
            target.attempt += 1
            if target.confirmed_at is not None or target.attempt >= len(RETRY_SCHEDULE):
                target.next_send = now + REFRESH
            else:
                target.next_send = target.start + RETRY_SCHEDULE[target.attempt]
        return out, changed

    def answer(self, data: bytes, source: Endpoint, now: float) -> bool:
        """A datagram that arrived on the socket from `source`: True when it was a valid
        answer that changed the observed endpoints. Anything else is dropped and counted."""
        parsed = wire.parse_answer(data)
        try:
            target = self._targets.get(_canonical(source)) if parsed is not None else None
        except ValueError:
            target = None
        if parsed is None or target is None or parsed[0] not in target.pending:
            self.dropped += 1
            return False
        txid, observed = parsed
        if _version(observed[0]) != _version(target.endpoint[0]) or not 0 < observed[1] < 65536:
            self.dropped += 1
            return False
        del target.pending[txid]
        self.answered += 1
        changed = observed != target.reflexive
        target.reflexive, target.confirmed_at = observed, now
        target.next_send = now + REFRESH         # answered: no more retries, refresh later
        return changed

    def next_deadline(self) -> float | None:
        """When due() has something to do next (a send or an expiry), None without targets."""
        times = [t.next_send for t in self._targets.values()]
        times += [t.confirmed_at + STALE_AFTER for t in self._targets.values()
                  if t.confirmed_at is not None]
        return min(times) if times else None


class EngineMappingObserver:
    """A MappingObserver on a running meshwg Device's socket: answers arrive through the
    device's side channel (prefix wire.MAGIC) on its data path, requests leave by
    Device.send_side. `on_change()` is called (from any thread) when the observed
    endpoints changed. Times are the caller's `now` (wall clock, time.time)."""

    def __init__(self, device, targets: Iterable[Endpoint], on_change: Callable[[], None],
                 clock: Callable[[], float] = time.time):
        self.device = device
        self.on_change = on_change
        self.clock = clock
        self.observer = MappingObserver(targets, clock())
        self._lock = threading.Lock()

    def start(self) -> "EngineMappingObserver":
        self.device.set_side_channel(wire.MAGIC, self._on_datagram)
        return self

    def stop(self) -> None:
        self.device.set_side_channel(wire.MAGIC, None)

    def _on_datagram(self, data: bytes, source: Endpoint) -> None:
        with self._lock:
            changed = self.observer.answer(data, source, self.clock())
        if changed:
            log.info("reflexive endpoints of the engine's socket: %s", self.endpoints())
            self.on_change()

    def set_targets(self, targets: Iterable[Endpoint], now: float) -> None:
        """New targets (own addresses changed), observed again at once."""
        with self._lock:
            changed = self.observer.set_targets(targets, now)
            self.observer.refresh(now)
        if changed:
            self.on_change()

    def endpoints(self) -> list[Endpoint]:
        with self._lock:
            return self.observer.endpoints()

    def step(self, now: float) -> float | None:
        """Send what is due; when to call again at the latest (None: never)."""
        with self._lock:
            requests, changed = self.observer.due(now)
            deadline = self.observer.next_deadline()
        for datagram, endpoint in requests:
            self.device.send_side(datagram, endpoint)
        if changed:
            self.on_change()
        return deadline

    def counters(self) -> dict[str, int]:
        with self._lock:
            o = self.observer
            return {"sent": o.sent, "answered": o.answered, "dropped": o.dropped}
