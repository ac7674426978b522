"""A transferred membership zone (discovery.stores.zone_membership.Layout.parse: the
mesh settings, members, address claims, invites, nonces and rendezvous a rendezvous reads
from the zone by AXFR). The zone is outside input: whoever else can write it, a damaged
server. Refusal: none -- malformed entries are dropped and counted in ZoneView.dropped.

Input layout: one record per line, ``OWNER TYPE DATA``; OWNER is relative to the zone
(labels split at '.', raw bytes; '@' the apex), TYPE is TXT, A or AAAA, DATA the TXT
strings split at NUL bytes (each cut to 255 bytes) or the address text. A line that makes
no DNS record (a label over 63 bytes, a bad address) is skipped by the harness. Invites
are sealed under a fixed TSIG secret, so seeds open and mutants reach the field checks."""

from __future__ import annotations

import functools
import ipaddress

import dns.exception
import dns.name
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.rdtypes.ANY.TXT
import dns.rdtypes.IN.A
import dns.rdtypes.IN.AAAA

from discovery.dnssd.update import ZoneContent
from discovery.enroll.tokens import SECRET_SIZE
from discovery.stores.invites import Invite
from discovery.stores.rendezvous import Member
from discovery.stores.zone_membership import (
    LAYOUT_VERSION, Layout, RendezvousEntry, _seal_key, _txt, nonce_label, seal_secret,
)
from fuzz.targets._keys import public

ALLOWED = ()
MAX_LEN = 6144            # ~60 records: every kind of entry, and fast enough to run 200,000
TOKENS = (b"\n", b" TXT ", b" A ", b" AAAA ", b"\x00", b"._members", b"._addresses",
          b"._invites", b"._nonces", b"._rendezvous", b"_meshwg", b"pub=", b"addr=", b"name=",
          b"joined=", b"invite=", b"sealed=", b"reusable=1", b"expires=", b"created=",
          b"uses=", b"seen=", b"ep=", b"enroll=", b"pin=", b"meshwg=1", b"network=", b"mesh=",
          b"1e308", b"nan", b"inf", b"-0", b"10-0-0-5", b"::", b"@")

ZONE = dns.name.from_text("mesh.example.")
TSIG_SECRET = bytes(range(32))
LAYOUT = Layout(ZONE, _seal_key(TSIG_SECRET))
_IN = dns.rdataclass.IN
_T = dns.rdatatype


@functools.lru_cache(maxsize=1 << 16)     # mutants share most lines; records are immutable
def _record(line: bytes) -> tuple[dns.name.Name, dns.rdata.Rdata] | None:
    owner, _, rest = line.partition(b" ")
    kind, _, data = rest.partition(b" ")
    try:
        name = ZONE if owner == b"@" else dns.name.Name(owner.split(b".")).concatenate(ZONE)
        if kind == b"TXT":
            rdata = dns.rdtypes.ANY.TXT.TXT(_IN, _T.TXT, [s[:255] for s in data.split(b"\x00")])
        elif kind == b"A":
            rdata = dns.rdtypes.IN.A.A(_IN, _T.A, data.decode("ascii"))
        elif kind == b"AAAA":
            rdata = dns.rdtypes.IN.AAAA.AAAA(_IN, _T.AAAA, data.decode("ascii"))
        else:
            return None
    except (dns.exception.DNSException, ValueError):
        return None
    return name, rdata


def decode(data: bytes) -> ZoneContent:
    records: dict[tuple[dns.name.Name, int], list[dns.rdata.Rdata]] = {}
    for line in data.split(b"\n"):
        record = _record(line)
        if record is not None:
            records.setdefault((record[0], record[1].rdtype), []).append(record[1])
    return ZoneContent(1, records)


def one_input(data: bytes) -> None:
    view = LAYOUT.parse(decode(data))
    network = ipaddress.ip_network(view.settings.network) if view.settings else None
    for key, member in view.members.items():
        assert view.claims.get(member.mesh_address) == key, "a member without its claim"
        assert network is None or ipaddress.ip_address(member.mesh_address) in network
        assert view.member_rrsets[key].rdtype == _T.TXT
    for label, (invite, _rrset) in view.invites.items():
        assert invite.invite_id == label and len(invite.secret) == SECRET_SIZE
    assert all(count > 0 for count in view.dropped.values())


def encode(rrsets) -> bytes:
    lines = []
    for rrset in rrsets:
        owner = b"@" if rrset.name == ZONE else b".".join(rrset.name.relativize(ZONE).labels)
        for rdata in rrset:
            if rrset.rdtype == _T.TXT:
                lines.append(owner + b" TXT " + b"\x00".join(rdata.strings))
            else:
                lines.append(owner + b" " + _T.to_text(rrset.rdtype).encode() + b" "
                             + rdata.to_text().encode())
    return b"\n".join(lines)


def _zone(network: str, addresses: list[str]) -> bytes:
    settings = _txt(LAYOUT.settings, ("meshwg", LAYOUT_VERSION), ("network", network),
                    ("mesh", "fedcba9876543210" * 2))
    rrsets = [settings]
    invite = Invite("0123456789abcdef" * 2, bytes(range(SECRET_SIZE)), False, None,
                    1_700_000_000.0, 1)
    reusable = Invite("89abcdef01234567" * 2, b"\x07" * SECRET_SIZE, True, 1_900_000_000,
                      1_700_000_100.5, 3)
    for sealed in (invite, reusable):
        rrsets.append(LAYOUT.invite_rrset(sealed, seal_secret(LAYOUT.seal_key, sealed.invite_id,
                                                               sealed.secret)))
    for i, (label, address) in enumerate(zip(("laptop", "server", "phone"), addresses)):
        key = public(f"zone member {i}")
        rrsets += [LAYOUT.member_rrset(Member(label, key, address, 1_700_000_200.0 + i,
                                              invite_id=invite.invite_id if i else None)),
                   LAYOUT.claim_rrset(address, key), LAYOUT.host_rrset(label, address)]
    rendezvous = public("rendezvous")
    rrsets += [LAYOUT.rendezvous_rrset(RendezvousEntry(rendezvous, "203.0.113.5:51820",
                                                       "203.0.113.5:51821", addresses[-1],
                                                       b"\x11" * 32)),
               LAYOUT.claim_rrset(addresses[-1], rendezvous),
               _txt(LAYOUT.nonce_name(nonce_label(b"n" * 16)), ("seen", "1700000300.25"))]
    return encode(rrsets)


def seeds() -> dict[str, bytes]:
    return {
        "zone-v4": _zone("100.64.0.0/24", ["100.64.0.2", "100.64.0.3", "100.64.0.4", "100.64.0.1"]),
        "zone-v6": _zone("fd00:1::/112", ["fd00:1::2", "fd00:1::3", "fd00:1::4", "fd00:1::1"]),
    }
