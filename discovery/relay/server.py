"""The relay server: forwards members' WireGuard datagrams between members that have no
direct path (discovery.relay.wire has the format and the rules).

Members only: each datagram's MAC must verify under the sending member's relay key; a
member first binds its current public address (an authenticated BIND with a growing
timestamp, refreshed every BIND_REFRESH seconds by the client); a SEND is forwarded, as a
DELIVER of the same size, only to the destination's bound address, never back to a
source that did not bind. Everything else is dropped and counted by reason (`counters`),
logged at debug. One Service thread, blocking on the socket without timeouts.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from dataclasses import dataclass
from typing import Iterable, Mapping

from meshwg.core import crypto
from meshwg.util.endpoint import Endpoint, format_endpoint, normalize_endpoint
from meshwg.util.errors import MeshwgError
from meshwg.util.service import Service
from meshwg.util.resolve import family_of

from discovery.relay import wire

log = logging.getLogger("meshwg.relay")

BIND_TTL = 75.0          # seconds a bind lasts without a refresh (clients refresh every 20 s)
DROP_REASONS = ("malformed", "unknown_member", "bad_mac", "replayed_bind", "unbound_sender",
                "unbound_destination", "wrong_direction")


class RelayError(MeshwgError):
    """The relay could not start (its port is taken, ...)."""


@dataclass
class _Member:
    public_key: bytes
    key: bytes                      # the relay key
    address: Endpoint | None = None
    bound_at: float = 0.0           # monotonic seconds
    forwarded_datagrams: int = 0    # SENDs from this member forwarded
    forwarded_bytes: int = 0


class RelayServer:
    """A relay on UDP `host`:`port` (port 0: any) for the members whose public keys
    set_members() names; `private_key` is the relay's X25519 key (the rendezvous's or the
    relaying member's WireGuard key). start() binds and starts the thread."""

    def __init__(self, private_key: bytes, host: str = "::", port: int = 0,
                 members: Iterable[bytes] = ()):
        self.private_key = private_key
        self.public_key = crypto.public_key(private_key)
        self.host = host
        self.requested_port = port
        self.port = 0
        self.counters: dict[str, int] = {"forwarded_datagrams": 0, "forwarded_bytes": 0,
                                         "binds": 0, **{f"dropped_{r}": 0 for r in DROP_REASONS}}
        self._lock = threading.Lock()     # guards _members (set_members from other threads)
        self._members: dict[bytes, _Member] = {}
        self._clock = wire.BindClock()
        self._sock: socket.socket | None = None
        self.service = Service("relay")
        self.set_members(members)

    # ------------------------------------------------------------------ membership
    def set_members(self, public_keys: Iterable[bytes]) -> None:
        """The members allowed to bind and send; others' bindings end at once."""
        fresh: dict[bytes, _Member] = {}
        with self._lock:
            for public_key in public_keys:
                ident = wire.member_id(public_key)
                old = self._members.get(ident)
                if old is not None and old.public_key == public_key:
                    fresh[ident] = old
                    continue
                try:
                    key = wire.relay_key(self.private_key, self.public_key, public_key, member_side=False)
                except crypto.WeakKeyError:
                    continue
                fresh[ident] = _Member(public_key, key)
            for ident in self._members.keys() - fresh.keys():
                self._clock.forget(ident)
            self._members = fresh

    def member_counters(self) -> dict[bytes, dict[str, int]]:
        """Per member public key that sent any: forwarded_datagrams, forwarded_bytes."""
        with self._lock:
            return {m.public_key: {"forwarded_datagrams": m.forwarded_datagrams,
                                   "forwarded_bytes": m.forwarded_bytes}
                    for m in self._members.values() if m.forwarded_datagrams}

    def status(self, names: Mapping[bytes, str]) -> dict:
        """What `meshwg status --json` (a relaying member) and `meshwg members --json` (the
        rendezvous) show: the UDP port, the counters (dropped by reason) and what was
        forwarded per member, named by `names` (public key -> name; hex otherwise)."""
        with self._lock:
            counters = dict(self.counters)
        return {"port": self.port, "counters": counters,
                "members": {names.get(key, key.hex()): value
                            for key, value in self.member_counters().items()}}

    def bound(self, now: float | None = None) -> dict[bytes, Endpoint]:
        """Bound members' public keys -> their bound addresses (`now`: monotonic seconds)."""
        now = time.monotonic() if now is None else now
        with self._lock:
            return {m.public_key: m.address for m in self._members.values()
                    if m.address is not None and now - m.bound_at <= BIND_TTL}

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> "RelayServer":
        family = family_of(self.host)
        sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
            sock.bind((self.host, self.requested_port))
        except OSError as exc:
            sock.close()
            raise RelayError(f"relay: cannot bind UDP {format_endpoint((self.host, self.requested_port))}: "
                             f"{exc.strerror}") from None
        sock.setblocking(False)
        self._sock = sock
        self.port = sock.getsockname()[1]
        self.service.on_close(sock.close)
        self.service.spawn(self._loop)
        log.info("relay on UDP %s", format_endpoint((self.host, self.port)))
        return self

    def stop(self) -> None:
        self.service.stop()

    # ------------------------------------------------------------------ datagrams
    def _loop(self) -> None:
        sock = self._sock
        while self.service.wait_readable(sock):
            for _ in range(64):                 # a burst, then look at the stop flag again
                try:
                    data, address = sock.recvfrom(wire.MAX_DATAGRAM + 1)
                except (BlockingIOError, InterruptedError):
                    break
                except OSError:                 # an ICMP error from an earlier send
                    continue
                reply = self.handle(data, normalize_endpoint(address))
                if reply is not None:
                    out, target = reply
                    try:
                        sock.sendto(out, self._sockaddr(target))
                    except OSError as exc:
                        log.debug("relay: send to %s failed: %s", format_endpoint(target), exc)

    def _sockaddr(self, target: Endpoint) -> Endpoint:
        if self._sock is not None and self._sock.family == socket.AF_INET6 and ":" not in target[0]:
            return "::ffff:" + target[0], target[1]
        return target

    def _drop(self, reason: str, source: Endpoint) -> None:
        self.counters[f"dropped_{reason}"] += 1
        log.debug("relay: dropped a datagram from %s (%s)", format_endpoint(source), reason)

    def handle(self, data: bytes, source: Endpoint, now: float | None = None,
               now_ns: int | None = None) -> tuple[bytes, Endpoint] | None:
        """One received datagram -> what to send and where (None: nothing). Counts."""
        now = time.monotonic() if now is None else now
        try:
            datagram = wire.parse(data)
        except wire.Malformed:
            self._drop("malformed", source)
            return None
        if datagram.kind not in (wire.BIND, wire.SEND):
            self._drop("wrong_direction", source)
            return None
        with self._lock:
            sender = self._members.get(datagram.first_id)
            if sender is None:
                self._drop("unknown_member", source)
                return None
            try:
                wire.verify(datagram, sender.key)
            except wire.BadMac:
                self._drop("bad_mac", source)
                return None
            if datagram.kind == wire.BIND:
                now_ns = time.time_ns() if now_ns is None else now_ns
                if not self._clock.accept(datagram.first_id, datagram.timestamp, now_ns):
                    self._drop("replayed_bind", source)
                    return None
                if sender.address != source:
                    log.debug("relay: member %s bound %s", datagram.first_id.hex(), format_endpoint(source))
                sender.address, sender.bound_at = source, now
                self.counters["binds"] += 1
                return wire.encode_bind(wire.BIND_ACK, sender.key, datagram.first_id,
                                        datagram.timestamp), source
            if sender.address is None or now - sender.bound_at > BIND_TTL:
                self._drop("unbound_sender", source)
                return None
            destination = self._members.get(datagram.second_id)
            if destination is None or destination.address is None or now - destination.bound_at > BIND_TTL:
                self._drop("unbound_destination", source)
                return None
            out = wire.forward(datagram, destination.key)
            self.counters["forwarded_datagrams"] += 1
            self.counters["forwarded_bytes"] += len(out)
            sender.forwarded_datagrams += 1
            sender.forwarded_bytes += len(out)
            return out, destination.address
