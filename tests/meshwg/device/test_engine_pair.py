"""meshwg <-> meshwg end to end, each engine in its own namespace over a veth.

The same tests run against a wireguard-go pair when NETLAB_PAIR_IMPLS includes it
(e.g. NETLAB_PAIR_IMPLS=meshwg,wireguard-go): that proves the tests themselves and gives
the reference behaviour. The default is meshwg only.
"""

from __future__ import annotations

import os

import pytest

from discovery.lab.engines import TunnelPair, tunnel_pair
from discovery.lab.netns import Cleanup, Namespace
from discovery.lab.traffic import tcp_transfer
from discovery.lab.wg import HandshakeRecorder

pytestmark = pytest.mark.netns

IMPLS = [i for i in os.environ.get("NETLAB_PAIR_IMPLS", "meshwg").split(",") if i]
TRANSFER_BYTES = 20 * 1024 * 1024


@pytest.fixture(params=IMPLS)
def impl(request: pytest.FixtureRequest) -> str:
    return request.param


def _pair(lab: Cleanup, impl: str, **kwargs) -> TunnelPair:
    return tunnel_pair(lab, impl, impl, **kwargs)


def test_ping_both_ways(lab: Cleanup, impl: str) -> None:
    pair = _pair(lab, impl)
    pair.ns_a.wait_ping(pair.tunnel_b, timeout=10)
    pair.ns_b.wait_ping(pair.tunnel_a, timeout=10)
    assert pair.a.latest_handshakes()[pair.b.public_key] > 0
    assert pair.b.latest_handshakes()[pair.a.public_key] > 0


def test_tcp_transfer_20mb_checksum_matches(lab: Cleanup, impl: str) -> None:
    pair = _pair(lab, impl)
    pair.ns_a.wait_ping(pair.tunnel_b, timeout=10)
    result = tcp_transfer(pair.ns_a, pair.ns_b, pair.tunnel_b, TRANSFER_BYTES, timeout=40)
    assert result.intact, result
    rx_b, _ = pair.b.transfer()[pair.a.public_key]
    _, tx_a = pair.a.transfer()[pair.b.public_key]
    assert rx_b >= TRANSFER_BYTES and tx_a >= TRANSFER_BYTES


def test_ipv6_inside_the_tunnel(lab: Cleanup, impl: str) -> None:
    pair = _pair(lab, impl)
    pair.ns_a.wait_ping(pair.tunnel6_b, timeout=10)
    pair.ns_b.wait_ping(pair.tunnel6_a, timeout=10)
    result = tcp_transfer(pair.ns_b, pair.ns_a, pair.tunnel6_a, 2_000_000, timeout=30)
    assert result.intact, result


def test_ipv6_endpoint(lab: Cleanup, impl: str) -> None:
    # Only a knows b's (IPv6) endpoint, so b learns a's from the authenticated initiation.
    pair = _pair(lab, impl, underlay_v6=True, endpoints="a")
    pair.ns_a.wait_ping(pair.tunnel_b, timeout=10)
    assert pair.b.endpoints()[pair.a.public_key] == f"[{pair.underlay6_a}]:{pair.port_a}"
    pair.ns_b.wait_ping(pair.tunnel6_a, timeout=10)


def test_forced_rekey_during_transfer(lab: Cleanup, impl: str) -> None:
    if impl == "wireguard-go":
        pytest.skip("wireguard-go's timers cannot be shortened")
    # rekey_timeout 1 s: a rekey is not held back 5 s by the initiation rate limit, so the
    # margin between a rekey (every ~3 s) and reject_after_time is seconds, not one second
    timers = {"rekey_after_time": 3, "reject_after_time": 8, "rekey_timeout": 1}
    pair = _pair(lab, impl, timers_a=timers, timers_b=timers)
    pair.ns_a.wait_ping(pair.tunnel_b, timeout=10)
    # 11 s of paced traffic spans three rekey intervals; with reject_after_time=8 the
    # transfer stalls unless new sessions replace the old ones in time.
    with HandshakeRecorder(pair.a, pair.b.public_key) as rec:
        result = tcp_transfer(pair.ns_a, pair.ns_b, pair.tunnel_b, seconds=11,
                              rate=2_000_000, timeout=40)
    assert result.intact, result
    assert result.sent_bytes >= 10_000_000, result
    assert rec.advances >= 2, f"latest-handshake values seen during transfer: {rec.seen}"


def _move_address(ns: Namespace, ifname: str, old: str, new: str) -> None:
    ns.sysctl(f"net.ipv4.conf.{ifname}.promote_secondaries", 1)
    ns.add_address(ifname, new)
    ns.del_address(ifname, old)


def test_roaming_ipv4_and_ipv6(lab: Cleanup, impl: str) -> None:
    """As the kernel's tests/netns.sh: the sender changes its source address and listen
    port, sends, and the other side's `wg show IFACE endpoints` shows the new address:port."""
    pair = _pair(lab, impl)
    pair.ns_a.wait_ping(pair.tunnel_b, timeout=10)
    assert pair.b.endpoints()[pair.a.public_key] == f"{pair.underlay_a}:{pair.port_a}"

    # IPv4: new underlay address and new listen port on a.
    _move_address(pair.ns_a, pair.veth_a, f"{pair.underlay_a}/24", "198.18.0.3/24")
    pair.a.set_listen_port(51830)
    assert pair.a.listen_port() == 51830
    pair.ns_a.wait_ping(pair.tunnel_b, timeout=10)
    assert pair.b.endpoints()[pair.a.public_key] == "198.18.0.3:51830"

    # IPv6: a moves to a new IPv6 address and port and talks to b's IPv6 underlay.
    _move_address(pair.ns_a, pair.veth_a, f"{pair.underlay6_a}/64", "fd00:18::3/64")
    pair.a.set_listen_port(51831)
    pair.a.set_endpoint(pair.b.public_key, f"[{pair.underlay6_b}]:{pair.port_b}")
    pair.ns_a.wait_ping(pair.tunnel_b, timeout=10)
    assert pair.b.endpoints()[pair.a.public_key] == "[fd00:18::3]:51831"
    # b answers at the roamed endpoint: traffic from b reaches a.
    pair.ns_b.wait_ping(pair.tunnel_a, timeout=10)


def test_sigterm_removes_interface_and_socket(lab: Cleanup, impl: str) -> None:
    pair = _pair(lab, impl)
    pair.ns_a.wait_ping(pair.tunnel_b, timeout=10)
    pair.a.daemon.signal(15)
    pair.a.daemon.wait(timeout=10)
    assert not pair.a.socket_path.exists()
    links = pair.ns_a.run(["ip", "-o", "link", "show"]).stdout
    assert pair.a.ifname not in links
