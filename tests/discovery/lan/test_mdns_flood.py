"""Issue 9 case 4: 200 bogus mDNS instances of the members' service type on the LAN (a
stranger announcing bare PTR records nothing resolves) must not hide a member: the browser
reads complete announcements from Zeroconf's cache at once and resolves the rest one at a
time, a bounded number of attempts each (discovery/lan/browser.py). Before, each bogus
instance held the browser's only thread for a 3 s query, so a member arriving after the
flood was found only after 200 x 3 s. The bound is per announcer (source address): the
flooding host gets MAX_DEFERRED_PER_ANNOUNCER instances queued, the rest are counted
``crowded``, and another host's instances are still queued.
"""

from __future__ import annotations

import base64
import subprocess
import time

import pytest

from discovery.lab.lan import Lan, MdnsNode, agent_argv
from discovery.lan.browser import MAX_DEFERRED_PER_ANNOUNCER
from discovery.lab.netns import Cleanup, poll, unavailable_reason

KEY_A, KEY_H = b"\xa1" * 32, b"\xb2" * 32
BOGUS = 200


def b64(key: bytes) -> str:
    return base64.b64encode(key).decode()


@pytest.fixture
def flooded_lan():
    reason = unavailable_reason(("ip",))
    if reason:
        pytest.skip(reason)
    with Cleanup() as cleanup:
        lab = Lan(cleanup)
        a = MdnsNode(lab.add_host("a", 1), "M", KEY_A, "alpha", "100.64.0.1", 51820,
                     ipv6=False)
        a.wait_event("started")
        _flood(cleanup, lab, "s", 60, BOGUS, "bogus")
        yield lab, a


def _flood(cleanup: Cleanup, lab: Lan, tag: str, n: int, count: int, prefix: str) -> None:
    """A stranger (host N of the LAN) announcing `count` PTR-only instances mwg-PREFIXNNNN."""
    stranger = lab.add_host(tag, n, ipv6=False)
    flood = subprocess.Popen(
        stranger.argv(agent_argv("flood", "--address", f"10.77.0.{n}", "--count", count,
                                 "--prefix", prefix)),
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def stop_flood() -> None:
        if flood.poll() is None:
            flood.stdin.close()  # type: ignore[union-attr]
            try:
                flood.wait(timeout=10)
            except subprocess.TimeoutExpired:
                flood.kill()
                flood.wait()
    cleanup.push(f"stop the mDNS flood from {tag}", stop_flood)
    assert flood.stdout is not None
    line = flood.stdout.readline()
    assert '"flooded"' in line, flood.stderr.read() if flood.stderr else ""


def _counters(node: MdnsNode, enough) -> dict | None:
    t = time.time()
    node.send("counters")
    event = node.wait_event("counters", after=t)
    return event if enough(event) else None


def test_member_is_found_in_seconds_despite_200_bogus_instances(flooded_lan) -> None:
    lab, a = flooded_lan

    # A heard every bogus instance (none of them complete in the cache) before H starts;
    # one announcer: MAX_DEFERRED_PER_ANNOUNCER queued, the rest crowded out
    heard = poll(lambda: _counters(a, lambda e: e["deferred"] + e["crowded"] >= BOGUS), 30,
                 f"A heard the {BOGUS} bogus instances", interval=0.3)
    assert heard["deferred"] == MAX_DEFERRED_PER_ANNOUNCER, heard
    started = time.monotonic()
    h = MdnsNode(lab.add_host("h", 2, ipv6=False), "M", KEY_H, "hotel", "100.64.0.2", 51822,
                 ipv6=False)
    h.wait_event("started")
    seen = a.wait_peers(lambda t: b64(KEY_H) in t, 10, "H appears despite the flood")
    assert seen[b64(KEY_H)]["addresses"] == ["10.77.0.2"]
    assert set(seen) == {b64(KEY_H)}  # no bogus instance became a peer
    print(f"H found by A {time.monotonic() - started:.2f} s after its process started")
    h.wait_peers(lambda t: b64(KEY_A) in t, 10, "H sees A despite the flood")
    # another host's incomplete instances are still queued: the flood crowds out only itself
    _flood(lab.cleanup, lab, "t", 61, 3, "other")
    after = poll(lambda: _counters(a, lambda e: e["deferred"] >= heard["deferred"] + 3), 30,
                 "A queues the other host's 3 instances", interval=0.3)
    assert after["deferred"] >= MAX_DEFERRED_PER_ANNOUNCER + 3, after
