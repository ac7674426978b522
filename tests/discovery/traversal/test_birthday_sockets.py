"""Birthday sockets on 127.0.0.1 (real sockets, no namespaces, no NAT): the hard side's
sockets send their openers, an easy side's probe that reaches one of them makes it the
pair's loopback proxy, WireGuard datagrams then flow through it both ways, strangers are
dropped, and the easy side's probes go out at the planned ports, paced."""

from __future__ import annotations

import socket
import time

import pytest

from discovery.lab.netns import poll
from discovery.traversal.birthday_sockets import MAGIC, OPENER, PROBE, BirthdaySockets

K = b"k" * 32


def _udp() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(10.0)
    return sock


@pytest.fixture
def sockets():
    engine, easy = _udp(), _udp()
    hits = []
    bd = BirthdaySockets(engine.getsockname()[1], lambda data, ep: easy.sendto(data, ep),
                         on_hit=lambda: hits.append(1)).start()
    try:
        yield bd, engine, easy, hits
    finally:
        bd.stop()
        engine.close()
        easy.close()


def _openers(easy: socket.socket, count: int) -> list[int]:
    ports = []
    for _ in range(count):
        data, (_, port) = easy.recvfrom(2048)
        assert data == OPENER
        ports.append(port)
    return ports


def test_a_probe_that_reaches_a_socket_makes_it_the_proxy_both_ways(sockets) -> None:
    bd, engine, easy, hits = sockets
    assert bd.open_hard(K, easy.getsockname(), 8) == 8
    ports = _openers(easy, 8)                     # no NAT here: the openers arrive
    assert bd.open_sockets() == 8 and bd.proxies() == {}
    bd.spray(K, "127.0.0.1", [1, ports[3]], rate=200.0)   # port 1: nobody there
    poll(lambda: bd.proxies() == {K: ("127.0.0.1", ports[3])}, 10, "the hit")
    poll(lambda: hits == [1], 10, "on_hit")
    assert bd.counters.hits == 1
    poll(lambda: bd.open_sockets() == 1, 10, "the spare sockets to close")
    # engine -> proxy -> easy side, from the found port
    engine.sendto(b"\x01wireguard-initiation", ("127.0.0.1", ports[3]))
    data, source = easy.recvfrom(2048)
    assert (data, source[1]) == (b"\x01wireguard-initiation", ports[3])
    # easy side -> proxy -> engine, from the proxy's port
    easy.sendto(b"\x02wireguard-response", ("127.0.0.1", ports[3]))
    data, source = engine.recvfrom(2048)
    assert (data, source) == (b"\x02wireguard-response", ("127.0.0.1", ports[3]))
    # a late probe is not handed to the engine; a stranger is dropped and counted
    easy.sendto(PROBE, ("127.0.0.1", ports[3]))
    stranger = _udp()
    stranger.sendto(b"\x01forged", ("127.0.0.1", ports[3]))
    poll(lambda: bd.counters.dropped == 1, 10, "the stranger's datagram to be dropped")
    easy.sendto(b"\x04after", ("127.0.0.1", ports[3]))
    assert engine.recvfrom(2048)[0] == b"\x04after"       # not the probe before it
    stranger.close()
    # (counted just after the send that the engine may already have received)
    poll(lambda: (bd.counters.forwarded_in, bd.counters.forwarded_out) == (2, 1), 10,
         "the forwarding counters")


def test_end_keeps_a_found_path_and_release_closes_it(sockets) -> None:
    bd, engine, easy, _ = sockets
    bd.open_hard(K, easy.getsockname(), 4)
    ports = _openers(easy, 4)
    easy.sendto(PROBE, ("127.0.0.1", ports[0]))
    poll(lambda: K in bd.proxies(), 10, "the hit")
    bd.end(K)
    assert K in bd.proxies()
    bd.release(K)
    assert bd.proxies() == {} and bd.open_sockets() == 0


def test_an_attempt_that_found_nothing_closes_every_socket_at_its_end(sockets) -> None:
    bd, _, easy, hits = sockets
    bd.open_hard(K, easy.getsockname(), 16)
    _openers(easy, 16)
    bd.end(K)
    assert bd.open_sockets() == 0 and bd.proxies() == {} and hits == []


def test_the_spray_sends_every_planned_port_once_at_the_given_rate(sockets) -> None:
    bd, _, _, _ = sockets
    sent = []
    bd.send = lambda data, endpoint: sent.append((time.monotonic(), data, endpoint))
    ports = list(range(20000, 20040))
    started = time.monotonic()
    bd.spray(K, "192.0.2.7", ports, rate=200.0, delay=0.2)
    poll(lambda: len(sent) == 40, 20, "40 probes")
    assert [ep for _, _, ep in sent] == [("192.0.2.7", p) for p in ports]
    assert all(data == PROBE and data.startswith(MAGIC) for _, data, _ in sent)
    assert sent[0][0] >= started + 0.2
    # paced, not all at once: 4 batches of 10, due 50 ms apart (0.15 s from the first to
    # the last; each send may run late, so less is allowed for the first's lateness)
    assert sent[-1][0] - sent[0][0] >= 0.1
    assert bd.counters.probes_sent == 40
