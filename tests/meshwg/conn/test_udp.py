"""meshwg.conn: the device's UDP socket sends runs (UDP GSO, or one datagram per call)
and receives runs (UDP GRO, or one datagram per call) that split back into exactly the
datagrams sent; the GRO segment size comes from recvmsg's cmsg. Loopback only."""

from __future__ import annotations

import select
import struct
import time

import pytest

from meshwg.conn.gso import SOL_UDP, UDP_GRO, gro_segment_size
from meshwg.conn.udp import UdpSocket


def test_gro_segment_size_from_cmsg() -> None:
    assert gro_segment_size([(SOL_UDP, UDP_GRO, struct.pack("=i", 1452))]) == 1452
    assert gro_segment_size([(SOL_UDP, UDP_GRO, struct.pack("=H", 1200))]) == 1200
    assert gro_segment_size([(0, 1, b"zz")]) == 0
    assert gro_segment_size([]) == 0


def receive(sock: UdpSocket, count: int, timeout: float = 5.0) -> list[tuple[bytes, tuple]]:
    """`count` datagrams from recv_runs, each run split by its size, with the source."""
    got: list[tuple[bytes, tuple]] = []
    deadline = time.monotonic() + timeout
    while len(got) < count:
        left = deadline - time.monotonic()
        assert left > 0, f"received {len(got)} of {count} datagrams"
        select.select([sock.fileno()], [], [], left)
        for data, size, source in sock.recv_runs():
            got += [(data[i:i + size], source) for i in range(0, len(data), size)]
    return got


@pytest.mark.parametrize("offload", [True, False], ids=["gso-gro", "plain"])
def test_runs_sent_come_back_as_the_same_datagrams(offload: bool) -> None:
    rx, tx = UdpSocket(0, offload=offload), UdpSocket(0, offload=offload)
    try:
        first = [bytes([i]) * 1000 for i in range(5)] + [b"\xee" * 300]   # the last shorter
        second = [b"\x01" * 64] * 3
        runs = [(memoryview(b"".join(first)), 1000, ("127.0.0.1", rx.port)),
                (b"".join(second), 64, ("127.0.0.1", rx.port)),
                (b"\x07" * 10, 10, ("127.0.0.1", rx.port))]           # a run of one
        tx.send_runs(runs)
        got = receive(rx, len(first) + len(second) + 1)
        assert [d for d, _ in got] == first + second + [b"\x07" * 10]
        assert {source for _, source in got} == {("127.0.0.1", tx.port)}   # IPv4, unmapped
    finally:
        rx.close()
        tx.close()


@pytest.mark.parametrize("mark", [0x7FFFFFFF, 0x80000000, 0xFFFFFFFF])
def test_fwmark_takes_every_32_bit_value(mark: int) -> None:
    """wg and wireguard-go take any 32-bit fwmark; the top bit set was a TypeError."""
    import socket
    from meshwg.conn.udp import SO_MARK
    udp = UdpSocket(0, fwmark=mark)
    try:
        assert udp.fwmark == mark
        raw = udp.sock.getsockopt(socket.SOL_SOCKET, SO_MARK, 4)
        assert struct.unpack("=I", raw)[0] == mark
        udp.set_fwmark(1)
        assert udp.fwmark == 1
    finally:
        udp.close()


@pytest.mark.parametrize("offload", [True, False], ids=["gro", "plain"])
def test_a_short_data_message_ends_the_batch(offload: bool) -> None:
    """recv_runs(stop_at=N, stop_prefix=P) returns after a call that brought one datagram
    of at most N bytes starting with P (the device: transport data, type 4) (a ping goes out before what queues behind it); the rest
    waits for the next call, in order. Short handshake messages do not end the batch."""
    rx, tx = UdpSocket(0, offload=offload), UdpSocket(0, offload=offload)
    try:
        address = ("127.0.0.1", rx.port)
        big, short = b"\x04" * 1000, b"\x04" + b"\x01" * 99
        handshake = b"\x01" + b"\x00" * 147
        sent = [b"", handshake, big, short, big, short]   # an empty datagram is no message
        for datagram in sent:           # loopback: all are queued once the sends return
            tx.send(datagram, address)
        first: list = []
        deadline = time.monotonic() + 5.0
        while not first:
            assert time.monotonic() < deadline, "nothing received"
            select.select([rx.fileno()], [], [], 1.0)
            first = rx.recv_runs(16, stop_at=128, stop_prefix=b"\x04")
        got = [d for d, _, _ in first]
        assert got == sent[:4]          # through the handshake, stopped at the short one
        rest = receive(rx, 2)
        assert [d for d, _ in rest] == sent[4:]
    finally:
        rx.close()
        tx.close()


@pytest.mark.parametrize("offload", [True, False], ids=["gro", "plain"])
def test_one_receive_then_the_rest(offload: bool) -> None:
    """recv_one (the device's lone-datagram path) takes one call's worth as recv_runs
    returns it, with the IPv4 source written as IPv4; None when nothing is queued; what
    follows is left for recv_runs, in order."""
    rx, tx = UdpSocket(0, offload=offload), UdpSocket(0, offload=offload)
    try:
        assert rx.recv_one() is None
        address = ("127.0.0.1", rx.port)
        sent = [b"\x04" + bytes(47), b"\x04" + b"\x02" * 999, b"\x01" + bytes(147)]
        for datagram in sent:
            tx.send(datagram, address)
        deadline = time.monotonic() + 5.0
        first = None
        while first is None:
            assert time.monotonic() < deadline, "nothing received"
            select.select([rx.fileno()], [], [], 1.0)
            first = rx.recv_one()
        assert first == (sent[0], len(sent[0]), ("127.0.0.1", tx.port))
        assert [d for d, _ in receive(rx, 2)] == sent[1:]
    finally:
        rx.close()
        tx.close()
