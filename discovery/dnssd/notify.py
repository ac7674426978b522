"""DNS NOTIFY (RFC 1996) from the rendezvous to its members when the directory changes.

Members read the directory when told (and on a slow safety poll); a NOTIFY tells them to
re-read it at once. It travels inside the tunnel: the rendezvous sends it to each member's
mesh address, and a member accepts it only from the rendezvous's mesh address (cryptokey
routing makes that source authentic) and only through the tunnel interface
(meshwg.util.ingress), so a datagram spoofed with the rendezvous's address from the LAN
finds no socket. Whatever arrives, a member is told at most once per NOTIFY_INTERVAL
(notices in between are folded into one, delivered when the interval ends). As RFC 1996
section 3.6 asks, the member answers with a NOTIFY response and the rendezvous retransmits until it gets one (RETRIES
transmissions, RETRY_START seconds apart, doubling), so a lost datagram costs seconds, not
the safety poll. Messages are built and parsed with dnspython.
"""

from __future__ import annotations

import logging
import os
import random
import socket
import threading
import time
from typing import Callable, Iterable

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.opcode
import dns.rdatatype

from meshwg.util.ingress import Ingress, restrict
from meshwg.util.service import Service
from meshwg.util.resolve import family_of

log = logging.getLogger("meshwg.notify")

NOTIFY_PORT = 5354   # UDP, on each member's mesh address
RETRY_START = 1.0    # seconds before the first retransmission; doubles after each
RETRIES = 5          # transmissions in all before a silent member is given up on
NOTIFY_INTERVAL = 1.0  # seconds: a member acts on at most one NOTIFY per interval


def build_notify(zone: str, msg_id: int | None = None) -> bytes:
    """A NOTIFY query for `zone` (SOA, AA set, RD clear); a random ID unless given."""
    msg = dns.message.make_query(dns.name.from_text(zone), dns.rdatatype.SOA, id=msg_id)
    msg.set_opcode(dns.opcode.NOTIFY)
    msg.flags |= dns.flags.AA
    msg.flags &= ~dns.flags.RD
    return msg.to_wire()


def notify_response(wire: bytes) -> bytes:
    """The NOTIFY response (QR set, same ID and question) to a NOTIFY query."""
    return dns.message.make_response(dns.message.from_wire(wire)).to_wire()


def response_id(wire: bytes, zone: str) -> int | None:
    """The ID of `wire` if it is a well-formed NOTIFY response for `zone`, else None."""
    try:
        msg = dns.message.from_wire(wire)
    except (dns.exception.DNSException, ValueError):
        return None
    if msg.opcode() != dns.opcode.NOTIFY or not msg.flags & dns.flags.QR \
            or len(msg.question) != 1 or msg.question[0].name != dns.name.from_text(zone):
        return None
    return msg.id


def is_notify_for(wire: bytes, zone: str) -> bool:
    """True when `wire` is a well-formed NOTIFY query for `zone`."""
    try:
        msg = dns.message.from_wire(wire)
    except (dns.exception.DNSException, ValueError):
        return False
    if msg.opcode() != dns.opcode.NOTIFY or msg.flags & dns.flags.QR or len(msg.question) != 1:
        return False
    return msg.question[0].name == dns.name.from_text(zone)


class Notifier:
    """Sends NOTIFY to members (the rendezvous side) and retransmits each until its NOTIFY
    response arrives: `answered` and `unanswered` (given up after RETRIES) count them."""

    def __init__(self, zone: str, source_address: str):
        self.zone = zone
        family = family_of(source_address)
        self._sock = socket.socket(family, socket.SOCK_DGRAM)
        self._sock.setblocking(False)
        try:
            self._sock.bind((source_address, 0))
        except OSError:
            pass
        self.sent = 0
        self.answered = 0
        self.unanswered = 0
        # (address, port) -> [message ID, transmissions so far, monotonic time of the next]
        self._pending: dict[tuple[str, int], list] = {}
        self._lock = threading.Lock()
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        self._service = Service("notifier")
        self._service.on_close(self._sock.close)
        self._service.on_close(lambda: (os.close(self._wake_r), os.close(self._wake_w)))
        self._service.spawn(self._run)

    def notify(self, addresses: Iterable[str], port: int = NOTIFY_PORT) -> None:
        """Send a NOTIFY to each address now (a newer one replaces one still unanswered)."""
        now = time.monotonic()
        with self._lock:
            for address in addresses:
                msg_id = random.getrandbits(16)
                self._pending[(address, port)] = [msg_id, 1, now + RETRY_START]
                self._send(msg_id, (address, port))
        try:
            os.write(self._wake_w, b"x")     # the retransmission thread takes the new times
        except OSError:
            pass

    def _send(self, msg_id: int, target: tuple[str, int]) -> None:
        try:
            self._sock.sendto(build_notify(self.zone, msg_id), target)
            self.sent += 1
        except OSError:
            pass   # buffer full or member unreachable: retransmitted, and it polls anyway

    def _run(self) -> None:
        svc = self._service
        while not svc.stopping:
            with self._lock:
                due = min((p[2] for p in self._pending.values()), default=None)
            timeout = None if due is None else max(0.0, due - time.monotonic())
            ready = svc.wait_readable(self._sock, self._wake_r, timeout=timeout)
            if svc.stopping:
                return
            if self._wake_r in ready:
                os.read(self._wake_r, 512)
            if self._sock in ready:
                self._read_responses()
            self._retransmit(time.monotonic())

    def _read_responses(self) -> None:
        while True:
            try:
                wire, source = self._sock.recvfrom(2048)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return
            msg_id = response_id(wire, self.zone)
            with self._lock:
                pending = self._pending.get((source[0], source[1]))
                if pending is not None and pending[0] == msg_id:
                    del self._pending[(source[0], source[1])]
                    self.answered += 1

    def _retransmit(self, now: float) -> None:
        with self._lock:
            for target, pending in list(self._pending.items()):
                msg_id, count, due = pending
                if due > now:
                    continue
                if count >= RETRIES:
                    del self._pending[target]
                    self.unanswered += 1
                    log.info("NOTIFY to %s unanswered after %d tries", target[0], count)
                    continue
                self._send(msg_id, target)
                pending[1] = count + 1
                pending[2] = now + RETRY_START * 2 ** count

    def close(self) -> None:
        self._service.stop()


class NotifyListener:
    """Receives NOTIFY on a member's mesh address; answers and calls on_notify() for
    genuine ones (from the rendezvous, for our zone), drops and counts the rest. With an
    ``interface`` it takes datagrams from that (tunnel) interface only. on_notify() runs at
    most once per ``interval`` seconds (`coalesced` counts the notices folded into a later
    call). Idle, it blocks without timeouts."""

    def __init__(self, address: str, zone: str, allowed_source: str, on_notify: Callable[[], None],
                 port: int = NOTIFY_PORT, *, interface: str | None = None,
                 interval: float = NOTIFY_INTERVAL):
        self.zone = zone
        self.allowed_source = allowed_source
        self.allowed_sources = {allowed_source}     # a member with several rendezvous: each
        self.on_notify = on_notify
        self.interval = interval
        family = family_of(address)
        self._sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            if interface is not None:
                restrict(self._sock, Ingress(interface))
            self._sock.bind((address, port))
        except OSError:
            self._sock.close()
            raise
        self._sock.setblocking(False)
        self._service = Service("notify-listener")
        self._service.on_close(self._sock.close)
        self.received = 0
        self.dropped = 0
        self.coalesced = 0
        self._last_call = float("-inf")   # time.monotonic() of the last on_notify()
        self._owed = False                # a notice arrived since: call once the interval ends

    def start(self) -> "NotifyListener":
        self._service.spawn(self._run)
        return self

    def _run(self) -> None:
        svc = self._service
        while not svc.stopping:
            due = self._last_call + self.interval if self._owed else None
            timeout = None if due is None else max(0.0, due - time.monotonic())
            ready = svc.wait_readable(self._sock, timeout=timeout)
            if svc.stopping:
                return
            if ready:
                self._receive()
            if self._owed and time.monotonic() >= self._last_call + self.interval:
                self._owed = False
                self._last_call = time.monotonic()
                self.on_notify()

    def _receive(self) -> None:
        try:
            wire, source = self._sock.recvfrom(2048)
        except (BlockingIOError, InterruptedError, OSError):
            return
        if source[0] not in self.allowed_sources or not is_notify_for(wire, self.zone):
            self.dropped += 1
            return
        self.received += 1
        try:
            self._sock.sendto(notify_response(wire), source)
        except OSError:
            pass        # the rendezvous retransmits
        if self._owed:
            self.coalesced += 1
        self._owed = True

    def stop(self) -> None:
        self._service.stop()
