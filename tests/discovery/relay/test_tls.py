"""The relay over TLS on TCP (discovery.relay.tls, .stream, the server's TCP side, the
client's fallback) on 127.0.0.1 with real sockets: framing bounds, the pinned
certificate, strangers refused, and two members whose UDP to the relay goes nowhere
reaching each other, and the relay host's engine, over TCP."""

import os
import socket
import stat
import struct
import time

import pytest

from meshwg.core import crypto
from meshwg.util.service import Service, StreamReader

from discovery.lab.netns import poll
from discovery.relay import client as client_module, stream, tls, wire
from discovery.relay.client import RelayClient
from discovery.relay.server import RelayServer
from tests.discovery.relay.test_loopback import _Engine


# ---------------------------------------------------------------- framing

def test_frame_bounds() -> None:
    bind = b"x" * wire.BIND_SIZE
    assert stream.encode_frame(bind) == struct.pack("!H", wire.BIND_SIZE) + bind
    with pytest.raises(stream.FrameError):
        stream.encode_frame(b"x" * (wire.BIND_SIZE - 1))
    with pytest.raises(stream.FrameError):
        stream.encode_frame(b"x" * (wire.MAX_DATAGRAM + 1))


@pytest.mark.parametrize("length", [0, wire.BIND_SIZE - 1, wire.MAX_DATAGRAM + 1, 65535])
def test_read_frame_refuses_out_of_bounds_lengths_before_reading_the_body(length) -> None:
    a, b = socket.socketpair()
    with a, b:
        a.sendall(struct.pack("!H", length))      # no body follows: the length alone is refused
        with pytest.raises(stream.FrameError):
            stream.read_frame(StreamReader(b, idle_timeout=5.0))


def test_read_frame_returns_frames_then_none_at_a_truncated_end() -> None:
    a, b = socket.socketpair()
    with a, b:
        first, second = b"a" * wire.BIND_SIZE, b"b" * 1000
        a.sendall(stream.encode_frame(first) + stream.encode_frame(second) + struct.pack("!H", 500) + b"c")
        a.shutdown(socket.SHUT_WR)
        reader = StreamReader(b, idle_timeout=5.0)
        assert stream.read_frame(reader) == first
        assert stream.read_frame(reader) == second
        assert stream.read_frame(reader) is None


# ---------------------------------------------------------------- identity

def test_identity_is_made_once_with_a_private_key_file(tmp_path) -> None:
    first = tls.ensure_identity(tmp_path)
    assert stat.S_IMODE(os.stat(first.key_path).st_mode) == 0o600
    assert len(first.pin) == tls.PIN_SIZE
    assert tls.ensure_identity(tmp_path).pin == first.pin
    (tmp_path / "other").mkdir()
    assert tls.ensure_identity(tmp_path / "other").pin != first.pin


# ---------------------------------------------------------------- the server's TCP side

@pytest.fixture
def tcp_relay(tmp_path):
    """A relay on 127.0.0.1 (UDP and TLS on TCP) whose host engine is a loopback socket,
    with two members; yields (server, identity, host engine, a, b)."""
    identity = tls.ensure_identity(tmp_path)
    host, a, b = _Engine(), _Engine(), _Engine()
    server = RelayServer(host.private, host="127.0.0.1", members=[a.public, b.public],
                         identity=identity, tcp_port=0, engine_port=host.port).start()
    try:
        yield server, identity, host, a, b
    finally:
        server.stop()
        for e in (host, a, b):
            e.sock.close()


def _tcp(server) -> tuple[str, int]:
    return "127.0.0.1", server.tcp_port


def _closed_by_server(conn: tls.TlsConnection) -> bool:
    reader = StreamReader(conn, idle_timeout=10.0)
    return reader.read(1) == b""


def test_wrong_pin_is_refused_by_the_client(tcp_relay) -> None:
    server, identity, *_ = tcp_relay
    with pytest.raises(tls.PinMismatch):
        tls.connect(_tcp(server), bytes(32))
    conn = tls.connect(_tcp(server), identity.pin)      # the right pin is accepted
    conn.close()


def test_stranger_connection_is_ended_and_counted(tcp_relay) -> None:
    server, identity, *_ = tcp_relay
    stranger = crypto.generate_private_key()
    key = wire.relay_key(stranger, crypto.public_key(stranger), server.public_key, member_side=True)
    conn = tls.connect(_tcp(server), identity.pin)
    try:
        ident = wire.member_id(crypto.public_key(stranger))
        conn.sendall(stream.encode_frame(wire.encode_bind(wire.BIND, key, ident, 1)))
        assert _closed_by_server(conn)
    finally:
        conn.close()
    poll(lambda: server.counters["tcp_dropped_stranger"] == 1, 5.0, lambda: f"{server.counters}")
    assert server.counters["dropped_unknown_member"] == 1


def test_bad_frame_length_and_plain_tcp_end_the_connection(tcp_relay) -> None:
    server, identity, *_ = tcp_relay
    conn = tls.connect(_tcp(server), identity.pin)
    try:
        conn.sendall(struct.pack("!H", 3) + b"abc")
        assert _closed_by_server(conn)
    finally:
        conn.close()
    poll(lambda: server.counters["tcp_dropped_bad_frame"] == 1, 5.0, lambda: f"{server.counters}")
    with socket.create_connection(_tcp(server), timeout=10.0) as raw:
        raw.sendall(b"GET / HTTP/1.0\r\n\r\n")
        assert raw.recv(4096) == b"" or raw.recv(4096) == b""
    poll(lambda: server.counters["tcp_dropped_tls"] == 1, 5.0, lambda: f"{server.counters}")
    assert server.service.errors == 0


# ---------------------------------------------------------------- clients falling back to TCP

def _blackhole() -> socket.socket:
    """A UDP port on loopback that never answers: the relay's UDP as a blocked network sees it."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    return sock


@pytest.fixture
def tcp_clients(tcp_relay):
    server, identity, host, a, b = tcp_relay
    hole = _blackhole()
    udp = hole.getsockname()
    clients = [RelayClient(e.private, server.public_key, udp, e.port,
                           tls_target=(_tcp(server), identity.pin)).start() for e in (a, b)]
    clients[0].set_peers([b.public])
    clients[1].set_peers([a.public])
    try:
        poll(lambda: all(c.bound and c.transport == "tcp" for c in clients), 30.0,
             lambda: f"both clients bound over TCP: {[c.counters for c in clients]} {server.counters}")
        yield server, host, a, b, clients
    finally:
        for c in clients:
            c.stop()
        hole.close()


def test_clients_with_udp_blocked_relay_over_tls_both_ways(tcp_clients) -> None:
    server, host, a, b, (ca, cb) = tcp_clients
    assert ca.label == "rendezvous (tcp)"
    assert server.transport(a.public) == server.transport(b.public) == "tcp"
    a.sock.sendto(b"handshake from a" * 8, ca.endpoint(b.public))
    data, source = b.sock.recvfrom(4096)
    assert (data, source) == (b"handshake from a" * 8, cb.endpoint(a.public))
    big = os.urandom(1400)
    b.sock.sendto(big, source)
    data, source = a.sock.recvfrom(4096)
    assert (data, source) == (big, ca.endpoint(b.public))
    assert server.counters["forwarded_datagrams"] == 2


def test_member_reaches_the_relay_hosts_engine_over_tls(tcp_clients) -> None:
    server, host, a, b, (ca, cb) = tcp_clients
    a.sock.sendto(b"initiation to the rendezvous", ca.host_endpoint())
    data, proxy = host.sock.recvfrom(4096)
    assert data == b"initiation to the rendezvous"
    assert proxy[0] == "127.0.0.1"                  # the host's engine sees a at a loopback proxy
    host.sock.sendto(b"response", proxy)
    data, source = a.sock.recvfrom(4096)
    assert (data, source) == (b"response", ca.host_endpoint())
    assert server.counters["to_host_datagrams"] == 1 and server.counters["from_host_datagrams"] == 1
    assert ca.host_endpoint() not in ca.endpoints().values()


def test_client_with_a_wrong_pin_never_binds(tcp_relay) -> None:
    server, identity, host, a, b = tcp_relay
    hole = _blackhole()
    client = RelayClient(a.private, server.public_key, hole.getsockname(), a.port,
                         tls_target=(_tcp(server), bytes(32))).start()
    try:
        poll(lambda: client.counters["tls_failures"] >= 1, 30.0, lambda: f"{client.counters}")
        assert "does not match the pin" in client.tls_error
        assert not client.bound and client.transport is None
        assert server.bound() == {}
    finally:
        client.stop()
        hole.close()


def test_client_prefers_udp_when_the_relay_answers_it(tcp_relay) -> None:
    server, identity, host, a, b = tcp_relay
    client = RelayClient(a.private, server.public_key, ("127.0.0.1", server.port), a.port,
                         tls_target=(_tcp(server), identity.pin)).start()
    try:
        poll(lambda: client.bound, 10.0, lambda: f"{client.counters}")
        assert client.transport == "udp" and client.label == "rendezvous"
        assert client.counters["tls_connects"] == 0
    finally:
        client.stop()


class _UdpGate:
    """A UDP hop on loopback between one client and the relay that forwards both ways
    only while open: the client's network blocking UDP, then letting it through."""

    def __init__(self, relay: tuple[str, int]):
        self.relay = relay
        self.open = False
        self.front = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.front.bind(("127.0.0.1", 0))
        self.back = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.back.bind(("127.0.0.1", 0))
        self.client: tuple[str, int] | None = None
        self.service = Service("udp-gate")
        self.service.spawn(self._loop)

    @property
    def address(self) -> tuple[str, int]:
        return self.front.getsockname()

    def _loop(self) -> None:
        while True:
            ready = self.service.wait_readable(self.front, self.back)
            if self.service.stopping:
                return
            for sock in ready:
                data, source = sock.recvfrom(70000)
                if not self.open:
                    continue
                if sock is self.front:
                    self.client = source
                    self.back.sendto(data, self.relay)
                elif self.client is not None:
                    self.front.sendto(data, self.client)

    def close(self) -> None:
        self.service.stop()
        self.front.close()
        self.back.close()


def test_client_on_tcp_goes_back_to_udp_once_udp_gets_through(tcp_relay, monkeypatch) -> None:
    monkeypatch.setattr(client_module, "UDP_RETRY", 1.0)     # a UDP bind every second while on TCP
    server, identity, host, a, b = tcp_relay
    gate = _UdpGate(("127.0.0.1", server.port))
    client = RelayClient(a.private, server.public_key, gate.address, a.port,
                         tls_target=(_tcp(server), identity.pin)).start()
    try:
        poll(lambda: client.bound and client.transport == "tcp", 30.0, lambda: f"{client.counters}")
        assert server.transport(a.public) == "tcp"
        gate.open = True
        poll(lambda: client.transport == "udp" and server.transport(a.public) == "udp", 30.0,
             lambda: f"back on UDP: {client.transport} {server.transport(a.public)} {client.counters}")
        poll(lambda: server.counters["tcp_connections"] >= 1 and client._tls is None, 10.0,
             "the TLS connection closed")
        assert client.bound and client.label == "rendezvous"
    finally:
        client.stop()
        gate.close()


def test_revoked_members_connection_ends(tcp_relay) -> None:
    server, identity, host, a, b = tcp_relay
    key = wire.relay_key(a.private, a.public, server.public_key, member_side=True)
    conn = tls.connect(_tcp(server), identity.pin)
    try:
        conn.sendall(stream.encode_frame(wire.encode_bind(wire.BIND, key, wire.member_id(a.public),
                                                          time.time_ns())))
        ack = stream.read_frame(StreamReader(conn, idle_timeout=10.0))
        assert ack is not None and wire.parse(ack).kind == wire.BIND_ACK
        assert server.transport(a.public) == "tcp"
        server.set_members([b.public])
        assert _closed_by_server(conn)
    finally:
        conn.close()
