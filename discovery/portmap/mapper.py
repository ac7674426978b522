"""PortMapper: one UDP mapping for the WireGuard listen port on the default gateway.

It tries PCP (RFC 6887), then NAT-PMP (RFC 6886), then UPnP IGD, each bounded so that the
whole discovery takes under 3 s; renews the mapping at half its lifetime (RFC 6886 section
3.3 and RFC 6887 section 11.2.1 both advise renewing well before expiry); retries a failed
discovery later (:data:`RETRY_AFTER`, doubling to :data:`RETRY_MAX`); deletes the mapping
on stop; maps again at once on :meth:`PortMapper.refresh` (the host moved). Its one thread
sleeps until the next renewal through
:class:`meshwg.util.service.Service`, so it never blocks the member daemon and costs
nothing between renewals.
"""

from __future__ import annotations

import errno
import logging
import os
import select
import socket
import threading
import time
from dataclasses import dataclass
from typing import Callable

from meshwg.util.endpoint import format_endpoint
from meshwg.util.service import Service

from discovery.portmap import natpmp, pcp
from discovery.portmap.errors import MalformedMessage, PortMapError
from discovery.portmap.upnp import CONFLICT_IN_MAPPING_ENTRY, UpnpClient

log = logging.getLogger("meshwg.portmap")

PROTOCOLS = ("pcp", "natpmp", "upnp")
PROTOCOL_BUDGET = {"pcp": 0.8, "natpmp": 0.8, "upnp": 1.2}   # seconds; sum < 3 s
DEFAULT_LIFETIME = 7200          # seconds asked for (RFC 6886 section 3.3 recommends 7200)
RETRY_AFTER = 30.0               # seconds after a failed discovery, doubling...
RETRY_MAX = 600.0                # ...up to this
MIN_RENEW = 1.0                  # seconds: never renew faster than this
MAX_REPLY = pcp.MAX_MESSAGE + 4  # bytes read per datagram (larger replies are malformed)

Wait = Callable[[socket.socket, float], bool]


@dataclass(frozen=True)
class Mapping:
    """A mapping the gateway granted: which protocol, the external (ip, port) peers can
    send to, the internal port, the lifetime in seconds and when it was obtained
    (time.monotonic())."""
    protocol: str
    external_address: str
    external_port: int
    internal_port: int
    lifetime: int
    obtained: float

    @property
    def endpoint(self) -> str:
        return format_endpoint((self.external_address, self.external_port))

    def as_status(self) -> dict:
        return {"protocol": self.protocol, "endpoint": self.endpoint,
                "lifetime": self.lifetime}


def parse_default_gateway(route_table: str) -> str | None:
    """The IPv4 default route's gateway from /proc/net/route text (little-endian hex
    fields: Iface Destination Gateway Flags ...; RTF_GATEWAY = 0x2), or None."""
    for line in route_table.splitlines()[1:]:
        fields = line.split()
        if len(fields) < 4 or fields[1] != "00000000":
            continue
        try:
            flags = int(fields[3], 16)
            raw = int(fields[2], 16)
        except ValueError:
            continue
        if flags & 0x2 and raw:
            return socket.inet_ntoa(raw.to_bytes(4, "little"))
    return None


def default_gateway(path: str = "/proc/net/route") -> str | None:
    """This namespace's IPv4 default gateway (see parse_default_gateway), or None."""
    try:
        with open(path) as table:
            return parse_default_gateway(table.read(65536))
    except OSError:
        return None


def select_wait(sock: socket.socket, seconds: float) -> bool:
    """Block until ``sock`` is readable or ``seconds`` pass (used once a Service stopped)."""
    return bool(select.select([sock], [], [], max(0.0, seconds))[0])


def _exchange(gateway: str, request: bytes, parse: Callable[[bytes], object],
              budget: float, wait: Wait,
              on_drop: Callable[[], None] | None = None) -> tuple[object, str]:
    """Send ``request`` to gateway:5351 from a fresh UDP socket, retransmitting after
    0.25 s, doubling (RFC 6886 section 3.1), until ``parse`` accepts a reply or ``budget``
    seconds pass. Replies that do not parse are dropped (MalformedMessage; ``on_drop()``
    counts them); an error
    result or an ICMP port unreachable ends it at once. Returns (parsed, local address)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        sock.setblocking(False)
        sock.connect((gateway, natpmp.PORT))
        local = sock.getsockname()[0]
        deadline = time.monotonic() + budget
        interval = natpmp.INITIAL_RETRANSMIT
        while True:
            try:
                sock.send(request)
            except OSError as exc:
                raise PortMapError(f"port mapping: cannot send to {gateway}: {exc}") from None
            resend = min(deadline, time.monotonic() + interval)
            interval *= 2
            while True:
                left = resend - time.monotonic()
                if left <= 0 or not wait(sock, left):
                    break
                try:
                    data = sock.recv(MAX_REPLY)
                except (BlockingIOError, InterruptedError):
                    continue
                except OSError as exc:
                    if exc.errno == errno.ECONNREFUSED:
                        raise PortMapError(f"port mapping: {gateway}:5351 refused") from None
                    raise PortMapError(f"port mapping: {gateway}: {exc}") from None
                try:
                    return parse(data), local
                except MalformedMessage as exc:
                    log.debug("dropped a reply from %s: %s", gateway, exc)
                    if on_drop is not None:
                        on_drop()
            if time.monotonic() >= deadline:
                raise PortMapError(f"port mapping: no reply from {gateway}:5351")
    finally:
        sock.close()


def _local_address(gateway: str) -> str:
    """The source address this host uses towards ``gateway``."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        sock.connect((gateway, natpmp.PORT))
        return sock.getsockname()[0]
    finally:
        sock.close()


class PortMapper:
    """Keeps a UDP mapping for ``internal_port`` on the default gateway (or ``gateway``).

    ``mapping`` is the current :class:`Mapping` or None; ``on_change(mapping or None)``
    runs in the mapper's thread after every successful mapping or renewal and when the
    mapping is lost (compare endpoints to see a move). ``renewals``, ``failures`` and
    ``dropped`` count renewals, failed attempts and malformed replies dropped.
    """

    def __init__(self, internal_port: int, gateway: str | None = None,
                 protocols: tuple[str, ...] = PROTOCOLS, lifetime: int = DEFAULT_LIFETIME,
                 on_change: Callable[[Mapping | None], None] | None = None):
        unknown = set(protocols) - set(PROTOCOLS)
        if unknown or not protocols:
            raise ValueError(f"port-mapping protocols {protocols}: expected some of {PROTOCOLS}")
        self.internal_port = internal_port
        self.gateway = gateway
        self.protocols = tuple(protocols)
        self.lifetime = lifetime
        self.on_change = on_change
        self.mapping: Mapping | None = None
        self.renewals = 0
        self.failures = 0
        self.dropped = 0
        self.last_error = ""
        self._nonce = os.urandom(pcp.NONCE_SIZE)      # one per mapping (RFC 6887 11.1)
        self._upnp: UpnpClient | None = None
        self._service = Service("portmap")
        self._lock = threading.Lock()
        self._kick_r, self._kick_w = os.pipe()      # refresh() wakes the thread through it
        os.set_blocking(self._kick_r, False)
        os.set_blocking(self._kick_w, False)
        self._service.on_close(self._close_kick)

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> "PortMapper":
        self._service.spawn(self._run)
        return self

    def stop(self) -> None:
        """Stop the thread and delete the mapping (bounded by the protocol's budget)."""
        self._service.stop()
        with self._lock:
            mapping, self.mapping = self.mapping, None
        if mapping is not None:
            try:
                self._delete(mapping, select_wait)
            except PortMapError as exc:
                log.info("could not delete the %s mapping: %s", mapping.protocol, exc)

    def refresh(self) -> None:
        """Map again now (this host's address or gateway changed), not at the next renewal."""
        with self._lock:
            if self._kick_w >= 0:
                try:
                    os.write(self._kick_w, b"x")
                except OSError:         # already kicked (pipe full)
                    pass

    def _close_kick(self) -> None:
        with self._lock:
            for fd in (self._kick_r, self._kick_w):
                os.close(fd)
            self._kick_r = self._kick_w = -1

    def status(self) -> dict | None:
        """{"protocol", "endpoint", "lifetime"} of the current mapping, or None."""
        mapping = self.mapping
        return mapping.as_status() if mapping else None

    # ------------------------------------------------------------------ the thread
    def _count_drop(self) -> None:
        self.dropped += 1

    def _sleep(self, seconds: float) -> bool:
        """Sleep until ``seconds`` pass or refresh() is called; False once stopping."""
        if self._service.wait_readable(self._kick_r, timeout=seconds):
            try:
                os.read(self._kick_r, 64)
            except OSError:
                pass
        return not self._service.stopping

    def _wait(self, sock: socket.socket, seconds: float) -> bool:
        return bool(self._service.wait_readable(sock, timeout=seconds))

    def _run(self) -> None:
        retry = RETRY_AFTER
        while not self._service.stopping:
            try:
                mapping = self.obtain(self._wait)
            except PortMapError as exc:
                self.failures += 1
                self.last_error = str(exc)
                log.info("port mapping for UDP %d: %s", self.internal_port, exc)
                self._set(None)
                if not self._sleep(retry):
                    return
                retry = min(retry * 2, RETRY_MAX)
                continue
            if self._service.stopping:      # obtained while stopping: stop() deletes it
                self._set(mapping)
                return
            retry = RETRY_AFTER
            self._set(mapping)
            if not self._sleep(max(MIN_RENEW, mapping.lifetime / 2)):
                return
            self.renewals += 1

    def _set(self, mapping: Mapping | None) -> None:
        with self._lock:
            before, self.mapping = self.mapping, mapping
        if self.on_change is not None and (mapping is not None or before is not None):
            self.on_change(mapping)

    # ------------------------------------------------------------------ protocols
    def obtain(self, wait: Wait = select_wait) -> Mapping:
        """Get (or renew) the mapping: the current protocol first, then the others in
        order. Raises PortMapError naming each protocol's failure."""
        gateway = self.gateway or default_gateway()
        if gateway is None:
            raise PortMapError("port mapping: no IPv4 default gateway")
        current = self.mapping.protocol if self.mapping else None
        order = sorted(self.protocols, key=lambda p: p != current)
        errors = []
        for protocol in order:
            if self._service.stopping:
                break
            try:
                return getattr(self, f"_map_{protocol}")(gateway, wait)
            except PortMapError as exc:
                errors.append(f"{protocol}: {exc}")
        raise PortMapError("; ".join(errors) or "port mapping: stopped")

    def _map_pcp(self, gateway: str, wait: Wait) -> Mapping:
        local = _local_address(gateway)
        suggested = self.mapping.external_port if self.mapping else self.internal_port
        request = pcp.encode_map_request(self._nonce, local, self.internal_port,
                                         self.lifetime, suggested)
        reply, _ = _exchange(gateway, request,
                             lambda data: pcp.decode_map_response(data, self._nonce),
                             PROTOCOL_BUDGET["pcp"], wait, self._count_drop)
        assert isinstance(reply, pcp.MapResponse)
        return Mapping("pcp", reply.external_address, reply.external_port,
                       self.internal_port, reply.lifetime, time.monotonic())

    def _map_natpmp(self, gateway: str, wait: Wait) -> Mapping:
        budget = PROTOCOL_BUDGET["natpmp"] / 2
        address, _ = _exchange(gateway, natpmp.encode_external_address_request(),
                               natpmp.decode_external_address_response, budget, wait,
                               self._count_drop)
        suggested = self.mapping.external_port if self.mapping else self.internal_port
        reply, _ = _exchange(gateway, natpmp.encode_map_request(
            self.internal_port, suggested, self.lifetime), natpmp.decode_map_response,
            budget, wait, self._count_drop)
        assert isinstance(address, natpmp.ExternalAddress)
        assert isinstance(reply, natpmp.Mapping)
        return Mapping("natpmp", address.address, reply.external_port, self.internal_port,
                       reply.lifetime, time.monotonic())

    def _map_upnp(self, gateway: str, wait: Wait) -> Mapping:
        budget = PROTOCOL_BUDGET["upnp"]
        client = self._upnp
        if client is None or client.gateway_address != gateway:
            # four steps at most (SSDP, description, AddPortMapping, GetExternalIPAddress)
            client = UpnpClient(gateway, _local_address(gateway), timeout=budget / 4)
            client.discover(wait)
            self._upnp = client
        external = self.mapping.external_port if self.mapping else self.internal_port
        try:
            client.add_mapping(external, self.internal_port, self.lifetime)
        except PortMapError as exc:
            if getattr(exc, "code", 0) != CONFLICT_IN_MAPPING_ENTRY:
                raise
            external = 1024 + int.from_bytes(os.urandom(2), "big") % (65536 - 1024)
            client.add_mapping(external, self.internal_port, self.lifetime)
        address = client.external_address()
        return Mapping("upnp", address, external, self.internal_port, self.lifetime,
                       time.monotonic())

    def _delete(self, mapping: Mapping, wait: Wait) -> None:
        gateway = self.gateway or default_gateway()
        if gateway is None:
            return
        if mapping.protocol == "pcp":
            request = pcp.encode_map_request(self._nonce, _local_address(gateway),
                                             self.internal_port, 0)
            _exchange(gateway, request, lambda d: pcp.decode_map_response(d, self._nonce),
                      PROTOCOL_BUDGET["pcp"], wait)
        elif mapping.protocol == "natpmp":
            _exchange(gateway, natpmp.encode_delete_request(self.internal_port),
                      natpmp.decode_map_response, PROTOCOL_BUDGET["natpmp"], wait)
        elif self._upnp is not None:
            self._upnp.delete_mapping(mapping.external_port)
