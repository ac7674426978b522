"""Issue 9 case 4: 200 bogus mDNS instances of the members' service type on the LAN (a
stranger announcing bare PTR records nothing resolves) must not hide a member: the browser
reads complete announcements from Zeroconf's cache at once and resolves the rest one at a
time, a bounded number of attempts each (discovery/lan/browser.py). Before, each bogus
instance held the browser's only thread for a 3 s query, so a member arriving after the
flood was found only after 200 x 3 s.
"""

from __future__ import annotations

import base64
import subprocess
import time

import pytest

from discovery.lab.lan import Lan, MdnsNode, agent_argv
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
        stranger = lab.add_host("s", 60, ipv6=False)
        flood = subprocess.Popen(
            stranger.argv(agent_argv("flood", "--address", "10.77.0.60", "--count", BOGUS)),
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

        def stop_flood() -> None:
            if flood.poll() is None:
                flood.stdin.close()  # type: ignore[union-attr]
                try:
                    flood.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    flood.kill()
                    flood.wait()
        cleanup.push("stop the mDNS flood", stop_flood)
        assert flood.stdout is not None
        line = flood.stdout.readline()
        assert '"flooded"' in line, flood.stderr.read() if flood.stderr else ""
        yield lab, a


def test_member_is_found_in_seconds_despite_200_bogus_instances(flooded_lan) -> None:
    lab, a = flooded_lan

    def deferred() -> dict | None:
        t = time.time()
        a.send("counters")
        event = a.wait_event("counters", after=t)
        return event if event["deferred"] >= BOGUS else None

    # A heard every bogus instance (none of them complete in the cache) before H starts.
    poll(deferred, 30, f"A deferred the {BOGUS} bogus instances", interval=0.3)
    started = time.monotonic()
    h = MdnsNode(lab.add_host("h", 2, ipv6=False), "M", KEY_H, "hotel", "100.64.0.2", 51822,
                 ipv6=False)
    h.wait_event("started")
    seen = a.wait_peers(lambda t: b64(KEY_H) in t, 10, "H appears despite the flood")
    assert seen[b64(KEY_H)]["addresses"] == ["10.77.0.2"]
    assert set(seen) == {b64(KEY_H)}  # no bogus instance became a peer
    print(f"H found by A {time.monotonic() - started:.2f} s after its process started")
    h.wait_peers(lambda t: b64(KEY_A) in t, 10, "H sees A despite the flood")
