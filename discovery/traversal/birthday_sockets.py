"""The sockets of birthday-paradox probing (the decisions: discovery.traversal.birthday).

- Hard side (open_hard): N UDP sockets, each sending one OPENER datagram to the easy
  side's reflexive endpoint, so that the hard NAT opens N mappings. The first socket that
  receives a datagram from that endpoint (an easy side's probe got through) is the
  pair's path; the others are closed. That socket then is a loopback proxy: the engine
  sends the peer's WireGuard datagrams to 127.0.0.1:P (P: the socket's port, bound on
  every address) and they leave to the easy side from the socket's NAT mapping; the easy
  side's datagrams go on to the engine's listen port from 127.0.0.1:P, so WireGuard
  roaming sees the peer at the proxy (as with discovery.relay.client's proxies).
- Easy side (spray): PROBE datagrams to the hard side's public IP at the planner's
  ports, PROBE_RATE per second, sent from the engine's own socket through `send` (the
  engine's side-channel send), so each opens our NAT's filter for that port.

Hostile input: only the expected peer endpoint and the local engine may use a socket;
everything else is dropped and counted. One Service thread waits on every socket; it
sleeps until a datagram, a stop, or the next batch of probes is due.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from dataclasses import dataclass
from typing import Callable

from meshwg.util.endpoint import Endpoint, normalize_endpoint
from meshwg.util.service import Service

log = logging.getLogger("meshwg.birthday")

# neither a WireGuard message header (type 1-4, then three zero bytes) nor a relay datagram
OPENER = b"mwbd\x00open"       # the hard side's mapping openers
PROBE = b"mwbd\x00probe"       # the easy side's probes
MAGIC = b"mwbd\x00"
LOOPBACK = "127.0.0.1"
BATCH_INTERVAL = 0.05          # seconds between two batches of probes
MAX_DATAGRAM = 65535


@dataclass
class _Hard:
    target: Endpoint                      # the easy side's reflexive endpoint
    sockets: dict[int, socket.socket]     # by fd, until a hit
    proxy: socket.socket | None = None


@dataclass
class _Spray:
    host: str
    ports: list[int]
    rate: float
    next_at: float                        # monotonic
    sent: int = 0


@dataclass
class Counters:
    sockets_opened: int = 0
    openers_sent: int = 0
    probes_sent: int = 0
    hits: int = 0
    forwarded_in: int = 0                 # easy side -> engine
    forwarded_out: int = 0                # engine -> easy side
    dropped: int = 0


class BirthdaySockets:
    """A member's birthday sockets. `engine_port`: the local engine's UDP port; `send`:
    sends one datagram from the engine's socket (meshwg.device.device.Device.send_side);
    `on_hit()` is called (from this object's thread) when a hard-side socket found its
    path."""

    def __init__(self, engine_port: int, send: Callable[[bytes, Endpoint], None],
                 on_hit: Callable[[], None] | None = None):
        self.engine_port = engine_port
        self.send = send
        self.on_hit = on_hit
        self.counters = Counters()
        self._hard: dict[bytes, _Hard] = {}
        self._spray: dict[bytes, _Spray] = {}
        self._lock = threading.Lock()
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        self.service = Service("birthday")
        self.service.on_close(self._close)

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> "BirthdaySockets":
        self.service.spawn(self._loop)
        return self

    def stop(self) -> None:
        self.service.stop()

    def _close(self) -> None:
        with self._lock:
            for key in list(self._hard):
                self._drop_hard(key)
            self._spray.clear()
        for fd in (self._wake_r, self._wake_w):
            os.close(fd)

    def _wake(self) -> None:
        try:
            os.write(self._wake_w, b"x")
        except OSError:
            pass

    # ------------------------------------------------------------------ the planner's orders
    def open_hard(self, key: bytes, target: Endpoint, count: int) -> int:
        """Open `count` sockets towards `target` (IPv4 only: the NATs this is for), each
        sending one OPENER. Returns how many opened (fewer when out of descriptors)."""
        target = normalize_endpoint(target)
        opened: dict[int, socket.socket] = {}
        for _ in range(count):
            try:
                sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            except OSError as exc:
                log.info("birthday: %d of %d sockets opened: %s", len(opened), count, exc)
                break
            try:
                sock.setblocking(False)
                sock.bind(("0.0.0.0", 0))
                sock.sendto(OPENER, target)
                self.counters.openers_sent += 1
            except OSError as exc:
                log.debug("birthday: opener to %s failed: %s", target, exc)
            opened[sock.fileno()] = sock
        with self._lock:
            self._drop_hard(key)
            self._hard[key] = _Hard(target, opened)
            self.counters.sockets_opened += len(opened)
        self._wake()
        return len(opened)

    def spray(self, key: bytes, host: str, ports: list[int], rate: float, delay: float = 0.0) -> None:
        """Send PROBE to (host, port) for each of `ports`, `rate` per second, starting
        `delay` seconds from now."""
        with self._lock:
            self._spray[key] = _Spray(host, list(ports), rate, time.monotonic() + delay)
        self._wake()

    def end(self, key: bytes) -> None:
        """The attempt with `key` is over: stop spraying, close the sockets that found
        nothing; a found path (proxy) stays until release()."""
        with self._lock:
            self._spray.pop(key, None)
            hard = self._hard.get(key)
            if hard is not None:
                self._close_spare(hard)
                if hard.proxy is None:
                    del self._hard[key]
        self._wake()

    def release(self, key: bytes) -> None:
        """Close the path found for `key` (and anything still open for it)."""
        with self._lock:
            self._spray.pop(key, None)
            self._drop_hard(key)
        self._wake()

    def proxies(self) -> dict[bytes, Endpoint]:
        """The found paths: key -> the loopback endpoint to give the engine."""
        with self._lock:
            return {key: (LOOPBACK, hard.proxy.getsockname()[1])
                    for key, hard in self._hard.items() if hard.proxy is not None}

    def open_sockets(self) -> int:
        with self._lock:
            return sum(len(h.sockets) + (h.proxy is not None) for h in self._hard.values())

    # ------------------------------------------------------------------ internals (lock held)
    @staticmethod
    def _close_spare(hard: _Hard) -> None:
        for sock in hard.sockets.values():
            sock.close()
        hard.sockets.clear()

    def _drop_hard(self, key: bytes) -> None:
        hard = self._hard.pop(key, None)
        if hard is not None:
            self._close_spare(hard)
            if hard.proxy is not None:
                hard.proxy.close()

    # ------------------------------------------------------------------ loop
    def _loop(self) -> None:
        while not self.service.stopping:
            now = time.monotonic()
            timeout = self._send_due(now)
            with self._lock:
                by_fd: dict[int, tuple[bytes, _Hard, socket.socket]] = {}
                for key, hard in self._hard.items():
                    for fd, sock in hard.sockets.items():
                        by_fd[fd] = (key, hard, sock)
                    if hard.proxy is not None:
                        by_fd[hard.proxy.fileno()] = (key, hard, hard.proxy)
            ready = self.service.wait_readable(self._wake_r, *by_fd, timeout=timeout)
            if self.service.stopping:
                return
            for item in ready:
                if item == self._wake_r:
                    try:
                        os.read(self._wake_r, 4096)
                    except OSError:
                        pass
                elif item in by_fd:
                    self._receive(*by_fd[item])

    def _send_due(self, now: float) -> float | None:
        """Send the probe batches that are due; seconds until the next one (None: none)."""
        batches: list[tuple[str, list[int]]] = []
        next_at = None
        with self._lock:
            for key in list(self._spray):
                spray = self._spray[key]
                if now >= spray.next_at:
                    count = max(1, round(spray.rate * BATCH_INTERVAL))
                    batches.append((spray.host, spray.ports[spray.sent:spray.sent + count]))
                    spray.sent += count
                    spray.next_at = max(spray.next_at + BATCH_INTERVAL, now)
                if spray.sent >= len(spray.ports):
                    del self._spray[key]
                    continue
                next_at = spray.next_at if next_at is None else min(next_at, spray.next_at)
        for host, ports in batches:
            for port in ports:
                try:
                    self.send(PROBE, (host, port))
                    self.counters.probes_sent += 1
                except Exception as exc:       # noqa: BLE001 -- the engine stopped meanwhile
                    log.debug("birthday: probe to %s:%d failed: %s", host, port, exc)
        return None if next_at is None else max(0.0, next_at - time.monotonic())

    def _receive(self, key: bytes, hard: _Hard, sock: socket.socket) -> None:
        engine = (LOOPBACK, self.engine_port)
        for _ in range(64):
            try:
                data, address = sock.recvfrom(MAX_DATAGRAM)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:         # closed meanwhile, or an ICMP error
                return
            source = normalize_endpoint(address)
            if source == hard.target:
                if hard.proxy is None:
                    if not self._hit(key, hard, sock):
                        return      # released meanwhile
                if sock is not hard.proxy or data.startswith(MAGIC):
                    continue        # the probe that found us, or a late one
                self._forward(sock, data, engine, "forwarded_in")
            elif source == engine and sock is hard.proxy:
                self._forward(sock, data, hard.target, "forwarded_out")
            else:
                self.counters.dropped += 1

    def _hit(self, key: bytes, hard: _Hard, sock: socket.socket) -> bool:
        with self._lock:
            if self._hard.get(key) is not hard or hard.proxy is not None:
                return hard.proxy is not None
            hard.sockets.pop(sock.fileno(), None)
            hard.proxy = sock
            self._close_spare(hard)
            self.counters.hits += 1
        log.info("birthday: a probe from %s:%d reached our port %d: path found",
                 hard.target[0], hard.target[1], sock.getsockname()[1])
        if self.on_hit is not None:
            self.on_hit()
        return True

    def _forward(self, sock: socket.socket, data: bytes, to: Endpoint, counter: str) -> None:
        try:
            sock.sendto(data, to)
            setattr(self.counters, counter, getattr(self.counters, counter) + 1)
        except OSError as exc:
            log.debug("birthday: forwarding to %s failed: %s", to, exc)
