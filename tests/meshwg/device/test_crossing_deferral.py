"""How Device._data_loop uses the compiled lone crossing, without namespaces: the answer
read never overwrites a frame kept for the batch path, and the bookkeeping it defers
until the device is idle (_deferrable, _finish_deferred) neither undoes a later change
(an endpoint set meanwhile) nor lands on a peer other than the one that was checked
(an answer to another peer is booked at once). Over the real Crossing and protocol
(tests/meshwg/accel/test_crossing.py's rig: a socketpair as the TUN device, loopback UDP)."""

from __future__ import annotations

import types

import pytest

from meshwg.device.device import READY_TUN, READY_UDP, Device, _deferrable
from meshwg.tun.device import TunDevice
from meshwg.device.device import LONE_PACKET as LONE
from tests.meshwg.accel.test_crossing import VNET, fast, make_rig, seal_raw

pytestmark = pytest.mark.skipif(fast is None or not hasattr(fast, "Crossing"),
                                reason="compiled lone crossing not built")


def finish(protocol, deferred) -> None:
    Device._finish_deferred(types.SimpleNamespace(protocol=protocol), deferred)


def test_no_answer_read_over_a_kept_frame() -> None:
    """A frame too long to be lone is kept (its bytes stay in the frame buffer); a lone
    datagram crossed before the batch path reads it must not read the kernel's next
    frame into the same buffer (udp(now, answer=False), as the loop passes while
    TunDevice.pending): the kept frame is intact and the next frame still queued."""
    rig = make_rig("v4", True)
    try:
        a, b = rig.a, rig.b
        big = a.packet_to(b, b"SECRET-OF-ANOTHER-FLOW" * 50)
        rig.to_tun(big)
        n = rig.crossing.tun(rig.now)
        assert n == VNET + len(big)
        kept = bytes(rig.frame[:n])
        echo = a.packet_to(b, b"echo reply")
        rig.to_tun(echo)
        rig.from_peer(seal_raw(b, a, b.packet_to(a, b"ack"), 21))
        got = rig.crossing.udp(rig.now, False)
        assert len(got) == 7 and got[5] == 0 and got[6] is None
        assert bytes(rig.frame[:n]) == kept
        assert rig.tun_written().endswith(b.packet_to(a, b"ack"))
        sealed = rig.crossing.tun(rig.now)            # the echo, still queued, crosses next
        assert sealed.__class__ is tuple and sealed[0] is a.peer(b)
    finally:
        rig.close()


def test_keep_refuses_to_lose_a_kept_frame() -> None:
    tun = object.__new__(TunDevice)                 # its buffer fields only: no /dev/net/tun
    tun.vnet_hdr, tun._pending, tun._frame_buffer = True, 0, None
    tun.keep(100)
    with pytest.raises(RuntimeError):
        tun.keep(90)
    assert tun.pending


def test_deferred_datagram_does_not_undo_a_later_endpoint() -> None:
    """A keepalive crossed from the peer's endpoint is deferrable; an endpoint set before
    the deferred bookkeeping runs stays (the deferred entry does not roam)."""
    rig = make_rig("v4", False)
    try:
        a, b = rig.a, rig.b
        peer = a.peer(b)
        rig.from_peer(seal_raw(b, a, b"", 40))
        got = rig.crossing.udp(rig.now)
        assert _deferrable(READY_UDP, got)
        rx = peer.rx_bytes
        new = ("127.0.0.9", 4444)
        a.protocol.set_endpoint(peer, new)
        finish(a.protocol, [(READY_UDP, got, rig.now)])
        assert peer.endpoint == new
        assert peer.rx_bytes == rx + got[2]          # the rest of the bookkeeping ran
    finally:
        rig.close()


def test_answer_to_another_peer_is_booked_at_once() -> None:
    """The crossing may seal the kernel's next packet for a peer other than the
    datagram's: not deferrable (that peer may be removed before an idle flush)."""
    rig = make_rig("v4", False)
    try:
        net, a, b = rig.net, rig.a, rig.b
        c = net.add_node("c", 3)
        net.connect(a, c)
        a.initiate(c)
        net.pump()
        pc = a.peer(c)
        pc.current.sealer(fast)
        a.protocol.set_endpoint(pc, rig.endpoint(rig.peer))
        rig.to_tun(a.packet_to(c, b"to c"))
        rig.from_peer(seal_raw(b, a, b.packet_to(a, b"from b"), 50))
        got = rig.crossing.udp(rig.now)
        assert got[6].__class__ is tuple and got[6][0] is pc
        assert not _deferrable(READY_UDP, got)
        # the same peer's answer is deferrable; a sealed packet alone always is
        rig.tun_written()
        rig.sent_to_peer()
        rig.to_tun(a.packet_to(b, b"to b"))
        rig.from_peer(seal_raw(b, a, b.packet_to(a, b"again"), 51))
        got = rig.crossing.udp(rig.now)
        assert got[6].__class__ is tuple and got[6][0] is a.peer(b)
        assert _deferrable(READY_UDP, got)
        rig.tun_written()
        rig.sent_to_peer()
        rig.to_tun(a.packet_to(b, b"alone"))
        assert _deferrable(READY_TUN, rig.crossing.tun(rig.now))
    finally:
        rig.close()


def test_removed_peer_skipped_by_the_deferred_bookkeeping() -> None:
    rig = make_rig("v4", False)
    try:
        a, b = rig.a, rig.b
        peer = a.peer(b)
        rig.to_tun(a.packet_to(b, b"out"))
        sealed = rig.crossing.tun(rig.now)
        assert _deferrable(READY_TUN, sealed)
        tx = peer.tx_bytes
        a.protocol.remove_peer(peer.public_key)
        finish(a.protocol, [(READY_TUN, sealed, rig.now)])
        assert peer.tx_bytes == tx
    finally:
        rig.close()


def test_device_crosses_no_answer_while_a_frame_is_kept() -> None:
    """Device._cross_udp itself (the loop's UDP branch after its TUN branch kept a
    frame): with TunDevice.pending it lets the crossing open the datagram but not read
    the answer over the kept frame."""
    import threading

    rig = make_rig("v4", True)
    try:
        a, b = rig.a, rig.b
        big = a.packet_to(b, b"SECRET-OF-ANOTHER-FLOW" * 50)
        rig.to_tun(big)
        n = rig.crossing.tun(rig.now)
        tun = object.__new__(TunDevice)
        tun.vnet_hdr, tun._pending, tun._frame_buffer, tun.fd = True, 0, rig.frame, rig.tun.fileno()
        tun.stats = {"offload_errors": 0}
        tun.keep(n)
        rig.to_tun(a.packet_to(b, b"echo reply"))
        rig.from_peer(seal_raw(b, a, b.packet_to(a, b"ack"), 21))
        device = types.SimpleNamespace(protocol=a.protocol, tun=tun, udp=None,
                                       _lock=threading.Lock(), _now=lambda: rig.now,
                                       _collect=lambda: ([], []), _deliver=lambda d, e: None)
        device._crossed_udp = lambda *args: Device._crossed_udp(device, *args)
        assert Device._cross_udp(device, rig.crossing, None, (bytearray(1 << 16), bytearray(512))) is None
        assert rig.tun_written().endswith(b.packet_to(a, b"ack"))
        assert [bytes(p) for p in tun.iter_packets(1, LONE)] == [big]   # the kept frame, intact
    finally:
        rig.close()
