"""Follows the members of one mesh on the LAN over mDNS (records: discovery.lan.records).

python-zeroconf's ServiceBrowser reports instances appearing, changing and leaving; its
callbacks only queue a job. The browser's own thread (meshwg.util.service.Service) reads
each instance from Zeroconf's cache first (free: a member's announcement carries its SRV,
TXT and addresses in the same packet), validates it and keeps a table bounded at MAX_PEERS.
Instances the cache cannot complete are deferred: at most MAX_DEFERRED wait, at most
MAX_DEFERRED_PER_ANNOUNCER from one announcer (the source address of the PTR answer,
discovery.lan.service), each is queried on the LAN at most QUERY_ATTEMPTS times,
QUERY_TIMEOUT_MS each, one at a time and only while no event waits, RETRY_PERIOD seconds
apart, the announcer served least often first, then dropped and counted. So 200 bogus
instances on the LAN (issue 9 case 4) cost a bounded number of queries, never delay a
member whose announcement is complete, and one flooding host cannot crowd out another
host's member. Known and deferred instances are re-read
from the cache every `refresh_interval` seconds, which catches records that expire without
a goodbye and deferred ones completed later. With nothing known or deferred it waits for a
job without any timeout.

A LAN stranger can announce any number of instances of our mesh under random keys. So the
owner says which keys it wants (:meth:`MdnsBrowser.set_wanted`: the member daemon passes
its directory): an instance name is derived from its key (discovery.lan.records.
instance_name), so an event for any other name is counted (``unwanted``) and dropped
before its records are read, neither deferred nor kept nor re-read nor passed on. When the
wanted keys change, the newly wanted ones are read from the cache once, and instances no
longer wanted leave the table. Jobs are handled in batches, with one table comparison and
at most one ``on_change`` per batch, so a burst costs per packet, not per packet times the
table, and leaves nothing behind to process.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections import deque
from dataclasses import dataclass, replace
from typing import Callable, Iterable

from zeroconf import ServiceBrowser, ServiceInfo, ServiceStateChange, Zeroconf

from meshwg.util.service import Service

from discovery.lan.interfaces import DEFAULT_TUNNEL_INTERFACE
from discovery.lan.records import (
    SERVICE_TYPE, LanPeer, MalformedAnnouncement, instance_name, parse_announcement, same_peer_view,
)
from discovery.lan.service import MdnsService

log = logging.getLogger(__name__)

QUERY_TIMEOUT_MS = 1000  # one query for an instance the cache could not complete
QUERY_ATTEMPTS = 3  # queries per deferred instance before it is dropped (counted unresolved)
RETRY_PERIOD = 10.0  # seconds between two queries for the same instance
MAX_DEFERRED = 256  # bound on the instances waiting for a query; more are dropped (unresolved)
MAX_DEFERRED_PER_ANNOUNCER = 16  # ... from one source address; more are dropped (crowded)
MAX_PEERS = 1024  # bound on the table a (hostile) LAN can make us keep
REFRESH_INTERVAL = 1.0  # seconds between cache re-reads while members are known


@dataclass
class BrowserCounters:
    """What the browser dropped, by reason."""

    malformed: int = 0
    other_mesh: int = 0
    own: int = 0
    unresolved: int = 0
    overflow: int = 0  # members beyond MAX_PEERS
    deferred: int = 0  # instances the cache could not complete, queued for a query
    crowded: int = 0  # not queued: their announcer has MAX_DEFERRED_PER_ANNOUNCER queued
    unwanted: int = 0  # events for instances of keys not wanted (set_wanted): not read


@dataclass
class _Deferred:
    name: str
    due: float  # time.monotonic() of its next query
    source: str | None = None  # who announced it (None: not known)
    attempts: int = 0


@dataclass
class _Job:
    kind: str  # "resolve" | "remove" | "refresh" | "query" | "wanted"
    name: str = ""


class MdnsBrowser:
    """Follows the members of one mesh on the LAN.

    ``on_change(peers)`` is called with a fresh copy of the table whenever a peer appears,
    disappears or changes (not for last_seen alone), always from the browser's own worker
    thread, one call at a time.
    """

    def __init__(
        self,
        mesh_id: str,
        own_public_key: bytes,
        on_change: Callable[[dict[bytes, LanPeer]], None] | None = None,
        *,
        service: MdnsService | None = None,
        interfaces: list[str] | None = None,
        exclude_interfaces: Iterable[str] = (DEFAULT_TUNNEL_INTERFACE,),
        ipv6: bool = True,
        refresh_interval: float = REFRESH_INTERVAL,
    ) -> None:
        self.mesh_id = mesh_id
        self.own_public_key = own_public_key
        self.on_change = on_change
        self.service = service or MdnsService(interfaces, exclude_interfaces, ipv6)
        self.refresh_interval = refresh_interval
        self.counters = BrowserCounters()
        self._lock = threading.Lock()
        self._by_instance: dict[str, LanPeer] = {}
        self._peers: dict[bytes, LanPeer] = {}
        self._jobs: deque[_Job] = deque()
        self._deferred: dict[str, _Deferred] = {}  # by lower-case name; worker thread only
        self._served: dict[str | None, int] = {}   # queries per announcer with deferred ones
        self._wake_r = self._wake_w = -1       # a pipe: queued jobs wake the worker
        self._browser: ServiceBrowser | None = None
        self._worker: Service | None = None
        self._wanted: frozenset[bytes] | None = None    # None: every key (set_wanted)
        self._wanted_names: frozenset[str] | None = None  # their instance names, lower-case
        self._newly_wanted: set[bytes] = set()           # to read from the cache once

    def set_wanted(self, keys: Iterable[bytes] | None) -> None:
        """Follow only the instances of these WireGuard keys (None: all). Cheap when
        unchanged; any thread."""
        wanted = None if keys is None else frozenset(keys)
        with self._lock:
            if wanted == self._wanted:
                return
            if wanted is not None:
                self._newly_wanted |= wanted - (self._wanted or frozenset())
            self._wanted = wanted
            self._wanted_names = None if wanted is None else \
                frozenset(instance_name(self.mesh_id, k).lower() for k in wanted)
        self._queue(_Job("wanted"))

    def _is_wanted(self, name: str) -> bool:
        names = self._wanted_names
        return names is None or name.lower() in names

    def peers(self) -> dict[bytes, LanPeer]:
        """Snapshot of the members of our mesh seen on the LAN, by public key."""
        with self._lock:
            return {k: replace(v, addresses=list(v.addresses)) for k, v in self._peers.items()}

    def start(self) -> None:
        """Start browsing."""
        if self._worker is not None:
            return
        zc = self.service.acquire()
        self._wake_r, self._wake_w = os.pipe()
        for fd in (self._wake_r, self._wake_w):
            os.set_blocking(fd, False)
        worker = Service("mdns-browser")
        worker.on_close(self._close_pipe)
        worker.spawn(self._run, worker)
        self._worker = worker
        self._browser = ServiceBrowser(zc, SERVICE_TYPE, handlers=[self._on_state_change])

    def stop(self) -> None:
        """Stop browsing and release the shared Zeroconf."""
        if self._worker is None:
            return
        if self._browser is not None:
            self._browser.cancel()          # joins zeroconf's browser thread: no more jobs
            self._browser = None
        self._worker.stop(timeout=5)
        self._worker = None
        self.service.release()

    def _close_pipe(self) -> None:
        fds = (self._wake_r, self._wake_w)
        self._wake_r = self._wake_w = -1
        for fd in fds:
            os.close(fd)

    # Called on zeroconf's browser thread: hand off, never block it.
    def _on_state_change(
        self, zeroconf: Zeroconf, service_type: str, name: str, state_change: ServiceStateChange
    ) -> None:
        kind = "remove" if state_change is ServiceStateChange.Removed else "resolve"
        self._queue(_Job(kind, name))

    def _queue(self, job: _Job) -> None:
        self._jobs.append(job)
        if self._wake_w < 0:            # not started: the worker finds it when it starts
            return
        try:
            os.write(self._wake_w, b"j")
        except OSError:     # the pipe is full (the worker is awake anyway) or closed (stopping)
            pass

    def _run(self, worker: Service) -> None:
        next_refresh: float | None = None   # time.monotonic() of the next cache re-read
        while True:
            wake = next_refresh
            if self._deferred:  # the next query, unless events come first
                wake = min(d.due for d in self._deferred.values())
                wake = wake if next_refresh is None else min(wake, next_refresh)
            timeout = None if wake is None else max(0.0, wake - time.monotonic())
            worker.wait_readable(self._wake_r, timeout=timeout)
            if worker.stopping:
                return
            try:
                while os.read(self._wake_r, 4096):
                    pass
            except BlockingIOError:
                pass
            jobs = []
            while self._jobs:
                jobs.append(self._jobs.popleft())
            refreshed = next_refresh is not None and time.monotonic() >= next_refresh
            if refreshed:               # due even when events keep the queue busy
                jobs.append(_Job("refresh"))
            if not jobs:                # events first: a query waits until none is queued
                query = self._due_query()
                if query is not None:
                    jobs.append(_Job("query", query))
            self._handle(jobs, worker)
            if worker.stopping:
                return
            with self._lock:
                known = bool(self._by_instance) or bool(self._deferred)
            if not known:
                next_refresh = None
            elif next_refresh is None or refreshed:
                next_refresh = time.monotonic() + self.refresh_interval

    def _due_query(self) -> str | None:
        """The name of a deferred instance whose query is due, if any: of the announcer
        served least often (one flooding host does not make the others wait)."""
        now = time.monotonic()
        due = [entry for entry in self._deferred.values() if entry.due <= now]
        if not due:
            return None
        entry = min(due, key=lambda e: self._served.get(e.source, 0))
        self._served[entry.source] = self._served.get(entry.source, 0) + 1
        return entry.name

    def _handle(self, jobs: list[_Job], worker: Service | None = None) -> None:
        """Handle a batch of jobs; one ``on_change`` at most, after all of them."""
        before = self.peers()
        for job in jobs:
            if worker is not None and worker.stopping:
                return
            try:
                self._handle_one(job)
            except Exception:  # noqa: BLE001 -- a bad packet must never kill discovery
                log.exception("mdns: browser job %s failed", job)
        with self._lock:
            self._peers = {p.public_key: p for p in self._by_instance.values()}
        after = self.peers()
        if not same_peer_view(before, after) and self.on_change is not None:
            try:
                self.on_change(after)
            except Exception:  # noqa: BLE001 -- the caller's bug must not stop discovery
                log.exception("mdns: on_change callback failed")

    def _handle_one(self, job: _Job) -> None:
        if job.kind in ("resolve", "query") and not self._is_wanted(job.name):
            self.counters.unwanted += 1     # a stranger's key: not even read
            self._deferred.pop(job.name.lower(), None)
            return
        if job.kind == "wanted":
            self._rewant()
        elif job.kind == "remove":
            self._deferred.pop(job.name.lower(), None)
            with self._lock:
                self._by_instance.pop(job.name.lower(), None)
        elif job.kind in ("resolve", "query"):
            self._resolve(job.name, job.kind)
        else:  # refresh: re-read known instances from the cache (expired addresses, TTLs)
            with self._lock:
                names = list(self._by_instance)
            for name in names:
                self._resolve(name, "refresh")
            for entry in list(self._deferred.values()):  # completed since (a late SRV, A)
                self._resolve(entry.name, "recheck")
        if len(self._served) > len(self._deferred):    # forget announcers with none queued
            live = {entry.source for entry in self._deferred.values()}
            self._served = {src: n for src, n in self._served.items() if src in live}

    def _rewant(self) -> None:
        """The wanted keys changed: drop the instances no longer wanted, read the newly
        wanted ones from the cache (an announcement heard before its key was wanted)."""
        with self._lock:
            fresh, self._newly_wanted = self._newly_wanted, set()
            for name in [n for n in self._by_instance if not self._is_wanted(n)]:
                del self._by_instance[name]
        for name in [n for n in self._deferred if not self._is_wanted(n)]:
            del self._deferred[name]
        for key in fresh:
            name = instance_name(self.mesh_id, key)
            if name.lower() not in self._by_instance and self._is_wanted(name):
                self._resolve(name, "recheck")

    def _resolve(self, name: str, how: str) -> None:
        """Read one instance: ``how`` is "resolve" (an event: the cache, else defer it),
        "query" (a deferred one, asked on the LAN), "recheck" (a deferred one, the cache
        only) or "refresh" (a known one, the cache only: not a sighting)."""
        zc = self.service.zeroconf
        info = ServiceInfo(SERVICE_TYPE, name)
        key = name.lower()
        if how == "query":
            complete = info.request(zc, QUERY_TIMEOUT_MS)
        else:
            complete = info.load_from_cache(zc)
        if not complete:
            if how == "resolve":
                self._defer(key, name)
            elif how == "query":
                self._retry(key)
            elif how == "refresh":  # records gone from the cache (expired without a goodbye)
                with self._lock:
                    self._by_instance.pop(key, None)
            return
        self._deferred.pop(key, None)
        request = how != "refresh"  # a sighting (counted, last_seen now)
        try:
            peer = parse_announcement(
                name, info.properties or {}, _scoped_addresses(info), info.port, time.time()
            )
        except MalformedAnnouncement as exc:
            self.counters.malformed += 1
            log.debug("mdns: dropped %s: %s", name, exc)
            with self._lock:
                self._by_instance.pop(key, None)
            return
        if peer.mesh_id != self.mesh_id:
            if request:
                self.counters.other_mesh += 1
            return
        if peer.public_key == self.own_public_key:
            if request:
                self.counters.own += 1
            return
        with self._lock:
            known = self._by_instance.get(key)
            if known is None and len(self._by_instance) >= MAX_PEERS:
                self.counters.overflow += 1
                return
            if not request and known is not None:
                peer.last_seen = known.last_seen  # a cache re-read is not a sighting
            self._by_instance[key] = peer


    def _defer(self, key: str, name: str) -> None:
        if key in self._deferred:
            return
        if len(self._deferred) >= MAX_DEFERRED:
            self.counters.unresolved += 1
            return
        source = self.service.announcer_of(name)   # None: not known (only the global bound)
        if source is not None and \
                sum(1 for d in self._deferred.values() if d.source == source) >= MAX_DEFERRED_PER_ANNOUNCER:
            self.counters.crowded += 1
            return
        self.counters.deferred += 1
        self._deferred[key] = _Deferred(name, time.monotonic(), source)
        self._served.setdefault(source, 0)

    def _retry(self, key: str) -> None:
        entry = self._deferred.pop(key, None)
        if entry is None:
            return
        entry.attempts += 1
        if entry.attempts >= QUERY_ATTEMPTS:
            self.counters.unresolved += 1
            return
        entry.due = time.monotonic() + RETRY_PERIOD
        self._deferred[key] = entry  # to the back: the others' turn first


def _scoped_addresses(info: ServiceInfo) -> list[str]:
    """Addresses of a resolved service; link-local IPv6 get ``%ifname`` (our namespace)."""
    out = []
    for text in info.parsed_scoped_addresses():
        if "%" in text:
            addr, scope = text.split("%", 1)
            if scope.isdigit():
                try:
                    scope = socket.if_indextoname(int(scope))
                except OSError:
                    pass
            text = f"{addr}%{scope}"
        out.append(text)
    return out
