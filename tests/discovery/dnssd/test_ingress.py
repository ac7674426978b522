"""Members-only mesh services (issue 9, cases 1 and 2) on loopback: the ingress rule
(meshwg.util.ingress) restricts the DNS server, the candidate report server and the NOTIFY
listener to one interface and to admitted sources, and NOTIFY is acted on at most once per
interval whatever arrives. The namespace test (test_members_only_lab.py) shows the same
against a stranger on the internet side and on the LAN."""

from __future__ import annotations

import json
import math
import socket
import struct
import threading
import time

import dns.message
import dns.rcode
import pytest

from discovery.dnssd.notify import NotifyListener, build_notify
from discovery.dnssd.server import DnsServer, DnsServerError
from discovery.dnssd.zone import Directory
from discovery.traversal.report import CandidateReportServer
from meshwg.util.ingress import Ingress, admitted
from tests.discovery.dnssd.sample import sample_directory

MEMBER, STRANGER = "127.0.0.2", "127.0.0.3"
ZONE = "mesh.internal."


def poll(check, timeout: float = 20.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not reached within {timeout} s")
        time.sleep(0.01)


def members_only() -> Ingress:
    return Ingress("lo", lambda ip: ip == MEMBER)


def udp_query(server: DnsServer, source: str, timeout: float) -> dns.message.Message | None:
    query = dns.message.make_query(sample_directory().zone, "SOA")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((source, 0))
        s.settimeout(timeout)
        s.sendto(query.to_wire(), ("127.0.0.1", server.port))
        try:
            return dns.message.from_wire(s.recv(65535))
        except socket.timeout:
            return None


def tcp_query(server: DnsServer, source: str, timeout: float) -> bytes:
    wire = dns.message.make_query(sample_directory().zone, "SOA").to_wire()
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((source, 0))
        s.settimeout(timeout)
        s.connect(("127.0.0.1", server.port))
        s.sendall(struct.pack("!H", len(wire)) + wire)
        out = b""
        try:
            while chunk := s.recv(65535):
                out += chunk
                if len(out) >= 2 and len(out) >= 2 + struct.unpack("!H", out[:2])[0]:
                    break
        except (socket.timeout, ConnectionResetError):
            pass
        return out


def test_ingress_rule_admits_only_what_it_allows() -> None:
    rule = Ingress("lo", lambda ip: ip == MEMBER)
    assert rule.admits(MEMBER) and not rule.admits(STRANGER)
    assert Ingress("lo").admits(STRANGER)                   # no source rule: the interface only
    assert admitted(None, STRANGER)                          # no ingress: unrestricted

    def broken(_ip: str) -> bool:
        raise RuntimeError("store closed")
    assert not Ingress("lo", broken).admits(MEMBER)         # a failing check refuses
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s, pytest.raises(OSError):
        Ingress("nosuchif0").bind(s)


def test_dns_server_answers_members_only_on_udp_and_tcp() -> None:
    with DnsServer(sample_directory(), "127.0.0.1", 0, ingress=members_only()) as server:
        answer = udp_query(server, MEMBER, 10.0)
        assert answer is not None and answer.rcode() == dns.rcode.NOERROR and answer.answer
        assert udp_query(server, STRANGER, 1.0) is None
        assert len(tcp_query(server, MEMBER, 10.0)) > 2
        assert tcp_query(server, STRANGER, 10.0) == b""     # closed without an answer
        counters = poll(lambda: (c := server.counters).refused >= 2 and c, what="2 refusals")
        assert counters.refused == 2 and counters.queries == 2


def test_dns_server_on_a_missing_interface_refuses_to_start() -> None:
    server = DnsServer(Directory(ZONE), "127.0.0.1", 0, ingress=Ingress("nosuchif0"))
    with pytest.raises(DnsServerError):
        server.start()


def test_report_server_takes_members_only() -> None:
    reports: list[tuple[str, list[str]]] = []
    server = CandidateReportServer("127.0.0.1", 0, lambda src, c: reports.append((src, c)),
                                   ingress=members_only()).start()
    try:
        def send(source: str) -> bytes:
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
                s.bind((source, 0))
                s.settimeout(10)
                s.connect(("127.0.0.1", server.port))
                s.sendall(json.dumps({"candidates": ["192.0.2.7:51820"]}).encode() + b"\n")
                try:
                    return s.recv(100)
                except ConnectionResetError:
                    return b""
        assert send(STRANGER) == b""
        assert b'"ok": true' in send(MEMBER)
        assert reports == [(MEMBER, ["192.0.2.7:51820"])]
        assert server.refused == 1
    finally:
        server.stop()


def test_notify_is_acted_on_at_most_once_per_interval_whatever_arrives() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    calls: list[float] = []
    lock = threading.Lock()

    def on_notify() -> None:
        with lock:
            calls.append(time.monotonic())
    interval = 0.5
    listener = NotifyListener("127.0.0.1", ZONE, MEMBER, on_notify, port=port,
                              interface="lo", interval=interval).start()
    try:
        start = time.monotonic()
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as rv:
            rv.bind((MEMBER, 0))
            for _ in range(300):                  # a flood of genuine-looking NOTIFY
                rv.sendto(build_notify(ZONE), ("127.0.0.1", port))
        # the first is acted on at once, the rest folded into one call an interval later
        poll(lambda: len(calls) >= 2, what="the call for the notices folded")
        elapsed = time.monotonic() - start
        with lock:
            made = list(calls)
        assert len(made) <= math.ceil(elapsed / interval) + 1, (len(made), elapsed)
        gaps = [b - a for a, b in zip(made, made[1:])]
        assert all(g >= interval * 0.99 for g in gaps), gaps
        assert listener.received > len(made)      # most were folded, none ignored
    finally:
        listener.stop()
