"""The mDNS browser's deferred instances are bounded per announcer (issue 9 case 4,
discovery/lan/browser.py): one host announcing many instances the cache cannot complete
fills only its own share, and queries go to the announcer served least often. No I/O: the
browser is not started, its service only says who announced what. The namespace test is
test_mdns_flood.py."""

from __future__ import annotations

from discovery.lan.browser import MAX_DEFERRED, MAX_DEFERRED_PER_ANNOUNCER, MdnsBrowser
from discovery.lan.records import SERVICE_TYPE


class Announcers:
    """Stands in for MdnsService.announcer_of: instance name -> source address."""

    def __init__(self) -> None:
        self.by_name: dict[str, str] = {}

    def announcer_of(self, name: str) -> str | None:
        return self.by_name.get(name.lower())


def _announce(browser: MdnsBrowser, announcers: Announcers, source: str, count: int, tag: str) -> None:
    for i in range(count):
        name = f"mwg-{tag}{i:04d}.{SERVICE_TYPE}"
        announcers.by_name[name.lower()] = source
        browser._defer(name.lower(), name)


def test_one_flooding_host_fills_only_its_share() -> None:
    announcers = Announcers()
    browser = MdnsBrowser("M", b"\xaa" * 32, service=announcers)  # type: ignore[arg-type]
    _announce(browser, announcers, "10.77.0.60", 300, "bogus")
    assert browser.counters.deferred == MAX_DEFERRED_PER_ANNOUNCER
    assert browser.counters.crowded == 300 - MAX_DEFERRED_PER_ANNOUNCER
    _announce(browser, announcers, "10.77.0.2", 3, "member")
    assert browser.counters.deferred == MAX_DEFERRED_PER_ANNOUNCER + 3
    assert browser.counters.unresolved == 0


def test_queries_go_to_the_announcer_served_least() -> None:
    announcers = Announcers()
    browser = MdnsBrowser("M", b"\xaa" * 32, service=announcers)  # type: ignore[arg-type]
    _announce(browser, announcers, "10.77.0.60", 10, "bogus")
    first = browser._due_query()
    assert first is not None and "bogus" in first
    _announce(browser, announcers, "10.77.0.2", 1, "member")
    assert "member" in (browser._due_query() or "")     # before the flood's next nine


def test_the_global_bound_still_holds_over_many_announcers() -> None:
    announcers = Announcers()
    browser = MdnsBrowser("M", b"\xaa" * 32, service=announcers)  # type: ignore[arg-type]
    for host in range(MAX_DEFERRED // MAX_DEFERRED_PER_ANNOUNCER + 2):
        _announce(browser, announcers, f"10.77.1.{host}", MAX_DEFERRED_PER_ANNOUNCER, f"h{host}x")
    assert browser.counters.deferred == MAX_DEFERRED
    assert browser.counters.unresolved == 2 * MAX_DEFERRED_PER_ANNOUNCER


def test_instances_of_unknown_announcers_meet_only_the_global_bound() -> None:
    announcers = Announcers()
    browser = MdnsBrowser("M", b"\xaa" * 32, service=announcers)  # type: ignore[arg-type]
    for i in range(MAX_DEFERRED_PER_ANNOUNCER + 4):     # no source noted for these names
        name = f"mwg-unknown{i:04d}.{SERVICE_TYPE}"
        browser._defer(name.lower(), name)
    assert browser.counters.deferred == MAX_DEFERRED_PER_ANNOUNCER + 4
    assert browser.counters.crowded == 0
