"""The bulk directory (_directory._wireguard._udp.ZONE): served, resolved, parsed safely."""

from __future__ import annotations

import base64
import shutil
import subprocess

import dns.name
import pytest

from discovery.dnssd.client import resolve_zone
from discovery.dnssd.server import DnsServer
from discovery.dnssd.bulk import BULK_VERSION, parse_bulk_strings
from discovery.dnssd.member import MemberRecord
from discovery.dnssd.names import bulk_name
from discovery.dnssd.zone import MAX_PTR_ANSWER, Directory

ZONE = "mesh.example."
LOOP = "127.0.0.1"


def member(i: int, **kw) -> MemberRecord:
    v6 = i % 7 == 0
    ep = (f"2001:db8::{i + 1:x}" if v6 else f"198.51.{i // 250 % 250}.{i % 250 + 1}", 20000 + i)
    return MemberRecord(i.to_bytes(4, "big") * 8, ep, [f"100.64.{i // 250 % 250}.{i % 250 + 1}/32"],
                        name=f"m{i}", mesh_address=f"100.64.{i // 250 % 250}.{i % 250 + 1}", **kw)


def big_set() -> list[MemberRecord]:
    records = [member(i, host_candidates=[("192.168.1.2", 51820), ("fd00::2", 51820)],
                      extra={"os": "linux"}) for i in range(MAX_PTR_ANSWER + 100)]
    records.append(MemberRecord(b"\xee" * 32, None, ["100.65.0.1/32"], name="offline"))
    return records


@pytest.fixture
def server():
    directory = Directory(ZONE)
    directory.set_members(big_set())
    srv = DnsServer(directory, LOOP, 0).start()
    try:
        yield srv
    finally:
        srv.stop()


def test_big_directory_resolves_from_the_bulk_records(server) -> None:
    got = resolve_zone((LOOP, server.port), ZONE)
    expected = [r for r in big_set() if r.endpoint is not None]
    assert got == expected                       # every field, in PTR order
    counters = server.counters
    assert counters.transfers == 1 and counters.queries_tcp == 2   # PTR (TC), then the bulk AXFR


def test_server_without_bulk_directory_gets_a_zone_transfer(server) -> None:
    server.directory.bulk = dns.name.from_text("_elsewhere." + ZONE)   # AXFR of _directory: REFUSED
    got = resolve_zone((LOOP, server.port), ZONE)
    assert got == [r for r in big_set() if r.endpoint is not None]
    assert server.counters.transfers == 2        # the refused bulk transfer, then the zone's


def test_dig_transfers_the_bulk_zone(server) -> None:
    if shutil.which("dig") is None:
        pytest.skip("dig (bind9-dnsutils) is not installed")
    out = subprocess.run(["dig", f"@{LOOP}", "-p", str(server.port), "+time=2", "+tries=1",
                          bulk_name(ZONE).to_text(), "AXFR", "+noall", "+answer"],
                         capture_output=True, text=True, timeout=20, check=True).stdout
    rows = [line.split(None, 4) for line in out.splitlines() if line.strip() and not line.startswith(";")]
    assert rows[0][3] == rows[-1][3] == "SOA"
    txt = [r for r in rows if r[3] == "TXT"]
    assert len(txt) >= 2                         # ~1000 members do not fit one record
    assert all(r[4].startswith(f'"{BULK_VERSION.decode()}" "pub=') for r in txt)


def test_hostile_bulk_strings_are_skipped() -> None:
    good = base64.b64encode(b"\x01" * 32)
    strings = [
        b"pub=" + good, b"ep=192.0.2.1:51820",                       # before the version: ignored
        BULK_VERSION,
        b"pub=" + good, b"ep=192.0.2.1:51820", b"allowed=10.0.0.1/32,not-a-cidr", b"name=ok",
        b"pub=" + base64.b64encode(b"\x02" * 31), b"ep=192.0.2.2:1",     # key too short
        b"pub=" + base64.b64encode(b"\x03" * 32), b"ep=192.0.2.3:0",     # port 0
        b"pub=" + base64.b64encode(b"\x04" * 32), b"ep=[fe80::1%eth0]:5",  # scoped
        b"pub=" + base64.b64encode(b"\x05" * 32),                        # no endpoint
        b"pub=" + good, b"ep=192.0.2.9:9",                               # repeated key
        b"\xff\xfe", b"pub=" + base64.b64encode(b"\x06" * 32), b"ep=[2001:db8::6]:6",
    ]
    got = parse_bulk_strings(strings)
    assert [(r.public_key, r.endpoint, r.allowed_ips, r.name) for r in got] == [
        (b"\x01" * 32, ("192.0.2.1", 51820), ["10.0.0.1/32"], "ok"),
        (b"\x06" * 32, ("2001:db8::6", 6), [], ""),
    ]


def test_extra_key_ep_is_reserved() -> None:
    with pytest.raises(ValueError, match="reserved"):
        Directory(ZONE).set_members([member(1, extra={"ep": "x"})])
