"""meshwg.allowedips: longest-prefix match, prefix ownership moves, agreement with brute force."""

from __future__ import annotations

import ipaddress
import time
from ipaddress import IPv4Network, IPv6Network, ip_address, ip_network

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from meshwg.core.allowedips import AllowedIPs


def addr(text: str) -> bytes:
    return ip_address(text).packed


def test_longest_prefix_wins_ipv4_and_ipv6():
    t = AllowedIPs()
    t.insert(ip_network("0.0.0.0/0"), "default")
    t.insert(ip_network("10.0.0.0/8"), "a")
    t.insert(ip_network("10.1.0.0/16"), "b")
    t.insert(ip_network("10.1.2.3/32"), "c")
    t.insert(ip_network("fd00::/8"), "v6a")
    t.insert(ip_network("fd00:1::/32"), "v6b")
    assert t.lookup(addr("10.1.2.3")) == "c"
    assert t.lookup(addr("10.1.2.4")) == "b"
    assert t.lookup(addr("10.2.0.1")) == "a"
    assert t.lookup(addr("192.0.2.1")) == "default"
    assert t.lookup(addr("fd00:1::5")) == "v6b"
    assert t.lookup(addr("fd00:2::5")) == "v6a"
    assert t.lookup(addr("2001:db8::1")) is None  # IPv4 default does not cover IPv6
    assert t.lookup(b"\x01\x02\x03") is None       # not an address length
    assert len(t) == 6


def test_insert_existing_prefix_moves_it_to_the_new_peer():
    t = AllowedIPs()
    t.insert(ip_network("10.0.0.0/24"), "a")
    t.insert(ip_network("10.0.1.0/24"), "a")
    t.insert(ip_network("10.0.0.0/24"), "b")
    assert t.lookup(addr("10.0.0.9")) == "b"
    assert t.networks_of("a") == [ip_network("10.0.1.0/24")]
    assert t.networks_of("b") == [ip_network("10.0.0.0/24")]
    assert len(t) == 2


def test_networks_are_normalised_host_bits_cleared():
    t = AllowedIPs()
    t.insert(ip_network("10.1.2.3/24", strict=False), "a")
    assert t.networks_of("a") == [ip_network("10.1.2.0/24")]
    assert ip_network("10.1.2.0/24") in t
    t.insert(ip_network("10.1.2.0/24"), "b")  # same prefix after normalisation: moves
    assert t.networks_of("a") == [] and len(t) == 1


def test_remove_and_remove_peer():
    t = AllowedIPs()
    t.insert(ip_network("10.0.0.0/8"), "a")
    t.insert(ip_network("10.1.0.0/16"), "b")
    t.insert(ip_network("fd00::/64"), "b")
    assert t.remove(ip_network("10.1.0.0/16"))
    assert t.lookup(addr("10.1.0.1")) == "a"          # falls back to the shorter prefix
    assert not t.remove(ip_network("10.1.0.0/16"))    # already gone
    assert not t.remove(ip_network("10.0.0.0/8"), peer="b")  # owned by someone else
    assert t.lookup(addr("10.1.0.1")) == "a"
    t.remove_peer("b")
    assert t.lookup(addr("fd00::1")) is None
    assert t.networks_of("b") == []
    t.remove_peer("nobody")  # no error
    assert len(t) == 1


def test_networks_of_is_sorted_ipv4_first():
    t = AllowedIPs()
    for text in ["fd00::/64", "10.0.1.0/24", "10.0.0.0/24", "10.0.0.0/16", "::/0"]:
        t.insert(ip_network(text), "p")
    assert [str(n) for n in t.networks_of("p")] == [
        "10.0.0.0/16", "10.0.0.0/24", "10.0.1.0/24", "::/0", "fd00::/64"]


def test_peers_can_be_any_hashable_object_but_not_none():
    t = AllowedIPs()
    key = bytes(32)
    t.insert(ip_network("10.0.0.0/8"), key)
    assert t.lookup(addr("10.9.9.9")) is key
    with pytest.raises(ValueError):
        t.insert(ip_network("10.0.0.0/8"), None)


# --- property: agrees with a brute-force longest-prefix scan ------------------------------

def brute_force(entries: dict, address: bytes):
    ip = ipaddress.ip_address(address)
    best = None
    for net, peer in entries.items():
        if net.version == ip.version and ip in net:
            if best is None or net.prefixlen > best[0].prefixlen:
                best = (net, peer)
    return None if best is None else best[1]


def v4_networks():
    return st.builds(lambda a, n: IPv4Network((a, n), strict=False),
                     st.integers(0, 2**32 - 1), st.integers(0, 32))


def v6_networks():
    # Mostly share a prefix so that nesting actually happens.
    return st.builds(lambda a, n: IPv6Network(((0xFD << 120) | a, n), strict=False),
                     st.integers(0, 2**16 - 1).map(lambda x: x << 100) | st.integers(0, 2**120 - 1),
                     st.integers(0, 128))


operations = st.lists(
    st.one_of(
        st.tuples(st.just("insert"), v4_networks() | v6_networks(), st.integers(0, 5)),
        st.tuples(st.just("remove"), v4_networks() | v6_networks(), st.none()),
        st.tuples(st.just("remove_peer"), st.none(), st.integers(0, 5)),
    ),
    max_size=60)

probe_addresses = st.lists(
    st.integers(0, 2**32 - 1).map(lambda x: x.to_bytes(4, "big"))
    | st.integers(0, 2**120 - 1).map(lambda x: ((0xFD << 120) | x).to_bytes(16, "big")),
    max_size=40)


@settings(max_examples=300, deadline=None)
@given(operations, probe_addresses)
def test_lookup_agrees_with_brute_force(ops, probes):
    table, model = AllowedIPs(), {}
    for op, net, peer in ops:
        if op == "insert":
            table.insert(net, peer)
            model[net] = peer
        elif op == "remove":
            assert table.remove(net) == (net in model)
            model.pop(net, None)
        else:
            table.remove_peer(peer)
            model = {n: p for n, p in model.items() if p != peer}
    # Probe the networks' own first addresses too, where the interesting boundaries are.
    probes = probes + [n.network_address.packed for n in model]
    for probe in probes:
        assert table.lookup(probe) == brute_force(model, probe)
    assert len(table) == len(model)
    for peer in range(6):
        expected = sorted((n for n, p in model.items() if p == peer),
                          key=lambda n: (n.version, int(n.network_address), n.prefixlen))
        assert table.networks_of(peer) == expected


# --- speed at 10,000 peers ---------------------------------------------------------------

def test_lookup_speed_at_10000_peers():
    t = AllowedIPs()
    peers = [f"peer{i}" for i in range(10_000)]
    for i, peer in enumerate(peers):
        t.insert(IPv4Network(((10 << 24) | (i << 8) | 1, 32)), peer)       # /32 tunnel address
        t.insert(IPv4Network(((172 << 24) | (16 << 16) | (i << 4), 28)), peer)  # a small LAN
        t.insert(IPv6Network(((0xFD00 << 112) | (i << 64), 64)), peer)
    t.insert(IPv4Network("0.0.0.0/0"), peers[0])
    probes = [((10 << 24) | (i << 8) | 1).to_bytes(4, "big") for i in range(0, 10_000, 7)]
    probes += [((0xFD00 << 112) | (i << 64) | 5).to_bytes(16, "big") for i in range(0, 10_000, 7)]
    probes += [bytes([192, 0, 2, 1])] * 100  # falls through to the default route
    assert t.lookup(probes[0]) == "peer0"
    assert t.lookup(((0xFD00 << 112) | (7 << 64) | 5).to_bytes(16, "big")) == "peer7"
    lookup = t.lookup
    rounds = 20
    start = time.perf_counter()
    for _ in range(rounds):
        for p in probes:
            lookup(p)
    per_lookup = (time.perf_counter() - start) / (rounds * len(probes))
    print(f"\nAllowedIPs.lookup at 10,000 peers (30,001 prefixes): {per_lookup * 1e6:.2f} us")
    # Generous bound (slow CI machines); a linear scan would take milliseconds.
    assert per_lookup < 50e-6
