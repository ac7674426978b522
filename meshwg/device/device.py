"""The I/O layer around WireGuardProtocol: TUN device, UDP socket, threads, clock, control socket.

Threads, one job each:
- data-path: both directions, polling the TUN device and the UDP socket: batches of
  packets from the TUN device -> sealed into UDP GSO runs -> UDP; batches of datagrams
  (UDP GRO runs) -> transport data opened and written to the TUN device (coalesced with
  TUN offloads); handshake messages queued for the handshake worker (the queue's length
  is the backlog that puts the protocol "under load")
- handshake-worker: handshake messages -> protocol (the expensive Diffie-Hellman work)
- timers: fires the protocol's timers at their deadlines
- the control socket (meshwg.uapi.UapiServer) serves `wg` and discovery
"""

from __future__ import annotations

import ipaddress
import logging
import os
import select
import threading
import time
from collections import deque
from typing import Iterable

from meshwg.netlink import link as netconfig
from meshwg.conn.udp import BindError, UdpSocket
from meshwg.core.constants import DEFAULT_MTU
from meshwg.core.keys import encode_key
from meshwg.core.protocol import EndpointChanged, HandshakeCompleted, WireGuardProtocol
from meshwg.core.timers import Timers
from meshwg.tun.device import TunDevice
from meshwg.device.api import DeviceStatus, DeviceUpdate, PeerStatus, PeerUpdate
from meshwg.uapi.codec import (ERR_PORT_IN_USE, UapiError,
                   UapiServer)

log = logging.getLogger("meshwg.device")

BATCH = 64                 # reads per batch, one packet each
GRO_BATCH = 16             # UDP GRO receives per batch (each up to 64 KiB of datagrams)
TSO_BATCH = 4              # TUN reads per batch with TSO (each up to 64 KiB); small keeps
                           # the other thread's wait for the GIL short
SEAL_BUFFER = 512 << 10    # bytes of sealed datagrams per TUN batch (grows when short)
OPEN_BUFFER = 1 << 20      # bytes of opened packets per UDP batch (grows when short)
HANDSHAKE_QUEUE_MAX = 4096
STATS_DIRECTORY = "/var/run/meshwg"
STATS_INTERVAL = 2.0
_ZERO_KEY = bytes(32)


def _address_bytes(endpoint: tuple[str, int]) -> tuple[bytes, bytes]:
    host, port = endpoint
    try:
        ip = ipaddress.ip_address(host).packed
    except ValueError:
        ip = host.encode()
    return ip, ip + port.to_bytes(2, "big")


def _normalize_endpoint(endpoint: tuple[str, int]) -> tuple[str, int]:
    host, port = endpoint
    host = host.strip("[]")
    if host.startswith("::ffff:") and "." in host:
        host = host[7:]
    return (str(ipaddress.ip_address(host)), int(port))


class Device:
    """A running meshwg interface."""

    def __init__(self, name: str, *, private_key: bytes | None = None, listen_port: int = 0,
                 fwmark: int = 0, mtu: int = DEFAULT_MTU, addresses: Iterable = (),
                 timers: Timers | None = None, manage_routes: bool = True,
                 uapi_directory: str = "/var/run/wireguard", offload: bool | None = None):
        """`offload=False` turns every offload off (`meshwg up --no-offload`); otherwise
        the MESHWG_OFFLOAD environment variable picks them (meshwg.offload: by default UDP
        GSO/GRO and TUN TSO/GRO, "udp" the UDP ones only, "0" none), each used where the
        kernel has it."""
        self.name = name
        self.offload = None if offload is not False else False   # None: per MESHWG_OFFLOAD
        self.mtu = mtu
        self.addresses = list(addresses)
        self.manage_routes = manage_routes
        self.uapi_directory = uapi_directory
        self.protocol = WireGuardProtocol(private_key, timers=timers, mtu=mtu,
                                          wall_offset=time.time() - time.monotonic(),
                                          address_bytes=_address_bytes)
        self._initial_port = listen_port
        self._initial_fwmark = fwmark
        self.tun: TunDevice | None = None
        self.udp: UdpSocket | None = None
        self.uapi: UapiServer | None = None
        self._threads: list[threading.Thread] = []
        self._stopping = threading.Event()
        self._wake_r, self._wake_w = os.pipe()
        self._handshakes: deque = deque()
        self._handshake_ready = threading.Condition()
        self._timer_wake = threading.Event()
        self._routed: set = set()
        self._send_lock = threading.Lock()
        self._next_stats_write = 0.0
        self.stats_directory = STATS_DIRECTORY

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        """Create the interface and the socket, configure them, start serving.

        On any failure everything already created is removed again."""
        try:
            self.tun = TunDevice(self.name, offload=self.offload)
            self.name = self.tun.name
            self.udp = UdpSocket(self._initial_port, self._initial_fwmark, offload=self.offload)
            netconfig.configure_link(self.name, self.addresses, self.mtu)
            self._sync_routes()
            self.uapi = UapiServer(self.name, self.status, self.apply, directory=self.uapi_directory)
            self.uapi.start()
        except BaseException:
            self.stop()
            raise
        for target, label in ((self._data_loop, "data-path"),
                              (self._handshake_loop, "handshake-worker"),
                              (self._timer_loop, "timers")):
            t = threading.Thread(target=target, name=f"{self.name}-{label}", daemon=True)
            t.start()
            self._threads.append(t)
        # peers configured before start with persistent keepalive: say hello now
        now = time.monotonic()
        for peer in list(self.protocol.peers.values()):
            if peer.persistent_keepalive and peer.endpoint is not None:
                self.protocol.send_keepalive(peer, now)
        self._flush()
        log.info("%s up: listening on UDP port %d (offloads: TUN %s, UDP GSO %s, UDP GRO %s)",
                 self.name, self.udp.port, "on" if self.tun.vnet_hdr else "off",
                 "on" if self.udp.gso else "off", "on" if self.udp.gro else "off")

    def stop(self) -> None:
        self._stopping.set()
        try:
            os.write(self._wake_w, b"x")
        except OSError:
            pass
        with self._handshake_ready:
            self._handshake_ready.notify_all()
        self._timer_wake.set()
        for t in self._threads:
            t.join(timeout=2.0)
        self._threads.clear()
        try:
            os.unlink(self.stats_path)
        except OSError:
            pass
        if self.uapi is not None:
            self.uapi.close()
            self.uapi = None
        if self.udp is not None:
            self.udp.close()
            self.udp = None
        if self.tun is not None:
            self.tun.close()       # the kernel removes the interface with its last descriptor
            self.tun = None

    @property
    def listen_port(self) -> int:
        return self.udp.port if self.udp else 0

    # ------------------------------------------------------------------ output
    def _flush(self) -> None:
        """Send what the protocol queued (handshakes, keepalives, staged packets)."""
        udp = self.udp
        if udp is None:
            return
        for datagram, endpoint in self.protocol.take_datagrams():
            udp.send(datagram, endpoint)

    # ------------------------------------------------------------------ threads
    def _open_received(self, runs: list, open_buffer: bytearray) -> None:
        """Transport data to the TUN device; handshake messages that pass the cheap checks
        to the handshake worker."""
        protocol = self.protocol
        now = time.monotonic()
        packets, others = protocol.receive_transport_batch(runs, now, open_buffer)
        if packets:
            self.tun.write_batch(packets)
        if not others:
            return
        queued = False
        for datagram, source in others:
            if not protocol.admit_handshake(datagram, source, now):
                continue
            if len(self._handshakes) < HANDSHAKE_QUEUE_MAX:
                self._handshakes.append((datagram, source))
                protocol.handshake_backlog = len(self._handshakes)
                queued = True
            else:
                protocol.stats["handshake_queue_full"] += 1
        if queued:
            protocol.handshake_backlog = len(self._handshakes)
            with self._handshake_ready:
                self._handshake_ready.notify()

    def _data_loop(self) -> None:
        """Both directions of the data path, in one thread: TUN batches sealed and sent,
        UDP batches opened and written. One thread rather than a reader per direction:
        measured (bench/bench.py) to cost less CPU per GB and to cut the ping RTT, as no
        GIL hand-off between two readers sits in the path of each packet.

        Reads are guided by poll: only a descriptor poll reported ready is read, and after
        each round the loop goes straight back to poll (which returns at once while more
        is queued). A lone packet after an idle spell therefore costs one poll, its read
        and the send or write, and none of the reads that end in EAGAIN: on a cold CPU
        each of those (a raised BlockingIOError) costs tens of microseconds."""
        protocol = self.protocol
        monotonic = time.monotonic
        tun = self.tun
        tun_fd = tun.fileno()
        wake_fd = self._wake_r
        batch = TSO_BATCH if tun.vnet_hdr else BATCH
        seal_buffer = bytearray(SEAL_BUFFER)
        open_buffer = bytearray(OPEN_BUFFER)
        stopping = self._stopping.is_set
        udp = None
        udp_fd = -1
        poll = None
        while not stopping():
            if udp is not self.udp:
                udp = self.udp
                udp_fd = udp.fileno()
                poller = select.poll()
                poller.register(tun_fd, select.POLLIN)
                poller.register(udp_fd, select.POLLIN)
                poller.register(wake_fd, select.POLLIN)
                poll = poller.poll
            tun_ready = udp_ready = False
            for fd, _events in poll(200):
                if fd == tun_fd:
                    tun_ready = True
                elif fd == udp_fd:
                    udp_ready = True
                elif fd == wake_fd:
                    os.read(wake_fd, 512)
            if tun_ready:
                runs = protocol.encrypt_batch(tun.iter_packets(batch), monotonic(), seal_buffer)
                if runs:
                    udp.send_runs(runs)
            if udp_ready:
                try:
                    received = udp.recv_runs(GRO_BATCH if udp.gro else BATCH)
                except OSError:
                    if udp is self.udp:
                        raise
                    continue
                if received:
                    self._open_received(received, open_buffer)
            if protocol._outgoing:
                self._flush()

    def _handshake_loop(self) -> None:
        protocol = self.protocol
        while not self._stopping.is_set():
            with self._handshake_ready:
                while not self._handshakes and not self._stopping.is_set():
                    self._handshake_ready.wait(1.0)
            while self._handshakes and not self._stopping.is_set():
                datagram, source = self._handshakes.popleft()
                protocol.handshake_backlog = len(self._handshakes)
                protocol.receive_handshake(datagram, source, time.monotonic(), admitted=True)
                self._flush()
            self._timer_wake.set()   # handshakes change deadlines

    def _timer_loop(self) -> None:
        protocol = self.protocol
        while not self._stopping.is_set():
            deadline = protocol.next_deadline()
            now = time.monotonic()
            timeout = 0.25 if deadline is None else min(0.25, max(0.005, deadline - now))
            self._timer_wake.wait(timeout)
            self._timer_wake.clear()
            if self._stopping.is_set():
                break
            protocol.tick(time.monotonic())
            self._flush()
            self._log_events()
            if time.monotonic() >= self._next_stats_write:
                self._next_stats_write = time.monotonic() + STATS_INTERVAL
                self.write_stats()

    def _log_events(self) -> None:
        events = self.protocol.events
        while events:
            try:
                ev = events.popleft()
            except IndexError:
                break
            if isinstance(ev, HandshakeCompleted):
                log.info("%s: handshake with %s complete", self.name, encode_key(ev.peer.public_key))
            elif isinstance(ev, EndpointChanged):
                log.info("%s: peer %s endpoint now %s", self.name, encode_key(ev.peer.public_key), ev.endpoint)

    # ------------------------------------------------------------------ counters
    @property
    def stats_path(self) -> str:
        return os.path.join(self.stats_directory, f"{self.name}.stats.json")

    def counters(self) -> dict[str, int]:
        """What was dropped or noted, by reason (malformed, replayed, decrypt_failed, ...)."""
        out = {k: v for k, v in self.protocol.stats.items() if v}
        if self.tun is not None:
            out.update({f"tun_{k}" if not k.startswith("tun") else k: v
                        for k, v in getattr(self.tun, "stats", {}).items() if v})
        return dict(sorted(out.items()))

    def write_stats(self) -> None:
        """Publish the counters for `meshwg show` (the `wg` protocol has no field for them)."""
        import json
        try:
            os.makedirs(self.stats_directory, mode=0o755, exist_ok=True)
            tmp = f"{self.stats_path}.tmp"
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            with os.fdopen(fd, "w") as f:
                json.dump({"interface": self.name, "counters": self.counters()}, f)
            os.replace(tmp, self.stats_path)
        except OSError as exc:
            log.debug("cannot write %s: %s", self.stats_path, exc)

    # ------------------------------------------------------------------ control socket
    def status(self) -> DeviceStatus:
        p = self.protocol
        with p.lock:
            peers = []
            for peer in p.peers.values():
                wall = p.last_handshake_wall(peer)
                sec = int(wall) if wall else 0
                nsec = int((wall - sec) * 1e9) if wall else 0
                peers.append(PeerStatus(
                    public_key=peer.public_key,
                    preshared_key=None if peer.preshared_key == _ZERO_KEY else peer.preshared_key,
                    endpoint=peer.endpoint, last_handshake_sec=sec, last_handshake_nsec=nsec,
                    tx_bytes=peer.tx_bytes, rx_bytes=peer.rx_bytes,
                    persistent_keepalive=peer.persistent_keepalive,
                    allowed_ips=p.allowed_ips.networks_of(peer)))
            return DeviceStatus(private_key=p.private_key, listen_port=self.listen_port,
                                fwmark=self.udp.fwmark if self.udp else 0, peers=peers)

    def apply(self, update: DeviceUpdate) -> None:
        """Apply a validated set request. Everything that can fail is checked or prepared
        before the first change, so a failed set changes nothing."""
        p = self.protocol
        new_udp = None
        if update.listen_port is not None and self.udp is not None and update.listen_port != self.udp.port:
            try:
                new_udp = UdpSocket(update.listen_port, self.udp.fwmark, offload=self.offload)
            except BindError as exc:
                raise UapiError(str(exc), ERR_PORT_IN_USE) from None
        for pu in update.peers:
            for endpoint in ([pu.endpoint] if pu.endpoint is not None else []) + list(pu.probe_endpoints):
                try:
                    _normalize_endpoint(endpoint)
                except ValueError:
                    raise UapiError(f"invalid endpoint {endpoint!r}") from None
        now = time.monotonic()
        keepalive_now = []
        probes = []
        with p.lock:
            if update.private_key is not None:
                p.set_private_key(None if update.private_key == _ZERO_KEY else update.private_key)
            if new_udp is not None:
                old, self.udp = self.udp, new_udp
                try:
                    os.write(self._wake_w, b"")
                except OSError:
                    pass
                threading.Timer(0.5, old.close).start()
            if update.fwmark is not None and self.udp is not None:
                self.udp.set_fwmark(update.fwmark)
            if update.replace_peers:
                for key in list(p.peers):
                    p.remove_peer(key)
            for pu in update.peers:
                if pu.remove:
                    p.remove_peer(pu.public_key)
                    continue
                peer = p.peers.get(pu.public_key)
                if peer is None:
                    if pu.update_only or pu.public_key == p.public_key:
                        continue
                    peer = p.add_peer(pu.public_key)
                if pu.preshared_key is not None:
                    p.set_preshared_key(peer, pu.preshared_key)
                if pu.endpoint is not None:
                    p.set_endpoint(peer, _normalize_endpoint(pu.endpoint))
                if pu.replace_allowed_ips:
                    p.allowed_ips.remove_peer(peer)
                for net in pu.allowed_ips:
                    p.allowed_ips.insert(net, peer)
                for net in getattr(pu, "remove_allowed_ips", ()):
                    if net in p.allowed_ips.networks_of(peer):
                        p.allowed_ips.remove(net)
                if pu.persistent_keepalive is not None:
                    was_off = peer.persistent_keepalive == 0
                    peer.persistent_keepalive = pu.persistent_keepalive
                    if pu.persistent_keepalive == 0:
                        peer.persistent_keepalive_at = None
                    elif was_off:
                        keepalive_now.append(peer)
                if pu.probe_endpoints:
                    probes.append((peer, [_normalize_endpoint(e) for e in pu.probe_endpoints]))
            if self.udp is not None and self.tun is not None:
                for peer, candidates in probes:
                    p.probe(peer, candidates, now)
                for peer in keepalive_now:
                    if peer.endpoint is not None and p.private_key is not None:
                        p.send_keepalive(peer, now)
        self._flush()
        self._timer_wake.set()
        if self.tun is not None:
            self._sync_routes()

    def _sync_routes(self) -> None:
        if not self.manage_routes or self.tun is None:
            return
        wanted = set()
        p = self.protocol
        with p.lock:
            for peer in p.peers.values():
                wanted.update(p.allowed_ips.networks_of(peer))
        stale = self._routed - wanted
        new = wanted - self._routed
        if stale:
            netconfig.delete_routes(self.name, stale)
        if new:
            netconfig.add_routes(self.name, new)
        self._routed = wanted

    # ------------------------------------------------------------------ configuration
    def configure(self, config) -> None:
        """Load an InterfaceConfig (meshwg.config) through the same path `wg setconf` uses."""

        update = DeviceUpdate(private_key=config.private_key, replace_peers=True, peers=[
            PeerUpdate(public_key=pc.public_key, preshared_key=pc.preshared_key,
                       endpoint=pc.endpoint, persistent_keepalive=pc.persistent_keepalive,
                       replace_allowed_ips=True, allowed_ips=list(pc.allowed_ips))
            for pc in config.peers])
        self.apply(update)
