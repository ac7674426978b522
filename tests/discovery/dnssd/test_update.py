"""ZoneWriter's reads are bounded and its failures are clean errors (discovery.dnssd.update):
a loopback TCP server that answers a signed AXFR with too many records, too many bytes, a
stall, or junk; no server at all. (The real servers and the update paths: the namespace
test tests/discovery/stores/test_zone_membership_lab.py.)"""

from __future__ import annotations

import socket
import struct
import threading
import time
from typing import Callable, Iterator

import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rrset
import dns.tsig
import pytest

from discovery.dnssd.update import DirectoryUnavailable, ServerRefused, UpdateRefused, ZoneWriter

ZONE = "mesh.test."
SOA = dns.rrset.from_text(ZONE, 0, "IN", "SOA", "ns.mesh.test. h.mesh.test. 5 60 60 600 60")


class FixedKey:
    def key(self) -> dns.tsig.Key:
        return dns.tsig.Key("k.", bytes(range(32)), "hmac-sha256")


def records(n: int) -> dns.rrset.RRset:
    return dns.rrset.from_text(f"a.{ZONE}", 0, "IN", "A", *[f"10.0.{i // 250}.{i % 250}"
                                                           for i in range(n)])


@pytest.fixture
def server() -> Iterator[Callable]:
    """Start a one-connection loopback server whose `answer(query, sock)` replies."""
    sockets: list[socket.socket] = []
    threads: list[threading.Thread] = []

    def start(answer: Callable[[dns.message.Message, socket.socket], None]) -> str:
        listener = socket.create_server(("127.0.0.1", 0))
        sockets.append(listener)

        def serve() -> None:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            with conn:
                (size,) = struct.unpack("!H", conn.recv(2))
                data = b""
                while len(data) < size:
                    data += conn.recv(size - len(data))
                query = dns.message.from_wire(data, keyring={dns.name.from_text("k."): FixedKey().key()})
                try:
                    answer(query, conn)
                except OSError:
                    pass

        thread = threading.Thread(target=serve, daemon=True)
        thread.start()
        threads.append(thread)
        return f"127.0.0.1:{listener.getsockname()[1]}"

    yield start
    for s in sockets:
        s.close()
    for t in threads:
        t.join(10)


def send(conn: socket.socket, message: dns.message.Message) -> None:
    wire = message.to_wire()
    conn.sendall(struct.pack("!H", len(wire)) + wire)


def reply(query: dns.message.Message, *rrsets: dns.rrset.RRset) -> dns.message.Message:
    response = dns.message.make_response(query)
    response.answer.extend(rrsets)
    return response


def test_a_transfer_is_read(server) -> None:
    address = server(lambda q, c: send(c, reply(q, SOA, records(3), SOA)))
    content = ZoneWriter(address, ZONE, FixedKey()).read()
    assert content.serial == 5
    assert len(content.records[(dns.name.from_text(f"a.{ZONE}"), 1)]) == 3


@pytest.mark.parametrize("limit, answer", [
    ({"max_records": 10}, lambda q, c: send(c, reply(q, SOA, records(11), SOA))),
    ({"max_bytes": 200}, lambda q, c: send(c, reply(q, SOA, records(30), SOA))),
    ({}, lambda q, c: send(c, reply(q, records(2), SOA))),                  # no opening SOA
    ({}, lambda q, c: c.sendall(b"\x00\x05junk!")),
    ({}, lambda q, c: send(c, reply(q, SOA, records(1)))),                  # then closes
])
def test_hostile_transfers_are_bounded_and_refused_cleanly(server, limit, answer) -> None:
    address = server(answer)
    with pytest.raises(DirectoryUnavailable):
        ZoneWriter(address, ZONE, FixedKey(), **limit).read()


def test_a_stalled_transfer_ends_at_its_deadline(server) -> None:
    release = threading.Event()

    def stall(query, conn) -> None:
        send(conn, reply(query, SOA, records(1)))
        release.wait(30)

    address = server(stall)
    started = time.monotonic()
    try:
        with pytest.raises(DirectoryUnavailable):
            ZoneWriter(address, ZONE, FixedKey(), timeout=30, max_transfer_time=1.0).read()
    finally:
        release.set()
    assert time.monotonic() - started < 20     # the deadline, not the 30 s read timeout


def test_no_server_is_directory_unavailable() -> None:
    with socket.socket() as probe:              # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    writer = ZoneWriter(f"127.0.0.1:{port}", ZONE, FixedKey(), timeout=5)
    for call in (writer.read, writer.serial, lambda: writer.send(writer.new_update(), "test")):
        with pytest.raises(DirectoryUnavailable, match=f"127.0.0.1:{port}"):
            call()


def test_a_failed_prerequisite_names_the_rcode(server) -> None:
    def yxdomain(query, conn) -> None:
        response = dns.message.make_response(query)
        response.set_rcode(dns.rcode.YXDOMAIN)
        send(conn, response)

    address = server(yxdomain)
    writer = ZoneWriter(address, ZONE, FixedKey())
    update = writer.new_update()
    update.absent(f"taken.{ZONE}")
    with pytest.raises(UpdateRefused, match="claim of taken.*YXDOMAIN") as caught:
        writer.send(update, "claim of taken")
    assert caught.value.rcode == dns.rcode.YXDOMAIN and caught.value.rcode_text == "YXDOMAIN"


def unsigned(query: dns.message.Message, rcode: int, *rrsets: dns.rrset.RRset) -> dns.message.Message:
    """An answer without TSIG (what Knot sends a source address its mod-queryacl refuses)."""
    response = dns.message.Message(id=query.id)
    response.flags = dns.flags.QR | dns.flags.AA
    response.question = list(query.question)
    response.set_rcode(rcode)
    response.answer.extend(rrsets)
    return response


def tsig_error(error: int) -> Callable:
    def answer(query, conn) -> None:
        response = dns.message.make_response(query)
        response.set_rcode(dns.rcode.NOTAUTH)
        response.use_tsig(query.keyring, keyname=query.keyname, tsig_error=error)
        send(conn, response)
    return answer


@pytest.mark.parametrize("answer, shown", [
    (lambda q, c: send(c, unsigned(q, dns.rcode.NOTAUTH)), r"\(NOTAUTH: it does not know this key, or"),
    (lambda q, c: send(c, unsigned(q, dns.rcode.REFUSED)), r"\(REFUSED: "),
    (tsig_error(dns.rcode.BADKEY), r"\(BADKEY: it does not know this key\)"),
    (tsig_error(dns.rcode.BADSIG), r"\(BADSIG: its secret for this key differs\)"),
])
def test_a_refused_key_is_named_whatever_the_answer_looks_like(server, answer, shown) -> None:
    """The user pass saw 'FormError: response requires a TSIG but does not have one' when
    the Knot secondary refused the rendezvous's signed SOA query: now the server, the key
    and the reason, for reads (SOA, AXFR) and updates alike."""
    writer_calls = (lambda w: w.serial(), lambda w: w.read(),
                    lambda w: w.send(w.new_update(), "test update"))
    for call in writer_calls:
        address = server(answer)
        writer = ZoneWriter(address, ZONE, FixedKey(), timeout=5)
        with pytest.raises(ServerRefused, match=f"DNS server {address} refused key k {shown}") as caught:
            call(writer)
        assert caught.value.keyname == "k"


def test_an_unsigned_success_is_never_taken(server) -> None:
    """An answer to a signed query that is not signed is a failure, whatever it says."""
    address = server(lambda q, c: send(c, unsigned(q, dns.rcode.NOERROR, SOA)))
    with pytest.raises(DirectoryUnavailable, match="TSIG"):
        ZoneWriter(address, ZONE, FixedKey(), timeout=5).serial()


def test_a_read_key_refusal_names_the_read_key(server) -> None:
    class ReadKey:
        def key(self) -> dns.tsig.Key:
            return dns.tsig.Key("k.", bytes(range(32)), "hmac-sha256")     # the server's "k."

    class UpdateKey:
        def key(self) -> dns.tsig.Key:
            return dns.tsig.Key("update.", bytes(32), "hmac-sha256")

    address = server(lambda q, c: send(c, unsigned(q, dns.rcode.NOTAUTH)))
    with pytest.raises(ServerRefused, match="refused key k ") as caught:
        ZoneWriter(address, ZONE, UpdateKey(), timeout=5, read_key=ReadKey()).serial()
    assert caught.value.keyname == "k"


def test_a_host_that_does_not_resolve_is_named() -> None:
    writer = ZoneWriter("no-such-host.invalid:53", ZONE, FixedKey(), timeout=5)
    for call in (writer.read, writer.serial):
        with pytest.raises(DirectoryUnavailable, match="'no-such-host.invalid' does not resolve"):
            call()
