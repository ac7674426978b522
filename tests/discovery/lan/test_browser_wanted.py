"""A LAN stranger's announcements under random keys cost the browser nothing lasting
(discovery/lan/browser.py, set_wanted): an event for an instance whose key is not wanted is
counted and dropped before any record is read, never deferred or kept; a burst of them
makes at most one on_change per batch. No I/O: the browser is not started and its service
fails the test if the cache is read. The namespace test is
tests/discovery/daemons/test_lan_stranger.py (the member's CPU after a burst)."""

from __future__ import annotations

import os

from discovery.lan.browser import MdnsBrowser, _Job
from discovery.lan.records import instance_name

MESH = "M"
OWN = b"\xaa" * 32


class NoCache:
    """Stands in for MdnsService: reading the cache (or querying) is a failure here."""

    reads = 0

    @property
    def zeroconf(self):
        self.reads += 1
        raise AssertionError("the cache was read")

    def announcer_of(self, name: str) -> str | None:
        return "10.77.0.66"


def test_a_burst_of_unwanted_instances_is_not_read_kept_or_deferred() -> None:
    service = NoCache()
    changes = []
    browser = MdnsBrowser(MESH, OWN, changes.append, service=service)  # type: ignore[arg-type]
    browser.set_wanted([b"\x01" * 32])
    burst = [_Job("resolve", instance_name(MESH, os.urandom(32))) for _ in range(1000)]
    browser._handle([_Job("wanted")] + burst)
    assert browser.counters.unwanted == 1000
    assert service.reads == 1       # the one wanted key's cache read (fails: not there)
    assert browser.counters.deferred == 0 and not browser._deferred
    assert browser.peers() == {} and changes == []


def test_without_a_wanted_set_every_instance_is_read() -> None:
    service = NoCache()
    browser = MdnsBrowser(MESH, OWN, service=service)  # type: ignore[arg-type]
    browser._handle([_Job("resolve", instance_name(MESH, b"\x02" * 32))])
    assert service.reads == 1 and browser.counters.unwanted == 0


def test_set_wanted_queues_one_job_only_when_the_keys_change() -> None:
    browser = MdnsBrowser(MESH, OWN, service=NoCache())  # type: ignore[arg-type]
    browser.set_wanted({b"\x01" * 32: object()})       # a directory: its keys
    browser.set_wanted([b"\x01" * 32])
    assert [job.kind for job in browser._jobs] == ["wanted"]
    browser.set_wanted([b"\x01" * 32, b"\x03" * 32])
    assert [job.kind for job in browser._jobs] == ["wanted", "wanted"]
    assert browser._newly_wanted == {b"\x01" * 32, b"\x03" * 32}
