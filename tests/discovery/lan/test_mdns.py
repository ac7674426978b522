"""LAN discovery over mDNS (discovery/lan: announcer, browser, service) on a real LAN: a
bridge namespace and one namespace per host; each member runs MdnsAnnouncer + MdnsBrowser
in its own namespace (discovery/lab/lan.py). Members A and B are in mesh M, C in mesh N.
avahi-daemon + avahi-browse act as an independent mDNS client. The record layout itself is
tested without I/O in test_records.py.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from discovery.lan.records import instance_label
from discovery.lab.avahi import AvahiObserver, avahi_unavailable
from discovery.lab.lan import Lan, MdnsNode, agent_argv
from discovery.lab.netns import Cleanup, change_host_address, poll, unavailable_reason

KEY_A, KEY_B, KEY_C = b"\xaa" * 32, b"\xbb" * 32, b"\xcc" * 32


def b64(key: bytes) -> str:
    return base64.b64encode(key).decode()


@pytest.fixture(scope="module")
def lan():
    reason = unavailable_reason(("ip",))
    if reason:
        pytest.skip(reason)
    with Cleanup() as cleanup:
        lab = Lan(cleanup)
        hosts = {label: lab.add_host(label, n) for label, n in (("a", 1), ("b", 2), ("c", 3))}
        nodes = [MdnsNode(hosts["a"], "M", KEY_A, "alpha", "100.64.0.1", 51820),
                 MdnsNode(hosts["b"], "M", KEY_B, "beta", "100.64.0.2", 51821),
                 MdnsNode(hosts["c"], "N", KEY_C, "gamma", "100.64.1.3", 51822)]
        for node in nodes:
            node.wait_event("started")
        yield lab, dict(zip("abc", nodes))


def test_members_of_one_mesh_find_each_other_and_ignore_other_meshes(lan) -> None:
    lab, nodes = lan
    a, b, c = nodes["a"], nodes["b"], nodes["c"]
    seen_by_a = a.wait_peers(lambda t: b64(KEY_B) in t, 15, "B appears")
    peer_b = seen_by_a[b64(KEY_B)]
    assert peer_b["port"] == 51821 and peer_b["name"] == "beta" and peer_b["mesh"] == "M"
    assert peer_b["mesh_address"] == "100.64.0.2"
    assert "10.77.0.2" in peer_b["addresses"]
    assert f"{lab.link_local('b')}%eth0" in peer_b["addresses"]

    seen_by_b = b.wait_peers(lambda t: b64(KEY_A) in t, 15, "A appears")
    assert "10.77.0.1" in seen_by_b[b64(KEY_A)]["addresses"]
    assert seen_by_b[b64(KEY_A)]["port"] == 51820

    # C (mesh N) is on the same LAN and was heard, but is not a peer of A or B; nobody lists
    # itself; C lists nobody.
    t = time.time()
    a.send("counters")
    counters = a.wait_event("counters", after=t)
    assert counters["other_mesh"] >= 1
    assert set(a.peers) == {b64(KEY_B)} and set(b.peers) == {b64(KEY_A)}
    assert c.peers == {}


def test_malformed_announcements_are_dropped_and_counted(lan) -> None:
    lab, nodes = lan
    a = nodes["a"]
    ns = lab.add_host("r", 50)
    rogue = subprocess.Popen(ns.argv(agent_argv("rogue", "--mesh", "M", "--address", "10.77.0.50")),
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True)
    try:
        assert rogue.stdout is not None
        line = rogue.stdout.readline()
        assert json.loads(line)["count"] == 3, rogue.stderr.read() if rogue.stderr else ""

        def malformed_seen() -> dict | None:
            t = time.time()
            a.send("counters")
            event = a.wait_event("counters", after=t)
            return event if event["malformed"] >= 3 else None

        poll(malformed_seen, 15, "three malformed instances counted", interval=0.3)
        assert set(a.peers) == {b64(KEY_B)}
    finally:
        rogue.stdin.close()  # type: ignore[union-attr]
        try:
            rogue.wait(timeout=10)
        except subprocess.TimeoutExpired:
            rogue.kill()
            rogue.wait()


def test_address_change_is_followed_after_update_addresses(lan) -> None:
    lab, nodes = lan
    b = nodes["b"]
    ns = lab.add_host("d", 4)
    d_key = b"\xdd" * 32
    d = MdnsNode(ns, "M", d_key, "delta", "100.64.0.4", 51824, ipv6=False)
    try:
        d.wait_event("started")
        b.wait_peers(lambda t: t.get(b64(d_key), {}).get("addresses") == ["10.77.0.4"], 15,
                     "D at 10.77.0.4")
        # Renumber: new address first, then drop the old one (promoting the new one to primary).
        change_host_address(ns, "eth0", "10.77.0.4/24", "10.77.0.44/24")
        t = time.time()
        d.send("update")
        assert d.wait_event("updated", after=t)["addresses"] == ["10.77.0.44"]
        # The new address appears, and the old one is flushed (cache-flush bit, RFC 6762 10.2).
        b.wait_peers(lambda t: t.get(b64(d_key), {}).get("addresses") == ["10.77.0.44"], 15,
                     "D moved to 10.77.0.44 only")
    finally:
        d.close()


def test_stopped_member_is_removed(lan) -> None:
    lab, nodes = lan
    b = nodes["b"]
    ns = lab.add_host("e", 5)
    e_key = b"\xee" * 32
    e = MdnsNode(ns, "M", e_key, "echo", "100.64.0.5", 51825)
    try:
        e.wait_event("started")
        b.wait_peers(lambda t: b64(e_key) in t, 15, "E appears")
        t = time.time()
        e.send("stop-announcer")
        e.wait_event("announcer-stopped", after=t)
        b.wait_peers(lambda t: b64(e_key) not in t and b64(KEY_A) in t, 10, "E removed, A kept")
    finally:
        e.close()


def test_ipv6_only_member_is_found(lan) -> None:
    lab, nodes = lan
    a = nodes["a"]
    ns = lab.add_host("f", None)
    f_key = b"\xff" * 32
    f = MdnsNode(ns, "M", f_key, "foxtrot", "100.64.0.6", 51826)
    try:
        f.wait_event("started")
        link_local = lab.link_local("f")
        seen = a.wait_peers(lambda t: b64(f_key) in t, 15, "IPv6-only F appears")
        assert seen[b64(f_key)]["addresses"] == [f"{link_local}%eth0"]
        f.wait_peers(lambda t: b64(KEY_A) in t, 15, "F sees A over IPv6")
    finally:
        f.close()


def test_member_started_before_its_lan_address_is_found_after_update(lan) -> None:
    lab, nodes = lan
    a = nodes["a"]
    ns = lab.add_host("g", None, ipv6=False)  # no address at all yet, as before DHCP
    g_key = b"\x77" * 32
    g = MdnsNode(ns, "M", g_key, "golf", "100.64.0.7", 51827)
    try:
        assert g.wait_event("started")["addresses"] == []
        ns.add_address("eth0", "10.77.0.7/24")
        ns.run(["ip", "route", "add", "224.0.0.0/4", "dev", "eth0"])
        t = time.time()
        g.send("update")
        assert g.wait_event("updated", after=t)["addresses"] == ["10.77.0.7"]
        a.wait_peers(lambda t: t.get(b64(g_key), {}).get("addresses") == ["10.77.0.7"], 15,
                     "G appears at 10.77.0.7")
        g.wait_peers(lambda t: b64(KEY_A) in t, 15, "G sees A")
    finally:
        g.close()


def test_avahi_browse_sees_member_services_with_txt(lan) -> None:
    reason = avahi_unavailable()
    if reason:
        pytest.skip(reason)
    lab, nodes = lan
    ns = lab.add_host("o", 9)
    with tempfile.TemporaryDirectory(prefix="mdns-avahi-") as workdir:
        observer = AvahiObserver(ns, Path(workdir), host=f"mwobs{os.getpid()}")
        try:
            def resolved() -> dict[str, list[str]] | None:
                entries = observer.browse("_meshwg._udp")
                by_name = {e[3]: e for e in entries if e[2] == "IPv4"}
                wanted = {instance_label("M", KEY_A), instance_label("M", KEY_B),
                          instance_label("N", KEY_C)}
                return by_name if wanted <= set(by_name) else None

            by_name = poll(resolved, 20, "avahi-browse resolves A, B and C", interval=0.5)
            a_entry = by_name[instance_label("M", KEY_A)]
            # =;iface;proto;name;type;domain;host;address;port;txt
            assert a_entry[4] == "_meshwg._udp" and a_entry[7] == "10.77.0.1" and a_entry[8] == "51820"
            for item in ('"v=1"', f'"pub={b64(KEY_A)}"', '"mesh=M"', '"addr=100.64.0.1"', '"name=alpha"'):
                assert item in a_entry[9]
            c_entry = by_name[instance_label("N", KEY_C)]
            assert '"mesh=N"' in c_entry[9] and c_entry[8] == "51822"
        finally:
            observer.close()
