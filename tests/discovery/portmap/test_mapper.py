"""PortMapper's gateway lookup and protocol order, against a NAT-PMP-only gateway on a
loopback address (a real UDP server speaking RFC 6886)."""

import socket
import struct
import threading

import pytest

from discovery.portmap import natpmp
from discovery.portmap.errors import PortMapError
from discovery.portmap.mapper import PortMapper, parse_default_gateway

ROUTES = """Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT
eth0\t0001A8C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0
eth0\t00000000\t0101A8C0\t0003\t0\t0\t0\t00000000\t0\t0\t0
"""


def test_default_gateway_from_proc_net_route():
    assert parse_default_gateway(ROUTES) == "192.168.1.1"
    assert parse_default_gateway(ROUTES.splitlines()[0] + "\n" + ROUTES.splitlines()[1]) is None
    assert parse_default_gateway("garbage\nx y z w\n") is None


class NatPmpOnlyGateway:
    """Answers on ADDRESS:5351 as a NAT-PMP server that knows no PCP: a PCP request gets
    result 1 (unsupported version, RFC 6887 appendix A); every reply is preceded by a
    garbage datagram, which the client must drop."""

    def __init__(self, address: str):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((address, natpmp.PORT))
        self.requests: list[bytes] = []
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()

    def serve(self):
        while True:
            try:
                data, peer = self.sock.recvfrom(2048)
            except OSError:
                return
            if not data:                                    # shut down by close()
                return
            self.requests.append(data)
            self.sock.sendto(b"\x00\xff garbage", peer)
            if data[0] != 0:
                reply = bytes([0, 128 + (data[1] & 0x7F), 0, 1]) + struct.pack("!I", 5)
            elif data[1] == 0:
                reply = bytes([0, 128, 0, 0]) + struct.pack("!I", 5) + bytes([203, 0, 113, 7])
            else:
                internal, lifetime = struct.unpack("!H2xI", data[4:12])
                reply = bytes([0, 129, 0, 0]) + struct.pack("!IHHI", 5, internal,
                                                            internal + 1 if lifetime else 0,
                                                            lifetime)
            self.sock.sendto(reply, peer)

    def close(self):
        try:
            self.sock.shutdown(socket.SHUT_RDWR)            # wakes the blocked recvfrom
        except OSError:
            pass
        self.thread.join(5)
        self.sock.close()


@pytest.fixture
def gateway():
    address = "127.83.51.1"
    try:
        server = NatPmpOnlyGateway(address)
    except OSError as exc:
        pytest.skip(f"cannot bind {address}:5351: {exc}")
    yield address, server
    server.close()


def test_falls_back_from_pcp_to_natpmp_and_deletes_on_stop(gateway):
    address, server = gateway
    seen = []
    mapper = PortMapper(51820, gateway=address, lifetime=3600, on_change=seen.append)
    mapping = mapper.obtain()
    assert (mapping.protocol, mapping.endpoint, mapping.lifetime) == (
        "natpmp", "203.0.113.7:51821", 3600)
    assert server.requests[0][0] == 2                       # PCP was asked first
    assert mapper.dropped == 3          # the garbage before each reply (PCP, 2 NAT-PMP)
    mapper.mapping = mapping
    mapper.stop()
    assert server.requests[-1] == natpmp.encode_delete_request(51820)
    assert mapper.mapping is None and mapper.status() is None


def test_thread_reports_the_mapping(gateway):
    address, _ = gateway
    got = threading.Event()
    mapper = PortMapper(51820, gateway=address, protocols=("natpmp",),
                        on_change=lambda m: got.set())
    mapper.start()
    try:
        assert got.wait(5)
        assert mapper.status() == {"protocol": "natpmp", "endpoint": "203.0.113.7:51821",
                                   "lifetime": 7200}
    finally:
        mapper.stop()


def test_refresh_maps_again_at_once(gateway):
    address, server = gateway
    mapped = threading.Semaphore(0)
    mapper = PortMapper(51820, gateway=address, protocols=("natpmp",), lifetime=3600,
                        on_change=lambda m: mapped.release())
    mapper.start()
    try:
        assert mapped.acquire(timeout=5)                    # the first mapping
        before = len(server.requests)
        mapper.refresh()                                    # renewal is 1800 s away
        assert mapped.acquire(timeout=5)
        assert len(server.requests) > before and mapper.renewals == 1
    finally:
        mapper.stop()


def test_no_gateway_answers():
    mapper = PortMapper(51820, gateway="127.83.51.2", protocols=("pcp", "natpmp"))
    with pytest.raises(PortMapError) as info:
        mapper.obtain()
    assert "pcp:" in str(info.value) and "natpmp:" in str(info.value)


def test_unknown_protocol_is_refused():
    with pytest.raises(ValueError):
        PortMapper(51820, protocols=("stun",))
