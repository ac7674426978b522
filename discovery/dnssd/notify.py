"""DNS NOTIFY (RFC 1996) from the rendezvous to its members when the directory changes.

Members poll the directory at an interval; a NOTIFY tells them to re-read it at once. It
travels inside the tunnel: the rendezvous sends it to each member's mesh address, and a
member accepts it only from the rendezvous's mesh address (cryptokey routing makes that
source authentic). Messages are built and parsed with dnspython.
"""

from __future__ import annotations

import logging
import socket
import threading
from typing import Callable, Iterable

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.opcode
import dns.rdatatype

log = logging.getLogger("meshwg.notify")

NOTIFY_PORT = 5354   # UDP, on each member's mesh address


def build_notify(zone: str) -> bytes:
    msg = dns.message.make_query(dns.name.from_text(zone), dns.rdatatype.SOA)
    msg.set_opcode(dns.opcode.NOTIFY)
    msg.flags |= dns.flags.AA
    msg.flags &= ~dns.flags.RD
    return msg.to_wire()


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
    """Sends NOTIFY to members (the rendezvous side)."""

    def __init__(self, zone: str, source_address: str):
        self.zone = zone
        self._wire = build_notify(zone)
        family = socket.AF_INET6 if ":" in source_address else socket.AF_INET
        self._sock = socket.socket(family, socket.SOCK_DGRAM)
        self._sock.setblocking(False)
        try:
            self._sock.bind((source_address, 0))
        except OSError:
            pass
        self.sent = 0

    def notify(self, addresses: Iterable[str], port: int = NOTIFY_PORT) -> None:
        for address in addresses:
            try:
                self._sock.sendto(self._wire, (address, port))
                self.sent += 1
            except OSError:
                pass   # buffer full or member unreachable: it polls anyway

    def close(self) -> None:
        self._sock.close()


class NotifyListener:
    """Receives NOTIFY on a member's mesh address; calls on_notify() for genuine ones."""

    def __init__(self, address: str, zone: str, allowed_source: str, on_notify: Callable[[], None],
                 port: int = NOTIFY_PORT):
        self.zone = zone
        self.allowed_source = allowed_source
        self.on_notify = on_notify
        family = socket.AF_INET6 if ":" in address else socket.AF_INET
        self._sock = socket.socket(family, socket.SOCK_DGRAM)
        self._sock.bind((address, port))
        self._sock.settimeout(0.5)
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self.received = 0
        self.dropped = 0

    def start(self) -> "NotifyListener":
        self._thread = threading.Thread(target=self._run, name="notify-listener", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stopping.is_set():
            try:
                wire, source = self._sock.recvfrom(2048)
            except socket.timeout:
                continue
            except OSError:
                break
            if source[0] != self.allowed_source or not is_notify_for(wire, self.zone):
                self.dropped += 1
                continue
            self.received += 1
            self.on_notify()

    def stop(self) -> None:
        self._stopping.set()
        self._sock.close()
        if self._thread is not None:
            self._thread.join(timeout=2)
