"""A rendezvous on a DNS directory reads the zone off its main loop (issue 10;
zone_rendezvous.ZoneState.start_reader): the SOA checks, transfers and parsing run in a
worker, and the main loop's calls (refresh, members, rendezvous, announce_relay) only swap
in a finished read. Real ZoneState and ZoneWriter against a loopback TCP DNS server that
either holds every connection without answering or serves a signed SOA and AXFR."""

from __future__ import annotations

import base64
import socket
import struct
import threading
from typing import Iterator

import dns.message
import dns.name
import dns.rdatatype
import dns.rrset
import dns.tsig
import pytest

from discovery.stores.rendezvous import RendezvousState
from discovery.stores.zone_cache import cache_path, load_zone, save_zone
from discovery.stores.zone_rendezvous import ZoneState
from tests.discovery.stores.test_zone_cache import LAYOUT, ZONE, two_members, zone_rendezvous
from tests.discovery.stores.test_zone_membership import content, good_member

DEADLINE = 60.0         # generous: a loaded 2-core CI machine
KEYRING = {dns.name.from_text("meshwg-update."):
           dns.tsig.Key("meshwg-update.", base64.b64decode("A" * 43 + "="), "hmac-sha256")}


class FakeServer:
    """A loopback DNS-over-TCP server for one zone: `zone` (a ZoneContent) answered to
    signed SOA and AXFR queries, or, while `hold` is set, every connection accepted and
    held unanswered until `release` is set. `accepted` counts connections. `answers`
    overrides a query type's answer: the RRsets sent in one signed message (a None
    among them: the connection is closed after it), or an rcode."""

    def __init__(self, zone, hold: bool = False, answers: dict | None = None) -> None:
        self.zone, self.accepted = zone, 0
        self.answers = answers or {}    # {rdtype: RRsets answered, or an rcode} instead
        self.asked: list[int] = []      # the query types, in order
        self.hold, self.release = hold, threading.Event()
        self.changed = threading.Condition()
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.address = f"127.0.0.1:{self.listener.getsockname()[1]}"
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            with self.changed:
                self.accepted += 1
                self.changed.notify_all()
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def wait_accepted(self, count: int) -> None:
        with self.changed:
            assert self.changed.wait_for(lambda: self.accepted >= count, DEADLINE), self.accepted

    def _serve(self, conn: socket.socket) -> None:
        with conn:
            if self.hold:
                self.release.wait(DEADLINE)
                return
            try:
                conn.settimeout(DEADLINE)
                while True:
                    head = conn.recv(2)
                    if len(head) < 2:
                        return
                    (size,) = struct.unpack("!H", head)
                    data = b""
                    while len(data) < size:
                        data += conn.recv(size - len(data))
                    query = dns.message.from_wire(data, keyring=KEYRING)
                    response = dns.message.make_response(query)
                    rdtype = query.question[0].rdtype
                    self.asked.append(rdtype)
                    if rdtype in self.answers:
                        answer = self.answers[rdtype]
                        if isinstance(answer, int):
                            response.set_rcode(answer)
                        else:
                            response.answer.extend(rr for rr in answer if rr is not None)
                        wire = response.to_wire()
                        conn.sendall(struct.pack("!H", len(wire)) + wire)
                        if not isinstance(answer, int) and None in answer:
                            return          # then the connection closes (truncated)
                        continue
                    response.answer.append(self._soa())
                    if query.question[0].rdtype == dns.rdatatype.AXFR:
                        for (name, rdtype), rdatas in self.zone.records.items():
                            response.answer.append(dns.rrset.from_rdata_list(name, 0, rdatas))
                        response.answer.append(self._soa())
                    wire = response.to_wire()
                    conn.sendall(struct.pack("!H", len(wire)) + wire)
            except OSError:
                return

    def _soa(self) -> dns.rrset.RRset:
        return dns.rrset.from_text(ZONE, 0, "IN", "SOA", f"ns.{ZONE} h.{ZONE} {self.zone.serial} "
                                   f"60 60 600 60")

    def close(self) -> None:
        self.release.set()
        self.listener.close()


@pytest.fixture
def servers() -> Iterator[list]:
    made: list[FakeServer] = []
    yield made
    for server in made:
        server.close()


def test_the_main_loop_never_waits_on_a_server_that_does_not_answer(tmp_path, servers) -> None:
    server = FakeServer(two_members(), hold=True)
    servers.append(server)
    state_dir = zone_rendezvous(tmp_path, server.address)
    save_zone(cache_path(state_dir), ZONE, two_members(), "192.0.2.53:53")
    woken = threading.Event()
    with RendezvousState.open(state_dir) as st:
        zone = ZoneState(st, min_interval=3600)     # the worker tries once, then waits
        try:
            zone.start_reader(woken.set)
            server.wait_accepted(1)                 # the worker is blocked in its SOA query
            # the main loop's calls serve the saved copy and open no connection of their own
            assert zone.refresh(force=True) is False and zone.refresh() is False
            assert [m.name for m in zone.members()] == ["laptop", "phone"]
            assert [e.endpoint for e in zone.rendezvous()] == ["192.0.2.1:51820"]
            assert zone.saved_at is not None and not server.release.is_set()
            assert server.accepted == 1 and not woken.is_set()
            # our relay port is written by the worker: the call only wakes it
            assert zone.announce_relay(8443) is False
            server.wait_accepted(2)
            server.release.set()
        finally:
            zone.close()
        assert "cannot reach DNS server" in zone.problem and zone.primary_problem


def test_a_read_in_the_worker_is_swapped_in_by_refresh(tmp_path, servers) -> None:
    server = FakeServer(two_members(serial=41))
    servers.append(server)
    state_dir = zone_rendezvous(tmp_path, server.address)
    woken = threading.Event()
    with RendezvousState.open(state_dir) as st:
        zone = ZoneState(st, min_interval=0.2)
        try:
            zone.start_reader(woken.set)
            assert woken.wait(DEADLINE)
            assert zone._members == []          # served until the main loop swaps it in
            assert zone.refresh() is True and zone.refresh() is False
            assert [m.name for m in zone.members()] == ["laptop", "phone"]
            assert [e.endpoint for e in zone.rendezvous()] == ["192.0.2.1:51820"]
            assert zone.read_from == server.address and zone.problem == ""
            assert load_zone(cache_path(state_dir), ZONE).content.serial == 41   # saved too
            woken.clear()
            server.zone = content(*[dns.rrset.from_rdata_list(name, 0, rdatas) for
                                    (name, _), rdatas in two_members().records.items()],
                                  *good_member(LAYOUT, 3, "tablet", "100.80.0.4"), serial=42)
            assert woken.wait(DEADLINE)
            assert zone.refresh() is True
            assert [m.name for m in zone.members()] == ["laptop", "phone", "tablet"]
            assert zone.find_member("tablet").mesh_address == "100.80.0.4"
        finally:
            zone.close()
