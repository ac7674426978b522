"""The DNS-SD server on loopback, resolved by our client and by dig."""

from __future__ import annotations

import base64
import shutil
import socket
import struct
import subprocess
import time
from typing import Callable, Iterator

import dns.message
import pytest

from discovery.dnssd.client import DiscoveryError, resolve_member, resolve_zone
from discovery.dnssd.server import DnsServer, ServerCounters
from discovery.dnssd.member import MemberRecord
from discovery.dnssd.names import instance_name
from discovery.dnssd.zone import MAX_PTR_ANSWER, Directory

ZONE = "mesh.example."
LOOP = "127.0.0.1"


def member(i: int, *, v6: bool = False, endpoint: bool = True, **kw) -> MemberRecord:
    key = i.to_bytes(4, "big") * 8
    ep = (f"2001:db8::{i + 1:x}" if v6 else f"198.51.{i // 250 % 250}.{i % 250 + 1}", 20000 + i) if endpoint else None
    return MemberRecord(key, ep, [f"100.64.{i // 250 % 250}.{i % 250 + 1}/32"], name=f"m{i}", mesh_address=f"100.64.{i // 250 % 250}.{i % 250 + 1}", **kw)


def published(records: list[MemberRecord]) -> dict[bytes, MemberRecord]:
    return {r.public_key: r for r in records if r.endpoint is not None}


def wait_for(check: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached before the deadline")
        time.sleep(0.01)


@pytest.fixture
def serve() -> Iterator[Callable[[list[MemberRecord]], DnsServer]]:
    servers: list[DnsServer] = []

    def start(records: list[MemberRecord]) -> DnsServer:
        directory = Directory(ZONE)
        directory.set_members(records)
        server = DnsServer(directory, LOOP, 0).start()
        servers.append(server)
        return server

    try:
        yield start
    finally:
        for server in servers:
            server.stop()


SMALL = [
    member(1, host_candidates=[("192.168.7.2", 51820), ("fd00::2", 51820)], extra={"os": "linux"}),
    member(2, v6=True),
    member(3, endpoint=False),
]


def test_resolve_zone_over_udp(serve) -> None:
    server = serve(SMALL)
    got = resolve_zone((LOOP, server.port), ZONE)
    assert {r.public_key: r for r in got} == published(SMALL)
    counters = server.counters
    assert counters.queries_udp == 1 + 2 and counters.queries_tcp == 0


def test_resolve_zone_falls_back_to_tcp_when_truncated(serve) -> None:
    records = [member(i) for i in range(60)]  # 60 PTRs do not fit 1232 bytes
    server = serve(records)
    got = resolve_zone((LOOP, server.port), ZONE)
    assert {r.public_key: r for r in got} == published(records)
    counters = server.counters
    assert counters.truncated >= 1 and counters.queries_tcp >= 1 and counters.transfers == 0


def test_resolve_member(serve) -> None:
    server = serve(SMALL)
    where = (LOOP, server.port)
    assert resolve_member(where, ZONE, SMALL[0].public_key) == SMALL[0]
    assert resolve_member(where, ZONE, SMALL[1].public_key) == SMALL[1]
    assert resolve_member(where, ZONE, SMALL[2].public_key) == SMALL[2]  # endpoint None
    assert resolve_member(where, ZONE, bytes(32)) is None


def test_refused_zone_raises(serve) -> None:
    server = serve(SMALL)
    with pytest.raises(DiscoveryError, match="refused"):
        resolve_zone((LOOP, server.port), "other.example.")


def test_silent_server_times_out_with_clear_error() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:
        silent.bind((LOOP, 0))
        port = silent.getsockname()[1]
        start = time.monotonic()
        with pytest.raises(DiscoveryError, match=f"127.0.0.1:{port}.*within 0.6 s"):
            resolve_zone((LOOP, port), ZONE, timeout=0.6)
        assert time.monotonic() - start < 3.0


def test_cache_serves_repeats_and_follows_updates(serve) -> None:
    server = serve(SMALL)
    where = (LOOP, server.port)
    first = resolve_zone(where, ZONE)
    assert resolve_zone(where, ZONE) == first
    assert server.counters.cache_hits >= 3
    moved = member(1, host_candidates=[])
    moved.endpoint = ("203.0.113.9", 4444)
    server.directory.set_members([moved, SMALL[1]])
    got = {r.public_key: r for r in resolve_zone(where, ZONE)}
    assert got[moved.public_key].endpoint == ("203.0.113.9", 4444)
    assert got == published([moved, SMALL[1]])


def test_malformed_datagrams_counted_and_server_keeps_answering(serve) -> None:
    server = serve(SMALL)
    garbage = [b"", b"\x00", b"\xff" * 12, b"\x12\x34\x01\x00\x00\x01" + b"\x00" * 6 + b"\x3f" * 20]
    # a response (QR set) is never answered either
    response = dns.message.make_response(dns.message.make_query(ZONE, "SOA")).to_wire()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        for wire in garbage + [response]:
            sock.sendto(wire, (LOOP, server.port))
    wait_for(lambda: server.counters.malformed == len(garbage) + 1)
    assert server.counters.responses == 0
    assert {r.public_key: r for r in resolve_zone((LOOP, server.port), ZONE)} == published(SMALL)


def test_tcp_malformed_message_dropped_connection_kept(serve) -> None:
    server = serve(SMALL)
    query = dns.message.make_query(ZONE, "SOA")
    with socket.create_connection((LOOP, server.port), timeout=5) as sock:
        for wire in (b"\xde\xad\xbe\xef", query.to_wire()):
            sock.sendall(struct.pack("!H", len(wire)) + wire)
        length = struct.unpack("!H", sock.recv(2, socket.MSG_WAITALL))[0]
        reply = dns.message.from_wire(sock.recv(length, socket.MSG_WAITALL))
    assert query.is_response(reply) and reply.answer
    assert server.counters.malformed == 1


def test_stop_releases_port(serve) -> None:
    server = serve(SMALL)
    port = server.port
    server.stop()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as again:
        again.bind((LOOP, port))


def test_900_members_by_pipelined_queries(serve) -> None:
    records = [member(i) for i in range(MAX_PTR_ANSWER)]
    server = serve(records)
    got = resolve_zone((LOOP, server.port), ZONE)
    assert {r.public_key: r for r in got} == published(records)
    assert server.counters.transfers == 0 and server.counters.queries_udp >= MAX_PTR_ANSWER


def test_1000_members_by_zone_transfer(serve) -> None:
    records = [member(i, v6=(i % 7 == 0)) for i in range(1000)]
    server = serve(records)
    start = time.monotonic()
    got = resolve_zone((LOOP, server.port), ZONE)
    elapsed = time.monotonic() - start
    assert {r.public_key: r for r in got} == published(records)
    assert server.counters.transfers == 1
    assert elapsed < 10.0


# -------------------------------------------------------------- dig, an independent client


def dig(port: int, *args: str) -> list[list[str]]:
    if shutil.which("dig") is None:
        pytest.skip("dig (bind9-dnsutils) is not installed")
    out = subprocess.run(
        ["dig", f"@{LOOP}", "-p", str(port), "+time=2", "+tries=1", *args],
        capture_output=True, text=True, timeout=20, check=True,
    ).stdout
    return [line.split(None, 4) for line in out.splitlines() if line.strip() and not line.startswith(";")]


def test_dig_sees_wgsd_layout(serve) -> None:
    rec = SMALL[0]
    server = serve(SMALL)
    instance = instance_name(ZONE, rec.public_key).to_text()
    ptr = dig(server.port, "_wireguard._udp." + ZONE, "PTR", "+noall", "+answer")
    assert {(r[1], r[3]) for r in ptr} == {("0", "PTR")}
    assert instance in {r[4] for r in ptr} and len(ptr) == 2
    srv = dig(server.port, instance, "SRV", "+noall", "+answer", "+additional")
    by_type = {r[3]: r for r in srv}
    assert all(r[0] == instance and r[1] == "0" for r in srv)
    assert by_type["SRV"][4].split() == ["0", "0", str(rec.endpoint[1]), instance]
    assert by_type["A"][4] == rec.endpoint[0]
    txt = by_type["TXT"][4]
    assert txt.startswith(f'"txtvers=1" "pub={base64.b64encode(rec.public_key).decode()}" "allowed={rec.allowed_ips[0]}"')
    assert '"cand=192.168.7.2:51820,[fd00::2]:51820"' in txt
    only_txt = dig(server.port, instance, "TXT", "+noall", "+answer")
    assert [r[4] for r in only_txt] == [txt]


def test_dig_nxdomain_and_axfr(serve) -> None:
    server = serve(SMALL)
    nx = dig(server.port, "nobody._wireguard._udp." + ZONE, "SRV", "+noall", "+authority")
    assert [r[3] for r in nx] == ["SOA"] and nx[0][4].split()[-1] == "60"
    axfr = dig(server.port, ZONE, "AXFR", "+noall", "+answer")
    assert axfr[0][3] == axfr[-1][3] == "SOA"
    assert sum(r[3] == "SRV" for r in axfr) == 2 and sum(r[3] == "TXT" for r in axfr) == 3


def test_counters_snapshot_type(serve) -> None:
    server = serve(SMALL)
    assert isinstance(server.counters, ServerCounters) and server.counters.queries == 0


def test_stop_is_prompt_with_an_idle_tcp_client(serve) -> None:
    server = serve(SMALL)   # tcp_idle_timeout 10 s: stop must not wait for it
    with socket.create_connection((LOOP, server.port), timeout=5) as idle:
        wait_for(lambda: server.counters.tcp_connections == 1)
        began = time.monotonic()
        server.stop()
        assert time.monotonic() - began < 1.0
        assert idle.recv(1) == b""              # the server closed its end
