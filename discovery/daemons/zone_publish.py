"""A rendezvous on a DNS directory writes the endpoints it observes into the zone (issue 10),
off its main loop.

:class:`ZonePublish` is what the rendezvous daemon calls at each publish of its directory
(:meth:`ZonePublish.serve`, never blocking on DNS): it stamps this rendezvous's own
observations (the members whose tunnels it carries), hands the ones the zone should get to
a worker thread, and returns the directory to serve: the union of its observations and the
records other rendezvous wrote into the zone, newest observation per member winning
(the rules and why they do not flap: discovery.stores.zone_directory).

The worker (a meshwg.util.service.Service loop) keeps a pending record per member, so a
burst of changes coalesces into one write of each member's latest view, sent in batched
signed updates (discovery.stores.zone_membership.DirectoryPublisher.write) that require
each member's entry to exist (a member removed meanwhile is not written back: the update
is refused with NXDOMAIN, the membership is read again and the others retried). When the
primary cannot be reached or refuses, the pending set stays, failures are counted
(:attr:`ZonePublish.counters`) and the write is retried after RETRY_FIRST seconds,
doubling up to RETRY_MAX; it catches up when the primary answers. No exception leaves the
thread.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Callable, Collection

import dns.rcode

from meshwg.util.errors import MeshwgError
from meshwg.util.service import Service

from discovery.dnssd.member import MemberRecord
from discovery.dnssd.update import ServerRefused
from discovery.stores.zone_directory import Observations, record_key, served, to_write
from discovery.stores.zone_membership import DirectoryPublisher, ZoneMembership

log = logging.getLogger("meshwg.rendezvous.zone")

RETRY_FIRST = 1.0       # seconds before the first retry of a failed write
RETRY_MAX = 30.0        # the longest wait between retries


class ZonePublish:
    """Writes this rendezvous's observations into the zone and merges the others'.
    `store` is a ZoneMembership on the primary (its writer sends the updates);
    `zone_records()` returns the zone's directory records as last read (by key)."""

    def __init__(self, store: ZoneMembership, zone_records: Callable[[], dict[bytes, MemberRecord]],
                 clock: Callable[[], float] = time.time):
        self.store = store
        self.publisher = DirectoryPublisher(store.writer)
        self.zone_records = zone_records
        self.clock = clock
        self.observations = Observations()
        self.counters = {"written": 0, "updates": 0, "failures": 0, "refused": 0,
                         "removed_meanwhile": 0}
        self._lock = threading.Lock()
        self._pending: dict[bytes, MemberRecord] = {}
        self._written: dict[bytes, tuple] = {}       # what the zone got from us, by key
        self._retry_at = 0.0
        self._backoff = RETRY_FIRST
        self.service = Service("rendezvous-zone-publish")

    def start(self) -> "ZonePublish":
        self.service.spawn(self.service.loop, self._round, name="rendezvous-zone-publish")
        return self

    def stop(self) -> None:
        self.service.stop(timeout=5)

    # ------------------------------------------------------------------ the daemon's side
    def serve(self, records: list[MemberRecord], observed: Collection[bytes]) -> list[MemberRecord]:
        """The directory to serve for `records` (the membership with this rendezvous's
        endpoints); the records of members in `observed` (keys its engine has heard
        from: an endpoint restored from a cache is no observation) are its own
        observations, and those the zone should get are queued. No I/O."""
        own = self.observations.stamp((r for r in records if r.public_key in observed),
                                      int(self.clock() * 1000))
        zone = self.zone_records()
        with self._lock:
            wanted = [r for r in to_write(own, zone)
                      if self._written.get(r.public_key) != record_key(r)]
        if wanted:
            with self._lock:
                self._pending.update((r.public_key, r) for r in wanted)
            self.service.wake()
        return served(records, own, zone)

    @property
    def pending(self) -> int:
        with self._lock:
            return len(self._pending)

    # ------------------------------------------------------------------ the worker
    def _round(self) -> float | None:
        """One round of the worker: write what is pending unless waiting to retry;
        seconds until the next round (None: until woken)."""
        now = time.monotonic()
        if now < self._retry_at:
            return self._retry_at - now
        with self._lock:
            batch, self._pending = self._pending, {}
        if not batch:
            return None
        try:
            self._write(list(batch.values()))
        except (MeshwgError, ValueError, OSError) as exc:
            self.counters["failures"] += 1
            with self._lock:            # newer views queued meanwhile win
                self._pending = {**batch, **self._pending}
            self._retry_at = time.monotonic() + self._backoff
            log.warning("writing %d member records to zone %s failed (retry in %.0f s): %s",
                        len(batch), self.store.zone, self._backoff, exc)
            self._backoff = min(RETRY_MAX, self._backoff * 2)
            return self._backoff
        self._backoff = RETRY_FIRST
        self._retry_at = 0.0
        return 0.0 if self.pending else None

    def _write(self, records: list[MemberRecord]) -> None:
        require = self.store.layout.member_name
        try:
            self.publisher.write(records, require)
        except ServerRefused as exc:
            if exc.rcode != dns.rcode.NXDOMAIN:
                self.counters["refused"] += 1
                raise
            members = {m.public_key for m in self.store.members()}   # someone was removed
            kept = [r for r in records if r.public_key in members]
            self.counters["removed_meanwhile"] += len(records) - len(kept)
            self.publisher.write(kept, require)
            records = kept
        self.counters["updates"] = self.publisher.updates_sent
        self.counters["written"] += len(records)
        with self._lock:
            for record in records:
                self._written[record.public_key] = record_key(record)
