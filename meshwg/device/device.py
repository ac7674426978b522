"""The engine's I/O layer around WireGuardProtocol: TUN device, UDP socket, threads, clock,
control socket. The only place where the engine meets sockets, threads and time.

Every call into the protocol holds the device's one lock (`_lock`), per batch, not per
packet; afterwards, still holding it, the caller takes what the protocol produced
(`_collect`): datagrams (sent after the lock is released), events (moved to the event
queue Device.wait_events reads, and logged), and the next deadline (the timer thread is
woken when it moved earlier than its wake-up time).

Threads, one job each, each blocked until there is work (an idle device costs nothing):
- data-path: both directions, in poll() without a timeout on the TUN device, the UDP
  socket and a wake-up pipe (stop, socket change): batches of packets from the TUN device
  -> sealed into UDP GSO runs -> UDP; batches of datagrams (UDP GRO runs) -> transport
  data opened and written to the TUN device (coalesced with TUN offloads), handshake
  messages admitted and queued for the handshake worker (the queue's length is the
  backlog that puts the protocol "under load")
- handshake-worker: admitted handshake messages -> protocol (the Diffie-Hellman work)
- timers: sleeps until the protocol's next deadline (forever if none) and fires it;
  publishes the counters file (meshwg.device.stats) at most every STATS_INTERVAL when
  something ran through the protocol and the counters changed
- routes (meshwg.device.routes.RouteWorker): brings the routes through the interface to
  the allowed IPs in batches after each change, off the control socket's path
- the control socket (meshwg.uapi.server.UapiServer) serves `wg`; in-process callers
  (the mesh daemons) use apply / status / wait_events directly

A side channel on the engine's own socket (set_side_channel / send_side): datagrams that
start with a caller's prefix (never a WireGuard message type) go to the caller's handler
instead of the protocol, and the caller may send datagrams from the socket, so it can ask
a server what this socket's NAT mapping is (the mesh's observation probes).
"""

from __future__ import annotations

import logging
import math
import os
import select
import socket
import threading
import time
from collections import Counter, deque
from typing import Any, Callable, Iterable

from meshwg import accel
from meshwg.conn.gso import UDP_GSO_MAX_BYTES, UDP_MAX_SEGMENTS
from meshwg.conn.udp import BindError, UdpSocket
from meshwg.core.constants import DEFAULT_MTU, MESSAGE_TRANSPORT, TRANSPORT_MIN_SIZE
from meshwg.core.events import EndpointChanged, Event, HandshakeCompleted
from meshwg.core.handshake import AdmittedHandshake
from meshwg.core.keys import encode_key
from meshwg.core.lone import finish_lone, finish_opened, finish_sealed, open_lone, seal_lone
from meshwg.core.peer import ZERO_KEY
from meshwg.core.protocol import WireGuardProtocol
from meshwg.core.timers import Timers
from meshwg.device.api import DeviceStatus, DeviceUpdate, PeerStatus, PeerUpdate
from meshwg.device.offloads import offload_parts_from_env
from meshwg.device.routes import RouteWorker
from meshwg.device.stats import StatsFile, merge_counters
from meshwg.util.files import RUN_DIRECTORY
from meshwg.netlink import link as netconfig
from meshwg.tun.device import TunDevice
from meshwg.uapi.codec import ERR_PORT_IN_USE, UapiError
from meshwg.uapi.server import UapiServer
from meshwg.util.endpoint import EndpointError, format_endpoint, normalize_endpoint

log = logging.getLogger("meshwg.device")

BATCH = 64                 # reads per batch, one packet each
GRO_BATCH = 16             # UDP GRO receives per batch (each up to 64 KiB of datagrams)
TSO_BATCH = 4              # TUN reads per batch with TSO (each up to 64 KiB); small keeps
                           # the other threads' wait for the lock and the GIL short
SEAL_BUFFER = 512 << 10    # bytes of sealed datagrams per TUN batch (grows when short)
OPEN_BUFFER = 1 << 20      # bytes of opened packets per UDP batch (grows when short)
HANDSHAKE_QUEUE_MAX = 4096
MAX_PENDING_EVENTS = 4096  # events kept for wait_events; the oldest is dropped beyond
STATS_INTERVAL = 2.0       # seconds between two writes of the counters file, at least
OLD_SOCKET_GRACE = 0.5     # seconds an old UDP socket stays open after a port change
SIDE_PREFIX_MIN = 4        # bytes: a side channel's prefix is at least a message header long
SIDE_MAX_DATAGRAM = 1500   # bytes: longer side-channel datagrams are dropped, not handed on
LONE_PACKET = 256          # bytes: a packet this short (a ping, an ACK) ends its read batch,
                           # so it goes out before the reads queued behind it (and a lone
                           # one costs no read ending in EAGAIN); the UDP datagram carrying
                           # it is TRANSPORT_MIN_SIZE longer
LONE_DATAGRAM = LONE_PACKET + TRANSPORT_MIN_SIZE   # bytes: the UDP datagram of a lone packet
READY_TUN, READY_UDP, READY_WAKE = 1, 2, 4  # Crossing.poll's readiness bits
DEFER_MS = 1               # ms of idle after which a crossing's bookkeeping is done (the
                           # exchange it belongs to, a ping and its echo, is over by then)
DEFER_MAX = 32             # crossings whose bookkeeping may wait at most
LONE_TYPE = bytes([MESSAGE_TRANSPORT])   # only transport data ends a UDP batch (a handshake
                                         # flood is still read in batches)

SideHandler = Callable[[bytes, tuple[str, int]], None]


def _deferrable(ready: int, crossed: Any) -> bool:
    """Can the bookkeeping of Crossing.poll's result wait? Only a packet it sealed and
    sent, or a datagram it opened (with an answer sealed and sent, or none) under the
    peer's current keypair from the peer's endpoint, its answer (if any) to the same
    peer: what changes what the next crossing does (a next keypair's confirmation,
    roaming to a new endpoint), an answer to another peer (which may be removed
    meanwhile), and anything handed back to Python, is done at once."""
    if crossed.__class__ is not tuple:
        return False
    if ready == READY_TUN:
        return True
    if len(crossed) != 7:
        return False
    peer, kp, _size, _counter, source, _outcome, reply = crossed
    return (kp is peer.current and source == peer.endpoint
            and (reply is None or (reply.__class__ is tuple and reply[0] is peer)))


class Device:
    """A running meshwg interface.

    Python API (for in-process callers such as the mesh daemons; the `wg` control socket
    speaks the same through meshwg.uapi): apply(DeviceUpdate), status() -> DeviceStatus,
    wait_events(timeout) -> [HandshakeCompleted | EndpointChanged]."""

    def __init__(self, name: str, *, private_key: bytes | None = None, listen_port: int = 0,
                 fwmark: int = 0, mtu: int = DEFAULT_MTU, addresses: Iterable = (),
                 timers: Timers | None = None, manage_routes: bool = True,
                 uapi_directory: str = "/var/run/wireguard", offload: bool | None = None,
                 roam_on_initiation: bool = True):
        """`offload=False` turns every offload off (`meshwg up --no-offload`); otherwise
        the MESHWG_OFFLOAD environment variable picks them (meshwg.device.offloads: by
        default UDP GSO/GRO and TUN TSO/GRO, "udp" the UDP ones only, "0" none), each
        used where the kernel has it. `roam_on_initiation=False` (the mesh member): a
        handshake initiation from a new source is answered there without moving the
        peer's endpoint (WireGuardProtocol.roam_on_initiation)."""
        self.name = name
        self.offloads = frozenset() if offload is False else offload_parts_from_env()
        self.mtu = mtu
        self.addresses = list(addresses)
        self.manage_routes = manage_routes
        self.uapi_directory = uapi_directory
        self.protocol = WireGuardProtocol(private_key, timers=timers, mtu=mtu,
                                          wall_offset=time.time() - time.monotonic())
        self.protocol.roam_on_initiation = roam_on_initiation
        self._initial_port = listen_port
        self._initial_fwmark = fwmark
        self.tun: TunDevice | None = None
        self.udp: UdpSocket | None = None
        self.uapi: UapiServer | None = None
        self.stats: Counter[str] = Counter()     # the device's own counters (queues)
        self.stats_directory = RUN_DIRECTORY
        self._stats_file: StatsFile | None = None
        self._threads: list[threading.Thread] = []
        self._stopping = threading.Event()
        self._wake_r, self._wake_w = os.pipe()   # wakes the data path (stop, new socket)
        # The one lock of every call into the protocol, and what it guards besides:
        self._lock = threading.Lock()
        self._running = False                    # threads started: output is sent
        self._handshakes: deque[AdmittedHandshake] = deque()
        self._handshake_ready = threading.Condition(self._lock)
        self._events: deque[Event] = deque()
        self._events_ready = threading.Condition(self._lock)
        self._timer_due = math.inf               # when the timer thread wakes up next
        self._timer_wake = threading.Event()
        self._stats_dirty = False                # something ran through the protocol
        self._stats_written_at = -math.inf
        self._apply_lock = threading.Lock()      # one apply at a time (routes, sockets)
        self.routes: RouteWorker | None = None   # the route worker (manage_routes)
        self._side: tuple[bytes, SideHandler] | None = None   # set_side_channel
        self.use_fastpath(None)                  # MESHWG_FASTPATH (meshwg.accel)
        # the lone-packet path (meshwg.core.lone; compiled path only); MESHWG_LONE=0 turns
        # it off, to compare it with the batch path alone (bench, tests)
        self.lone_path = os.environ.get("MESHWG_LONE", "").strip().lower() not in accel.OFF_VALUES
        # the compiled lone crossing (meshwg.accel Crossing: the lone path without Python
        # before the packet is on its way); MESHWG_CROSSING=0 leaves the lone path to Python
        self.crossing = os.environ.get("MESHWG_CROSSING", "").strip().lower() not in accel.OFF_VALUES

    def use_fastpath(self, enabled: bool | None) -> None:
        """Seal and open with the compiled data path (meshwg.accel) when `enabled` (the
        default where it is built), with cryptography's AEAD when false (`meshwg up
        --no-fastpath`); None follows MESHWG_FASTPATH. The handshake chain follows the same
        switch (meshwg.accel._noise). A missing extension falls back with one warning line.
        Takes effect from the next batch."""
        with self._lock:
            self.protocol.fastpath = accel.select(enabled)
            self.protocol.handshake_accel = accel.select_handshake(enabled)

    @property
    def data_path(self) -> str:
        """Which data path runs: "compiled (OpenSSL ...)" or "pure Python (...)"."""
        return accel.describe(self.protocol.fastpath)

    # ------------------------------------------------------------------ lifecycle
    def start(self, after_create: Callable[[str], None] | None = None) -> None:
        """Create the interface and the socket, configure them, start serving.
        `after_create(name)` runs once the interface exists, before its addresses, MTU
        and routes are set (wg-quick's PreUp).

        On any failure everything already created is removed again."""
        try:
            self.tun = TunDevice(self.name, offload="tun" in self.offloads)
            self.name = self.tun.name
            if after_create is not None:
                after_create(self.name)
            self.udp = UdpSocket(self._initial_port, self._initial_fwmark,
                                 offload="udp" in self.offloads)
            netconfig.configure_link(self.name, self.addresses, self.mtu)
            if self.manage_routes:
                self.routes = RouteWorker(self.name, self._wanted_routes)
                self.routes.start()
            self._stats_file = StatsFile(self.name, self.stats_directory)
            self.uapi = UapiServer(self.name, self.status, self.apply, directory=self.uapi_directory)
            self.uapi.start()
        except BaseException:
            self.stop()
            raise
        with self._lock:
            self._running = True
            # what configuration queued before start (keepalives of peers with a
            # persistent keepalive): say hello now
            datagrams, events = self._collect()
            counters = self._counters()
            self._stats_written_at = time.monotonic()
        self._stats_file.publish(counters)       # at once, so `meshwg show` finds it
        self._deliver(datagrams, events)
        for target, label in ((self._data_loop, "data-path"),
                              (self._handshake_loop, "handshake-worker"),
                              (self._timer_loop, "timers")):
            t = threading.Thread(target=target, name=f"{self.name}-{label}", daemon=True)
            t.start()
            self._threads.append(t)
        log.info("%s up: listening on UDP port %d (offloads: TUN %s, UDP GSO %s, UDP GRO %s; "
                 "data path: %s)", self.name, self.udp.port, "on" if self.tun.vnet_hdr else "off",
                 "on" if self.udp.gso else "off", "on" if self.udp.gro else "off", self.data_path)

    def stop(self) -> None:
        """Stop the threads, remove the control socket, the counters file and the
        interface (idempotent)."""
        self._stopping.set()
        self._wake_data_path()
        with self._lock:
            self._running = False
            self._handshake_ready.notify_all()
            self._events_ready.notify_all()
        self._timer_wake.set()
        for t in self._threads:
            t.join(timeout=2.0)
        self._threads.clear()
        if self.routes is not None:
            self.routes.stop()
            self.routes = None
        if self._stats_file is not None:
            self._stats_file.remove()
        if self.uapi is not None:
            self.uapi.close()
            self.uapi = None
        if self.udp is not None:
            self.udp.close()
            self.udp = None
        if self.tun is not None:
            self.tun.close()       # the kernel removes the interface with its last descriptor
            self.tun = None
        for fd in (self._wake_r, self._wake_w):
            if fd >= 0:
                os.close(fd)
        self._wake_r = self._wake_w = -1

    @property
    def listen_port(self) -> int:
        return self.udp.port if self.udp else 0

    def _now(self) -> float:
        """Monotonic seconds for a call into the protocol (lock held), which gets the
        wall clock read now with it: initiations carry the time of their sending, also
        after the clock was set (meshwg.core.protocol.set_wall_clock)."""
        now = time.monotonic()
        self.protocol.set_wall_clock(time.time(), now)
        return now

    def _wake_data_path(self) -> None:
        try:
            os.write(self._wake_w, b"x")
        except OSError:
            pass

    # ------------------------------------------------------------------ protocol output
    def _collect(self) -> tuple[list[tuple[bytes, Any]], list[Event]]:
        """With the lock held, after a call into the protocol: its datagrams (to send
        once the lock is released) and events (moved to the event queue, returned for
        the log); wakes the timer thread when the earliest deadline moved before its
        wake-up time, or when the counters may have changed. Before start, output stays
        queued in the protocol."""
        if not self._running:
            return [], []
        protocol = self.protocol
        datagrams = protocol.take_datagrams()
        events = protocol.take_events()
        if events:
            queue = self._events
            for event in events:
                if len(queue) >= MAX_PENDING_EVENTS:
                    queue.popleft()
                    self.stats["pending_events_dropped"] += 1
                queue.append(event)
            self._events_ready.notify_all()
        deadline = protocol.next_deadline()
        if deadline is not None and deadline < self._timer_due:
            self._timer_due = deadline
            self._timer_wake.set()
        if not self._stats_dirty:
            self._stats_dirty = True
            self._timer_wake.set()
        return datagrams, events

    def _deliver(self, datagrams: list[tuple[bytes, Any]], events: list[Event]) -> None:
        """After the lock is released: send what _collect took, log its events."""
        udp = self.udp
        if udp is not None:
            for datagram, endpoint in datagrams:
                udp.send(datagram, endpoint)
        for event in events:
            if isinstance(event, HandshakeCompleted):
                log.info("%s: handshake with %s complete", self.name, encode_key(event.public_key))
            elif isinstance(event, EndpointChanged):
                log.info("%s: peer %s endpoint now %s", self.name, encode_key(event.public_key),
                         format_endpoint(event.endpoint))

    def wait_events(self, timeout: float | None = None) -> list[Event]:
        """Block until at least one event is pending or `timeout` seconds pass (None: no
        limit; the device stopping also ends the wait), then return and clear every
        pending event, oldest first: HandshakeCompleted and EndpointChanged
        (meshwg.core.events, also in meshwg.device.api). At most MAX_PENDING_EVENTS are
        kept; older ones are dropped and counted (pending_events_dropped). One consumer."""
        with self._lock:
            if not self._events and not self._stopping.is_set():
                self._events_ready.wait_for(
                    lambda: self._events or self._stopping.is_set(), timeout)
            events = list(self._events)
            self._events.clear()
        return events

    # ------------------------------------------------------------------ threads
    def _data_loop(self) -> None:
        """Both directions of the data path, in one thread: TUN batches sealed and sent,
        UDP batches opened and written. One thread rather than a reader per direction:
        measured (bench/bench.py) to cost less CPU per GB and to cut the ping RTT, as no
        GIL hand-off between two readers sits in the path of each packet.

        Reads are guided by poll, which waits without a timeout: only a descriptor poll
        reported ready is read, and after each round the loop goes straight back to poll
        (which returns at once while more is queued). A lone packet after an idle spell
        therefore costs one poll, its read and the send or write, and none of the reads
        that end in EAGAIN: on a cold CPU each of those (a raised BlockingIOError) costs
        tens of microseconds.

        With the compiled path a lone packet or datagram (at most LONE_PACKET bytes inside)
        takes the lone path (meshwg.core.lone; off with MESHWG_LONE=0): one read or
        receive, then sealed and sent or opened and written before the bookkeeping, which
        follows under the same lock; after writing a lone inner packet the TUN device is
        read once more at once, as the kernel's answer to it (a ping's echo) is usually
        queued by then. On a cold CPU every line of Python costs: this path runs a
        fraction of the batch path's.

        With the compiled lone crossing (meshwg.accel Crossing; off with
        MESHWG_CROSSING=0) the wait itself is compiled: Crossing.poll waits, takes the
        lock and crosses a lone packet or datagram (and its answer) before any Python
        runs; what it does not take comes back to the lone or batch path above. Its
        bookkeeping waits in `deferred` until the device has been idle DEFER_MS, or until
        anything else runs here (_finish_deferred), off the path of the answer. Nothing
        reads into the TUN frame buffer while a frame is kept there (tun.pending)."""
        protocol = self.protocol
        lock = self._lock
        collect = self._collect
        deliver = self._deliver
        now = self._now
        tun = self.tun
        tun_fd = tun.fileno()
        wake_fd = self._wake_r
        batch = TSO_BATCH if tun.vnet_hdr else BATCH
        seal_buffer = bytearray(SEAL_BUFFER)
        lone_path = self.lone_path
        lone_buffer = bytearray(LONE_PACKET + TRANSPORT_MIN_SIZE + 16)   # one sealed lone packet
        lone_view = memoryview(lone_buffer)
        open_buffer = bytearray(OPEN_BUFFER)
        buffers = (seal_buffer, lone_buffer)
        stopping = self._stopping.is_set
        handshakes = self._handshakes
        udp = None
        udp_fd = -1
        poll = None
        crossing = None
        deferred: list[tuple[int, Any, float]] = []    # crossings whose bookkeeping waits
        while not stopping():
            if udp is not self.udp:
                udp = self.udp
                if udp is None:
                    return
                udp_fd = udp.fileno()
                crossing = self._crossing(udp) if lone_path and self.crossing else None
                poller = select.poll()
                poller.register(tun_fd, select.POLLIN)
                poller.register(udp_fd, select.POLLIN)
                poller.register(wake_fd, select.POLLIN)
                poll = poller.poll
            tun_ready = tun.pending            # a frame kept for the batch path: no waiting
            udp_ready = False
            first = None                       # a datagram the crossing left to the batch path
            lone = None
            packets = None
            if crossing is not None and not tun_ready:
                # wait, and cross a lone packet or datagram in the same compiled call
                # (which takes the lock for it): no Python runs before it is on its way.
                # Its bookkeeping waits until the device is idle for DEFER_MS (or what
                # comes next is not a plain crossing): off the path of the answer
                try:
                    ready, locked, crossed, at = crossing.poll(
                        lock, wake_fd, DEFER_MS if deferred else -1)
                except OSError:
                    if udp is self.udp:
                        raise
                    continue
                if locked and len(deferred) < DEFER_MAX and _deferrable(ready, crossed):
                    deferred.append((ready, crossed, at))
                    lock.release()
                    continue
                if deferred:
                    if not locked:
                        lock.acquire()
                    try:
                        self._finish_deferred(deferred)
                        if not locked:
                            datagrams, events = collect()
                    finally:
                        if not locked:
                            lock.release()
                    if not locked and (datagrams or events):
                        deliver(datagrams, events)
                if locked:
                    try:
                        if ready == READY_TUN:
                            runs, datagrams, events = self._crossed_tun(crossed, at, udp, buffers)
                        else:
                            runs, datagrams, events, first = self._crossed_udp(crossed, at, udp,
                                                                               buffers)
                    finally:
                        lock.release()
                    if runs:
                        udp.send_runs(runs)
                    if datagrams or events:
                        deliver(datagrams, events)
                    if first is None:
                        continue
                    udp_ready = True
                else:
                    tun_ready = bool(ready & READY_TUN)
                    udp_ready = bool(ready & READY_UDP)
                    if ready & READY_WAKE:
                        os.read(wake_fd, 512)
            else:
                if deferred:
                    with lock:
                        self._finish_deferred(deferred)
                        datagrams, events = collect()
                    if datagrams or events:
                        deliver(datagrams, events)
                for fd, _events in poll(0 if tun_ready else None):
                    if fd == tun_fd:
                        tun_ready = True
                    elif fd == udp_fd:
                        udp_ready = True
                    elif fd == wake_fd:
                        os.read(wake_fd, 512)
            if tun_ready:
                # with the compiled path a lone packet (a ping after an idle spell) takes
                # the compiled crossing (read, sealed and sent in one call) or else the
                # lone path (meshwg.core.lone): sent before the bookkeeping; anything
                # else, or what they leave, the batch path
                if crossing is not None and not tun.pending:
                    with lock:
                        at = now()
                        runs, datagrams, events = self._crossed_tun(crossing.tun(at), at, udp,
                                                                    buffers)
                    if runs:
                        udp.send_runs(runs)
                    if datagrams or events:
                        deliver(datagrams, events)
                elif protocol.fastpath is None or not lone_path or tun.pending:
                    packets = tun.iter_packets(batch, LONE_PACKET)
                else:
                    lone = tun.read_lone(LONE_PACKET)
                    packets = ((lone,) if lone is not None else
                               tun.iter_packets(batch, LONE_PACKET) if tun.pending else ())
            if tun_ready and packets is not None:
                with lock:
                    at = now()
                    sealed = None if lone is None else seal_lone(protocol, lone, at, lone_buffer)
                    if sealed is None:
                        runs = protocol.encrypt_batch(packets, at, seal_buffer,
                                                      UDP_GSO_MAX_BYTES, UDP_MAX_SEGMENTS)
                    else:
                        udp.send(lone_view[:sealed.size], sealed.endpoint)
                        finish_lone(protocol, sealed, at)
                        runs = ()
                    datagrams, events = collect()
                if runs:
                    udp.send_runs(runs)
                if datagrams or events:
                    deliver(datagrams, events)
            if udp_ready:
                limit = GRO_BATCH if udp.gro else BATCH
                lone = None
                if crossing is not None:
                    got = first if first is not None else self._cross_udp(crossing, udp, buffers)
                    if got is None:                 # crossed (or nothing was ready)
                        continue
                    received = [got]                # the batch path's (recv_one's form)
                    data = got[0]
                    if not (got[1] >= len(data) and len(data) <= LONE_DATAGRAM
                            and data[:1] == LONE_TYPE):
                        try:
                            received += udp.recv_runs(limit - 1, LONE_DATAGRAM, LONE_TYPE)
                        except OSError:
                            if udp is self.udp:
                                raise
                            continue
                else:
                    try:
                        if protocol.fastpath is None or not lone_path:
                            received = udp.recv_runs(limit, LONE_DATAGRAM, LONE_TYPE)
                        else:                 # one receive first: a lone datagram?
                            first = udp.recv_one()
                            received = [] if first is None else [first]
                            if first is not None:
                                data = first[0]
                                if (first[1] >= len(data) and len(data) <= LONE_DATAGRAM
                                        and data[:1] == LONE_TYPE):
                                    lone = first
                                else:
                                    received += udp.recv_runs(limit - 1, LONE_DATAGRAM, LONE_TYPE)
                    except OSError:
                        if udp is self.udp:
                            raise
                        continue
                if lone is not None:
                    runs = ()
                    with lock:
                        at = now()
                        opened = open_lone(protocol, lone[0], lone[2], at, open_buffer)
                        if opened is not None:
                            sealed = None
                            if opened.packet is not None:
                                tun.write_batch((opened.packet,))
                                peer = opened.peer
                                if opened.kp is peer.current and opened.endpoint == peer.endpoint:
                                    # the kernel's answer (a ping's echo) is often queued
                                    # by now: it goes out before the bookkeeping of both
                                    # (which changes nothing it depends on: same keypair,
                                    # same endpoint); a frame not lone waits in `pending`
                                    reply = tun.read_lone(LONE_PACKET)
                                    if reply is not None:
                                        sealed = seal_lone(protocol, reply, at, lone_buffer)
                                        if sealed is not None:
                                            udp.send(lone_view[:sealed.size], sealed.endpoint)
                                        else:
                                            runs = protocol.encrypt_batch(
                                                (reply,), at, seal_buffer,
                                                UDP_GSO_MAX_BYTES, UDP_MAX_SEGMENTS)
                            finish_lone(protocol, opened, at)
                            if sealed is not None:
                                finish_lone(protocol, sealed, at)
                            datagrams, events = collect()
                    if opened is not None:
                        if runs:
                            udp.send_runs(runs)
                        if datagrams or events:
                            deliver(datagrams, events)
                        continue          # else the batch path takes it (and counts why)
                if self._side is not None:
                    received = self._divert(received)
                if not received:
                    continue
                with lock:
                    packets, admitted = protocol.receive_batch(received, now(),
                                                               open_buffer, len(handshakes))
                    if admitted:
                        room = HANDSHAKE_QUEUE_MAX - len(handshakes)
                        if len(admitted) > room:
                            self.stats["handshake_queue_full"] += len(admitted) - room
                            admitted = admitted[:room]
                        handshakes.extend(admitted)
                        self._handshake_ready.notify()
                    datagrams, events = collect()
                if packets:
                    tun.write_batch(packets)
                if datagrams or events:
                    deliver(datagrams, events)

    def _crossing(self, udp: UdpSocket) -> Any:
        """The compiled lone crossing between the TUN device and `udp` (meshwg.accel's
        Crossing), or None without the compiled path or in a build without it."""
        fast = self.protocol.fastpath
        make = getattr(fast, "Crossing", None)
        if make is None:
            return None
        tun = self.tun
        return make(self.protocol, tun.fileno(), tun.vnet_hdr, tun.frame_buffer(), udp.fileno(),
                    udp.family == socket.AF_INET6, udp.gro, LONE_PACKET, LONE_DATAGRAM)

    def _cross_udp(self, crossing: Any, udp: UdpSocket, buffers: tuple) -> tuple | None:
        """One receive through the compiled crossing (Crossing.udp) under the lock, then
        what _crossed_udp does. Returns a datagram it did not take, as recv_one gives
        it, for the batch path; else None."""
        with self._lock:
            at = self._now()
            try:
                # the answer read would overwrite a frame kept for the batch path
                got = crossing.udp(at, not self.tun.pending)
            except OSError:
                if udp is self.udp:
                    raise
                return None
            runs, datagrams, events, first = self._crossed_udp(got, at, udp, buffers)
        if runs:
            udp.send_runs(runs)
        if datagrams or events:
            self._deliver(datagrams, events)
        return first

    def _finish_deferred(self, deferred: list[tuple[int, Any, float]]) -> None:
        """With the lock held: the bookkeeping of crossings that waited (Crossing.poll's
        (ready, result, now), oldest first), as _crossed_tun / _crossed_udp do it at
        once, and empties `deferred`. Another thread may have taken the lock meanwhile:
        a peer removed since is skipped (its state is gone); anything else reads as if
        the packets had crossed a moment later (timers, counters, roaming)."""
        protocol = self.protocol
        peers = protocol.peers
        protocol.set_wall_clock(time.time(), time.monotonic())
        for ready, crossed, at in deferred:
            peer = crossed[0]
            if peers.get(peer.public_key) is not peer:
                continue
            if ready == READY_TUN:
                finish_sealed(protocol, crossed, at)
            else:
                _peer, kp, size, _counter, _source, outcome, reply = crossed
                # from the endpoint it had (_deferrable): an endpoint set since stays
                finish_opened(protocol, peer, kp, size, peer.endpoint, outcome, at)
                if reply is not None:
                    finish_sealed(protocol, reply, at)
        deferred.clear()

    def _crossed_tun(self, crossed: Any, at: float, udp: UdpSocket,
                     buffers: tuple) -> tuple[Any, list, list]:
        """With the lock held, after Crossing.tun(at) returned `crossed`: the bookkeeping
        of a packet it sealed and sent; a frame it did not take kept for the batch path;
        a lone packet it declined through Python's lone path (or the batch path). Returns
        (runs to send, datagrams, events) for after the lock."""
        protocol = self.protocol
        runs: Any = ()
        if crossed is None:
            return runs, [], []
        protocol.set_wall_clock(time.time(), at)
        if crossed.__class__ is tuple:                  # sealed and sent
            finish_sealed(protocol, crossed, at)
        elif crossed.__class__ is int:                  # not lone: the next batch's first
            self.tun.keep(crossed)
        else:                                           # declined: Python's lone path
            sealed, runs = self._seal_declined(crossed, at, udp, buffers)
            if sealed is not None:
                finish_lone(protocol, sealed, at)
        datagrams, events = self._collect()
        return runs, datagrams, events

    def _seal_declined(self, packet: Any, at: float, udp: UdpSocket,
                       buffers: tuple) -> tuple[Any, Any]:
        """A lone packet the crossing handed back (with the lock held): Python's lone
        path seals and sends it, giving its Lone for finish_lone, or else the batch path
        takes it, giving the runs to send after the lock. (Lone or None, runs)."""
        seal_buffer, lone_buffer = buffers
        sealed = seal_lone(self.protocol, packet, at, lone_buffer)
        if sealed is not None:
            udp.send(memoryview(lone_buffer)[:sealed.size], sealed.endpoint)
            return sealed, ()
        return None, self.protocol.encrypt_batch((packet,), at, seal_buffer,
                                                 UDP_GSO_MAX_BYTES, UDP_MAX_SEGMENTS)

    def _crossed_udp(self, got: Any, at: float, udp: UdpSocket,
                     buffers: tuple) -> tuple[Any, list, list, tuple | None]:
        """With the lock held, after Crossing.udp(at) returned `got`: the bookkeeping of
        a datagram it opened and of the answer it sealed (or the Python lone or batch
        path for an answer it handed back). Returns (runs to send, datagrams, events)
        for after the lock, and a datagram it did not take (recv_one's form) or None."""
        if got is None:
            return (), [], [], None
        if len(got) == 3:
            return (), [], [], got
        protocol = self.protocol
        protocol.set_wall_clock(time.time(), at)
        peer, kp, size, _counter, source, outcome, reply = got
        runs: Any = ()
        sealed = None
        if reply is not None and reply.__class__ is not tuple:
            if reply.__class__ is int:                  # not lone: the next batch's first
                self.tun.keep(reply)
            else:                                       # declined: Python's lone path
                sealed, runs = self._seal_declined(reply, at, udp, buffers)
        finish_opened(protocol, peer, kp, size, source, outcome, at)
        if reply.__class__ is tuple:
            finish_sealed(protocol, reply, at)
        elif sealed is not None:
            finish_lone(protocol, sealed, at)
        datagrams, events = self._collect()
        return runs, datagrams, events, None

    # ------------------------------------------------------------------ side channel
    def set_side_channel(self, prefix: bytes, handler: SideHandler | None) -> None:
        """Hand received datagrams that start with `prefix` (at least SIDE_PREFIX_MIN
        bytes, and not a WireGuard message header: type 1-4 then three zero bytes) to
        `handler(datagram, source)` instead of the protocol; None removes it. The handler
        runs on the data path: it must be quick; what it raises is counted
        (side_handler_errors), never propagated. Raises ValueError for a bad prefix."""
        if handler is not None:
            if len(prefix) < SIDE_PREFIX_MIN or (prefix[0] in (1, 2, 3, 4) and not any(prefix[1:4])):
                raise ValueError(f"side channel prefix {prefix!r}: at least {SIDE_PREFIX_MIN} "
                                 f"bytes, not a WireGuard message header")
        self._side = None if handler is None else (bytes(prefix), handler)

    def send_side(self, datagram: bytes, endpoint: tuple[str, int]) -> None:
        """Send one datagram from the engine's UDP socket (its NAT mapping is the
        WireGuard traffic's); dropped when the device is not running or the endpoint is
        unreachable."""
        udp = self.udp
        if udp is not None and self._running:
            udp.send(datagram, endpoint)
            with self._lock:
                self.stats["side_sent"] += 1

    def _divert(self, received: list) -> list:
        """The runs of `received` for the protocol; side-channel datagrams (each segment
        of a run starting with the prefix) go to the handler, oversized ones are dropped."""
        side = self._side
        if side is None:
            return received
        prefix, handler = side
        if not any(data.startswith(prefix) for data, _size, _src in received):
            return received
        kept = []
        counts: Counter[str] = Counter()
        for data, size, source in received:
            if not data.startswith(prefix):
                kept.append((data, size, source))
                continue
            size = size if size > 0 else len(data)
            for i in range(0, len(data), size):
                segment = bytes(data[i:i + size])
                if not segment.startswith(prefix):
                    kept.append((segment, len(segment), source))
                elif len(segment) > SIDE_MAX_DATAGRAM:
                    counts["side_dropped"] += 1
                else:
                    counts["side_received"] += 1
                    try:
                        handler(segment, source)
                    except Exception:          # noqa: BLE001 -- the data path goes on
                        counts["side_handler_errors"] += 1
                        log.exception("%s: side channel handler failed", self.name)
        with self._lock:
            self.stats.update(counts)
        return kept

    def _handshake_loop(self) -> None:
        """Admitted handshake messages, one per turn of the lock (each costs a few
        Diffie-Hellman operations, so the data path waits for one at most)."""
        protocol = self.protocol
        handshakes = self._handshakes
        stopping = self._stopping.is_set
        while True:
            with self._lock:
                while not handshakes and not stopping():
                    self._handshake_ready.wait()
                if stopping():
                    return
                protocol.process_handshake(handshakes.popleft(), self._now())
                datagrams, events = self._collect()
            self._deliver(datagrams, events)

    def _timer_loop(self) -> None:
        """Fire the protocol's timers at their deadlines; publish the counters file."""
        protocol = self.protocol
        stopping = self._stopping.is_set
        while not stopping():
            with self._lock:
                now = self._now()
                protocol.tick(now)
                datagrams, events = self._collect()
                deadline = protocol.next_deadline()
                self._timer_due = math.inf if deadline is None else deadline
                wake_at = self._timer_due
                counters = None
                if self._stats_dirty:
                    publish_at = self._stats_written_at + STATS_INTERVAL
                    if now >= publish_at:
                        counters = self._counters()
                        self._stats_dirty = False
                        self._stats_written_at = now
                    else:
                        wake_at = min(wake_at, publish_at)
                # everything that changed the deadlines so far is in wake_at; a change
                # after the lock is released sets the event again
                self._timer_wake.clear()
            self._deliver(datagrams, events)
            if counters is not None:
                self._stats_file.publish(counters)
            self._timer_wake.wait(None if wake_at == math.inf
                                  else max(0.0, wake_at - time.monotonic()))

    # ------------------------------------------------------------------ counters
    def _counters(self) -> dict[str, int]:
        """The counters of the protocol, the device and the TUN device (lock held)."""
        return merge_counters(("", self.protocol.stats), ("", self.stats),
                              ("tun_", self.tun.stats if self.tun is not None else {}))

    def counters(self) -> dict[str, int]:
        """What was dropped or noted, by reason (malformed, replayed, decrypt_failed, ...)."""
        with self._lock:
            return self._counters()

    # ------------------------------------------------------------------ control
    def status(self) -> DeviceStatus:
        """The device's keys, port, mark and peers, as `wg show` would list them."""
        with self._lock:
            p = self.protocol
            peers = []
            for peer in p.peers.values():
                wall = p.last_handshake_wall(peer)
                sec = int(wall) if wall else 0
                nsec = int((wall - sec) * 1e9) if wall else 0
                peers.append(PeerStatus(
                    public_key=peer.public_key,
                    preshared_key=None if peer.preshared_key == ZERO_KEY else peer.preshared_key,
                    endpoint=peer.endpoint, last_handshake_sec=sec, last_handshake_nsec=nsec,
                    tx_bytes=peer.tx_bytes, rx_bytes=peer.rx_bytes,
                    persistent_keepalive=peer.persistent_keepalive,
                    allowed_ips=p.allowed_ips.networks_of(peer)))
            return DeviceStatus(private_key=p.private_key, listen_port=self.listen_port,
                                fwmark=self.udp.fwmark if self.udp else 0, peers=peers)

    def apply(self, update: DeviceUpdate) -> None:
        """Apply a validated set request (device fields, then peers in order). Everything
        that can fail is checked or prepared before the first change, so a failed apply
        changes nothing; raises UapiError (an endpoint that is not IP and port, a listen
        port in use)."""
        with self._apply_lock:
            self._apply(update)
            if self.routes is not None:
                self.routes.changed()      # routes converge in the background

    def _apply(self, update: DeviceUpdate) -> None:
        endpoints: dict[int, tuple[Any, list]] = {}
        for i, pu in enumerate(update.peers):
            try:
                endpoints[i] = (None if pu.endpoint is None else normalize_endpoint(pu.endpoint),
                                [normalize_endpoint(e) for e in pu.probe_endpoints])
            except EndpointError as exc:
                raise UapiError(str(exc)) from None
        new_udp = None
        if update.listen_port is not None and self.udp is not None and update.listen_port != self.udp.port:
            try:
                new_udp = UdpSocket(update.listen_port, self.udp.fwmark,
                                    offload="udp" in self.offloads)
            except BindError as exc:
                raise UapiError(str(exc), ERR_PORT_IN_USE) from None
        p = self.protocol
        with self._lock:
            now = self._now()
            if update.private_key is not None:
                p.set_private_key(update.private_key)
            if new_udp is not None:
                old, self.udp = self.udp, new_udp
                self._wake_data_path()
                threading.Timer(OLD_SOCKET_GRACE, old.close).start()
            if update.fwmark is not None and self.udp is not None:
                self.udp.set_fwmark(update.fwmark)
            if update.replace_peers:
                for key in list(p.peers):
                    p.remove_peer(key)
            for i, pu in enumerate(update.peers):
                if pu.remove:
                    p.remove_peer(pu.public_key)
                    continue
                peer = p.peers.get(pu.public_key)
                if peer is None:
                    if pu.update_only or pu.public_key == p.public_key:
                        continue
                    peer = p.add_peer(pu.public_key)
                endpoint, probes = endpoints[i]
                if pu.preshared_key is not None:
                    p.set_preshared_key(peer, pu.preshared_key)
                if endpoint is not None and pu.pin_endpoint > 0 and self._running:
                    p.move_endpoint(peer, endpoint, now, pu.pin_endpoint)
                elif endpoint is not None:
                    p.set_endpoint(peer, endpoint)
                if pu.replace_allowed_ips:
                    p.set_allowed_ips(peer, pu.allowed_ips)
                else:
                    p.add_allowed_ips(peer, pu.allowed_ips)
                p.remove_allowed_ips(peer, pu.remove_allowed_ips)
                if pu.persistent_keepalive is not None:
                    p.set_persistent_keepalive(peer, pu.persistent_keepalive, now)
                if probes and self._running:
                    p.probe(peer, probes, now, hold=pu.probe_hold)
            datagrams, events = self._collect()
        self._deliver(datagrams, events)

    def _wanted_routes(self) -> set:
        """Every allowed IP of every peer: what the route worker routes through the
        interface."""
        with self._lock:
            return self.protocol.allowed_ips.networks()

    # ------------------------------------------------------------------ configuration
    def configure(self, config) -> None:
        """Load an InterfaceConfig (meshwg.config) through the same path `wg setconf` uses."""
        update = DeviceUpdate(private_key=config.private_key, replace_peers=True, peers=[
            PeerUpdate(public_key=pc.public_key, preshared_key=pc.preshared_key,
                       endpoint=pc.endpoint, persistent_keepalive=pc.persistent_keepalive,
                       replace_allowed_ips=True, allowed_ips=list(pc.allowed_ips))
            for pc in config.peers])
        self.apply(update)
