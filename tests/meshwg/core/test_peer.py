"""Peer's compact state: slots, bounded staging, cookie generator made on first use."""

from __future__ import annotations

from meshwg.core.peer import MAX_STAGED_PACKETS, Peer
from meshwg.core.protocol import WireGuardProtocol
from meshwg.core.timers import Timers


def test_peer_has_no_instance_dict() -> None:
    assert not hasattr(Peer(bytes(32)), "__dict__")


def test_staging_keeps_the_newest_packets() -> None:
    peer = Peer(bytes(32))
    for i in range(MAX_STAGED_PACKETS + 3):
        peer.staged.append(i.to_bytes(2, "big"))
    assert len(peer.staged) == MAX_STAGED_PACKETS
    assert peer.staged[0] == (3).to_bytes(2, "big")
    assert peer.staged[-1] == (MAX_STAGED_PACKETS + 2).to_bytes(2, "big")


def test_cookie_generator_made_on_first_use_with_the_protocol_refresh_time() -> None:
    protocol = WireGuardProtocol(timers=Timers().with_overrides({"cookie_refresh_time": 7}))
    peer = protocol.add_peer(b"\x09" * 32)
    assert peer._cookie_generator is None
    generator = peer.cookie_generator
    assert generator is peer.cookie_generator and generator.cookie_refresh_time == 7.0
