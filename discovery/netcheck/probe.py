"""The netcheck client: gathers discovery.netcheck.classify.Observations in under 5 s.

Per address family of the rendezvous, one UDP socket sends padded observation requests
(discovery.netcheck.wire) to both responder ports, retransmitting on PROBE_SCHEDULE until
both answered or OBSERVE_BUDGET passed; each retransmission carries its own transaction id,
so a round-trip time is measured from the send it answers. Then the hairpin check: a second
socket sends a request to the first socket's IPv4 reflexive address; if it arrives (within
HAIRPIN_BUDGET), our NAT hairpins. Whether a family has a route is asked of the kernel by
connect() on a UDP socket, which sends nothing.
"""

from __future__ import annotations

import select
import socket
import time

from discovery.netcheck import wire
from discovery.netcheck.classify import FamilyObservations, Observations

PROBE_SCHEDULE = (0.0, 0.25, 0.6, 1.1, 1.8)   # seconds after start: (re)send unanswered requests
OBSERVE_BUDGET = 2.5                          # seconds for both families' observations
HAIRPIN_BUDGET = 0.8                          # seconds to wait for our own hairpinned request
ROUTE_PROBE = {socket.AF_INET: "192.0.2.1", socket.AF_INET6: "2001:db8::1"}   # documentation nets


def resolve(host: str, family: int) -> str | None:
    """The first address of ``host`` in ``family``, or None."""
    try:
        infos = socket.getaddrinfo(host, None, family, socket.SOCK_DGRAM)
    except socket.gaierror:
        return None
    return infos[0][4][0] if infos else None


def has_route(family: int, target: str | None) -> bool:
    """Whether the kernel has a route to ``target`` (or anywhere public) in ``family``."""
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        sock.connect((target or ROUTE_PROBE[family], 9))
        return True
    except OSError:
        return False
    finally:
        sock.close()


class _Family:
    def __init__(self, family: int, target: str | None, ports: tuple[int, ...]):
        self.family, self.ports = family, ports
        self.obs = FamilyObservations(route=has_route(family, target), target=target)
        self.sock: socket.socket | None = None
        self.sent: dict[bytes, tuple[int, float]] = {}    # txid -> (port, sent at)
        if target is not None and self.obs.route:
            self.sock = socket.socket(family, socket.SOCK_DGRAM)
            self.sock.bind(("0.0.0.0", 0) if family == socket.AF_INET else ("::", 0))
            self.sock.setblocking(False)

    def pending(self) -> list[int]:
        return [p for p in self.ports if p not in self.obs.answers]

    def send_round(self, now: float) -> None:
        assert self.sock is not None
        for port in self.pending():
            txid = wire.new_txid()
            try:
                self.sock.sendto(wire.encode_request(txid), (self.obs.target, port))
            except OSError as exc:
                self.obs.send_error = exc.strerror or str(exc)
                continue
            self.sent[txid] = (port, now)
            if self.obs.local is None:
                self.obs.local = _local(self.sock, self.obs.target, port)

    def receive(self, now: float) -> None:
        assert self.sock is not None
        while True:
            try:
                data, _ = self.sock.recvfrom(2048)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:          # ICMP unreachable queued: the port is closed or filtered
                continue
            parsed = wire.parse_answer(data)
            if parsed is None or parsed[0] not in self.sent:
                continue
            port, sent_at = self.sent.pop(parsed[0])
            if port not in self.obs.answers:
                self.obs.answers[port] = parsed[1]
                self.obs.rtts.append(now - sent_at)

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()


def _local(sock: socket.socket, target: str, port: int) -> tuple[str, int]:
    """Our source address towards target (a connected twin socket asks the kernel) with
    ``sock``'s port."""
    twin = socket.socket(sock.family, socket.SOCK_DGRAM)
    try:
        twin.connect((target, port))
        return twin.getsockname()[0], sock.getsockname()[1]
    finally:
        twin.close()


def gather(host: str, ports: tuple[int, ...], rendezvous: str,
           clock=time.monotonic) -> Observations:
    """Probe the rendezvous ``host``'s responder ``ports``; the observations (see the module
    docstring for timing)."""
    fams = [_Family(socket.AF_INET, resolve(host, socket.AF_INET), ports),
            _Family(socket.AF_INET6, resolve(host, socket.AF_INET6), ports)]
    try:
        live = [f for f in fams if f.sock is not None]
        start = clock()
        schedule = list(PROBE_SCHEDULE)
        while live and any(f.pending() for f in live):
            now = clock() - start
            if schedule and now >= schedule[0]:
                schedule.pop(0)
                for f in live:
                    if f.pending():
                        f.send_round(clock())
            if now >= OBSERVE_BUDGET:
                break
            wake = min(schedule[0] if schedule else OBSERVE_BUDGET, OBSERVE_BUDGET)
            readable, _, _ = select.select([f.sock for f in live], [], [], max(0.0, wake - now))
            for f in live:
                if f.sock in readable:
                    f.receive(clock())
        hairpin = _hairpin(fams[0]) if fams[0].obs.answers else None
        return Observations(rendezvous=rendezvous, ports=ports, ipv4=fams[0].obs,
                            ipv6=fams[1].obs, hairpin=hairpin)
    finally:
        for f in fams:
            f.close()


def _hairpin(fam: _Family, clock=time.monotonic) -> bool:
    """Send from a second socket to ``fam``'s reflexive address; True if it arrives."""
    assert fam.sock is not None
    reflexive = fam.obs.answers[fam.ports[0]]
    txid = wire.new_txid()
    other = socket.socket(fam.family, socket.SOCK_DGRAM)
    try:
        other.bind(("0.0.0.0", 0))
        deadline = clock() + HAIRPIN_BUDGET
        for _ in range(2):      # one retransmission halfway
            try:
                other.sendto(wire.encode_request(txid), reflexive)
            except OSError:
                return False
            half = clock() + HAIRPIN_BUDGET / 2
            while clock() < min(half, deadline):
                readable, _, _ = select.select([fam.sock], [], [], max(0.0, min(half, deadline) - clock()))
                if not readable:
                    continue
                try:
                    data, _ = fam.sock.recvfrom(2048)
                except OSError:
                    continue
                if wire.parse_request(data) == txid:
                    return True
        return False
    finally:
        other.close()

