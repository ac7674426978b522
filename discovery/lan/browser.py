"""Follows the members of one mesh on the LAN over mDNS (records: discovery.lan.records).

python-zeroconf's ServiceBrowser reports instances appearing, changing and leaving; its
callbacks only queue a job. The browser's own thread (meshwg.util.service.Service) resolves
and validates them, keeps a table bounded at MAX_PEERS, and re-reads the known instances
from Zeroconf's cache every `refresh_interval` seconds, which catches records that expire
without a goodbye. With no member known it waits for a job without any timeout.
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
    SERVICE_TYPE, LanPeer, MalformedAnnouncement, parse_announcement, same_peer_view,
)
from discovery.lan.service import MdnsService

log = logging.getLogger(__name__)

RESOLVE_TIMEOUT_MS = 3000
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


@dataclass
class _Job:
    kind: str  # "resolve" | "remove" | "refresh"
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
        self._wake_r = self._wake_w = -1       # a pipe: queued jobs wake the worker
        self._browser: ServiceBrowser | None = None
        self._worker: Service | None = None

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
        self._jobs.append(_Job(kind, name))
        try:
            os.write(self._wake_w, b"j")
        except OSError:     # the pipe is full (the worker is awake anyway) or closed (stopping)
            pass

    def _run(self, worker: Service) -> None:
        next_refresh: float | None = None   # time.monotonic() of the next cache re-read
        while True:
            timeout = None if next_refresh is None else max(0.0, next_refresh - time.monotonic())
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
            for job in jobs:
                if worker.stopping:
                    return
                try:
                    self._handle(job)
                except Exception:  # noqa: BLE001 -- a bad packet must never kill discovery
                    log.exception("mdns: browser job %s failed", job)
            with self._lock:
                known = bool(self._by_instance)
            if not known:
                next_refresh = None
            elif next_refresh is None or refreshed:
                next_refresh = time.monotonic() + self.refresh_interval

    def _handle(self, job: _Job) -> None:
        before = self.peers()
        if job.kind == "remove":
            with self._lock:
                self._by_instance.pop(job.name.lower(), None)
        elif job.kind == "resolve":
            self._resolve(job.name, request=True)
        else:  # refresh: re-read known instances from the cache (expired addresses, TTLs)
            with self._lock:
                names = list(self._by_instance)
            for name in names:
                self._resolve(name, request=False)
        with self._lock:
            self._peers = {p.public_key: p for p in self._by_instance.values()}
        after = self.peers()
        if not same_peer_view(before, after) and self.on_change is not None:
            try:
                self.on_change(after)
            except Exception:  # noqa: BLE001 -- the caller's bug must not stop discovery
                log.exception("mdns: on_change callback failed")

    def _resolve(self, name: str, request: bool) -> None:
        zc = self.service.zeroconf
        info = ServiceInfo(SERVICE_TYPE, name)
        complete = info.request(zc, RESOLVE_TIMEOUT_MS) if request else info.load_from_cache(zc)
        key = name.lower()
        if not complete:
            if request:
                self.counters.unresolved += 1
            else:  # records gone from the cache (expired without a goodbye)
                with self._lock:
                    self._by_instance.pop(key, None)
            return
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
