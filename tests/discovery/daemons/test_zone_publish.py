"""The rendezvous's zone writer (discovery.daemons.zone_publish) without a DNS server: the
primary refuses connections (a closed loopback port), so every write fails; what must
hold is that serve() never blocks, the pending view is kept and coalesced, failures are
counted and retried with backoff, and nothing escapes the worker thread. Writing to a
real BIND primary is tested in test_zone_three_rendezvous_lab.py."""

from __future__ import annotations

import dataclasses
import socket
import time

import dns.tsig

from discovery.daemons.zone_publish import ZonePublish
from discovery.dnssd.update import ZoneWriter
from discovery.lab.netns import poll
from discovery.stores.zone_directory import STAMP_TXT, stamp_of
from discovery.stores.zone_membership import ZoneMembership
from tests.discovery.dnssd.sample import ZONE, member


class FixedKey:
    def key(self) -> dns.tsig.Key:
        return dns.tsig.Key("k.", bytes(32), "hmac-sha256")


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_an_unreachable_primary_keeps_the_pending_view_and_retries() -> None:
    store = ZoneMembership(ZoneWriter(f"127.0.0.1:{closed_port()}", ZONE, FixedKey(), timeout=1))
    now = [1000.0]
    zone = {}
    publish = ZonePublish(store, lambda: zone, clock=lambda: now[0]).start()
    try:
        a, b, quiet = member(1), member(2), member(3, endpoint=False)
        started = time.monotonic()
        out = publish.serve([a, b, quiet], {a.public_key, quiet.public_key})
        assert time.monotonic() - started < 0.5          # no DNS on the caller's thread
        # a: observed; b: an endpoint nobody heard from (a cache) is no observation
        assert [stamp_of(r) for r in out] == [1_000_000, 0, 0]
        assert out[1].endpoint == b.endpoint and STAMP_TXT not in out[1].extra
        assert publish.pending <= 1
        poll(lambda: publish.counters["failures"] >= 1, 30, "a failed write")
        assert publish.pending == 1                       # kept for the retry
        # a burst of changes coalesces into the newest view per member
        for port in range(2000, 2010):
            now[0] += 1
            publish.serve([dataclasses.replace(a, endpoint=("203.0.113.1", port))], {a.public_key})
        assert publish.pending == 1
        poll(lambda: publish.counters["failures"] >= 2, 30, "a retry after the backoff")
        assert publish.pending == 1 and publish.counters["written"] == 0
        assert publish.service.errors == 0               # nothing escaped the thread
        # another rendezvous's newer record for a: nothing left to write once it is there
        zone[a.public_key] = dataclasses.replace(
            a, endpoint=("203.0.113.1", 2009), extra={STAMP_TXT: str(2_000_000)})
        out = publish.serve([a], {a.public_key})
        assert out[0].endpoint == ("203.0.113.1", 2009)
    finally:
        publish.stop()
