"""The mesh's membership held in a DNS zone, so that any rendezvous holding the zone's TSIG
key can enroll and revoke: the scale-out alternative to the embedded SQLite state
(discovery.stores.rendezvous), written by RFC 2136 updates (discovery.dnssd.update).

Layout under ``ZONE`` (TXT strings are ``key=value``, discovery.dnssd.txt; TTL 0):

* ``_meshwg.ZONE TXT "meshwg=1" "network=CIDR" "mesh=ID"`` -- the mesh's settings
  (the mesh network and its 32-hex-digit id), written once by :meth:`ZoneMembership.init`.
* ``B32._rendezvous.ZONE TXT "pub=KEY" "ep=HOST:PORT" "enroll=HOST:PORT" "addr=IP"
  ["pin=HEX"] ["tls=PORT"]`` -- one per rendezvous (B32: discovery.dnssd.names.instance_label
  of its key): its WireGuard key and endpoint, enrollment service, mesh address, TLS relay
  pin and TCP port (``tls=`` written by ``rendezvous run``; older entries lack it). At most
  MAX_RENDEZVOUS are read; the rendezvous serve this list to members (discovery.dnssd.zone).
* ``B32._members.ZONE TXT "name=NAME" "addr=IP" "invite=ID" "joined=UNIX"`` -- one per
  member (``invite=`` empty when added by hand).
* ``A-B-C-D._addresses.ZONE TXT "pub=KEY"`` -- the claim on a mesh address (IPv6: the
  eight exploded groups joined by '-'), by a member or a rendezvous.
* ``NAME.ZONE A|AAAA IP`` -- the member's name resolves to its mesh address (issue 10),
  and ``rendezvous-N`` names are not special: a name is taken when anything owns it.
* ``ID._invites.ZONE TXT "sealed=B64" "reusable=0|1" "expires=UNIX|" "created=UNIX"
  "uses=N"`` -- an invite. The enrollment protocol (discovery.enroll.messages) proves
  knowledge of the secret with HMAC-SHA256 keyed by it, so a rendezvous needs the secret
  itself: it is stored sealed (XChaCha20-Poly1305 under a key derived from the zone's
  TSIG secret, the invite id as associated data), never in clear; members and
  secondaries that read the zone learn nothing from it.
* ``H._nonces.ZONE TXT "seen=UNIX"`` -- H is the hex of the first 16 bytes of SHA-256 of
  an accepted enrollment request's nonce: a request replayed at another rendezvous is
  refused. Nonces older than NONCE_RETENTION are deleted by later enrollments.

Atomicity comes from prerequisites (RFC 2136 section 2.4). An enrollment is ONE update:
the name ``NAME.ZONE``, the member entry and the address claim must not exist (YXDOMAIN
otherwise), the nonce must be new, and an invite must exist exactly as read (NXRRSET
otherwise); it adds the member's entry, claim and name and replaces the invite with its
``uses`` counted. Two rendezvous racing therefore never hand out one address or one name:
the loser re-reads the zone and takes the next free address, or gets DuplicateMemberError
("name") when its name was taken. Revocation deletes the member's entry, claim, name and
directory records in one update whose prerequisite is the entry as read.

:class:`ZoneMembership` has RendezvousState's method names and return types where they
make sense (members, find_member, add_member, redeem_invite, remove_member,
allocate_address, create_invite, invite, invites, invite_members, revoke_invite,
settings). What differs: create_invite returns the Invite (secret included, for the
caller to build its token) rather than a Token; a used single-use invite stays listed
with uses=1 (as RendezvousState); update_candidates does not exist (host candidates are
the directory's: :class:`DirectoryPublisher`); refused enrollments do not record their
nonce; an unreachable server raises ZoneUnavailable (a StorageError).

:class:`DirectoryPublisher` writes the wgsd-layout records the embedded Directory serves
(discovery.dnssd.zone renders them) as the minimal diff from the zone's current content,
bounded per message. It manages the names under ``_wireguard._udp.ZONE`` and the service
enumeration PTR; member names (``NAME.ZONE``) belong to the membership. BIND holds one
RRset in at most 64 KiB, so the service's PTR set lists the first ~690 members only
(MAX_PTR_BYTES; the rest keep their SRV, TXT and A); and BIND 9.18.28+ refuses more than
100 records of one type at a name unless ``max-records-per-type 0;`` is set.

The zone is input too: entries are bounded by the transfer (discovery.dnssd.update),
malformed ones are dropped and counted in :attr:`ZoneView.dropped` by reason.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import ipaddress
import secrets
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Callable, Iterable

import dns.message
import dns.name
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.rdtypes.ANY.PTR
import dns.rdtypes.ANY.TXT
import dns.rdtypes.IN.A
import dns.rdtypes.IN.AAAA
import dns.rrset

from meshwg.core import crypto
from meshwg.core.keys import encode_key

from discovery.dnssd.member import MemberRecord, parse_published
from discovery.dnssd.names import (
    instance_label, meta_service_name, public_key_from_label, service_name,
)
from discovery.dnssd.txt import decode_pub, parse_txt, txt_pair
from discovery.dnssd.update import (
    DirectoryUnavailable, UpdateRefused, ZoneContent, ZoneWriter, batches,
)
from discovery.dnssd.wire import IN, rrset
from discovery.dnssd.zone import MAX_RENDEZVOUS, Directory   # rendezvous entries read at most
from discovery.enroll.tokens import SECRET_SIZE
from discovery.stores.errors import (
    DuplicateMemberError, MeshFullError, StateError, StateExistsError, StorageError,
    UnknownInviteError, UnknownMemberError,
)
from discovery.stores.invites import (
    REFUSAL_KEY_TAKEN, REFUSAL_MALFORMED, REFUSAL_MESH_FULL, REFUSAL_NAME_TAKEN,
    REFUSAL_REPLAYED, REFUSAL_UNKNOWN_INVITE, Invite, InviteRefusal,
)
from discovery.stores.rendezvous import MIN_INVITE_PREFIX, NONCE_RETENTION, Member
from discovery.stores.validate import (
    check_strong_key, host_address, public_key_bytes, validate_candidates, validate_name,
)
from discovery.stores.zone_directory import record_key

LAYOUT_VERSION = "1"
SETTINGS_LABEL = "_meshwg"
RENDEZVOUS_LABEL = "_rendezvous"
MEMBERS_LABEL = "_members"
ADDRESSES_LABEL = "_addresses"
INVITES_LABEL = "_invites"
NONCES_LABEL = "_nonces"
MAX_ATTEMPTS = 200            # tries of one enrollment under contention (each re-reads the zone)
MAX_NONCE_PRUNE = 32          # expired nonces one enrollment deletes
DIRECTORY_BATCH = 400         # records per directory update message
# BIND keeps an RRset in one slab of at most 64 KiB ("ran out of space" beyond: seen with
# BIND 9.18 at ~750 PTRs of 56-character instance labels), so the service's PTR set lists
# the first members up to this many bytes of uncompressed targets (4 bytes of overhead
# each); the others are published (SRV, TXT, A) but not enumerated by PTR.
MAX_PTR_BYTES = 60_000
TIME_BOUND = 1e11             # unix seconds (year 5138): times read from the zone are below it
_SEAL_CONTEXT = b"meshwg zone invite seal v1"
_XNONCE = 24
_T = dns.rdatatype


class ZoneUnavailable(StorageError):
    """The zone's server cannot be reached or answered nonsense; try again later."""


@dataclass(frozen=True)
class MeshSettings:
    """The mesh's settings from ``_meshwg.ZONE``."""

    network: str
    mesh_id: str
    version: str = LAYOUT_VERSION


@dataclass(frozen=True)
class RendezvousEntry:
    """One rendezvous as ``B32._rendezvous.ZONE`` lists it."""

    public_key: bytes
    endpoint: str
    enroll: str
    mesh_address: str
    pin: bytes = b""
    relay_tcp_port: int = 0         # its relay over TLS on TCP (0: none, or an older entry)


def rendezvous_pairs(entry: RendezvousEntry) -> list[tuple[str, str]]:
    """The ``key=value`` pairs of a rendezvous's TXT record (zone entry and the list the
    rendezvous serve to members alike)."""
    pairs = [("pub", encode_key(entry.public_key)), ("ep", entry.endpoint),
             ("enroll", entry.enroll), ("addr", entry.mesh_address)]
    if entry.pin:
        pairs.append(("pin", entry.pin.hex()))
    if entry.relay_tcp_port:
        pairs.append(("tls", str(entry.relay_tcp_port)))
    return pairs


def parse_rendezvous(fields: dict[str, str] | None, network: ipaddress._BaseNetwork | None,
                     key: bytes | None = None) -> RendezvousEntry | str:
    """The entry in a rendezvous's TXT fields, or why it is dropped: a pub= that is no
    strong key (or not `key`, the owner's), an ep=/enroll= that is no IP:PORT, an addr=
    outside `network`, a pin= that is not 32 bytes, a tls= that is no port. ``tls=`` is
    optional (entries written before it parse, with 0)."""
    if fields is None:
        return "not one TXT record"
    pub = decode_pub(fields.get("pub", ""))
    if pub is None or (key is not None and pub != key):
        return "not one TXT with its pub="
    try:
        check_strong_key(pub)
    except ValueError:
        return "weak pub="
    address = Layout._address(fields.get("addr", ""), network)
    tls = fields.get("tls", "0") or "0"
    try:
        pin = bytes.fromhex(fields.get("pin", ""))
        endpoint = fields.get("ep", "")
        enroll = fields.get("enroll", "")
        for text in (endpoint, enroll):
            parse_published(text, "rendezvous")
    except ValueError:
        return "bad ep, enroll or pin"
    if address is None or len(pin) not in (0, 32):
        return "bad addr or pin"
    if not (tls.isdigit() and len(tls) <= 5 and int(tls) <= 65535):
        return "bad tls port"
    return RendezvousEntry(pub, endpoint, enroll, address, pin, int(tls))


def served_strings(entries: list[RendezvousEntry]) -> list[tuple[bytes, ...]]:
    """The rendezvous list a rendezvous serves its members (discovery.dnssd.zone's
    ``_rendezvous.ZONE``): each entry's zone TXT strings, ordered by mesh address."""
    return [tuple(txt_pair(k, v) for k, v in rendezvous_pairs(e))
            for e in sorted(entries, key=lambda e: e.mesh_address)][:MAX_RENDEZVOUS]


def served_rendezvous(records: list[tuple[bytes, ...]], network: str
                      ) -> tuple[list[RendezvousEntry], Counter]:
    """What a member reads in the list its rendezvous serves: (the rendezvous, records
    dropped by reason). Each record is checked as the zone's entries are
    (:func:`parse_rendezvous`: key, ports, address inside `network`, pin); at most
    MAX_RENDEZVOUS records are read, a repeated key counts once."""
    dropped: Counter = Counter()
    entries: dict[bytes, RendezvousEntry] = {}
    net = ipaddress.ip_network(network)
    for index, strings in enumerate(records):
        entry = parse_rendezvous(parse_txt(strings), net) if index < MAX_RENDEZVOUS \
            else "too many rendezvous"
        if not isinstance(entry, str) and entry.public_key in entries:
            entry = "repeated key"
        if isinstance(entry, str):
            dropped[entry] += 1
            continue
        entries[entry.public_key] = entry
    return list(entries.values()), dropped


@dataclass
class ZoneView:
    """The membership parsed from one zone transfer (no I/O): what is valid, the RRsets
    as read (for value-dependent prerequisites), and what was dropped, by reason."""

    serial: int = 0
    settings: MeshSettings | None = None
    members: dict[bytes, Member] = field(default_factory=dict)
    member_rrsets: dict[bytes, dns.rrset.RRset] = field(default_factory=dict)
    rendezvous: dict[bytes, RendezvousEntry] = field(default_factory=dict)
    claims: dict[str, bytes] = field(default_factory=dict)          # address -> key
    names: set[str] = field(default_factory=set)                    # labels in use at NAME.ZONE
    invites: dict[str, tuple[Invite, dns.rrset.RRset]] = field(default_factory=dict)
    nonces: dict[str, float] = field(default_factory=dict)          # label -> seen at
    dropped: Counter = field(default_factory=Counter)

    def find(self, ref: str | bytes) -> Member | None:
        """The member whose name, mesh address or public key (bytes or base64) is `ref`."""
        if isinstance(ref, bytes):
            return self.members.get(ref)
        for member in self.members.values():
            if ref in (member.name, member.mesh_address):
                return member
        try:
            return self.members.get(public_key_bytes(ref))
        except ValueError:
            return None


# ---------------------------------------------------------------- layout (no I/O)


def address_label(address: str) -> str:
    """``10-0-0-5`` for 10.0.0.5; IPv6 as its eight exploded groups joined by '-'.
    ValueError for anything but an IP literal."""
    ip = ipaddress.ip_address(address)
    text = ip.exploded if ip.version == 6 else str(ip)
    return text.replace(".", "-").replace(":", "-")


def address_from_label(label: str) -> str:
    """Inverse of :func:`address_label` (canonical IP text). ValueError."""
    parts = label.split("-")
    if len(parts) == 4:
        return str(ipaddress.IPv4Address(".".join(parts)))
    if len(parts) == 8 and all(len(p) == 4 for p in parts):
        return str(ipaddress.IPv6Address(":".join(parts)))
    raise ValueError(f"address label {label!r} is not an IP address")


def _txt(owner: dns.name.Name, *pairs: tuple[str, str]) -> dns.rrset.RRset:
    strings = [txt_pair(k, v) for k, v in pairs]
    return rrset(owner, _T.TXT, dns.rdtypes.ANY.TXT.TXT(IN, _T.TXT, strings))


def _txt_fields(rrsets: list[dns.rrset.RRset]) -> dict[str, str] | None:
    """Fields of the one TXT record among `rrsets`, None unless exactly one."""
    txts = [r for r in rrsets if r.rdtype == _T.TXT]
    if len(txts) != 1 or len(txts[0]) != 1:
        return None
    return parse_txt(txts[0][0].strings)


def _float(text: str | None) -> float | None:
    try:
        value = float(text or "")
    except ValueError:
        return None
    return value if 0 <= value < TIME_BOUND else None


def _seal_key(tsig_secret: bytes) -> bytes:
    return crypto.kdf(tsig_secret, _SEAL_CONTEXT, 1)[0]


def seal_secret(seal_key: bytes, invite_id: str, secret: bytes) -> str:
    """The ``sealed=`` value: base64(nonce || XChaCha20-Poly1305(secret, aad=invite id))."""
    nonce = secrets.token_bytes(_XNONCE)
    return base64.b64encode(nonce + crypto.xaead_seal(seal_key, nonce, secret,
                                                      invite_id.encode())).decode()


def open_secret(seal_key: bytes, invite_id: str, sealed: str) -> bytes | None:
    """Inverse of :func:`seal_secret`; None when it does not open (another key, damage)."""
    try:
        raw = base64.b64decode(sealed, validate=True)
    except (binascii.Error, ValueError):
        return None
    if len(raw) != _XNONCE + SECRET_SIZE + 16:
        return None
    try:
        secret = crypto.xaead_open(seal_key, raw[:_XNONCE], raw[_XNONCE:], invite_id.encode())
    except crypto.DecryptionError:
        return None
    return secret


def nonce_label(nonce: bytes) -> str:
    return hashlib.sha256(nonce).hexdigest()[:32]


class Layout:
    """The names of the layout in one zone, and the parser of a transfer (no I/O)."""

    def __init__(self, zone: dns.name.Name, seal_key: bytes):
        self.zone = zone
        self.seal_key = seal_key
        self.settings = self._under(SETTINGS_LABEL)
        self.rendezvous_parent = self._under(RENDEZVOUS_LABEL)
        self.members_parent = self._under(MEMBERS_LABEL)
        self.addresses_parent = self._under(ADDRESSES_LABEL)
        self.invites_parent = self._under(INVITES_LABEL)
        self.nonces_parent = self._under(NONCES_LABEL)

    def _under(self, *labels: str, parent: dns.name.Name | None = None) -> dns.name.Name:
        return dns.name.Name(labels).concatenate(parent or self.zone)

    def member_name(self, key: bytes) -> dns.name.Name:
        return self._under(instance_label(key), parent=self.members_parent)

    def rendezvous_name(self, key: bytes) -> dns.name.Name:
        return self._under(instance_label(key), parent=self.rendezvous_parent)

    def claim_name(self, address: str) -> dns.name.Name:
        return self._under(address_label(address), parent=self.addresses_parent)

    def host_name(self, name: str) -> dns.name.Name:
        return self._under(name)

    def invite_name(self, invite_id: str) -> dns.name.Name:
        return self._under(invite_id, parent=self.invites_parent)

    def nonce_name(self, label: str) -> dns.name.Name:
        return self._under(label, parent=self.nonces_parent)

    # -- records

    def member_rrset(self, member: Member) -> dns.rrset.RRset:
        return _txt(self.member_name(member.public_key), ("name", member.name),
                    ("addr", member.mesh_address), ("invite", member.invite_id or ""),
                    ("joined", repr(float(member.joined_at))))

    def claim_rrset(self, address: str, key: bytes) -> dns.rrset.RRset:
        return _txt(self.claim_name(address), ("pub", encode_key(key)))

    def host_rrset(self, name: str, address: str) -> dns.rrset.RRset:
        ip = ipaddress.ip_address(address)
        owner = self.host_name(name)
        if ip.version == 4:
            out = rrset(owner, _T.A, dns.rdtypes.IN.A.A(IN, _T.A, str(ip)))
        else:
            out = rrset(owner, _T.AAAA, dns.rdtypes.IN.AAAA.AAAA(IN, _T.AAAA, str(ip)))
        return out

    def invite_rrset(self, invite: Invite, sealed: str) -> dns.rrset.RRset:
        return _txt(self.invite_name(invite.invite_id), ("sealed", sealed),
                    ("reusable", "1" if invite.reusable else "0"),
                    ("expires", "" if invite.expires_at is None else str(invite.expires_at)),
                    ("created", repr(float(invite.created_at))), ("uses", str(invite.uses)))

    def rendezvous_rrset(self, entry: RendezvousEntry) -> dns.rrset.RRset:
        return _txt(self.rendezvous_name(entry.public_key), *rendezvous_pairs(entry))

    # -- parsing

    def parse(self, content: ZoneContent) -> ZoneView:
        """The membership in `content`; malformed entries dropped and counted by reason."""
        view = ZoneView(serial=content.serial)
        parsers = {MEMBERS_LABEL: self._member, ADDRESSES_LABEL: self._claim,
                   INVITES_LABEL: self._invite, NONCES_LABEL: self._nonce,
                   RENDEZVOUS_LABEL: self._rendezvous}
        depth = len(self.zone)
        groups: dict[dns.name.Name, list[dns.rrset.RRset]] = {}
        for name, rdtype in content.records:
            if len(name) == depth + 1:
                view.names.add(name.labels[0].decode("ascii", "replace").lower())
                if name != self.settings:
                    continue
            elif len(name) != depth + 2 or \
                    name.labels[1].decode("ascii", "replace").lower() not in parsers:
                continue
            rr = content.rrset(name, rdtype)
            if rr is not None:
                groups.setdefault(name, []).append(rr)
        settings = groups.pop(self.settings, None)
        if settings is not None:
            view.settings = self._settings(settings, view.dropped)
        network = ipaddress.ip_network(view.settings.network) if view.settings else None
        for name, rrsets in groups.items():
            parent = name.labels[1].decode("ascii", "replace").lower()
            label = name.labels[0].decode("ascii", "replace").lower()
            reason = parsers[parent](view, label, rrsets, network)
            if reason:
                view.dropped[f"{parent}: {reason}"] += 1
        # a member counts only with its claim (the one update writes both)
        for key, member in list(view.members.items()):
            if view.claims.get(member.mesh_address) != key:
                del view.members[key]
                del view.member_rrsets[key]
                view.dropped[f"{MEMBERS_LABEL}: no matching address claim"] += 1
        return view

    @staticmethod
    def _settings(rrsets: list[dns.rrset.RRset], dropped: Counter) -> MeshSettings | None:
        fields = _txt_fields(rrsets)
        if fields is None or fields.get("meshwg") != LAYOUT_VERSION:
            dropped[f"{SETTINGS_LABEL}: not one TXT of layout {LAYOUT_VERSION}"] += 1
            return None
        try:
            network = str(ipaddress.ip_network(fields.get("network", ""), strict=True))
        except ValueError:
            dropped[f"{SETTINGS_LABEL}: bad network"] += 1
            return None
        mesh_id = fields.get("mesh", "")
        if len(mesh_id) != 32 or any(c not in "0123456789abcdef" for c in mesh_id):
            dropped[f"{SETTINGS_LABEL}: bad mesh id"] += 1
            return None
        return MeshSettings(network, mesh_id)

    @staticmethod
    def _address(text: str, network: ipaddress._BaseNetwork | None) -> str | None:
        try:
            ip = ipaddress.ip_address(text)
        except ValueError:
            return None
        if network is not None and ip not in network:
            return None
        return str(ip)

    def _member(self, view: ZoneView, label: str, rrsets: list[dns.rrset.RRset],
                network: ipaddress._BaseNetwork | None) -> str:
        try:
            key = public_key_from_label(label)
        except ValueError:
            return "label is not a key"
        fields = _txt_fields(rrsets)
        if fields is None:
            return "not one TXT record"
        try:
            name = validate_name(fields.get("name", ""))
        except ValueError:
            return "bad name"
        address = self._address(fields.get("addr", ""), network)
        joined = _float(fields.get("joined"))
        invite = fields.get("invite", "")
        if address is None or joined is None or len(invite) > 64:
            return "bad addr, joined or invite"
        view.members[key] = Member(name, key, address, joined, invite_id=invite or None)
        view.member_rrsets[key] = next(r for r in rrsets if r.rdtype == _T.TXT)
        return ""

    def _claim(self, view: ZoneView, label: str, rrsets: list[dns.rrset.RRset],
               network: ipaddress._BaseNetwork | None) -> str:
        try:
            address = address_from_label(label)
        except ValueError:
            return "label is not an address"
        fields = _txt_fields(rrsets)
        key = decode_pub((fields or {}).get("pub", ""))
        if key is None:
            return "no valid pub="
        view.claims[address] = key      # counted even outside the network: never reused
        return ""

    def _invite(self, view: ZoneView, label: str, rrsets: list[dns.rrset.RRset],
                network: ipaddress._BaseNetwork | None) -> str:
        if len(label) != 32 or any(c not in "0123456789abcdef" for c in label):
            return "label is not an invite id"
        fields = _txt_fields(rrsets)
        if fields is None:
            return "not one TXT record"
        secret = open_secret(self.seal_key, label, fields.get("sealed", ""))
        created = _float(fields.get("created"))
        expires_text = fields.get("expires", "")
        expires = None if expires_text == "" else _float(expires_text)
        uses = _float(fields.get("uses"))
        if secret is None:
            return "secret does not open (another key?)"
        if created is None or uses is None or (expires_text and expires is None) \
                or fields.get("reusable") not in ("0", "1"):
            return "bad fields"
        invite = Invite(label, secret, fields["reusable"] == "1",
                        None if expires is None else int(expires), created, int(uses))
        view.invites[label] = (invite, next(r for r in rrsets if r.rdtype == _T.TXT))
        return ""

    def _nonce(self, view: ZoneView, label: str, rrsets: list[dns.rrset.RRset],
               network: ipaddress._BaseNetwork | None) -> str:
        seen = _float((_txt_fields(rrsets) or {}).get("seen"))
        # kept even when malformed: a replay must never pass because an entry is damaged
        view.nonces[label] = 0.0 if seen is None else seen
        return "" if seen is not None else "bad seen="

    def _rendezvous(self, view: ZoneView, label: str, rrsets: list[dns.rrset.RRset],
                    network: ipaddress._BaseNetwork | None) -> str:
        if len(view.rendezvous) >= MAX_RENDEZVOUS:
            return "too many rendezvous"
        try:
            key = public_key_from_label(label)
        except ValueError:
            return "label is not a key"
        entry = parse_rendezvous(_txt_fields(rrsets), network, key)
        if isinstance(entry, str):
            return entry
        view.rendezvous[key] = entry
        return ""


# ---------------------------------------------------------------- the store


class ZoneMembership:
    """The mesh's membership in a zone (see the module docstring). Thread-safe (each call
    reads the zone anew when its serial moved and writes with one update)."""

    def __init__(self, writer: ZoneWriter):
        self.writer = writer
        self.zone = writer.zone
        self.layout = Layout(self.zone, _seal_key(writer.tsig.secret))
        self._lock = threading.Lock()
        self._view: ZoneView | None = None
        self.content: ZoneContent | None = None

    # -- reading

    def last_view(self) -> ZoneView | None:
        """The view read last (no I/O; None before the first read)."""
        with self._lock:
            return self._view

    def view(self) -> ZoneView:
        """The membership as the server holds it now (re-transferred when the SOA serial
        changed since the last read: the changes since then by IXFR where the server has
        them, ZoneWriter.read_since). ZoneUnavailable when the server cannot be read."""
        try:
            serial = self.writer.serial()
            with self._lock:
                if self._view is not None and self._view.serial == serial:
                    return self._view
                since = self.content
            content = self.writer.read_since(since)    # IXFR from the last read, else AXFR
            view = self.layout.parse(content)
        except DirectoryUnavailable as exc:
            raise ZoneUnavailable(str(exc)) from None
        with self._lock:
            self._view = view
            self.content = content      # the transfer it was parsed from (directory records)
        return view

    def _own_update(self, view: ZoneView, change: Callable[[ZoneView], None]) -> None:
        """Our update, decided on `view` (serial S), has landed: the cached view becomes
        `view` with `change` applied, taken to be serial S + 1. Each update that changes
        the zone increments its serial (RFC 2136 section 3.6), so a server found at S + 1
        holds exactly our update since S; at any other serial :meth:`view` reads the zone
        again. One writer then enrolls without a transfer per enrollment."""
        with self._lock:
            if self._view is not view:
                return
            patched = ZoneView(
                serial=(view.serial + 1) % (1 << 32), settings=view.settings,
                members=dict(view.members), member_rrsets=dict(view.member_rrsets),
                rendezvous=dict(view.rendezvous), claims=dict(view.claims),
                names=set(view.names), invites=dict(view.invites), nonces=dict(view.nonces),
                dropped=Counter(view.dropped))
            change(patched)
            self._view = patched

    def settings(self) -> MeshSettings:
        settings = self.view().settings
        if settings is None:
            raise StateError(f"zone {self.zone}: no mesh settings at "
                             f"{self.layout.settings} (create them with init)")
        return settings

    def members(self) -> list[Member]:
        """All members, in order of joining."""
        return sorted(self.view().members.values(), key=lambda m: (m.joined_at, m.name))

    def find_member(self, ref: str | bytes) -> Member | None:
        return self.view().find(ref)

    def rendezvous(self) -> list[RendezvousEntry]:
        return list(self.view().rendezvous.values())

    def invite(self, invite_id: str) -> Invite | None:
        entry = self.view().invites.get(invite_id)
        return entry[0] if entry else None

    def invites(self) -> list[Invite]:
        """Every invite not revoked, oldest first (used-up and expired ones included)."""
        return sorted((i for i, _ in self.view().invites.values()), key=lambda i: i.created_at)

    def invite_members(self, invite_id: str) -> list[str]:
        return [m.name for m in self.members() if m.invite_id == invite_id]

    def allocate_address(self) -> str:
        """The first free host address (MeshFullError when none); it is not reserved."""
        view = self.view()
        return self._first_free(view, set())

    # -- writing

    def _send(self, update, what: str) -> None:
        try:
            self.writer.send(update, what)
        except DirectoryUnavailable as exc:
            raise ZoneUnavailable(str(exc)) from None

    def init(self, network: str, mesh_id: str | None = None) -> MeshSettings:
        """Write the mesh settings (once: StateExistsError when the zone has them)."""
        try:
            net = ipaddress.ip_network(network, strict=True)
        except ValueError as exc:
            raise StateError(f"network {network!r}: {exc}") from None
        if net.num_addresses < 4:
            raise StateError(f"network {network!r} has room for fewer than 2 hosts")
        settings = MeshSettings(str(net), mesh_id or secrets.token_hex(16))
        update = self.writer.new_update()
        update.absent(self.layout.settings)
        update.add(self.layout.settings, _txt(self.layout.settings, ("meshwg", LAYOUT_VERSION),
                                              ("network", settings.network),
                                              ("mesh", settings.mesh_id)))
        try:
            self._send(update, "mesh settings")
        except UpdateRefused as exc:
            if exc.rcode == dns.rcode.YXDOMAIN:
                raise StateExistsError(f"zone {self.zone} already holds mesh settings "
                                       f"({self.layout.settings})") from None
            raise
        return settings

    def _first_free(self, view: ZoneView, skip: set[str]) -> str:
        if view.settings is None:
            raise StateError(f"zone {self.zone}: no mesh settings (create them with init)")
        net = ipaddress.ip_network(view.settings.network)
        for ip in net.hosts():
            text = str(ip)
            if text not in view.claims and text not in skip:
                return text
        raise MeshFullError(f"no free address left in {net} ({len(view.claims)} taken)")

    def _check_address(self, view: ZoneView, address: str) -> str:
        if view.settings is None:
            raise StateError(f"zone {self.zone}: no mesh settings (create them with init)")
        try:
            ip = host_address(view.settings.network, address)
        except ValueError as exc:
            raise StateError(str(exc)) from None
        if ip in view.claims:
            raise DuplicateMemberError("address", f"address {ip} is already claimed in "
                                       f"zone {self.zone}")
        return ip

    def _claim_loop(self, address: str | None,
                    attempt: Callable[[ZoneView, str], tuple | None]) -> tuple:
        """Run `attempt(view, address)` until its update lands: it returns None when its
        prerequisites failed (the next try re-reads; an automatically chosen address
        that lost is skipped) or the result. Bounded by MAX_ATTEMPTS."""
        skip: set[str] = set()
        for _ in range(MAX_ATTEMPTS):
            view = self.view()
            chosen = self._check_address(view, address) if address else self._first_free(view, skip)
            result = attempt(view, chosen)
            if result is not None:
                return result
            skip.add(chosen)
        raise ZoneUnavailable(f"zone {self.zone}: {MAX_ATTEMPTS} enrollment attempts lost "
                              f"races; try again")

    def _enroll(self, name: str, public_key: bytes, address: str | None, now: float,
                invite_id: str | None = None, nonce: bytes | None = None) -> Member:
        layout = self.layout

        def attempt(view: ZoneView, chosen: str) -> tuple | None:
            self._check_free(view, name, public_key)
            if invite_id is not None:       # again at every try: a racer may have used it
                self._check_invite(view, invite_id, now)
            member = Member(name, public_key, chosen, now, invite_id=invite_id)
            update = self.writer.new_update()
            host = layout.host_name(name)
            member_owner = layout.member_name(public_key)
            claim_owner = layout.claim_name(chosen)
            for owner in (host, member_owner, claim_owner):
                update.absent(owner)
            update.add(member_owner, layout.member_rrset(member))
            update.add(claim_owner, layout.claim_rrset(chosen, public_key))
            update.add(host, layout.host_rrset(name, chosen))
            if invite_id is not None:
                invite, invite_rrset = view.invites[invite_id]
                update.present(invite_rrset.name, invite_rrset)
                counted = Invite(invite.invite_id, invite.secret, invite.reusable,
                                 invite.expires_at, invite.created_at, invite.uses + 1)
                sealed = parse_txt(invite_rrset[0].strings)["sealed"]
                update.replace(invite_rrset.name, layout.invite_rrset(counted, sealed))
            pruned: list[str] = []
            if nonce is not None:
                label = nonce_label(nonce)
                update.absent(layout.nonce_name(label))
                update.add(layout.nonce_name(label), _txt(layout.nonce_name(label),
                                                          ("seen", str(int(now)))))
                old = [n for n, seen in view.nonces.items() if seen < now - NONCE_RETENTION]
                pruned = old[:MAX_NONCE_PRUNE]
                for stale in pruned:
                    update.delete(layout.nonce_name(stale))
            try:
                self._send(update, f"enrollment of {name!r} at {chosen}")
            except UpdateRefused as exc:
                if exc.rcode in (dns.rcode.YXDOMAIN, dns.rcode.NXRRSET, dns.rcode.YXRRSET):
                    if invite_id is not None:
                        self._check_invite(self.view(), invite_id, now)
                    if address is not None and self.view().claims.get(chosen) is not None:
                        self._check_free(self.view(), name, public_key)
                        raise DuplicateMemberError("address", f"address {chosen} was claimed "
                                                   f"meanwhile in zone {self.zone}") from None
                    return None
                raise

            def change(patched: ZoneView) -> None:
                patched.members[public_key] = member
                patched.member_rrsets[public_key] = layout.member_rrset(member)
                patched.claims[chosen] = public_key
                patched.names.add(name)
                if invite_id is not None:
                    patched.invites[invite_id] = (counted, layout.invite_rrset(counted, sealed))
                if nonce is not None:
                    patched.nonces[nonce_label(nonce)] = float(int(now))
                for stale in pruned:
                    patched.nonces.pop(stale, None)

            self._own_update(view, change)
            return (member,)

        return self._claim_loop(address, attempt)[0]

    def _check_free(self, view: ZoneView, name: str, public_key: bytes) -> None:
        if name in view.names or any(m.name == name for m in view.members.values()):
            raise DuplicateMemberError("name", f"member name {name!r} is already taken in "
                                       f"zone {self.zone}")
        if public_key in view.members or public_key in view.rendezvous:
            owner = view.members[public_key].name if public_key in view.members else "a rendezvous"
            raise DuplicateMemberError("public_key", f"public key {encode_key(public_key)} is "
                                       f"already enrolled as {owner!r}")

    def add_member(self, name: str, public_key: bytes, address: str | None = None,
                   host_candidates: list[str] | None = None, now: float | None = None) -> Member:
        """Enroll by hand (address None = first free); DuplicateMemberError if the name,
        key or a given address is taken. `host_candidates` are checked, not stored (they
        are the directory's)."""
        try:
            validate_name(name)
            public_key = check_strong_key(public_key_bytes(public_key))
            validate_candidates(host_candidates or [])
        except ValueError as exc:
            raise StateError(str(exc)) from None
        return self._enroll(name, public_key, address, time.time() if now is None else now)

    def _check_invite(self, view: ZoneView, invite_id: str, now: float) -> None:
        entry = view.invites.get(invite_id)
        if entry is None:
            raise InviteRefusal(REFUSAL_UNKNOWN_INVITE,
                                "the rendezvous does not know this invite (revoked?)")
        refusal = entry[0].refusal(now)
        if refusal is not None:
            raise refusal

    def redeem_invite(self, invite_id: str, nonce: bytes, name: str, public_key: bytes,
                      host_candidates: list[str], now: float) -> Member:
        """As RendezvousState.redeem_invite: check the invite, add the member, count the
        use and record the nonce, in one update. A retry (same invite, name and key as an
        existing member) returns that member. Raises InviteRefusal."""
        try:
            validate_name(name)
            public_key = check_strong_key(public_key_bytes(public_key))
            validate_candidates(host_candidates)
        except ValueError as exc:
            raise InviteRefusal(REFUSAL_MALFORMED, str(exc)) from None
        view = self.view()
        existing = view.members.get(public_key)
        if existing is not None and existing.name == name and existing.invite_id == invite_id:
            return existing
        if nonce_label(nonce) in view.nonces:
            raise InviteRefusal(REFUSAL_REPLAYED, "this request was already received "
                                                  "(replayed request)")
        self._check_invite(view, invite_id, now)
        try:
            return self._enroll(name, public_key, None, now, invite_id, nonce)
        except DuplicateMemberError as exc:
            code = REFUSAL_NAME_TAKEN if exc.what == "name" else REFUSAL_KEY_TAKEN
            raise InviteRefusal(code, str(exc)) from None
        except MeshFullError as exc:
            raise InviteRefusal(REFUSAL_MESH_FULL, str(exc)) from None

    def remove_member(self, ref: str | bytes, revoke_invite: bool = False) -> Member:
        """Remove by name, mesh address or public key in one update: its entry, address
        claim, name and directory records (and with `revoke_invite` the invite it enrolled
        with). UnknownMemberError if none matches."""
        for _ in range(MAX_ATTEMPTS):
            view = self.view()
            member = view.find(ref)
            if member is None:
                raise UnknownMemberError(f"no member with name, address or public key "
                                         f"{ref if isinstance(ref, str) else encode_key(ref)!r} "
                                         f"in zone {self.zone}")
            entry = view.member_rrsets[member.public_key]
            update = self.writer.new_update()
            update.present(entry.name, entry)
            update.delete(entry.name)
            update.delete(self.layout.claim_name(member.mesh_address))
            update.delete(self.layout.host_name(member.name))
            instance = dns.name.Name((instance_label(member.public_key),)).concatenate(
                service_name(self.zone))
            update.delete(instance)
            update.delete(service_name(self.zone), _T.PTR, instance.to_text())
            if revoke_invite and member.invite_id:
                update.delete(self.layout.invite_name(member.invite_id))
            try:
                self._send(update, f"removal of {member.name!r}")
            except UpdateRefused as exc:
                if exc.rcode == dns.rcode.NXRRSET:
                    continue            # changed meanwhile: look again
                raise

            def change(patched: ZoneView, member: Member = member) -> None:
                del patched.members[member.public_key], patched.member_rrsets[member.public_key]
                patched.claims.pop(member.mesh_address, None)
                patched.names.discard(member.name)
                if revoke_invite and member.invite_id:
                    patched.invites.pop(member.invite_id, None)

            self._own_update(view, change)
            return member
        raise ZoneUnavailable(f"zone {self.zone}: removal kept losing races; try again")

    def register_rendezvous(self, public_key: bytes, endpoint: str, enroll: str,
                            pin: bytes = b"", address: str | None = None) -> RendezvousEntry:
        """List a rendezvous and claim its mesh address (first free unless given) in one
        update; an already listed key returns its entry."""
        existing = self.view().rendezvous.get(public_key)
        if existing is not None:
            return existing
        layout = self.layout

        def attempt(view: ZoneView, chosen: str) -> tuple | None:
            entry = RendezvousEntry(public_key, endpoint, enroll, chosen, pin)
            update = self.writer.new_update()
            owner = layout.rendezvous_name(public_key)
            update.absent(owner)
            update.absent(layout.claim_name(chosen))
            update.add(owner, layout.rendezvous_rrset(entry))
            update.add(layout.claim_name(chosen), layout.claim_rrset(chosen, public_key))
            try:
                self._send(update, f"rendezvous {encode_key(public_key)} at {chosen}")
            except UpdateRefused as exc:
                if exc.rcode == dns.rcode.YXDOMAIN:
                    return None
                raise
            return (entry,)

        return self._claim_loop(address, attempt)[0]

    def update_rendezvous(self, entry: RendezvousEntry) -> None:
        """Replace a listed rendezvous's TXT record with `entry` (its mesh address kept
        as listed: the claim does not move). UnknownMemberError when it is not listed
        (the prerequisite: its name exists), ZoneUnavailable, UpdateRefused."""
        owner = self.layout.rendezvous_name(entry.public_key)
        update = self.writer.new_update()
        update.present(owner)
        update.replace(owner, self.layout.rendezvous_rrset(entry))
        try:
            self._send(update, f"rendezvous {encode_key(entry.public_key)}")
        except UpdateRefused as exc:
            if exc.rcode == dns.rcode.NXDOMAIN:
                raise UnknownMemberError(f"rendezvous {encode_key(entry.public_key)} is not "
                                         f"listed in zone {self.zone}") from None
            raise

    def create_invite(self, reusable: bool = False, expires_in: float | None = None,
                      now: float | None = None) -> Invite:
        """Record a new invite (expires_in seconds; None = never) and return it, secret
        included: the caller builds the token (discovery.enroll.tokens)."""
        if expires_in is not None and expires_in <= 0:
            raise StateError(f"invite lifetime {expires_in!r} s must be positive")
        now = time.time() if now is None else now
        if expires_in is not None and now + expires_in >= TIME_BOUND:
            raise StateError(f"invite lifetime {expires_in!r} s ends after the directory's "
                             f"last time ({int(TIME_BOUND)} unix seconds): the invite could "
                             f"not be read back")
        invite = Invite(secrets.token_hex(16), secrets.token_bytes(SECRET_SIZE), reusable,
                        None if expires_in is None else int(now + expires_in), now, 0)
        owner = self.layout.invite_name(invite.invite_id)
        update = self.writer.new_update()
        update.absent(owner)
        update.add(owner, self.layout.invite_rrset(
            invite, seal_secret(self.layout.seal_key, invite.invite_id, invite.secret)))
        self._send(update, "new invite")
        return invite

    def revoke_invite(self, ref: str) -> Invite:
        """Withdraw the invite whose id is `ref` or starts with it (at least
        MIN_INVITE_PREFIX hex digits). UnknownInviteError when none or several match."""
        ref = ref.strip().lower()
        if len(ref) < MIN_INVITE_PREFIX or any(c not in "0123456789abcdef" for c in ref):
            raise UnknownInviteError(f"invite id {ref!r}: give at least {MIN_INVITE_PREFIX} "
                                     f"hex digits of an id `meshwg invites` lists")
        matches = [i for i in self.invites() if i.invite_id.startswith(ref)]
        if len(matches) != 1:
            raise UnknownInviteError(f"invite id {ref!r} matches "
                                     f"{'no invite' if not matches else f'{len(matches)} invites'}")
        owner = self.layout.invite_name(matches[0].invite_id)
        update = self.writer.new_update()
        update.present(owner)
        update.delete(owner)
        try:
            self._send(update, f"revocation of invite {matches[0].invite_id}")
        except UpdateRefused as exc:
            if exc.rcode == dns.rcode.NXDOMAIN:
                raise UnknownInviteError(f"invite id {ref!r} was revoked meanwhile") from None
            raise
        return matches[0]


# ---------------------------------------------------------------- the directory


def _axfr_records(directory: Directory) -> list[dns.rrset.RRset]:
    """The records the embedded Directory serves (its AXFR, SOA left out), so the zone
    on the DNS server gets exactly what the embedded server would answer."""
    query = dns.message.make_query(directory.zone, _T.AXFR)
    out: list[dns.rrset.RRset] = []
    for wire in directory.transfer(query):
        message = dns.message.from_wire(wire, one_rr_per_rrset=True)
        out += [r for r in message.answer if r.rdtype != _T.SOA]
    return out


class DirectoryPublisher:
    """Writes the wgsd-layout directory into the zone as minimal diff updates.

    :meth:`publish` renders `records` with discovery.dnssd.zone.Directory, reads the
    zone, and sends only what differs (whole RRsets replaced, the service's PTR set
    changed record by record), at most `batch` records per update message; a re-publish
    while the zone's serial is still the one it left diffs member records instead (no
    transfer, no rendering of unchanged members). :meth:`write` writes some members'
    records and leaves the others alone: what each of several rendezvous does with the
    members it observes (discovery.stores.zone_directory, discovery.daemons.zone_publish).
    Not thread-safe: one thread per publisher."""

    def __init__(self, writer: ZoneWriter, batch: int = DIRECTORY_BATCH,
                 max_ptr_bytes: int = MAX_PTR_BYTES):
        self.writer = writer
        self.batch = batch
        self.max_ptr_bytes = max_ptr_bytes
        self.zone = writer.zone
        self.service = service_name(self.zone)
        self.meta_service = meta_service_name(self.zone)
        self.updates_sent = 0
        self.unlisted = 0           # members left out of the PTR set by the last diff
        # what the last publish() left in the zone: (serial, {key: record_key}); None when
        # unknown (another writer may have changed the zone since)
        self._last: tuple[int, dict[bytes, tuple]] | None = None
        self._ptrs: dict[bytes, int] | None = None    # PTR targets (wire -> size) as known

    def _managed(self, name: dns.name.Name, rdtype: int) -> bool:
        if name.is_subdomain(self.service):
            return True
        return rdtype == _T.PTR and name == self.meta_service

    def diff(self, records: list[MemberRecord], content: ZoneContent,
             prune: bool = True) -> list[tuple[str, dns.rrset.RRset]]:
        """The (op, rrset) changes turning `content` into the directory of `records`:
        op is "replace", "add" or "delete" (delete exactly these records; an empty
        RRset deletes the whole RRset). With `prune` False nothing is deleted but
        changed RRsets (other writers' members stay)."""
        directory = Directory(self.zone)
        directory.set_members(records)
        wanted: dict[tuple[dns.name.Name, int], list[dns.rdata.Rdata]] = {}
        for rr in _axfr_records(directory):
            if self._managed(rr.name, rr.rdtype):
                wanted.setdefault((rr.name, rr.rdtype), []).extend(rr)
        current = {k: v for k, v in content.records.items() if self._managed(*k)}
        changes: list[tuple[str, dns.rrset.RRset]] = []
        ptr_key = (self.service, _T.PTR)
        for key in current:
            if prune and key not in wanted and key != ptr_key:
                changes.append(("delete", rrset(*key)))
        have = {r.to_wire(): r for r in current.get(ptr_key, [])}
        want = {r.to_wire(): r for r in wanted.pop(ptr_key, [])}
        listed = _bounded_ptrs(want, self.max_ptr_bytes)
        self.unlisted = len(want) - len(listed)
        self._ptrs = {w: len(w) + 4 for w in listed}
        gone = [r for w, r in have.items() if w not in listed]
        if prune and gone:
            changes.append(("delete", rrset(self.service, _T.PTR, *gone)))
        for key, rdatas in wanted.items():
            if key not in current or _wire_set(current[key]) != _wire_set(rdatas):
                changes.append(("replace", rrset(key[0], key[1], *rdatas)))
        new = [r for w, r in listed.items() if w not in have]
        if new:
            changes.append(("add", rrset(self.service, _T.PTR, *new)))
        return changes

    def publish(self, records: list[MemberRecord], prune: bool = True) -> int:
        """Make the zone's directory that of `records`; the number of records changed
        (by a member-level re-publish: of members written or deleted). Raises ValueError
        for an invalid record (as Directory.set_members), ZoneUnavailable when the server
        cannot be reached, UpdateRefused when it refuses.

        What a publish left is kept per member (its fields, not its rendered records):
        when the zone's serial is still the one that publish left, a re-publish compares
        member records and writes only the members that changed (none: one SOA query);
        otherwise it reads the zone and diffs it whole (:meth:`diff`)."""
        wanted = {r.public_key: record_key(r) for r in records}
        try:
            serial = self.writer.serial()
        except DirectoryUnavailable as exc:
            raise ZoneUnavailable(str(exc)) from None
        last, self._last = self._last, None
        if last is not None and last[0] == serial and len(wanted) == len(records):
            changed_members = [r for r in records if last[1].get(r.public_key) != wanted[r.public_key]]
            gone = [key for key in last[1] if key not in wanted] if prune else []
            if not changed_members and not gone:
                self._last = last
                return 0
            sent = self.updates_sent
            changed = self.write(changed_members) + self.delete(gone)
            self._remember(serial + self.updates_sent - sent,
                           wanted if prune else {**last[1], **wanted})
            return changed
        try:
            content = self.writer.read()
        except DirectoryUnavailable as exc:
            raise ZoneUnavailable(str(exc)) from None
        changes = self.diff(records, content, prune)
        sent = self.updates_sent
        changed = self._send_changes(changes)
        if prune:
            self._remember(content.serial + self.updates_sent - sent, wanted)
        return changed

    def _remember(self, expected: int | None, members: dict[bytes, tuple]) -> None:
        """Keep `members` as the zone's directory when the server's serial is `expected`
        (ours were the only updates since), else forget."""
        if expected is None:
            self._last = None
            return
        expected %= 1 << 32
        try:
            self._last = (expected, members) if self.writer.serial() == expected else None
        except DirectoryUnavailable:
            self._last = None

    def write(self, records: list[MemberRecord],
              require: Callable[[bytes], dns.name.Name] | None = None) -> int:
        """Write these members' records, each replacing what the zone held at its instance
        name (other members are left alone: several rendezvous write one directory,
        discovery.stores.zone_directory), at most `batch` members per update; a member's
        PTR is added while the PTR set stays within max_ptr_bytes (as last read; the
        first write reads the zone). With `require`, each update requires the name
        require(key) of each of its members to exist (RFC 2136 section 2.4.4: the
        member's entry), so a member removed meanwhile makes the server refuse the update
        with NXDOMAIN (UpdateRefused) rather than bring its records back. The number of
        members written. Raises as :meth:`publish`."""
        if not records:
            return 0
        if self._ptrs is None:
            try:
                current = self.writer.read().records.get((self.service, _T.PTR), [])
            except DirectoryUnavailable as exc:
                raise ZoneUnavailable(str(exc)) from None
            self._ptrs = {r.to_wire(): len(r.to_wire()) + 4 for r in current}
        ptr_bytes = sum(self._ptrs.values())
        written = 0
        for start in range(0, len(records), self.batch):
            chunk = records[start:start + self.batch]
            directory = Directory(self.zone)
            directory.set_members(chunk)
            update = self.writer.new_update()
            if require is not None:
                for record in chunk:
                    update.present(require(record.public_key))
            for record in chunk:
                update.delete(dns.name.Name((instance_label(record.public_key),))
                              .concatenate(self.service))
            added: dict[bytes, int] = {}
            for rr in _axfr_records(directory):
                if rr.rdtype == _T.PTR and rr.name == self.service:
                    wire = rr[0].to_wire()
                    if wire in self._ptrs or ptr_bytes + len(wire) + 4 > self.max_ptr_bytes:
                        continue
                    ptr_bytes += len(wire) + 4
                    added[wire] = len(wire) + 4
                elif not self._managed(rr.name, rr.rdtype):
                    continue
                update.add(rr.name, rr)
            try:
                self.writer.send(update, f"directory ({len(chunk)} members)")
            except DirectoryUnavailable as exc:
                raise ZoneUnavailable(str(exc)) from None
            except UpdateRefused:
                self._ptrs = None           # another writer's PTRs may have filled the set
                raise
            self._ptrs.update(added)
            self.updates_sent += 1
            written += len(chunk)
        return written

    def delete(self, keys: list[bytes]) -> int:
        """Delete these members' directory records (instance name and PTR); their number."""
        changes = []
        for key in keys:
            instance = dns.name.Name((instance_label(key),)).concatenate(self.service)
            changes.append(("delete", dns.rrset.RRset(instance, IN, _T.ANY)))
            ptr = dns.rdtypes.ANY.PTR.PTR(IN, _T.PTR, instance)
            if self._ptrs is not None:
                self._ptrs.pop(ptr.to_wire(), None)
            changes.append(("delete", rrset(self.service, _T.PTR, ptr)))
        self._send_changes(changes)
        return len(keys)

    def _send_changes(self, changes: list[tuple[str, dns.rrset.RRset]]) -> int:
        """Send (op, rrset) changes in bounded messages; the number of records changed."""
        changed = 0
        for batch in batches(_split(changes, self.batch), self.batch):
            update = self.writer.new_update()
            for op, rr in batch:
                if op == "replace":
                    update.replace(rr.name, rr)
                elif op == "add":
                    update.add(rr.name, rr)
                elif len(rr):
                    update.delete(rr.name, rr)
                else:
                    update.delete(rr.name, rr.rdtype)
                changed += max(1, len(rr))
            try:
                self.writer.send(update, f"directory ({len(batch)} RRsets)")
            except DirectoryUnavailable as exc:
                raise ZoneUnavailable(str(exc)) from None
            self.updates_sent += 1
        return changed


def _wire_set(rdatas: list[dns.rdata.Rdata]) -> frozenset[bytes]:
    return frozenset(r.to_wire() for r in rdatas)


def _bounded_ptrs(ptrs: dict[bytes, dns.rdata.Rdata], limit: int) -> dict[bytes, dns.rdata.Rdata]:
    """The first PTR records of `ptrs` (wire -> rdata, in order) within `limit` bytes."""
    out, size = {}, 0
    for wire, rdata in ptrs.items():
        size += len(wire) + 4
        if size > limit:
            break
        out[wire] = rdata
    return out


def _split(changes: Iterable[tuple[str, dns.rrset.RRset]], per: int):
    """Big "add"/"delete" record lists split into RRsets of at most `per` records."""
    for op, rr in changes:
        if op == "replace" or len(rr) <= per:
            yield op, rr
            continue
        items = list(rr)
        for i in range(0, len(items), per):
            yield op, rrset(rr.name, rr.rdtype, *items[i:i + per])
