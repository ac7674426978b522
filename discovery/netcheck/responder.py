"""The rendezvous's "what is my address" responder for `meshwg netcheck` (discovery.netcheck.wire).

Listens on two UDP ports (the rendezvous's WireGuard port + 2 and + 3, OBSERVE_PORT_OFFSETS)
so a member can compare the mappings its NAT makes towards two destinations: equal means
endpoint-independent mapping (RFC 4787 section 4.1), different means the NAT maps per
destination ("symmetric", hole punching fails). Each well-formed request is answered with
its observed source ip:port; answers are never larger than requests; each source address
(IPv6: its /64) is rate-limited (meshwg.core.ratelimiter); malformed and over-limit
datagrams are dropped and counted. Idle, its thread blocks without a timeout (Service).
"""

from __future__ import annotations

import errno
import ipaddress
import logging
import socket
import time
from collections import OrderedDict

from meshwg.core.ratelimiter import RateLimiter
from meshwg.util.service import Service

from discovery.netcheck import wire

log = logging.getLogger("meshwg.netcheck")

OBSERVE_PORT_OFFSETS = (2, 3)   # added to the rendezvous's WireGuard port
RATE = 20                       # answers per second per source, after a burst of
BURST = 10
SEEN_FOR = 120.0                # seconds an answered source counts as recently seen
MAX_SEEN = 4096                 # sources remembered at most (oldest forgotten first)


def observe_ports(wireguard_port: int) -> tuple[int, ...]:
    """The responder's UDP ports for a rendezvous whose WireGuard port is ``wireguard_port``."""
    return tuple(wireguard_port + offset for offset in OBSERVE_PORT_OFFSETS)


class ObservationResponder:
    """Answers observation requests on ``ports`` of every local IPv4 and IPv6 address
    (an address family the host lacks is skipped). Counters: answered, dropped, limited.

    It remembers the sources it answered (at most MAX_SEEN, for SEEN_FOR seconds):
    seen_recently() lets the rendezvous accept a member's reported reflexive endpoint in
    another address family (discovery.netcheck.mapping) only where a request really came
    from, never a third party's address it was never sent from."""

    def __init__(self, ports: tuple[int, ...], host4: str = "0.0.0.0", host6: str | None = "::"):
        self.ports, self.host4, self.host6 = tuple(ports), host4, host6
        self.answered = self.dropped = self.limited = 0
        self.limiter = RateLimiter(rate=RATE, burst=BURST)
        self.service = Service("netcheck-responder")
        self.sockets: list[socket.socket] = []
        self._seen: OrderedDict[tuple[str, int], float] = OrderedDict()

    def seen_recently(self, endpoint: tuple[str, int], now: float | None = None) -> bool:
        """Whether a request from `endpoint` (IP, port; IPv4-mapped IPv6 as IPv4) was
        answered within the last SEEN_FOR seconds (`now`: time.monotonic())."""
        now = time.monotonic() if now is None else now
        at = self._seen.get(_canonical(endpoint))
        return at is not None and now - at <= SEEN_FOR

    def start(self) -> "ObservationResponder":
        try:
            for port in self.ports:
                self.sockets.append(_bind(socket.AF_INET, self.host4, port))
                if self.host6:
                    try:
                        self.sockets.append(_bind(socket.AF_INET6, self.host6, port))
                    except OSError as exc:
                        if exc.errno not in (errno.EAFNOSUPPORT, errno.EADDRNOTAVAIL):
                            raise
        except BaseException:
            for sock in self.sockets:
                sock.close()
            raise
        for sock in self.sockets:
            self.service.on_close(sock.close)
        self.service.spawn(self._loop)
        return self

    def stop(self) -> None:
        self.service.stop()

    def _loop(self) -> None:
        while True:
            ready = self.service.wait_readable(*self.sockets)
            if self.service.stopping:
                return
            for sock in ready:
                self._drain(sock)

    def _drain(self, sock: socket.socket) -> None:
        while True:
            try:
                data, source = sock.recvfrom(wire.MAX_REQUEST + 1)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:             # an ICMP error queued on the socket: nothing to answer
                continue
            self._answer(sock, data, source)

    def _answer(self, sock: socket.socket, data: bytes, source: tuple) -> None:
        txid = wire.parse_request(data)
        if txid is None:
            self.dropped += 1
            return
        host, port = source[0], source[1]
        packed = socket.inet_pton(sock.family, host.split("%")[0])
        if not self.limiter.allow(packed, time.monotonic()):
            self.limited += 1
            return
        answer = wire.encode_answer(txid, (host, port))
        if len(answer) > len(data):     # wire.MIN_REQUEST makes this impossible; kept as a guard
            self.dropped += 1
            return
        self._remember((host, port))    # before the answer: its receiver may ask at once
        try:
            sock.sendto(answer, source)
            self.answered += 1
        except OSError as exc:
            log.debug("netcheck answer to %s failed: %s", source, exc)


    def _remember(self, endpoint: tuple[str, int]) -> None:
        key = _canonical(endpoint)
        self._seen[key] = time.monotonic()
        self._seen.move_to_end(key)
        while len(self._seen) > MAX_SEEN:
            self._seen.popitem(last=False)


def _canonical(endpoint: tuple[str, int]) -> tuple[str, int]:
    ip = ipaddress.ip_address(endpoint[0].split("%")[0])
    if ip.version == 6 and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return str(ip), endpoint[1]


def _bind(family: int, host: str, port: int) -> socket.socket:
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind((host, port))
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock
