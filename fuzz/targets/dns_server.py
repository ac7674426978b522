"""The DNS server's input (discovery.dnssd.zone.Directory): a datagram or TCP message is
parsed as the server parses it (dnspython's from_wire; what it refuses, and responses, are
dropped there), then answered for UDP and TCP and, for TCP, transferred. Directory.answer
"never raises"; encoding the answer must not either; transfer documents ValueError (a
record that fits no message), which the server counts. Nothing else may escape."""

from __future__ import annotations

import dns.flags
import dns.message
import dns.rdatatype

from discovery.dnssd.member import MemberRecord
from discovery.dnssd.names import bulk_name, instance_name, service_name
from discovery.dnssd.wire import TCP_LIMIT, encode_response, udp_size_limit
from discovery.dnssd.zone import Directory

ALLOWED: tuple[type[BaseException], ...] = ()
ZONE = "mesh.fuzz."
TOKENS = (b"\x00\x0c", b"\x00\x21", b"\x00\x10", b"\x00\x01", b"\x00\x1c", b"\x00\xfc",
          b"\x00\xff", b"\x00\x29", b"\xc0\x0c", b"\x0b_wireguard\x04_udp", b"\x04mesh\x04fuzz\x00")


def _directory() -> Directory:
    directory = Directory(ZONE)
    directory.set_members([
        MemberRecord(b"\x01" * 32, ("198.51.100.1", 40001), ["100.64.0.1/32"], name="alpha",
                     mesh_address="100.64.0.1", host_candidates=[("192.168.1.10", 51820)],
                     extra={"os": "linux"}),
        MemberRecord(b"\x02" * 32, ("2001:db8::2", 40002), ["100.64.0.2/32", "fd00::2/128"],
                     name="beta"),
        MemberRecord(b"\x03" * 32, None, ["100.64.0.3/32"], name="gamma"),
    ])
    return directory


DIRECTORY = _directory()


def one_input(data: bytes) -> None:
    try:
        query = dns.message.from_wire(data)
    except Exception:  # noqa: BLE001 -- dnspython's refusal; the server drops and counts it
        return
    if query.flags & dns.flags.QR:
        return
    response = DIRECTORY.answer(query)
    encode_response(response, udp_size_limit(query))
    encode_response(response, TCP_LIMIT)
    if len(query.question) == 1 and query.question[0].rdtype == dns.rdatatype.AXFR:
        try:
            for _ in DIRECTORY.transfer(query, TCP_LIMIT):
                pass
        except ValueError:
            pass


def queries() -> dict[str, dns.message.Message]:
    service = service_name(ZONE)
    alpha = instance_name(ZONE, b"\x01" * 32)
    return {
        "ptr": dns.message.make_query(service, "PTR"),
        "ptr-edns": dns.message.make_query(service, "PTR", use_edns=0, payload=4096),
        "srv": dns.message.make_query(alpha, "SRV"),
        "txt": dns.message.make_query(alpha, "TXT"),
        "a": dns.message.make_query(alpha, "A"),
        "any": dns.message.make_query(alpha, "ANY"),
        "soa": dns.message.make_query(ZONE, "SOA"),
        "nx": dns.message.make_query("nope." + ZONE, "A"),
        "outside": dns.message.make_query("example.org.", "A"),
        "axfr": dns.message.make_query(ZONE, "AXFR"),
        "axfr-bulk": dns.message.make_query(bulk_name(ZONE), "AXFR"),
        "meta": dns.message.make_query("_services._dns-sd._udp." + ZONE, "PTR"),
    }


def seeds() -> dict[str, bytes]:
    return {label: query.to_wire() for label, query in queries().items()}
