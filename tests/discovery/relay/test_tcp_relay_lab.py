"""A member behind a router that drops ALL UDP (discovery.lab.nat_types.block_udp, no
exception) joins the mesh lab and reaches the rendezvous and the other members through
the rendezvous's relay over TLS on TCP 443: enrollment over TCP, its tunnel to the
rendezvous (directory reads, NOTIFY) through the relay's host proxy, and its pairs
relayed. Real daemons through the CLI in namespaces; everything removed afterwards."""

from __future__ import annotations

import time

import pytest

from discovery.lab import mesh as mesh_lab
from discovery.lab.nat import NatRouter
from discovery.lab.nat_types import block_udp
from discovery.lab.netns import poll
from discovery.lab.traffic import tcp_transfer

pytestmark = pytest.mark.netns

BLOCKED_SITE = ("198.18.4.1", "10.4.0.0/24")
TRANSFER_BYTES = 4_000_000


@pytest.fixture(scope="module")
def lab():
    with mesh_lab.build_lab() as lab:        # A1, A2 behind NAT1, B behind NAT2
        yield lab


def test_member_with_all_udp_blocked_reaches_everyone_over_the_tls_relay(lab) -> None:
    router = NatRouter(lab.cleanup, lab.internet, *BLOCKED_SITE, "rewrite", tag="nat4")
    block_udp(router)                         # no allowed destination: no UDP leaves at all
    lab.routers["nat4"] = router
    d = lab.add_node("nat4", "d", 51825)
    started = time.monotonic()
    lab.join(d, lab.invite())                 # enrollment: TCP, which the router lets through
    rendezvous_address = lab.dns_server()[0]

    # the tunnel to the rendezvous runs through the relay over TCP: the directory is read
    def directory_through_tcp() -> bool:
        row = d.peers_by_name().get("rendezvous", {})
        return "over TCP" in row.get("reason", "") and row.get("reason", "").startswith("directory reachable")
    poll(directory_through_tcp, 90, lambda: f"D reads the directory over TCP: {d.status()}\n"
                                            f"{d.daemon.output() if d.daemon else ''}")
    assert d.ping(rendezvous_address, count=2) is not None, "D cannot ping the rendezvous"

    a1, b = lab.members["a1"], lab.members["b"]
    first_ping = poll(lambda: d.ping(a1.mesh_address, count=1, wait=1.0), 90,
                      lambda: f"D pings A1 over the relay: {d.status()}")
    join_to_ping = time.monotonic() - started

    def relayed() -> bool:
        mine = d.peers_by_name()
        theirs = [a1.peers_by_name().get("d", {}), b.peers_by_name().get("d", {})]
        return all(mine.get(n, {}).get("path") == "relay" for n in ("a1", "a2", "b")) \
            and all(row.get("path") == "relay" for row in theirs)
    poll(relayed, 60, lambda: f"D's pairs on the relay: {d.status()}\n{a1.status()}")
    for name, other in (("a1", a1), ("b", b)):
        assert d.ping(other.mesh_address, count=3) is not None, f"D cannot ping {name}"
        assert other.ping(d.mesh_address, count=3) is not None, f"{name} cannot ping D"
    row = d.peers_by_name()["b"]
    assert row["reason"].startswith("relay via rendezvous (tcp)"), row
    assert row["relay_rx_bytes"] > 0 and row["relay_tx_bytes"] > 0, row
    text = d.meshwg("status", "--interface", d.interface).stdout
    assert "relay via rendezvous (tcp)" in text, text
    # a bulk TCP transfer inside the mesh (D -> B: TLS up to the relay, UDP down to B) arrives whole
    result = tcp_transfer(d.ns, b.ns, b.mesh_address, nbytes=TRANSFER_BYTES, timeout=180)
    assert result.intact, result
    print(f"\nFIGURE join -> first ping over the TLS relay: {join_to_ping:.1f} s (rtt {first_ping} ms); "
          f"TCP D->B through it: {result.sent_bytes * 8 / result.seconds / 1e6:.1f} Mbit/s "
          f"({result.sent_bytes} B in {result.seconds:.1f} s)")
